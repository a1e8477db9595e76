"""WebSockets: the server-side :class:`WebSocket` and the client side.

Server side, a handler registered with ``@router.websocket(path)`` gets a :class:`WebSocket`
and calls ``accept()``, ``receive()``/``send()`` and ``close()``. Messages larger than the
route's ``max_message_size`` close the connection with code 1009. The queue between the
server's socket reader and ``receive()`` is bounded (Hypercorn's ``max_app_queue_size``, or the
test client's ``queue_size``), so a slow handler applies backpressure to the TCP connection
instead of buffering without limit.

Client side, :func:`connect_websocket` opens a connection with trio-websocket and yields a
:class:`WebSocketClient`; the in-process :class:`~trionet.asgi.TestClient` yields an object
with the same interface, so a test can run against either.
"""

from __future__ import annotations

import json
import logging
import ssl
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from ..codecs import decode_json
from ..errors import ASGIError
from ._datastructures import _to_raw
from ._errors import HTTPException, WebSocketDisconnect, WebSocketRejected
from ._requests import HTTPConnection
from ._types import Message, Receive, Scope, Send
from ._util import collapse_single_error

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "WebSocket",
    "WebSocketClient",
    "connect_websocket",
    "run_websocket_endpoint",
]

logger = logging.getLogger("trionet.asgi")

#: Default limit on one websocket message (bytes, or characters' UTF-8 size for text).
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024

#: How long leaving :func:`connect_websocket` waits for the server's close frame.
_CLOSE_TIMEOUT = 10.0

# Close codes (RFC 6455 §7.4.1).
_UNSUPPORTED_DATA = 1003
_INVALID_PAYLOAD = 1007
_MESSAGE_TOO_BIG = 1009
_INTERNAL_ERROR = 1011


class _UntilDisconnect(AsyncIterator[str | bytes]):
    # A plain iterator rather than an async generator: breaking out of the loop needs no
    # aclose(), and trio does not warn about a half-consumed generator.
    def __init__(self, receive: Callable[[], Awaitable[str | bytes]]) -> None:
        self._receive = receive

    async def __anext__(self) -> str | bytes:
        try:
            return await self._receive()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None


def _size(data: str | bytes, limit: int) -> int:
    # A str of n characters encodes to 1..4n bytes: only encode when the bound is ambiguous.
    if isinstance(data, bytes) or len(data) * 4 <= limit or len(data) > limit:
        return len(data)
    return len(data.encode("utf-8"))


