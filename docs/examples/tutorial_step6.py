"""Tutorial, step 6: the whole service, with health checks and a graceful shutdown on signals.

Run it as it is and it starts, exercises itself, interrupts itself with SIGINT and shuts down.
Run it with ``--serve`` and it serves until you press Ctrl+C (or send SIGTERM).
"""

import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import trio

from trionet import rpc
from trionet.aproto import AsyncClient, Filters, HandlerClient, Packet, Server
from trionet.asgi import ASGIApplication, HTTPException, Request, Response, Router, serve
from trionet.bus import BusMessage, BusSocket, DistributedApplication, from_url
from trionet.errors import RemoteException

# -- the back end: a bus application answering requests on greet/<language> ----------------------

provider = from_url("memory://tutorial")  # an in-process broker, named "tutorial"
bus = DistributedApplication(provider)

GREETINGS = {"en": "hello", "fr": "bonjour", "de": "hallo", "ja": "konnichiwa"}


@bus.application("greet/+", max_concurrency=16)
async def greeter(message: BusMessage, socket: BusSocket) -> None:
    lang = message.topic.rpartition("/")[2]  # the level the + matched
    await trio.sleep(0.1)  # pretend this is real work
    if lang in GREETINGS:
        answer = {"greeting": f"{GREETINGS[lang]} {message.text}"}
    else:
        answer = {"error": f"no greeting for language {lang!r}"}
    await socket.reply(message, json.dumps(answer), content_type="application/json")


async def ask_greeter(socket: BusSocket, lang: str, name: str) -> str:
    """Ask the greeter over the bus; raise LookupError for a language it does not know."""
    if not lang.isalpha():  # a topic level may not contain "/", "+" or "#"
        raise LookupError(f"no greeting for language {lang!r}")
    reply = await socket.request(BusMessage(name, f"greet/{lang}"))
    answer = reply.json()
    if "error" in answer:
        raise LookupError(answer["error"])
    return str(answer["greeting"])


# -- the front end: HTTP, with a bus socket of its own -------------------------------------------

router = Router()


@router.route("/greet/{lang}/{name}")
async def greet(request: Request, lang: str, name: str) -> Response:
    try:
        with trio.fail_after(2):  # the deadline is the caller's, as always in trio
            greeting = await ask_greeter(request.app.state.bus, lang, name)
    except trio.TooSlowError:
        raise HTTPException(504, "the greeter did not answer in time") from None
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    return Response.json({"greeting": greeting})


@router.route("/healthz")
async def healthz(request: Request) -> Response:
    return Response.json({"status": "alive"})  # the process answers: that is all it says


@router.route("/readyz")
async def readyz(request: Request) -> Response:
    if request.app.state.ready and bus.running:
        return Response.json({"status": "ready"})
    return Response.json({"status": "not ready"}, status_code=503)


@asynccontextmanager
async def lifespan(app: ASGIApplication) -> AsyncIterator[None]:
    # Opened before the server takes its first request, closed after the last one finished.
    async with provider.create_socket(name="web") as socket:
        app.state.bus = socket
        yield


app = ASGIApplication(router, lifespan=lifespan)
app.state.ready = False  # set once every front end is up, cleared when shutdown begins


# -- the front end: RPC (aiomas-compatible) -----------------------------------------------------


class Greeter:
    router = rpc.Service()

    def __init__(self, socket: BusSocket) -> None:
        self.socket = socket

    @rpc.expose
    async def greet(self, lang: str, name: str) -> str:
        with trio.fail_after(2):
            return await ask_greeter(self.socket, lang, name)  # LookupError reaches the caller


# -- the front end: AsyncAProto packets --------------------------------------------------------


def make_aproto_server(socket: BusSocket) -> Server:
    server = Server("127.0.0.1", 0)

    @server.add_handler(Filters.Fields(cmd="greet$", lang=None, name=None))
    async def greet(client: HandlerClient, packet: Packet) -> None:
        try:
            with trio.fail_after(2):
                greeting = await ask_greeter(socket, str(packet["lang"]), str(packet["name"]))
        except LookupError as exc:
            reply = {"status": "failure", "error": str(exc)}
        except trio.TooSlowError:
            reply = {"status": "failure", "error": "ERR_TIMED_OUT"}
        else:
            reply = {"status": "ok", "greeting": greeting}
        await client.send(reply)

    return server


# -- a client for all three front ends ----------------------------------------------------------

REQUESTS = [("en", "alice"), ("fr", "bob"), ("de", "carol"), ("ja", "dave")]


