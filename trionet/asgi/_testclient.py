"""An in-process test client: drives an ASGI application over ASGI on trio, without sockets.

``async with TestClient(app) as client`` runs the application's lifespan startup (and its
shutdown on exit); each request runs the application in a task of a nursery owned by the
call, exactly as a server would, with the body fed through ``receive`` and the response
collected from ``send``. Websockets use bounded queues in both directions.
"""

from __future__ import annotations

import json as _json
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

import trio

from ..errors import ASGIError
from ._datastructures import Headers, MutableHeaders
from ._errors import WebSocketDisconnect, WebSocketRejected
from ._types import ASGIApp, Message, Scope
from ._util import collapse_single_error
from ._websockets import WebSocketClient

__all__ = ["TestClient", "TestResponse"]

_UNSET: Any = object()
_CHUNK = 64 * 1024

FileSpec = bytes | tuple[str, bytes] | tuple[str, bytes, str]


class TestResponse:
    """A response received by :class:`TestClient`.

    Attributes:
        status_code: the HTTP status.
        headers: the response headers.
        content: the body (for :meth:`TestClient.stream`, filled in as it is read).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, status_code: int, headers: Headers) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = b""
        self._exchange: _HTTPExchange | None = None

    @property
    def reason_phrase(self) -> str:
        """The standard reason phrase of :attr:`status_code`."""
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    @property
    def text(self) -> str:
        """The body decoded with the ``charset`` of ``Content-Type`` (default UTF-8)."""
        from ._datastructures import parse_options_header

        _, params = parse_options_header(self.headers.get("content-type", ""))
        return self.content.decode(params.get("charset", "utf-8"))

    def json(self) -> Any:
        """The body decoded as JSON."""
        return _json.loads(self.content)

    @property
    def is_success(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status_code < 300

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Iterate over the body chunk by chunk as the application sends it.

        For a response from :meth:`TestClient.stream` the chunks arrive live (and are also
        appended to :attr:`content`); otherwise the complete content is one chunk.
        """
        return _BodyChunks(self)

    def __repr__(self) -> str:
        return f"<TestResponse [{self.status_code}]>"


class _BodyChunks(AsyncIterator[bytes]):
    def __init__(self, response: TestResponse) -> None:
        self._response = response
        self._replay = response.content if response._exchange is None else None

    async def __anext__(self) -> bytes:
        if self._replay is not None:
            data, self._replay = self._replay, b""
            if data:
                return data
            raise StopAsyncIteration
        exchange = self._response._exchange
        if exchange is None:
            raise StopAsyncIteration
        chunk = await exchange.next_chunk()
        if chunk is None:
            self._response._exchange = None
            raise StopAsyncIteration
        self._response.content += chunk
        return chunk


