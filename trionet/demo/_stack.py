"""One trio program: every trionet server in one nursery, with health and graceful shutdown.

:class:`Stack` runs, as tasks of one nursery:

* a :class:`~trionet.bus.DistributedApplication` on a broker URL (``memory://`` by default) whose
  ``orders`` consumer answers requests, plus one long-lived *gateway* socket that the HTTP layer
  uses for request/response;
* an RPC server (:mod:`trionet.rpc`) with an ``inventory`` service;
* an AsyncAProto :class:`~trionet.aproto.Server` answering ``ping`` and ``stock`` packets;
* an ASGI app on Hypercorn's trio worker: ``GET /hello``, ``POST /orders`` (a
  :func:`trionet.bridges.bus_request` route: a request on the bus, answered by the consumer), a
  live page at ``/live`` fed by a :class:`trionet.bridges.Bridge` (see ``_live``), a websocket
  echo at ``/ws/echo``, the bus's AsyncAPI page at ``/asyncapi/`` (JSON at
  ``/asyncapi/asyncapi.json``), and ``/healthz`` / ``/readyz`` (a
  :class:`trionet.asgi.Health` with a check per component);
* on an ``mqtt://`` broker, an MQTT client that feeds the live page.

Shutdown is ordered: :meth:`Stack.begin_shutdown` marks the stack not ready (``/readyz``
answers 503), then stops the front doors first and the back end last: HTTP (Hypercorn finishes
in-flight requests), AProto (in-flight packets finish), the bus applications (in-flight messages
are handled and acknowledged), the RPC server, and finally the gateway socket. The whole sequence
is bounded by ``grace_period``; past it, everything still running is cancelled.
:func:`serve_until_signal` maps SIGINT/SIGTERM onto this: the first signal shuts down
gracefully, a second one cancels at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from .. import rpc
from ..aproto import AsyncClient, Filters, HandlerClient, Packet, Server
from ..asgi import (
    ASGIApplication,
    Health,
    Request,
    RequestIdMiddleware,
    Response,
    Router,
    serve as serve_asgi,
)
from ..bridges import HTTP_STATUS_HEADER, Bridge, bus_request
from ..bus import (
    BusMessage,
    BusSocket,
    DistributedApplication,
    SocketProviderFactory as _Providers,
    asyncapi_router,
)
from ._asgi import echo, http_request
from ._live import LIVE_FILTER, add_live_routes, announce, mqtt_client_for, read_live_events

__all__ = ["Stack", "StackAddresses", "exercise", "serve_until_signal"]

logger = logging.getLogger("trionet.stack")

ORDERS_TOPIC = "trionet/demo/orders"
PRICES = {"widget": 2.5, "gadget": 10.0, "gizmo": 99.0}


@dataclass(frozen=True)
class StackAddresses:
    """Where a running :class:`Stack` listens."""

    http: str
    websocket: str
    aproto: tuple[str, int]
    rpc: tuple[str, int]
    broker: str

    def lines(self) -> list[str]:
        """Human-readable lines, one per service."""
        return [
            f"http:      {self.http}  (GET /hello, POST /orders, GET /work, /healthz, /readyz)",
            f"live:      {self.http}/live  (a page streaming {LIVE_FILTER}; "
            "/live/events, /ws/live)",
            f"asyncapi:  {self.http}/asyncapi/  (the bus's AsyncAPI page and asyncapi.json)",
            f"websocket: {self.websocket}/ws/echo",
            f"aproto:    {self.aproto[0]}:{self.aproto[1]}  (protocol v22, JSON or ZiProto)",
            f"rpc:       {self.rpc[0]}:{self.rpc[1]}  (aiomas wire format, JSON)",
            f"bus:       {self.broker}  (orders on {ORDERS_TOPIC})",
        ]


class _Inventory:
    router = rpc.Service()

    def __init__(self) -> None:
        self.stock = {"widget": 120, "gadget": 8, "gizmo": 0}

    @rpc.expose
    def available(self, item: str) -> int:
        return self.stock.get(item, 0)

    @rpc.expose
    def items(self) -> list[str]:
        return sorted(self.stock)


class _Root:
    router = rpc.Service(["inventory"])

    def __init__(self, inventory: _Inventory) -> None:
        self.inventory = inventory


class Stack:
    """Every trionet server in one nursery. Start it with ``await nursery.start(stack.serve)``.

    Args:
        broker: the bus broker URL: ``memory://`` (embedded, the default), ``mqtt://...`` or
            ``kafka://...``.
        host: the address every server binds (port 0: the kernel picks free ports).
        grace_period: seconds the graceful shutdown may take before everything is cancelled.
    """

    def __init__(
        self, *, broker: str = "memory://", host: str = "127.0.0.1", grace_period: float = 5.0
    ) -> None:
        self.broker = broker
        self.host = host
        self.grace_period = grace_period
        self.inventory = _Inventory()
        self._open_mqtt = mqtt_client_for(broker)
        #: The MQTT client behind the live page (on an ``mqtt://`` broker, while serving).
        self.mqtt_client: Any = None
        components: tuple[str, ...] = ("bus", "gateway", "rpc", "aproto", "http")
        if self._open_mqtt is not None:
            components = ("mqtt", *components)
        self.states: dict[str, str] = {name: "starting" for name in components}
        self.orders_handled = 0
        #: The readiness checks behind ``/readyz``: one per component.
        self.health = Health()
        self.bus_app = self._build_bus()
        self.aproto_server = self._build_aproto()
        self.live: Bridge[Any]
        self.http_app = self._build_http()
        self.gateway: BusSocket | None = None
        self._scopes: dict[str, trio.CancelScope] = {}
        self._done: dict[str, trio.Event] = {}
        self._shutdown_started = False
        self._nursery: trio.Nursery | None = None
        self._close_gateway = trio.Event()
        # serve() turns a cancellation into Hypercorn's graceful shutdown; this cuts it short.
        self._http_force_stop = trio.Event()

    # -- components -------------------------------------------------------------------------

    def _build_bus(self) -> DistributedApplication:
        app = DistributedApplication(self.broker)
        stack = self

        @app.application(ORDERS_TOPIC, name="orders", max_concurrency=8)
        async def orders(message: BusMessage, socket: BusSocket) -> None:
            try:
                order = json.loads(message.payload)
            except ValueError:
                order = None
            qty = order.get("qty", 1) if isinstance(order, dict) else None
            if not isinstance(order, dict) or "item" not in order or type(qty) is not int:
                # POST /orders answers what the reply says: a 400 here (not a handler error,
                # which would leave the HTTP request waiting for its 504).
                await socket.reply(
                    message,
                    b'{"error":"expected a JSON object with \'item\' (and an integer \'qty\')"}',
                    content_type="application/json", headers={HTTP_STATUS_HEADER: "400"})
                return
            item = str(order.get("item", ""))
            in_stock = stack.inventory.available(item)
            accepted = item in PRICES and 0 < qty <= in_stock
            reply = {
                "item": item,
                "qty": qty,
                "status": "accepted" if accepted else "refused",
                "total": round(PRICES.get(item, 0.0) * qty, 2) if accepted else 0,
            }
            if accepted:
                stack.inventory.stock[item] = in_stock - qty
            stack.orders_handled += 1
            await socket.reply(message, json.dumps(reply).encode(),
                               content_type="application/json")
            # ... and the live page shows it
            await announce(socket, stack.broker, "orders", f"{qty} x {item}: {reply['status']}")

        return app

    def _build_aproto(self) -> Server:
        server = Server(self.host, 0, logging_level=logging.WARNING, timeout=30)
        stack = self

        @server.add_handler(Filters.Fields(cmd="ping$"))
        async def ping(client: HandlerClient, packet: Packet) -> None:
            await client.send(Packet({"status": "ok", "pong": True}, encoding=packet.encoding))

        @server.add_handler(Filters.Fields(cmd="stock$", item=None))
        async def stock(client: HandlerClient, packet: Packet) -> None:
            item = str(packet["item"])
            await client.send({"status": "ok", "item": item,
                               "available": stack.inventory.available(item)})

        return server

    def _build_http(self) -> ASGIApplication:
        router = Router()
        stack = self

        @router.route("/hello")
        async def hello(request: Request) -> Response:
            return Response.json({"message": f"hello, {request.query_params.get('name', 'world')}"})

        def gateway() -> BusSocket | None:
            return None if stack._shutdown_started else stack.gateway

        # POST /orders: the body goes out as a bus request, the orders consumer's reply comes
        # back (504 without one in 5 s, 503 while the gateway socket is not open).
        router.add_route("/orders", bus_request(gateway, ORDERS_TOPIC, timeout=5),
                         methods=["POST"])
        self.live = add_live_routes(router, self.broker, lambda: stack.mqtt_client)

        @router.route("/work")
        async def work(request: Request) -> Response:
            # Simulated slow work, to watch a graceful shutdown finish in-flight requests.
            seconds = min(float(request.query_params.get("seconds", "0.5")), 10.0)
            await trio.sleep(seconds)
            return Response.json({"worked": seconds})

        router.add_websocket_route("/ws/echo", echo)
        router.mount("/asyncapi", asyncapi_router(self.bus_app, title="trionet demo"))
        app = ASGIApplication(router)
        app.add_middleware(RequestIdMiddleware)
        self._add_health_checks(app)
        return app

    def _add_health_checks(self, app: ASGIApplication) -> None:
        health = self.health

        def serving(name: str) -> Callable[[], bool | str]:
            def check() -> bool | str:
                state = self.states[name]
                return True if state == "ready" else f"{name} is {state}"
            return check

        health.add_check("bus", self.bus_app)

        def gateway() -> bool | str:
            if self.gateway is None or self.gateway.closed:
                return "the HTTP gateway's bus socket is not open"
            return True

        health.add_check("gateway", gateway)
        if "mqtt" in self.states:
            health.add_check("mqtt", serving("mqtt"))
        health.add_check("rpc", serving("rpc"))
        health.add_check("aproto", serving("aproto"))
        health.add_routes(app)  # /healthz, /readyz and the "http" (lifespan) check

    # -- state ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while every component is serving and no shutdown has begun."""
        gateway_ok = self.gateway is not None and not self.gateway.closed
        return (
            not self._shutdown_started
            and gateway_ok
            and all(state == "ready" for state in self.states.values())
        )

    def statistics(self) -> dict[str, Any]:
        """Per-component counters, one call for the whole stack."""
        gateway = self.gateway
        return {
            "states": dict(self.states),
            "orders_handled": self.orders_handled,
            "gateway": None if gateway is None else dataclasses.asdict(gateway.statistics),
            "bus": {
                name: dataclasses.asdict(stats)
                for name, stats in self.bus_app.statistics.items()
            },
            "aproto": dataclasses.asdict(self.aproto_server.statistics()),
            "http": dataclasses.asdict(self.http_app.statistics()),
            "live": dataclasses.asdict(self.live.statistics),
        }

    # -- running ----------------------------------------------------------------------------

    async def _component(
        self,
        name: str,
        run: Callable[..., Awaitable[object]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        done = self._done[name] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scopes[name] = scope

                def started(value: Any = None) -> None:
                    self.states[name] = "ready"
                    task_status.started(value)

                status = _Relay(started)
                await run(task_status=status)
        except BaseException:
            self.states[name] = "failed" if not self._shutdown_started else "stopped"
            raise
        finally:
            done.set()
        self.states[name] = "stopped"

    async def _hold_gateway(self, *, task_status: trio.TaskStatus[None]) -> None:
        provider = _Providers.from_url(self.broker)
        async with provider.create_socket(name="http-gateway") as socket:
            self.gateway = socket
            task_status.started()
            await self._close_gateway.wait()

    async def _hold_mqtt(self, *, task_status: trio.TaskStatus[None]) -> None:
        assert self._open_mqtt is not None
        async with self._open_mqtt() as client:
            self.mqtt_client = client
            task_status.started()
            await self._close_gateway.wait()

    async def serve(
        self, *, task_status: trio.TaskStatus[StackAddresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run every component until :meth:`begin_shutdown` has finished, or cancellation."""
        from functools import partial

        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._component, "bus", self.bus_app.serve)
            await nursery.start(self._component, "gateway", self._hold_gateway)
            if self._open_mqtt is not None:
                await nursery.start(self._component, "mqtt", self._hold_mqtt)
            rpc_addresses = await nursery.start(
                self._component,
                "rpc",
                partial(rpc.start_server, (self.host, 0), _Root(self.inventory)),
            )
            aproto_port = await nursery.start(self._component, "aproto",
                                              self.aproto_server.serve)
            http = await nursery.start(
                self._component,
                "http",
                partial(serve_asgi, self.http_app, f"{self.host}:0",
                        force_stop=self._http_force_stop),
            )
            rpc_host, rpc_port = rpc_addresses[0][:2]
            task_status.started(
                StackAddresses(
                    http=http.url,
                    websocket=http.ws_url,
                    aproto=(self.host, aproto_port),
                    rpc=(rpc_host, rpc_port),
                    broker=self.broker,
                )
            )

    def begin_shutdown(self) -> None:
        """Start the ordered, graceful shutdown (idempotent). :meth:`serve` returns when done."""
        if self._shutdown_started or self._nursery is None:
            return
        self._shutdown_started = True
        self.health.begin_shutdown()
        self._nursery.start_soon(self._shutdown_sequence)

    def cancel(self) -> None:
        """Stop everything at once (what a second signal does): running requests and bus
        handlers are cancelled instead of being waited for."""
        self._http_force_stop.set()
        self.bus_app._force_stop()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _shutdown_sequence(self) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.deadline = trio.current_time() + self.grace_period
        for name in self.states:
            if self.states[name] == "ready":
                self.states[name] = "stopping"

        async def stop(name: str, how: Callable[[], object]) -> None:
            if name in self._done:
                how()
                await self._done[name].wait()
            logger.info("shutdown: %s stopped", name)

        # Front doors first, the back end last. Live streams end first: Hypercorn waits for
        # in-flight responses, and an event stream never finishes on its own.
        self.live.close()
        await stop("http", self._scopes["http"].cancel)  # Hypercorn shuts down gracefully
        await stop("aproto", self.aproto_server.stop)
        await stop("bus", self.bus_app.stop)  # drains in-flight messages
        await stop("rpc", self._scopes["rpc"].cancel)
        await stop("gateway", self._close_gateway.set)  # and the MQTT client, if any
        if "mqtt" in self._done:
            await stop("mqtt", lambda: None)


class _Relay:
    """A task_status that runs a callback (so a component can be marked ready)."""

    def __init__(self, started: Callable[[Any], None]) -> None:
        self._started = started

    def started(self, value: Any = None) -> None:
        self._started(value)


# -- exercising a running stack ------------------------------------------------------------------


async def _http(
    addresses: StackAddresses, method: str, target: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = addresses.http.rsplit("//", 1)[1].rsplit(":", 1)
    return await http_request(host, int(port), method, target, body)


async def _orders(addresses: StackAddresses, report: Callable[[str], None]) -> None:
    for order in ({"item": "widget", "qty": 3}, {"item": "gizmo", "qty": 1}):
        status, _, body = await _http(addresses, "POST", "/orders", json.dumps(order).encode())
        reply = json.loads(body)
        report(f"http → bus: POST /orders {order} -> {status} {reply['status']}"
               f" (total {reply['total']}), answered by the orders consumer over "
               f"{addresses.broker.split(':', 1)[0]}://")


async def exercise(addresses: StackAddresses, report: Callable[[str], None]) -> None:
    """Talk to every service of a running stack and report what happened."""
    from ..asgi import connect_websocket

    status, _, body = await _http(addresses, "GET", "/readyz")
    report(f"http: GET /readyz -> {status} {json.loads(body)['status']}")
    status, headers, body = await _http(addresses, "GET", "/hello?name=trionet")
    report(f"http: GET /hello -> {status} {json.loads(body)['message']!r} "
           f"(request id {headers.get('x-request-id', '?')[:8]}…)")
    async with trio.open_nursery() as nursery:
        host, port = addresses.http.rsplit("//", 1)[1].rsplit(":", 1)
        # A browser on the live page (subscribed before the orders come).
        live = await nursery.start(read_live_events, host, int(port), 2)
        await _orders(addresses, report)
        for event in await live():
            report(f"live: GET /live/events -> {event['topic']}: {event['payload']!r} "
                   "(server-sent events, fed by a bridge)")
    async with connect_websocket(addresses.websocket + "/ws/echo") as websocket:
        await websocket.send("structured concurrency")
        report(f"websocket: echo -> {await websocket.receive()!r}")
    async with AsyncClient(tls=False, encoding="ziproto") as client:
        await client.connect(*addresses.aproto)
        reply = await client.request({"cmd": "ping"})
        report(f"aproto: ping -> {reply}")
        reply = await client.request({"cmd": "stock", "item": "widget"})
        report(f"aproto: stock widget -> {reply['available']} left")
    async with rpc.open_connection(addresses.rpc) as rpc_client:
        available = await rpc_client.remote.inventory.available("gadget")
        items = await rpc_client.remote.inventory.items()
        report(f"rpc: inventory.available('gadget') = {available}; items = {items}")


# -- signals ------------------------------------------------------------------------------------


async def serve_until_signal(
    stack: Stack, report: Callable[[str], None] = print
) -> int:
    """Run *stack* until SIGINT or SIGTERM: the first signal shuts down gracefully (bounded
    by ``stack.grace_period``), a second one cancels everything at once.

    Returns:
        The exit status: 0 after a graceful stop, 128 + the signal number after a forced one.
    """
    signals = (signal.SIGINT, signal.SIGTERM)
    forced_by: list[signal.Signals] = []
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as nursery:

            async def run_stack(
                *, task_status: trio.TaskStatus[StackAddresses] = trio.TASK_STATUS_IGNORED
            ) -> None:
                await stack.serve(task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped: no more signals to watch

            addresses = await nursery.start(run_stack)
            for line in addresses.lines():
                report(line)
            report("serving; press Ctrl-C (or send SIGTERM) to stop")
            count = 0
            async for signum in received:
                count += 1
                name = signal.Signals(signum).name
                if count == 1:
                    report(f"{name}: shutting down gracefully "
                           f"(within {stack.grace_period:g} s; again to stop at once)")
                    stack.begin_shutdown()
                elif count == 2:
                    report(f"{name} again: stopping at once")
                    forced_by.append(signal.Signals(signum))
                    stack.cancel()
    report("stopped" if not forced_by else f"stopped (forced by {forced_by[0].name})")
    return 128 + forced_by[0] if forced_by else 0
