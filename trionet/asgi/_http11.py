"""trionet's own HTTP/1.1 path: one task per connection driving h11 directly.

Hypercorn's ``H11Protocol`` costs most of what a small request costs on trionet's worker: an
``HTTPStream`` object, an application task and a memory channel per request, the protocol's
events and their ``isinstance`` dispatch, an idle/busy round trip through the worker. This
module does the same HTTP work with none of that:

* The connection's task parses with h11 and calls the ASGI application itself, one request
  after the other (HTTP/1.1 answers in order; a pipelined request waits in h11's buffer).
* ``receive()`` pulls the request body from h11, reading the socket only when the application
  asks for more (the read is the backpressure). ``Expect: 100-continue`` is answered the first
  time the application wants body bytes that have not arrived. Once the body is complete,
  ``receive()`` watches the socket: the client closing it is ``http.disconnect`` (a poll with
  a zero timeout sees a close that already happened, thanks to a non-blocking read first).
  Bytes of a pipelined request read meanwhile go to h11's buffer, up to a bound.
* ``send()`` checks the ASGI message order (start, then body messages until ``more_body`` is
  false). The head of a response with a ``Content-Length`` waits for the first body message,
  so that head and body of a small response leave in one ``send`` system call (a streamed
  response's head, or one whose application then reads the request body, goes at once).
  Writes go straight to the socket when the kernel takes the bytes at once; otherwise the
  sender waits for the socket (that wait is the backpressure on a slow client).
* After an application that returns without starting a response, the client gets a 500; after
  one that fails or returns in the middle of a response, the connection is closed.

What Hypercorn's protocol does beyond HTTP/1.1 stays there: a request that asks to switch
protocols (a websocket handshake, the ``h2c`` upgrade, HTTP/2's prior-knowledge preface) is
handed back to the worker, which replays it into Hypercorn's ``H11Protocol`` for the rest of
the connection. The scope, the response headers (``date``, ``server``), the access log, the
limits and timeouts of the ``Config`` (``h11_max_incomplete_size``, ``keep_alive_timeout``,
``read_timeout``, ``keep_alive_max_requests``, ``max_requests``, ``server_names``) and the
graceful shutdown are those of Hypercorn's path.
"""

from __future__ import annotations

import math
import os
from time import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote
from wsgiref.handlers import format_date_time

import h11
import trio
from hypercorn.utils import build_and_validate_headers, valid_server_name

if TYPE_CHECKING:
    from hypercorn.config import Config

    from ._worker import _Connection

__all__ = ["HTTP11Connection", "call_app", "receive_some", "write_socket"]

_MAX_RECV = 2**16
# What a pipelining client may have the server hold (in h11's buffer) while a response runs.
_MAX_PIPELINED = 2**16
# Closing with request bytes unread: how long (and how much) to read and drop first, so that
# the kernel does not answer them with a reset that could destroy the response in flight.
_LINGER_TIME = 1.0
_LINGER_BYTES = 2**20
_READ_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

_ASGI = {"spec_version": "2.1", "version": "3.0"}
# Exchange states.
_REQUEST, _RESPONSE, _DONE = 0, 1, 2
_STATE_NAMES = ("REQUEST", "RESPONSE", "CLOSED")
# Verdicts on a request head.
_SWITCH = object()
_SMUGGLING = object()


