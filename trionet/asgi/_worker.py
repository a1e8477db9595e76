"""trionet's trio worker for Hypercorn's protocol stack.

HTTP/1.1 connections go to trionet's own h11 path (:mod:`._http11`: one task per connection,
no per-request protocol objects) unless the environment variable ``TRIONET_ASGI_HTTP1`` is
``hypercorn``; a request there that switches protocols (websocket, ``h2c``, HTTP/2's preface)
is replayed into Hypercorn's protocol, which keeps the connection. Hypercorn's HTTP/1.1 (h11),
HTTP/2 (h2) and websocket (wsproto) protocol classes do the rest of the HTTP work; this module
is the trio glue around them, in place of ``hypercorn.trio``'s. It keeps that
worker's behaviour (the ``Config`` and its limits and timeouts, the lifespan, the graceful
shutdown, TLS with ALPN) and spends far less per request:

* **No idle-timeout task.** Hypercorn's trio worker starts a task, under a lock, every time a
  connection becomes idle and cancels it when a request arrives: two task spawns, seven cancel
  scopes and some twenty reschedules per request in all. Here the keep-alive and read timeouts
  are the deadline of the one cancel scope around the connection's read, moved when the protocol
  reports the connection idle or busy; a server that is shutting down closes its idle
  connections by moving that deadline to now.
* **Writes without a scheduler round trip.** A plain TCP connection's response goes straight to
  the socket when the kernel takes it at once (the common case); only a write the kernel cannot
  take waits, shielded as in Hypercorn so that a cancelled application never leaves half a
  response behind, and writers queue in order. TLS streams use ``send_all`` under the same rule.
* **Reads through the file descriptor** on plain TCP connections: one wait for readability and
  one ``recv`` per chunk, without trio's stream wrapper's extra checkpoints.

Select it with ``serve(worker="trionet")`` (the default); ``worker="hypercorn"`` runs Hypercorn's
own trio worker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket as _socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import trio

from ._http11 import HTTP11Connection, call_app, receive_some, write_socket

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = ["worker_serve"]

logger = logging.getLogger("trionet.asgi")

# Queued output past which a sender waits for the writer (backpressure from a slow client).
_HIGH_WATER = 2**18
# How long closing a connection waits for its queued output to be written.
_DRAIN_TIMEOUT = 10.0
# How long closing a TLS connection waits for its close_notify exchange.
_TLS_CLOSE_TIMEOUT = 1.0
_SEND_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Event:
    """The event type Hypercorn's protocols create (``context.event_class``)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    async def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()

    async def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class _Context:
    """What Hypercorn's HTTP/1.1, HTTP/2 and websocket protocols use of a worker's context
    (``hypercorn.typing.WorkerContext``; its QUIC parts are left out with HTTP/3)."""

    event_class = _Event

    def __init__(self, max_requests: int | None) -> None:
        self.max_requests = max_requests
        self.requests = 0
        self.terminate = _Event()
        self.terminated = _Event()
        #: Connections, to close the idle ones when the server starts shutting down.
        self.connections: set[_Connection] = set()

    async def mark_request(self) -> None:
        if self.max_requests is None:
            return
        self.requests += 1
        if self.requests > self.max_requests:
            await self.terminate.set()

    @staticmethod
    async def sleep(wait: float) -> None:
        await trio.sleep(wait)


async def _run_app(app: Any, config: Config, scope: Any, receive: Any,
                   send: Callable[[Any], Awaitable[None]]) -> None:
    """One application call for Hypercorn's protocols: ``send(None)`` then tells the protocol
    that the application has finished."""
    try:
        await call_app(app, config, scope, receive, send)
    finally:
        await send(None)