async def use_http(url: str, results: list[tuple[str, str]]) -> None:
    async with httpx.AsyncClient(base_url=url) as client:

        async def one(lang: str, name: str) -> None:
            response = await client.get(f"/greet/{lang}/{name}")
            response.raise_for_status()
            results.append(("HTTP", response.json()["greeting"]))

        async with trio.open_nursery() as nursery:  # all requests at once
            for lang, name in REQUESTS:
                nursery.start_soon(one, lang, name)
        assert (await client.get("/greet/xx/mallory")).status_code == 404


async def use_rpc(address: tuple[str, int], results: list[tuple[str, str]]) -> None:
    async with rpc.open_connection(address) as client:

        async def one(lang: str, name: str) -> None:
            results.append(("RPC", await client.remote.greet(lang, name)))

        async with trio.open_nursery() as nursery:  # concurrent calls on one connection
            for lang, name in REQUESTS:
                nursery.start_soon(one, lang, name)
        try:
            await client.remote.greet("xx", "mallory")
            raise AssertionError("an unknown language must fail")
        except RemoteException as exc:  # the service's LookupError, raised remotely
            assert exc.remote_type == "LookupError"


async def use_aproto(port: int, results: list[tuple[str, str]]) -> None:
    async with AsyncClient(tls=False) as client:
        await client.connect("127.0.0.1", port)
        packets = [{"cmd": "greet", "lang": lang, "name": name} for lang, name in REQUESTS]
        for reply in await client.request_many(packets):  # pipelined: one write
            results.append(("AProto", reply["greeting"]))
        reply = await client.request({"cmd": "greet", "lang": "xx", "name": "mallory"})
        assert reply["status"] == "failure"


async def exercise(http_url: str, rpc_address: tuple[str, int], aproto_port: int) -> None:
    """Use every front end at once, with one deadline over the whole run."""
    results: list[tuple[str, str]] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(use_http, http_url, results)
            nursery.start_soon(use_rpc, rpc_address, results)
            nursery.start_soon(use_aproto, aproto_port, results)
    for protocol, greeting in sorted(results):
        print(f"{protocol:7} {greeting}")
    assert len(results) == 3 * len(REQUESTS)


# -- the service: start in order, run until a signal, stop in reverse order ----------------------


async def run_service(
    signals: AsyncIterator[int],
    *,
    task_status: trio.TaskStatus[tuple[str, tuple[str, int], int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as backend:
        await backend.start(bus.serve)
        async with provider.create_socket(name="frontends") as socket:
            aproto = make_aproto_server(socket)
            async with trio.open_nursery() as aproto_nursery:
                aproto_port = await aproto_nursery.start(aproto.serve)
                async with trio.open_nursery() as frontends:
                    http = await frontends.start(serve, app, "127.0.0.1:0")
                    (rpc_address,) = await frontends.start(
                        rpc.start_server, ("127.0.0.1", 0), Greeter(socket)
                    )
                    app.state.ready = True
                    print(f"serving: HTTP {http.url}, RPC {rpc_address}, AProto port {aproto_port}")
                    task_status.started((http.url, rpc_address, aproto_port))

                    signum = await anext(signals)  # the first SIGINT or SIGTERM
                    print(f"{signal.Signals(signum).name}: shutting down")
                    app.state.ready = False
                    # 1. Front ends stop accepting and finish what they have started: the
                    #    AProto server when told to stop, Hypercorn when cancelled (RPC
                    #    connections are closed at once).
                    aproto.stop()
                    frontends.cancel_scope.cancel()
            # 2. Only then the back end: it answered the requests the front ends were finishing.
            bus.stop()
    print("stopped")


async def demo_client(http_url: str, rpc_address: tuple[str, int], aproto_port: int) -> None:
    """What --serve leaves to you: use the service, then interrupt it mid-request."""
    await exercise(http_url, rpc_address, aproto_port)
    async with httpx.AsyncClient(base_url=http_url) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json() == {"status": "ready"}

        async def interrupt_while_busy() -> None:
            # Wait until the greeter is handling our request (a counter, so we poll it; with a
            # deadline, so a greeter too quick to be seen busy is an error, not a hang).
            with trio.fail_after(5):
                while bus.statistics["greeter"].in_flight == 0:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            signal.raise_signal(signal.SIGINT)  # as if you pressed Ctrl+C

        async with trio.open_nursery() as nursery:
            nursery.start_soon(interrupt_while_busy)
            response = await client.get("/greet/en/latecomer")
        print("in flight during shutdown:", response.status_code, response.json())
        assert response.json() == {"greeting": "hello latecomer"}


async def main(serve_forever: bool) -> None:
    # Signals are received from the start: nothing is half-started when Ctrl+C comes.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(run_service, signals)
            if not serve_forever:
                nursery.start_soon(demo_client, *addresses)


if __name__ == "__main__":
    trio.run(main, "--serve" in sys.argv[1:])