class _HTTPExchange:
    """One request/response between the client and the application task."""

    def __init__(
        self, app: ASGIApp, scope: Scope, body: bytes, raise_app_exceptions: bool
    ) -> None:
        self.app = app
        self.scope = scope
        self.raise_app_exceptions = raise_app_exceptions
        # An empty body is still one http.request event.
        chunks = [body[i : i + _CHUNK] for i in range(0, len(body), _CHUNK)]
        self.body_chunks = deque(chunks or [b""])
        self.response_tx, self.response_rx = trio.open_memory_channel[Message](8)
        self.disconnected = trio.Event()
        self.app_error: Exception | None = None
        self.started = False
        self.complete = False
        # Like a server: no body for HEAD, 1xx, 204 and 304, whatever the application sends.
        self.suppress_body = False

    async def receive(self) -> Message:
        if self.body_chunks:
            chunk = self.body_chunks.popleft()
            return {"type": "http.request", "body": chunk, "more_body": bool(self.body_chunks)}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.disconnected.is_set():
            await trio.lowlevel.checkpoint()
            return  # like a server: sends after the client went away are dropped
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.response_tx.send(message)

    async def run_app(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception as exc:
            self.app_error = exc
        finally:
            self.response_tx.close()

    def disconnect(self) -> None:
        self.disconnected.set()
        self.response_rx.close()

    def _failure(self, what: str) -> BaseException:
        if self.app_error is not None and self.raise_app_exceptions:
            return self.app_error
        error = ASGIError(what, fault="local")
        error.__cause__ = self.app_error
        return error

    async def read_head(self) -> TestResponse:
        async for message in self.response_rx:
            if message["type"] == "http.response.start":
                self.started = True
                status = int(message["status"])
                self.suppress_body = (
                    self.scope.get("method") == "HEAD" or status < 200 or status in (204, 304)
                )
                response = TestResponse(status, Headers(message.get("headers", [])))
                response._exchange = self
                return response
            raise ASGIError(f"the application sent {message['type']!r} before the response start")
        if self.app_error is not None and not self.raise_app_exceptions:
            # What a server does when the application fails before responding.
            body = b"Internal Server Error"
            return _complete(500, [("content-length", str(len(body)))], body)
        raise self._failure("the application returned without sending a response")

    async def next_chunk(self) -> bytes | None:
        """The next non-empty body chunk, or ``None`` at the end of the body."""
        if self.complete:
            return None
        async for message in self.response_rx:
            if message["type"] != "http.response.body":
                raise ASGIError(f"unexpected ASGI message {message['type']!r} in a response body")
            chunk: bytes = b"" if self.suppress_body else message.get("body", b"")
            if not message.get("more_body", False):
                self.complete = True
                self.disconnected.set()
                return chunk or None
            if chunk:
                return chunk
        raise self._failure(
            "the application stopped in the middle of the response (a server would abort "
            "the connection)"
        )


def _complete(status: int, headers: list[tuple[str, str]], body: bytes) -> TestResponse:
    response = TestResponse(status, Headers(headers))
    response.content = body
    return response


class _WebSocketSession(WebSocketClient):
    """The client end of an in-process websocket."""

    def __init__(
        self, app: ASGIApp, scope: Scope, queue_size: int, raise_app_exceptions: bool
    ) -> None:
        self.app = app
        self.scope = scope
        self.raise_app_exceptions = raise_app_exceptions
        self.to_app_tx, self.to_app_rx = trio.open_memory_channel[Message](queue_size)
        self.from_app_tx, self.from_app_rx = trio.open_memory_channel[Message](queue_size)
        self.app_error: Exception | None = None
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._disconnect_code = 1000
        self._subprotocol: str | None = None
        self.accept_headers = Headers()

    @property
    def subprotocol(self) -> str | None:
        return self._subprotocol

    async def app_receive(self) -> Message:
        try:
            return await self.to_app_rx.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return {
                "type": "websocket.disconnect",
                "code": self._disconnect_code,
                "reason": self.close_reason,
            }

    async def app_send(self, message: Message) -> None:
        # If the client is gone, drop the message, as a server does.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.from_app_tx.send(message)

    async def run_app(self) -> None:
        try:
            await self.app(self.scope, self.app_receive, self.app_send)
        except Exception as exc:
            self.app_error = exc
        finally:
            self.from_app_tx.close()
            self.to_app_rx.close()

    async def handshake(self) -> None:
        await self.to_app_tx.send({"type": "websocket.connect"})
        try:
            message = await self.from_app_rx.receive()
        except trio.EndOfChannel:
            if self.app_error is not None and self.raise_app_exceptions:
                raise self.app_error from None
            raise WebSocketRejected(500) from self.app_error
        kind = message["type"]
        if kind == "websocket.accept":
            self._subprotocol = message.get("subprotocol")
            self.accept_headers = Headers(message.get("headers", []))
            return
        self.closed = True
        if kind == "websocket.close":
            raise WebSocketRejected(403)
        if kind == "websocket.http.response.start":
            body = b""
            async for part in self.from_app_rx:
                body += part.get("body", b"")
                if not part.get("more_body", False):
                    break
            headers = Headers(message.get("headers", [])).multi_items()
            raise WebSocketRejected(int(message["status"]), headers, body)
        raise ASGIError(f"unexpected ASGI message {kind!r} during a websocket handshake")

    def _ended(self) -> BaseException:
        self.closed = True
        if self.app_error is not None:
            if self.raise_app_exceptions:
                return self.app_error
            self.close_code = 1011
        else:
            self.close_code = self.close_code or 1006
        return WebSocketDisconnect(self.close_code)

    async def send(self, data: str | bytes) -> None:
        if self.closed:
            raise WebSocketDisconnect(self.close_code or 1000, self.close_reason)
        if isinstance(data, str):
            message: Message = {"type": "websocket.receive", "text": data}
        else:
            message = {"type": "websocket.receive", "bytes": bytes(data)}
        try:
            await self.to_app_tx.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._ended() from None

    async def receive(self) -> str | bytes:
        if self.closed:
            raise WebSocketDisconnect(self.close_code or 1000, self.close_reason)
        try:
            message = await self.from_app_rx.receive()
        except trio.EndOfChannel:
            raise self._ended() from None
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        if kind == "websocket.close":
            # Complete the closing handshake: the application then sees websocket.disconnect.
            self.closed = True
            self.close_code = int(message.get("code", 1000))
            self.close_reason = message.get("reason") or ""
            self._disconnect_code = self.close_code
            self.to_app_tx.close()
            raise WebSocketDisconnect(self.close_code, self.close_reason)
        raise ASGIError(f"unexpected ASGI message {kind!r} on a websocket")

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason or ""
        self._disconnect_code = code
        self.to_app_tx.close()

    def abort(self) -> None:
        """Drop the connection without a close frame (the application sees code 1006)."""
        self._disconnect_code = 1006
        self.closed = True
        self.close_code = 1006
        self.to_app_tx.close()
        self.from_app_rx.close()


class _Lifespan:
    """Runs an application's lifespan scope in a task of the client's nursery."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.to_app_tx, self.to_app_rx = trio.open_memory_channel[Message](1)
        self.events_tx, self.events_rx = trio.open_memory_channel[Message](math.inf)
        self.app_error: Exception | None = None

    async def _send(self, message: Message) -> None:
        await self.events_tx.send(message)

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state
        try:
            await self.app(scope, self.to_app_rx.receive, self._send)
        except Exception as exc:
            self.app_error = exc
        finally:
            self.events_tx.close()

    async def _exchange(self, stage: str) -> None:
        await self.to_app_tx.send({"type": f"lifespan.{stage}"})
        try:
            message = await self.events_rx.receive()
        except trio.EndOfChannel:
            raise ASGIError(
                f"the application's lifespan ended without answering lifespan.{stage}",
                fault="local",
            ) from self.app_error
        if message["type"] == f"lifespan.{stage}.complete":
            return
        if message["type"] == f"lifespan.{stage}.failed":
            raise ASGIError(
                f"application {stage} failed: {message.get('message', '')}", fault="local"
            )
        raise ASGIError(f"unexpected lifespan message {message['type']!r}", fault="local")

    async def startup(self) -> None:
        await self._exchange("startup")

    async def shutdown(self) -> None:
        await self._exchange("shutdown")


class TestClient:
    """Drive an ASGI application in-process, for pytest-trio tests (no sockets, no server).

    Example:
        ::

            async def test_hello():
                async with TestClient(app) as client:
                    response = await client.get("/hello", params={"name": "trio"})
                    assert response.status_code == 200
                    async with client.websocket_connect("/ws") as ws:
                        await ws.send("ping")
                        assert await ws.receive() == "ping"

    ``async with`` runs the lifespan (startup on entry, shutdown on exit, both required to
    succeed); a client used without ``async with`` sends requests without a lifespan.

    Args:
        app: the ASGI application.
        base_url: scheme and host the requests appear to come to.
        lifespan: run the lifespan scope on ``async with``.
        raise_app_exceptions: re-raise an exception the application raised, in the test
            (default). When false, an exception before the response starts gives a 500
            response, and one after it started raises :class:`~trionet.errors.ASGIError`.
        headers: headers sent with every request.
        cookies: initial cookies; ``Set-Cookie`` responses update :attr:`cookies`.
        client: the ``(host, port)`` the application sees as the client.
        websocket_queue_size: capacity of each direction of a websocket's message queue.

    Attributes:
        cookies: the cookie jar (name to value), sent with every request.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: ASGIApp,
        base_url: str = "http://testserver",
        *,
        lifespan: bool = True,
        raise_app_exceptions: bool = True,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        client: tuple[str, int] = ("127.0.0.1", 50000),
        websocket_queue_size: int = 16,
    ) -> None:
        self.app = app
        self.base_url = base_url.rstrip("/")
        self.lifespan = lifespan
        self.raise_app_exceptions = raise_app_exceptions
        self.headers = dict(headers or {})
        self.cookies: dict[str, str] = dict(cookies or {})
        self.client = client
        self.websocket_queue_size = websocket_queue_size
        self._state: dict[str, Any] = {}
        self._manager: Any = None

    # -- lifespan ---------------------------------------------------------------------------

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        with collapse_single_error():
            async with trio.open_nursery() as nursery:
                lifespan = _Lifespan(self.app, self._state)
                nursery.start_soon(lifespan.run)
                try:
                    await lifespan.startup()
                    yield
                except BaseException:
                    nursery.cancel_scope.cancel()
                    raise
                await lifespan.shutdown()

    async def __aenter__(self) -> TestClient:
        if self._manager is not None:
            raise ASGIError("this TestClient is already entered", fault="local")
        if self.lifespan:
            manager = self._running()
            await manager.__aenter__()
            self._manager = manager
        else:
            self._manager = False
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        manager, self._manager = self._manager, None
        if manager:
            return bool(await manager.__aexit__(*exc_info))
        return None

    # -- HTTP -------------------------------------------------------------------------------

    def _build(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
        headers: Mapping[str, str] | None,
        cookies: Mapping[str, str] | None,
        content: bytes | str | None,
        json: Any,
        data: Mapping[str, Any] | None,
        files: Mapping[str, FileSpec] | None,
        websocket: bool = False,
    ) -> tuple[Scope, bytes]:
        full = urlsplit(urljoin(self.base_url + "/", url.lstrip("/")) if url else self.base_url)
        query = full.query
        if params:
            pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
            extra = urlencode(pairs, doseq=True)
            query = f"{query}&{extra}" if query else extra
        all_headers = MutableHeaders([("host", full.netloc), ("user-agent", "trionet-testclient")])
        all_headers.update(self.headers)
        body = b""
        if content is not None:
            body = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        elif json is not _UNSET:
            body = _json.dumps(json).encode("utf-8")
            all_headers["content-type"] = "application/json"
        elif files is not None:
            body, content_type = _encode_multipart(data or {}, files)
            all_headers["content-type"] = content_type
        elif data is not None:
            body = urlencode(list(data.items()), doseq=True).encode("utf-8")
            all_headers["content-type"] = "application/x-www-form-urlencoded"
        if body or method in ("POST", "PUT", "PATCH"):
            all_headers["content-length"] = str(len(body))
        jar = {**self.cookies, **(cookies or {})}
        if jar:
            all_headers["cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        if headers:
            all_headers.update(headers)
        path = full.path or "/"
        scope: Scope = {
            "type": "websocket" if websocket else "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": _ws_scheme(full.scheme) if websocket else full.scheme,
            "path": unquote(path),
            "raw_path": quote(unquote(path)).encode("ascii"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": all_headers.raw,
            "client": self.client,
            "server": (full.hostname or "testserver", full.port or _default_port(full.scheme)),
            "state": dict(self._state),
            "extensions": {},
        }
        if websocket:
            scope["subprotocols"] = []
            scope["extensions"] = {"websocket.http.response": {}}
        else:
            scope["method"] = method.upper()
        return scope, body

    def _store_cookies(self, headers: Headers) -> None:
        for value in headers.getlist("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value)
            except CookieError:
                continue
            for name, morsel in jar.items():
                if morsel["max-age"] in ("0", "-1"):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        json: Any = _UNSET,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, FileSpec] | None = None,
    ) -> TestResponse:
        """Send a request and return the complete response.

        Args:
            method: the HTTP method.
            url: a path (``/users/1?x=2``) or an absolute URL.
            params: query parameters to add.
            headers: request headers (override the client's).
            cookies: cookies for this request only (on top of :attr:`cookies`).
            content: a raw body.
            json: a value to send as a JSON body.
            data: form fields (urlencoded, or multipart together with ``files``).
            files: file fields for a multipart body: ``name -> content`` or
                ``name -> (filename, content[, content_type])``.
        """
        scope, body = self._build(
            method, url, params=params, headers=headers, cookies=cookies, content=content,
            json=json, data=data, files=files,
        )
        exchange = _HTTPExchange(self.app, scope, body, self.raise_app_exceptions)
        with collapse_single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(exchange.run_app)
                try:
                    response = await exchange.read_head()
                    async for _ in response.aiter_bytes():
                        pass
                finally:
                    exchange.disconnect()
        if exchange.app_error is not None and self.raise_app_exceptions:
            raise exchange.app_error
        self._store_cookies(response.headers)
        return response

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        content: bytes | str | None = None,
        json: Any = _UNSET,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, FileSpec] | None = None,
    ) -> AsyncIterator[TestResponse]:
        """Send a request and yield the response as soon as its headers arrive.

        Read the body with ``async for chunk in response.aiter_bytes()``. Leaving the block
        before the end disconnects the client, as a browser closing the tab would.
        """
        scope, body = self._build(
            method, url, params=params, headers=headers, cookies=cookies, content=content,
            json=json, data=data, files=files,
        )
        exchange = _HTTPExchange(self.app, scope, body, self.raise_app_exceptions)
        with collapse_single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(exchange.run_app)
                try:
                    response = await exchange.read_head()
                    self._store_cookies(response.headers)
                    yield response
                finally:
                    exchange.disconnect()
        if exchange.app_error is not None and self.raise_app_exceptions:
            raise exchange.app_error

    async def get(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("GET", url, ...)``."""
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("HEAD", url, ...)``."""
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("OPTIONS", url, ...)``."""
        return await self.request("OPTIONS", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("POST", url, ...)``."""
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("PUT", url, ...)``."""
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("PATCH", url, ...)``."""
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> TestResponse:
        """``request("DELETE", url, ...)``."""
        return await self.request("DELETE", url, **kwargs)

    # -- websockets -------------------------------------------------------------------------

    @asynccontextmanager
    async def websocket_connect(
        self,
        url: str,
        *,
        subprotocols: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[WebSocketClient]:
        """Open an in-process websocket to the application.

        Yields the same :class:`WebSocketClient` interface as :func:`connect_websocket`.
        Leaving the block closes the websocket normally (code 1000).

        Raises:
            WebSocketRejected: the application refused the handshake.
        """
        scope, _ = self._build(
            "GET", url, params=None, headers=headers, cookies=None, content=None,
            json=_UNSET, data=None, files=None, websocket=True,
        )
        scope["subprotocols"] = list(subprotocols)
        session = _WebSocketSession(
            self.app, scope, self.websocket_queue_size, self.raise_app_exceptions
        )
        with collapse_single_error():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.run_app)
                await session.handshake()
                try:
                    yield session
                finally:
                    if not session.closed:
                        session.closed = True
                        session.close_code = 1000
                        session.to_app_tx.close()
                    session.from_app_rx.close()
        if session.app_error is not None and self.raise_app_exceptions:
            raise session.app_error


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


def _ws_scheme(scheme: str) -> str:
    return "wss" if scheme in ("https", "wss") else "ws"


def _encode_multipart(
    data: Mapping[str, Any], files: Mapping[str, FileSpec]
) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in data.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
                + str(item).encode("utf-8")
                + b"\r\n"
            )
    for name, spec in files.items():
        if isinstance(spec, bytes):
            filename, content, content_type = name, spec, "application/octet-stream"
        elif len(spec) == 2:
            filename, content = spec[0], spec[1]
            content_type = "application/octet-stream"
        else:
            filename, content, content_type = spec[0], spec[1], spec[2]
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        parts.append(head.encode("utf-8") + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