class _TaskGroup:
    """``hypercorn.typing.TaskGroup`` over a connection's nursery."""

    __slots__ = ("_nursery",)

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    async def spawn_app(self, app: Any, config: Config, scope: Any,
                        send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        put, get = trio.open_memory_channel[Any](config.max_app_queue_size)
        self._nursery.start_soon(_run_app, app, config, scope, get.receive, send)
        return put.send

    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._nursery.start_soon(func, *args)


class _Connection:
    """One TCP (or TLS) connection: reads feed the protocol, the protocol's events write."""

    def __init__(self, app: Any, config: Config, context: _Context, state: Any,
                 stream: trio.abc.Stream, http1: str = "trionet") -> None:
        self.http1 = http1
        self.lean: HTTP11Connection | None = None
        self.app = app
        self.config = config
        self.context = context
        self.state = state
        self.stream = stream
        self.protocol: Any = None
        self.sock: Any = stream.socket if type(stream) is trio.SocketStream else None
        self.idle_deadline = math.inf  # when an idle keep-alive connection is closed
        self.read_scope: trio.CancelScope | None = None
        # Output: what the protocol sends is queued here and written by the connection's
        # writer task when the sender next yields, so a response's head and body (two events
        # from Hypercorn's protocol) leave in one system call.
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.writer_wakeup = trio.lowlevel.ParkingLot()
        self.space = trio.lowlevel.ParkingLot()  # senders waiting for the queue to shrink
        self.drained = trio.lowlevel.ParkingLot()  # _close waiting for the queue to empty
        self.broken = False
        self.writer_running = False
        self.closed = False

    # -- the connection's life ---------------------------------------------------------------

    async def run(self) -> None:
        from hypercorn.events import Closed, RawData
        from hypercorn.protocol import ProtocolWrapper
        from hypercorn.utils import parse_socket_addr

        stream = self.stream
        ssl = isinstance(stream, trio.SSLStream)
        try:
            if ssl:
                assert isinstance(stream, trio.SSLStream)
                with trio.move_on_after(self.config.ssl_handshake_timeout) as handshake:
                    try:
                        await stream.do_handshake()
                    except trio.BrokenResourceError:
                        return
                if handshake.cancelled_caught:
                    return
                alpn = stream.selected_alpn_protocol()
                sock = stream.transport_stream.socket
            else:
                alpn = "http/1.1"
                sock = stream.socket  # type: ignore[attr-defined]
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            self.context.connections.add(self)
            replay = b""
            if self.http1 == "trionet" and alpn in (None, "http/1.1"):
                self.lean = HTTP11Connection(self, client, server)
                handover = await self.lean.run()
                self.lean = None
                if handover is None:
                    return
                replay = handover  # a protocol switch: Hypercorn's protocol takes over
            async with trio.open_nursery() as writer_nursery:
                writer_nursery.start_soon(self._writer)
                async with trio.open_nursery() as nursery:
                    # (duck-typed: Hypercorn's protocols use only the members defined here)
                    self.protocol = ProtocolWrapper(
                        self.app, self.config, cast(Any, self.context),
                        cast(Any, _TaskGroup(nursery)), self.state, ssl, client, server,
                        self._protocol_send, alpn,
                    )
                    await self.protocol.initiate()
                    self._set_idle(True)
                    if replay:
                        await self.protocol.handle(RawData(replay))
                    await self._read_loop(Closed)
                await self._drain()
                writer_nursery.cancel_scope.cancel()
        except OSError:
            pass
        finally:
            self.context.connections.discard(self)
            await self._close()

    async def _read_loop(self, closed: Any) -> None:
        from hypercorn.events import RawData

        handle = self.protocol.handle
        read_timeout = self.config.read_timeout
        while True:
            deadline = self.idle_deadline
            if read_timeout:
                deadline = min(deadline, trio.current_time() + read_timeout)
            with trio.CancelScope(deadline=deadline) as scope:
                self.read_scope = scope
                try:
                    data = await receive_some(self.stream, self.sock)
                except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                    break
                finally:
                    self.read_scope = None
            if scope.cancelled_caught:
                break  # read or keep-alive timeout, or the server shuts down
            await handle(RawData(data))
            if not data:
                break
        await handle(closed())

    # -- events from the protocol ------------------------------------------------------------

    async def _protocol_send(self, event: Any) -> None:
        from hypercorn.events import Closed, RawData, Updated

        kind = type(event)
        if kind is RawData:
            if not await self._write(event.data):
                await self.protocol.handle(Closed())
        elif kind is Closed:
            await self._close()
            await self.protocol.handle(Closed())
        elif kind is Updated:
            self._set_idle(event.idle)

    def _set_idle(self, idle: bool) -> None:
        if not idle:
            self.idle_deadline = math.inf
        elif self.context.terminated.is_set():
            self.idle_deadline = -math.inf
        else:
            self.idle_deadline = trio.current_time() + self.config.keep_alive_timeout
        scope = self.read_scope
        if scope is not None:
            scope.deadline = self.idle_deadline if idle else self._read_deadline()

    def _read_deadline(self) -> float:
        read_timeout = self.config.read_timeout
        return trio.current_time() + read_timeout if read_timeout else math.inf

    def close_if_idle(self) -> None:
        """The server is shutting down: an idle connection goes now."""
        if self.lean is not None:
            self.lean.close_if_idle()
            return
        if self.idle_deadline != math.inf:
            self.idle_deadline = -math.inf
            if self.read_scope is not None:
                self.read_scope.deadline = -math.inf

    async def _write(self, data: bytes) -> bool:
        """Queue *data* for the writer task; False if the connection is gone.

        Queued data is written whole and in order, even if the sender is cancelled afterwards
        (Hypercorn shields its writes for the same reason). A sender that is already cancelled
        queues nothing: it raises ``Cancelled`` here, without a yield when it is not.
        Past :data:`_HIGH_WATER` queued bytes the sender waits for the writer.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.broken:
            return False
        self.out.append(data)
        self.out_bytes += len(data)
        if self.writer_wakeup:
            self.writer_wakeup.unpark()
        while self.out_bytes > _HIGH_WATER and not self.broken:
            await self.space.park()
        return not self.broken

    async def _writer(self) -> None:
        """Write what is queued, as one buffer per wake-up, until cancelled."""
        sock = self.sock
        self.writer_running = True
        try:
            await self._write_queued(sock)
        finally:
            self.writer_running = False
            self.drained.unpark_all()

    async def _write_queued(self, sock: Any) -> None:
        from hypercorn.events import Closed

        while True:
            while not self.out:
                if self.drained:
                    self.drained.unpark_all()
                await self.writer_wakeup.park()
            out = self.out
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            try:
                if sock is not None:
                    await write_socket(sock, data)
                else:
                    await self.stream.send_all(data)
            except _SEND_ERRORS:
                self.broken = True
                self.out.clear()
                self.out_bytes = 0
                self.space.unpark_all()
                self.drained.unpark_all()
                with trio.CancelScope(shield=True):
                    await self.protocol.handle(Closed())
                return
            self.out_bytes -= len(data)
            if self.space:
                self.space.unpark_all()

    async def _drain(self) -> None:
        """Wait (shielded, for at most :data:`_DRAIN_TIMEOUT`) until everything queued has
        been written, including what the writer has taken and is still sending."""
        with trio.move_on_after(_DRAIN_TIMEOUT, shield=True):
            while self.out_bytes and not self.broken and self.writer_running:
                await self.drained.park()

    async def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self._drain()
        stream = self.stream
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(_socket.SHUT_WR)
        elif isinstance(stream, trio.SSLStream) and not self.broken:
            # TLS: say goodbye (close_notify) so that the client sees a clean end of the
            # response, but never wait long for a peer that does not answer.
            with trio.move_on_after(_TLS_CLOSE_TIMEOUT, shield=True), contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError
            ):
                await stream.aclose()
        await trio.aclose_forcefully(stream)


async def worker_serve(
    app: Any,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* (an ASGI application) with *config*, as ``hypercorn.trio.serve`` does.

    Reports the bound URLs through *task_status*; returns after a graceful shutdown, which
    *shutdown_trigger* returning starts (as does reaching ``max_requests``).
    """
    from random import randint

    from hypercorn.trio.lifespan import Lifespan
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import repr_socket_addr, wrap_app

    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    max_requests = None
    if config.max_requests is not None:
        max_requests = config.max_requests + randint(0, config.max_requests_jitter)
    context = _Context(max_requests)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()

        async with trio.open_nursery() as server_nursery:
            sockets = config.create_sockets()
            ssl_context = config.create_ssl_context()
            listeners: list[trio.abc.Listener[Any]] = []
            urls: list[str] = []
            for secure, group in ((True, sockets.secure_sockets),
                                  (False, sockets.insecure_sockets)):
                for sock in group:
                    sock.listen(config.backlog)
                    listener: trio.abc.Listener[Any] = trio.SocketListener(
                        trio.socket.from_stdlib_socket(sock)
                    )
                    if secure:
                        assert ssl_context is not None  # there are secure sockets
                        listener = trio.SSLListener(listener, ssl_context,
                                                    https_compatible=True)
                    listeners.append(listener)
                    bind = repr_socket_addr(sock.family, sock.getsockname())
                    url = f"{'https' if secure else 'http'}://{bind}"
                    urls.append(url)
                    await config.log.info(f"Running on {url} (CTRL + C to quit)")
            if sockets.quic_sockets:
                raise ValueError("the trionet worker does not serve HTTP/3 (QUIC); use "
                                 "worker='hypercorn'")
            state = ConnectionState(lifespan_state.copy())

            http1 = os.environ.get("TRIONET_ASGI_HTTP1") or "trionet"
            if http1 not in ("trionet", "hypercorn"):
                raise ValueError(f"TRIONET_ASGI_HTTP1 must be 'trionet' or 'hypercorn', "
                                 f"not {http1!r}")

            async def connection(stream: trio.abc.Stream) -> None:
                await _Connection(wrapped, config, context, state, stream, http1).run()

            task_status.started(urls)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(trio.serve_listeners, connection, listeners,
                                               handler_nursery=server_nursery))
                    stop = trio.Event()
                    if shutdown_trigger is not None:
                        nursery.start_soon(_set_after, shutdown_trigger, stop)
                    nursery.start_soon(_set_after, context.terminate.wait, stop)
                    await stop.wait()
                    nursery.cancel_scope.cancel()
            finally:
                await context.terminated.set()
                for conn in list(context.connections):
                    conn.close_if_idle()
                server_nursery.cancel_scope.deadline = (
                    trio.current_time() + config.graceful_timeout
                )

        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _set_after(wait: Callable[[], Awaitable[Any]], event: trio.Event) -> None:
    await wait()
    event.set()