def _no_threads(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("this worker serves ASGI applications only (use worker='hypercorn')")


async def call_app(app: Any, config: Config, scope: Any, receive: Any, send: Any) -> None:
    """One application call, as Hypercorn runs it (for both of the worker's HTTP/1.1 paths):
    errors are logged, not raised; a cancellation goes on, whatever else failed."""
    try:
        await app(scope, receive, send, _no_threads, _no_threads)
    except trio.Cancelled:
        raise
    except BaseExceptionGroup as error:
        cancelled, others = error.split(trio.Cancelled)
        if others is not None:
            await config.log.exception("Error in ASGI Framework")
        if cancelled is not None:
            raise cancelled from None  # the cancellation goes on, whatever else failed
    except Exception:
        await config.log.exception("Error in ASGI Framework")


class _Dates:
    """The ``date`` header's value, formatted once per second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time())
        if second != cls.second:
            cls.value = format_date_time(second).encode("ascii")
            cls.second = second
        return cls.value


class UnexpectedMessageError(Exception):
    """The application sent an ASGI message that does not fit the response's state."""

    def __init__(self, state: int, message_type: object) -> None:
        super().__init__(f"unexpected ASGI message {message_type!r} in response state "
                         f"{_STATE_NAMES[state]}")


class _Exchange:
    """One request and its response: the ``receive`` and ``send`` the application gets."""

    __slots__ = ("body_done", "conn", "disconnected", "response", "scope", "start", "state",
                 "status", "watch_event", "watch_scope")

    def __init__(self, conn: HTTP11Connection, scope: dict[str, Any]) -> None:
        self.conn = conn
        self.scope = scope
        self.state = _REQUEST
        self.status = 0
        self.response: dict[str, Any] | None = None
        self.body_done = False
        self.disconnected = False
        self.watch_scope: trio.CancelScope | None = None
        self.watch_event: trio.Event | None = None
        self.start = time()

    # -- receive ---------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.body_done:
            if self.disconnected or self.state == _DONE:  # as Hypercorn: once the response
                await trio.lowlevel.checkpoint()         # is complete, the request is over
                return {"type": "http.disconnect"}
            return await self._wait_disconnect()
        if self.disconnected:
            await trio.lowlevel.checkpoint()
            return {"type": "http.disconnect"}
        conn = self.conn
        h11conn = conn.h11
        while True:
            try:
                event = h11conn.next_event()
            except h11.RemoteProtocolError as error:  # a broken body (bad chunk size...)
                await conn.refuse(error.error_status_hint)
                self._disconnect()
                return {"type": "http.disconnect"}
            kind = type(event)
            if kind is h11.Data:
                return self._body(event)
            if kind is h11.EndOfMessage:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            # NEED_DATA: the body has not all arrived yet.
            if conn.pending:  # a client may wait for the response head before sending more
                head = conn.pending
                conn.pending = b""
                await conn.write(head)
            if h11conn.they_are_waiting_for_100_continue:
                await conn.write(h11conn.send(h11.InformationalResponse(
                    status_code=100, headers=conn.response_headers())))
            data = await conn.read(conn.read_deadline())
            if not data:  # closed, timed out, or broken: the client is gone
                self._disconnect()
                return {"type": "http.disconnect"}
            h11conn.receive_data(data)

    def _body(self, event: Any) -> dict[str, Any]:
        """The body chunk of *event*, joined with the ones after it that h11 already has."""
        chunks = [bytes(event.data)]
        h11conn = self.conn.h11
        more = True
        while True:
            try:
                event = h11conn.next_event()
            except h11.RemoteProtocolError:
                break  # the next receive() reports it (h11 stays in its error state)
            kind = type(event)
            if kind is h11.Data:
                chunks.append(bytes(event.data))
                continue
            if kind is h11.EndOfMessage:
                self.body_done = True
                more = False
            break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return {"type": "http.request", "body": body, "more_body": more}

    async def _wait_disconnect(self) -> dict[str, Any]:
        """The body is complete: wait until the client closes the connection, or until the
        response is complete (what Hypercorn reports as a disconnect too)."""
        if self.watch_scope is not None:  # another task of the application watches already
            if self.watch_event is None:
                self.watch_event = trio.Event()
            await self.watch_event.wait()
            return {"type": "http.disconnect"}
        conn = self.conn
        if conn.pending:
            head = conn.pending
            conn.pending = b""
            await conn.write(head)
        with trio.CancelScope() as self.watch_scope:
            try:
                while True:
                    data = await conn.read(math.inf, poll_first=True)
                    if not data:
                        self._disconnect()
                        break
                    conn.pipelined += len(data)
                    conn.h11.receive_data(data)
                    if conn.pipelined > _MAX_PIPELINED:
                        # Enough of the next requests held: stop reading until this one ends.
                        await trio.sleep_forever()
            finally:
                self.watch_scope = None
        return {"type": "http.disconnect"}

    def _over(self) -> None:
        """The response is complete: watchers of the connection get ``http.disconnect``."""
        if self.watch_scope is not None:
            self.watch_scope.cancel()
        if self.watch_event is not None:
            self.watch_event.set()

    def _disconnect(self) -> None:
        self.disconnected = True
        self.conn.keep_alive = False
        if self.watch_event is not None:
            self.watch_event.set()

    # -- send ------------------------------------------------------------------------------

    async def send(self, message: Any) -> None:
        kind = message["type"]
        state = self.state
        if state == _RESPONSE and kind == "http.response.body":
            await self._send_body(message)
        elif state == _REQUEST and kind == "http.response.start":
            if self._start(message) or self.disconnected:
                await trio.lowlevel.checkpoint_if_cancelled()
            else:  # a streamed response (an event stream...): the head goes now
                conn = self.conn
                head = conn.pending
                conn.pending = b""
                if not await conn.write(head):
                    self._disconnect()
        else:
            raise UnexpectedMessageError(state, kind)

    def _start(self, message: Any) -> bool:
        """Prepare the response head; True if it may wait for the first body message."""
        conn = self.conn
        status = int(message["status"])
        headers = build_and_validate_headers(message.get("headers", ()))
        # With a Content-Length the body is sure to follow: the head waits for it (one
        # system call for both). Without, the body may be far off (an event stream).
        sized = any(name.lower() == b"content-length" for name, _ in headers)
        headers += conn.response_headers()
        if conn.requests >= conn.config.keep_alive_max_requests:
            headers.append((b"connection", b"close"))
        # Validated (h11 refuses bad header values) and kept until the first body message.
        conn.pending = conn.h11.send(h11.Response(status_code=status, headers=headers))
        self.status = status
        self.response = message
        self.state = _RESPONSE
        return sized

    async def _send_body(self, message: Any) -> None:
        conn = self.conn
        h11conn = conn.h11
        body = message.get("body", b"")
        more = message.get("more_body", False)
        out = conn.pending
        conn.pending = b""
        if body and not (self.scope["method"] == "HEAD" or self.status in (204, 304)
                         or self.status < 200):
            out += h11conn.send(h11.Data(data=bytes(body)))
        if not more:
            out += h11conn.send(h11.EndOfMessage())
            self.state = _DONE
            if self.watch_scope is not None or self.watch_event is not None:
                self._over()
        if self.disconnected:
            await trio.lowlevel.checkpoint()
        elif out:
            if more:
                await trio.lowlevel.checkpoint()  # a streaming application yields per chunk
            if not await conn.write(out):
                self._disconnect()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        if not more:
            await conn.access(self.scope, self.response, time() - self.start)


async def receive_some(stream: trio.abc.Stream, sock: Any) -> bytes:
    """The next bytes from *stream*; through the file descriptor of *sock* (a plain TCP
    stream's socket, else None): one wait for readability and one ``read``, without the
    stream wrapper's extra checkpoints."""
    if sock is None:
        return bytes(await stream.receive_some(_MAX_RECV))
    while True:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, _MAX_RECV)
        except BlockingIOError:
            continue