class WebSocket(HTTPConnection):
    """A server-side websocket connection (what a ``@router.websocket`` handler receives).

    Args:
        scope: the ASGI ``websocket`` scope.
        receive: the ASGI receive callable.
        send: the ASGI send callable.
        max_message_size: the largest message :meth:`receive` accepts; a bigger one closes
            the websocket with 1009 and raises :class:`WebSocketDisconnect`.

    Attributes:
        accepted: ``accept()`` has been called.
        closed: the websocket is closed (by either side).
        close_code: the close code once closed.
        max_message_size: see above.
    """

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if scope["type"] != "websocket":
            raise ASGIError(
                f"WebSocket needs a websocket scope, got {scope['type']!r}", fault="local"
            )
        self.scope = scope
        self._receive = receive
        self._send = send
        self.max_message_size = max_message_size
        self._connect_pending = True
        self.accepted = False
        self.closed = False
        self.close_code: int | None = None

    def for_scope(self, scope: Scope) -> WebSocket:
        """A fresh ``WebSocket`` on the same connection with another scope (for mounts)."""
        return WebSocket(scope, self._receive, self._send, max_message_size=self.max_message_size)

    @property
    def asgi_receive(self) -> Receive:
        """The underlying ASGI receive callable."""
        return self._receive

    @property
    def asgi_send(self) -> Send:
        """The underlying ASGI send callable."""
        return self._send

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        offered: list[str] = self.scope.get("subprotocols", [])
        return offered

    async def _consume_connect(self) -> None:
        if not self._connect_pending:
            return
        self._connect_pending = False
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self._mark_closed(message.get("code", 1005))
            raise WebSocketDisconnect(self.close_code or 1005, message.get("reason"))
        if message["type"] != "websocket.connect":
            raise ASGIError(f"expected websocket.connect, got {message['type']!r}")

    def _mark_closed(self, code: int) -> None:
        self.closed = True
        self.close_code = code

    async def accept(
        self, subprotocol: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Complete the handshake.

        Args:
            subprotocol: the subprotocol to select (one of :attr:`subprotocols`).
            headers: extra handshake response headers.

        Raises:
            ASGIError: the websocket was already accepted or closed.
            WebSocketDisconnect: the client went away before the handshake completed.
        """
        if self.accepted or self.closed:
            raise ASGIError("the websocket is already accepted or closed", fault="local")
        await self._consume_connect()
        message: Message = {"type": "websocket.accept"}
        if subprotocol is not None:
            message["subprotocol"] = subprotocol
        if headers:
            message["headers"] = _to_raw(headers)
        await self._send(message)
        self.accepted = True

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for a text frame, ``bytes`` for a binary one.

        Raises:
            WebSocketDisconnect: the websocket is closed (with the close code), or the
                message was larger than :attr:`max_message_size` (code 1009, after closing).
        """
        if not self.accepted:
            raise ASGIError("accept() the websocket before receiving", fault="local")
        if self.closed:
            raise WebSocketDisconnect(self.close_code or 1000)
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            data: str | bytes = text if text is not None else (message.get("bytes") or b"")
            limit = self.max_message_size
            if _size(data, limit) > limit:
                reason = f"message larger than {limit} bytes"
                await self.close(_MESSAGE_TOO_BIG, reason)
                raise WebSocketDisconnect(_MESSAGE_TOO_BIG, reason)
            return data
        if kind == "websocket.disconnect":
            self._mark_closed(message.get("code", 1005))
            raise WebSocketDisconnect(self.close_code or 1005, message.get("reason"))
        raise ASGIError(f"unexpected ASGI message {kind!r} on a websocket")

    async def receive_text(self) -> str:
        """The next message, which must be text (else the websocket is closed with 1003)."""
        data = await self.receive()
        if not isinstance(data, str):
            await self.close(_UNSUPPORTED_DATA, "expected a text message")
            raise WebSocketDisconnect(_UNSUPPORTED_DATA, "expected a text message")
        return data

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary (else the websocket is closed with 1003)."""
        data = await self.receive()
        if not isinstance(data, bytes):
            await self.close(_UNSUPPORTED_DATA, "expected a binary message")
            raise WebSocketDisconnect(_UNSUPPORTED_DATA, "expected a binary message")
        return data

    async def receive_json(self) -> Any:
        """The next message decoded as JSON (invalid JSON closes the websocket with 1007)."""
        data = await self.receive()
        try:
            return decode_json(data)
        except ValueError as exc:  # CodecError: invalid or too deeply nested
            reason = f"invalid JSON: {exc}"[:120]
            await self.close(_INVALID_PAYLOAD, reason)
            raise WebSocketDisconnect(_INVALID_PAYLOAD, reason) from None

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """``async for message in websocket``: messages until the websocket closes (then the
        loop ends quietly; :attr:`close_code` says how)."""
        return _UntilDisconnect(self.receive)

    async def send(self, data: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Raises:
            WebSocketDisconnect: the websocket is known to be closed.
        """
        if not self.accepted:
            raise ASGIError("accept() the websocket before sending", fault="local")
        if self.closed:
            raise WebSocketDisconnect(self.close_code or 1000)
        if isinstance(data, str):
            await self._send({"type": "websocket.send", "text": data})
        else:
            await self._send({"type": "websocket.send", "bytes": bytes(data)})

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        await self.send(str(data))

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        await self.send(bytes(data))

    async def send_json(self, data: Any) -> None:
        """Send ``data`` encoded as JSON in a text message."""
        await self.send(json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the websocket (before ``accept()``, this rejects the handshake with 403).

        Closing an already closed websocket does nothing.
        """
        if self.closed:
            return
        if not self.accepted:
            await self._consume_connect()
        self._mark_closed(code)
        message: Message = {"type": "websocket.close", "code": code}
        if reason:
            message["reason"] = reason
        await self._send(message)

    async def reject(
        self,
        status_code: int = 403,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Refuse the handshake with an HTTP response.

        The status and body are sent when the server supports the ``websocket.http.response``
        extension (Hypercorn and the test client do); otherwise the websocket is closed, which
        servers answer with 403.
        """
        if self.accepted:
            raise ASGIError("cannot reject an accepted websocket; close() it", fault="local")
        if self.closed:
            return
        await self._consume_connect()
        self._mark_closed(1000)
        if "websocket.http.response" not in self.scope.get("extensions", {}):
            await self._send({"type": "websocket.close", "code": 1000})
            return
        raw = _to_raw(headers) if headers else []
        raw.append((b"content-length", str(len(body)).encode("ascii")))
        await self._send(
            {"type": "websocket.http.response.start", "status": status_code, "headers": raw}
        )
        await self._send({"type": "websocket.http.response.body", "body": body})

    def __repr__(self) -> str:
        return f"<WebSocket {self.path!r} accepted={self.accepted} closed={self.closed}>"


async def run_websocket_endpoint(
    endpoint: Callable[..., Awaitable[None]], websocket: WebSocket, params: dict[str, Any]
) -> None:
    """Run a websocket handler and finish the connection properly whatever it does.

    A handler that returns without closing gets a normal close (1000), or a 403 rejection if
    it never accepted. ``WebSocketDisconnect`` ends it quietly. ``HTTPException`` before
    ``accept()`` becomes an HTTP rejection with that status. Any other exception is logged and
    closes the websocket with 1011 (or rejects it with 500).
    """
    try:
        await endpoint(websocket, **params)
    except WebSocketDisconnect:
        pass
    except HTTPException as exc:
        if not websocket.accepted:
            body = json.dumps({"error": exc.detail}).encode("utf-8")
            await websocket.reject(exc.status_code, body, {"content-type": "application/json"})
        else:
            await websocket.close(_INTERNAL_ERROR, exc.detail[:120])
    except Exception:
        logger.exception("websocket handler for %s failed", websocket.path)
        if not websocket.accepted:
            await websocket.reject(500)
        else:
            await websocket.close(_INTERNAL_ERROR, "internal error")
    if not websocket.closed:
        if websocket.accepted:
            await websocket.close(1000)
        else:
            await websocket.close()


# -- client side ------------------------------------------------------------------------------


class WebSocketClient(ABC):
    """The client end of a websocket, over the network or in-process.

    :func:`connect_websocket` (trio-websocket over TCP) and
    :meth:`TestClient.websocket_connect` (in-process) both yield one.
    """

    @property
    @abstractmethod
    def subprotocol(self) -> str | None:
        """The subprotocol the server selected, if any."""

    @abstractmethod
    async def send(self, data: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message.

        Raises:
            WebSocketDisconnect: the websocket is closed.
        """

    @abstractmethod
    async def receive(self) -> str | bytes:
        """The next message.

        Raises:
            WebSocketDisconnect: the websocket is closed; ``code`` says how.
        """

    @abstractmethod
    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the websocket (does nothing if it is already closed)."""

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        await self.send(str(data))

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        await self.send(bytes(data))

    async def send_json(self, data: Any) -> None:
        """Send ``data`` as JSON in a text message."""
        await self.send(json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    async def receive_text(self) -> str:
        """The next message, which must be text.

        Raises:
            ASGIError: a binary message arrived.
        """
        data = await self.receive()
        if not isinstance(data, str):
            raise ASGIError("expected a text message, got a binary one")
        return data

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary.

        Raises:
            ASGIError: a text message arrived.
        """
        data = await self.receive()
        if not isinstance(data, bytes):
            raise ASGIError("expected a binary message, got a text one")
        return data

    async def receive_json(self) -> Any:
        """The next message decoded as JSON.

        Raises:
            ASGIError: the message is not valid JSON.
        """
        data = await self.receive()
        try:
            return decode_json(data)
        except ValueError as exc:  # CodecError: invalid or too deeply nested
            raise ASGIError(f"invalid JSON message: {exc}") from None

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """``async for message in ws``: messages until the websocket closes."""
        return _UntilDisconnect(self.receive)


class _TrioWebSocketClient(WebSocketClient):
    def __init__(self, connection: WebSocketConnection) -> None:
        self._connection = connection

    @property
    def subprotocol(self) -> str | None:
        return self._connection.subprotocol

    @property
    def connection(self) -> WebSocketConnection:
        return self._connection

    def _disconnect(self) -> WebSocketDisconnect:
        reason = self._connection.closed
        if reason is None:  # pragma: no cover - trio-websocket always sets it when closed
            return WebSocketDisconnect(1006)
        return WebSocketDisconnect(reason.code, reason.reason)

    async def send(self, data: str | bytes) -> None:
        from trio_websocket import ConnectionClosed

        try:
            await self._connection.send_message(data)
        except ConnectionClosed:
            raise self._disconnect() from None

    async def receive(self) -> str | bytes:
        from trio_websocket import ConnectionClosed

        try:
            return await self._connection.get_message()
        except ConnectionClosed:
            raise self._disconnect() from None

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self._connection.aclose(code, reason)


def _parse_ws_url(url: str) -> tuple[str, int, str, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ASGIError(
            f"invalid websocket URL {url!r}: the scheme must be ws or wss", fault="local"
        )
    if not parts.hostname:
        raise ASGIError(f"invalid websocket URL {url!r}: no host", fault="local")
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError as exc:
        raise ASGIError(f"invalid websocket URL {url!r}: {exc}", fault="local") from None
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, resource, secure


@asynccontextmanager
async def connect_websocket(
    url: str,
    *,
    subprotocols: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    message_queue_size: int = 16,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketClient]:
    """Open a websocket to ``url`` (``ws://`` or ``wss://``) with trio-websocket.

    The TCP connection and the websocket's reader task belong to this context manager: leaving
    the ``async with`` block closes the websocket (waiting at most 10 s for the server's close
    frame) and then the connection, whatever happened inside. Incoming messages wait in a
    queue of at most ``message_queue_size`` messages; when it is full the reader stops reading
    from the socket, so a slow consumer slows the server down instead of growing memory.
    Bound the connection time with ``trio.fail_after`` around the ``async with``.

    Example:
        ::

            async with connect_websocket("ws://127.0.0.1:8000/ws") as ws:
                await ws.send("hello")
                print(await ws.receive())

    Args:
        url: the websocket URL.
        subprotocols: subprotocols to offer.
        headers: extra handshake request headers.
        max_message_size: the largest message accepted from the server (a bigger one closes
            the connection with 1009).
        message_queue_size: how many received messages may wait unread.
        ssl_context: the TLS context for ``wss://`` (default: verified system defaults).

    Raises:
        WebSocketRejected: the server answered the handshake with an HTTP error.
        ASGIError: the URL is invalid, or the connection or handshake failed (the cause is
            chained).
    """
    import trio_websocket

    host, port, resource, secure = _parse_ws_url(url)
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    try:
        tcp = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise ASGIError(f"cannot open a websocket to {url}: {exc}") from exc
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
    if secure:
        context = ssl_context if ssl_context is not None else ssl.create_default_context()
        stream = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
    # trio-websocket leaves the TCP stream open when the server closes first; owning the
    # stream here guarantees it is closed.
    async with stream:
        connected = False
        try:
            with collapse_single_error():
                async with trio.open_nursery() as nursery:
                    host_header = host if port == (443 if secure else 80) else f"{host}:{port}"
                    connection = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        host_header,
                        resource,
                        subprotocols=list(subprotocols) or None,
                        extra_headers=extra or None,
                        message_queue_size=message_queue_size,
                        max_message_size=max_message_size,
                    )
                    connected = True
                    try:
                        yield _TrioWebSocketClient(connection)
                    finally:
                        try:
                            # A normal close handshake, unless we are being cancelled.
                            with trio.move_on_after(_CLOSE_TIMEOUT):
                                await connection.aclose()
                        finally:
                            # Handshake done or abandoned: stop the reader task.
                            nursery.cancel_scope.cancel()
        except trio_websocket.ConnectionRejected as exc:
            if connected:
                raise
            raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in exc.headers]
            raise WebSocketRejected(exc.status_code, raw_headers, exc.body or b"") from None
        except (trio_websocket.HandshakeError, trio.BrokenResourceError, ssl.SSLError) as exc:
            if connected:
                raise
            cause = exc.__cause__ or exc
            raise ASGIError(f"cannot open a websocket to {url}: {cause!r}") from exc