async def write_socket(sock: Any, data: bytes) -> None:
    """Write *data* whole to *sock*'s file descriptor, waiting when the kernel's buffer is
    full (the backpressure of a slow client)."""
    view = memoryview(data)
    while view:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        view = view[sent:]


class HTTP11Connection:
    """Serve HTTP/1.1 requests on one connection of the trionet worker (see the module notes)."""

    def __init__(self, connection: _Connection, client: Any, server: Any) -> None:
        config = connection.config
        self.connection = connection
        self.config: Config = config
        self.app = connection.app
        self.context = connection.context
        self.stream = connection.stream
        self.sock: Any = connection.sock
        self.client = client
        self.server = server
        self.scheme = "https" if isinstance(connection.stream, trio.SSLStream) else "http"
        self.h11 = h11.Connection(h11.SERVER,
                                  max_incomplete_event_size=config.h11_max_incomplete_size)
        self.requests = 0
        self.pending = b""  # a response head waiting for the first body message
        self.pipelined = 0
        self.keep_alive = True
        self.broken = False
        self.writing = False
        self.write_done = trio.lowlevel.ParkingLot()
        self.idle = True
        self.idle_deadline = math.inf
        self.read_scope: trio.CancelScope | None = None
        self.read_timeout: float | None = config.read_timeout or None
        static = [header for header in config.response_headers("h11") if header[0] != b"date"]
        self.static_headers = static
        self.date_header = bool(config.include_date_header)
        self.log = config.log
        self.access_log = getattr(self.log, "access_logger", True) is not None

    # -- the connection --------------------------------------------------------------------

    async def run(self) -> bytes | None:
        """Serve requests until the connection ends (None), or until a request asks to switch
        protocols: then return the bytes to replay into Hypercorn's protocol."""
        h11conn = self.h11
        while True:
            request = await self._next_request()
            if request is None:
                break
            headers = list(request.headers)
            verdict = self._inspect(request, headers)
            if verdict is _SWITCH:
                return self._replay(request)
            if verdict is _SMUGGLING:
                await self.refuse(400)
                break
            await self._serve(request, headers)
            if self.pending or self.broken or not self.keep_alive:
                break
            if h11conn.our_state is not h11.DONE or not self._body_consumed():
                break
            if self.context.terminated.is_set():
                break
            h11conn.start_next_cycle()
            self.pipelined = 0
        await self._linger()
        return None

    async def _next_request(self) -> Any:
        h11conn = self.h11
        self.idle = True
        self.idle_deadline = (-math.inf if self.context.terminated.is_set()
                              else trio.current_time() + self.config.keep_alive_timeout)
        try:
            while True:
                try:
                    event = h11conn.next_event()
                except h11.RemoteProtocolError as error:  # a bad or too large head
                    await self.refuse(error.error_status_hint)
                    return None
                if type(event) is h11.Request:
                    return event
                if event is not h11.NEED_DATA:
                    return None  # the client closed the connection
                deadline = self.idle_deadline
                if self.read_timeout:
                    deadline = min(deadline, trio.current_time() + self.read_timeout)
                if self.idle_deadline <= trio.current_time():
                    return None  # keep-alive timeout (or shutdown), even if bytes trickle in
                # A new connection's first request is often there already; a kept-alive one's
                # next request rarely is, right after the response went out.
                data = await self.read(deadline, poll_first=not self.requests)
                if data is None:
                    return None
                h11conn.receive_data(data)
        finally:
            self.idle = False

    def close_if_idle(self) -> None:
        """The server is shutting down: close the connection if it waits for a request."""
        if self.idle:
            self.idle_deadline = -math.inf
            if self.read_scope is not None:
                self.read_scope.deadline = -math.inf

    def read_deadline(self) -> float:
        read_timeout = self.read_timeout
        return trio.current_time() + read_timeout if read_timeout else math.inf

    @staticmethod
    def _inspect(request: Any, headers: list[tuple[bytes, bytes]]) -> object:
        """``_SWITCH`` for a request that asks to switch protocols (Hypercorn's protocol
        serves those), ``_SMUGGLING`` for one whose body length is ambiguous, else None."""
        if request.method == b"PRI" and request.target == b"*" and request.http_version == b"2.0":
            return _SWITCH
        length = chunked = False
        for name, _ in headers:
            if name == b"upgrade":
                return _SWITCH
            if name == b"content-length":
                length = True
            elif name == b"transfer-encoding":
                chunked = True
        # Both framings (h11 would go by Transfer-Encoding): a request smuggling attempt
        # through a proxy that goes by Content-Length; refused, as RFC 9112 6.1 allows.
        return _SMUGGLING if length and chunked else None

    def _replay(self, request: Any) -> bytes:
        """The request's head as it came (header names in their own case), and what follows."""
        lines = [b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)]
        lines += [name + b": " + value for name, value in request.headers.raw_items()]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.h11.trailing_data[0]

    def _body_consumed(self) -> bool:
        """Whether the request is read to its end; drops what of its body h11 already holds."""
        h11conn = self.h11
        while h11conn.their_state is h11.SEND_BODY:
            try:
                event = h11conn.next_event()
            except h11.RemoteProtocolError:
                return False
            if event is h11.NEED_DATA:
                return False
        return h11conn.their_state is h11.DONE

    # -- one request -----------------------------------------------------------------------

    async def _serve(self, request: Any, headers: list[tuple[bytes, bytes]]) -> None:
        config = self.config
        self.requests += 1
        context = self.context
        if context.max_requests is not None:
            await context.mark_request()
        target = request.target
        path, _, query = target.partition(b"?")
        text_path = path.decode("ascii")
        if "%" in text_path:
            text_path = unquote(text_path)
        if config.h11_pass_raw_headers:
            headers = request.headers.raw_items()
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": request.http_version.decode(),
            "asgi": dict(_ASGI),
            "method": request.method.decode("ascii").upper(),
            "scheme": self.scheme,
            "path": text_path,
            "raw_path": path,
            "query_string": query,
            "root_path": config.root_path,
            "headers": headers,
            "client": self.client,
            "server": self.server,
            "state": self.connection.state.copy(),
            "extensions": {},
        }
        exchange = _Exchange(self, scope)
        if config.server_names and not valid_server_name(config, request):
            await self._error_response(exchange, 404)
            return
        await call_app(self.app, config, scope, exchange.receive, exchange.send)
        if exchange.state == _DONE:
            return
        if exchange.state == _REQUEST and not exchange.disconnected:
            await self._error_response(exchange, 500)
            return
        # Failed or gone in the middle of the response (or the client went away first).
        self.keep_alive = False
        await self.access(scope, None, time() - exchange.start)

    async def _error_response(self, exchange: _Exchange, status: int) -> None:
        if await self.refuse(status):
            await self.access(exchange.scope, {"status": status, "headers": []},
                              time() - exchange.start)

    async def refuse(self, status: int) -> bool:
        """Answer *status* with an empty body and close (a bad request, a failed application)."""
        self.keep_alive = False
        h11conn = self.h11
        if h11conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        headers = [(b"content-length", b"0"), (b"connection", b"close")]
        headers += self.response_headers()
        try:
            data = h11conn.send(h11.Response(status_code=status, headers=headers))
            data += h11conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return False
        self.pending = b""
        return await self.write(data)

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """``Config.response_headers("h11")``, the date formatted once per second."""
        if self.date_header:
            return [(b"date", _Dates.now()), *self.static_headers]
        return list(self.static_headers)

    async def access(self, scope: Any, response: Any, request_time: float) -> None:
        if self.access_log:
            await self.log.access(scope, response, request_time)

    # -- I/O -------------------------------------------------------------------------------

    async def read(self, deadline: float, *, poll_first: bool = False) -> bytes | None:
        """The next bytes from the client; b"" at its end; None on a timeout, an error, or a
        shutdown that closes idle connections.

        With *poll_first*, bytes the kernel already has are taken without waiting for the
        socket; the task still yields (to be fair to other connections), shielded, so that a
        cancellation cannot lose what was read.
        """
        sock = self.sock
        try:
            if poll_first and sock is not None:
                try:
                    data = os.read(sock.fileno(), _MAX_RECV)
                except BlockingIOError:
                    pass
                else:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
            if deadline == math.inf:
                return await receive_some(self.stream, self.sock)
            with trio.CancelScope(deadline=deadline) as scope:
                self.read_scope = scope
                try:
                    return await receive_some(self.stream, self.sock)
                finally:
                    self.read_scope = None
            return None  # the deadline passed
        except _READ_ERRORS:
            return None

    async def write(self, data: bytes) -> bool:
        """Write *data* whole and in order; False if the connection is broken.

        Writers take turns. A write the kernel takes at once does not yield; one that waits
        for the socket and is cancelled leaves a partial response, so the connection is
        marked broken (it closes after the request).
        """
        while self.writing:
            await self.write_done.park()
        if self.broken:
            return False
        sock = self.sock
        if sock is not None:
            try:
                sent = os.write(sock.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.broken = True
                return False
            if sent == len(data):
                return True
            data = data[sent:]
        self.writing = True
        try:
            if sock is None:
                await self.stream.send_all(data)
            else:
                await write_socket(sock, data)
        except _READ_ERRORS:
            self.broken = True
            return False
        except BaseException:
            self.broken = True
            raise
        finally:
            self.writing = False
            self.write_done.unpark_all()
        return True

    async def _linger(self) -> None:
        """Before closing with request bytes unread, read and drop them for a while."""
        h11conn = self.h11
        if self.broken or self.sock is None:
            return  # (TLS: the close_notify exchange ends the connection cleanly)
        if h11conn.their_state not in (h11.SEND_BODY, h11.ERROR) and not h11conn.trailing_data[0]:
            return
        import socket

        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        dropped = 0
        with trio.move_on_after(_LINGER_TIME):
            while dropped < _LINGER_BYTES:
                data = await self.read(math.inf)
                if not data:
                    break
                dropped += len(data)
