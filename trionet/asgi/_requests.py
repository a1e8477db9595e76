"""The request side: :class:`HTTPConnection` (shared with websockets) and :class:`Request`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from ..codecs import decode_json
from ..errors import ASGIError, CodecError
from ._datastructures import (
    URL,
    Address,
    FormData,
    Headers,
    QueryParams,
    State,
    parse_cookie_header,
    parse_options_header,
)
from ._errors import ClientDisconnect, HTTPException
from ._multipart import parse_multipart
from ._types import Message, Receive, RouteNamer, Scope

if TYPE_CHECKING:
    from ._auth import AuthCredentials, BaseUser

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "HTTPConnection",
    "Request",
]

#: Default limit on a request body read through ``body()``/``json()``/``form()``/``stream()``.
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
#: Scope key through which an application passes its body limit to routers and requests.
MAX_BODY_SIZE_KEY = "trionet.max_body_size"
#: Scope key holding ``(router, root_path)`` of the outermost router, for ``url_for``.
ROUTER_KEY = "trionet.router"


async def _no_receive() -> Message:
    raise ASGIError("this request was built without a receive callable", fault="local")


def _headers_from_scope(raw: list[tuple[bytes, bytes]]) -> Headers:
    # ASGI servers already give lower-case byte names: wrap the list without copying.
    headers = Headers.__new__(Headers)
    headers._raw = raw
    return headers


class HTTPConnection:
    """What HTTP requests and websocket connections have in common: the scope's metadata.

    Args:
        scope: the ASGI ``http`` or ``websocket`` scope.
    """

    # Lazily computed views of the scope (plain attributes: functools.cached_property takes a
    # lock on every access in Python 3.11, which shows up per request).
    _headers: Headers | None = None
    _query_params: QueryParams | None = None
    _cookies: dict[str, str] | None = None
    _url: URL | None = None

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    @property
    def app(self) -> Any:
        """The application serving this connection (``scope["app"]``), or ``None``."""
        return self.scope.get("app")

    @property
    def path(self) -> str:
        """The decoded request path (``/users/42``), including any mount prefix."""
        path: str = self.scope["path"]
        return path

    @property
    def root_path(self) -> str:
        """The path prefix the application (or the current mount) is served under."""
        root: str = self.scope.get("root_path", "")
        return root

    @property
    def query_string(self) -> bytes:
        """The raw query string, without ``?``."""
        qs: bytes = self.scope.get("query_string", b"")
        return qs

    @property
    def query_params(self) -> QueryParams:
        """The decoded query string as a multi-value mapping."""
        if self._query_params is None:
            self._query_params = QueryParams(self.query_string)
        return self._query_params

    @property
    def path_params(self) -> dict[str, Any]:
        """Parameters captured by the route pattern, already converted (``{id:int}`` → int)."""
        params: dict[str, Any] = self.scope.get("path_params", {})
        return params

    @property
    def headers(self) -> Headers:
        """The request headers, case-insensitive and multi-valued (see :class:`Headers`)."""
        if self._headers is None:
            self._headers = _headers_from_scope(self.scope.get("headers", []))
        return self._headers

    @property
    def session(self) -> dict[str, Any]:
        """The session (a ``dict`` kept in a signed cookie by :class:`SessionMiddleware`).

        Raises:
            ASGIError: no :class:`SessionMiddleware` wraps the application.
        """
        session: dict[str, Any] = self._set_by("session", "SessionMiddleware")
        return session

    @property
    def user(self) -> BaseUser:
        """The user :class:`AuthenticationMiddleware`'s backend found
        (:class:`UnauthenticatedUser` for an anonymous client).

        Raises:
            ASGIError: no :class:`AuthenticationMiddleware` wraps the application.
        """
        user: BaseUser = self._set_by("user", "AuthenticationMiddleware")
        return user

    @property
    def auth(self) -> AuthCredentials:
        """The scopes granted to this connection (see :func:`requires`).

        Raises:
            ASGIError: no :class:`AuthenticationMiddleware` wraps the application.
        """
        auth: AuthCredentials = self._set_by("auth", "AuthenticationMiddleware")
        return auth

    def _set_by(self, key: str, middleware: str) -> Any:
        try:
            return self.scope[key]
        except KeyError:
            raise ASGIError(f"request.{key} needs {middleware}", fault="local") from None

    @property
    def client(self) -> Address | None:
        """The peer's ``(host, port)``, or ``None`` when the server does not know it."""
        client = self.scope.get("client")
        return Address(client[0], client[1]) if client else None

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies sent in the ``Cookie`` header(s)."""
        if self._cookies is None:
            cookies: dict[str, str] = {}
            for value in self.headers.getlist("cookie"):
                cookies.update(parse_cookie_header(value))
            self._cookies = cookies
        return self._cookies

    @property
    def url(self) -> URL:
        """The full URL the client requested (scheme, host, path and query)."""
        if self._url is None:
            self._url = self._build_url()
        return self._url

    def _build_url(self) -> URL:
        path = self.path
        root = self.root_path
        if root and not path.startswith(root):
            path = root + path
        url = f"{self.base_host_url}{quote(path)}"
        if self.query_string:
            url += "?" + self.query_string.decode("latin-1")
        return URL(url)

    @property
    def base_host_url(self) -> str:
        """``scheme://host[:port]`` of this request, from the Host header or the server address."""
        scope = self.scope
        scheme: str = scope.get("scheme", "http")
        host = self.headers.get("host")
        if host is None:
            server = scope.get("server")
            if server is None:
                host = "localhost"
            else:
                host_name, port = server[0], server[1]
                default = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)
                host = host_name if port == default else f"{host_name}:{port}"
        return f"{scheme}://{host}"

    @property
    def state(self) -> State:
        """Per-request attribute namespace (``request.state.user = ...``) for middleware.

        It starts as a copy of the lifespan state the server passed in ``scope["state"]``.
        """
        return State(self.scope.setdefault("state", {}))

    def url_for(self, name: str, /, **path_params: Any) -> URL:
        """The absolute URL of the route called ``name``, with ``path_params`` filled in.

        Raises:
            ASGIError: no router is serving this request, or it has no such route.
        """
        entry: tuple[RouteNamer, str] | None = self.scope.get(ROUTER_KEY)
        if entry is None:
            raise ASGIError("url_for needs the request to be served by a Router", fault="local")
        router, root = entry
        return URL(self.base_host_url + quote(root + router.url_for(name, **path_params)))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r}>"


class Request(HTTPConnection):
    """An HTTP request (the seed's ``Request``), built from an ASGI scope and receive callable.

    The body is read lazily, at most once, under a size limit: ``await request.body()``,
    ``json()``, ``form()``, or ``async for chunk in request.stream()``. When the
    ``Content-Length`` header announces more than the limit, reading fails with
    :class:`HTTPException` 413 before a single body byte is received; a chunked body fails as
    soon as it goes past the limit.

    Args:
        scope: the ASGI ``http`` scope.
        receive: the ASGI receive callable (omit it for a request without a body).
        max_body_size: the body limit in bytes (``None`` for no limit). Defaults to the
            application's ``max_body_size`` (``scope["trionet.max_body_size"]``), else 1 MiB.

    Attributes:
        max_body_size: the body limit in bytes; a handler may raise it before reading (for
            an upload endpoint, for example).
        max_form_fields: the most text fields ``form()`` accepts (default 1000).
        max_form_files: the most files ``form()`` accepts (default 100).
        max_form_field_size: the largest text field ``form()`` accepts, in bytes (default 1 MiB).
    """

    _UNSET: Any = object()

    def __init__(
        self,
        scope: Scope,
        receive: Receive = _no_receive,
        *,
        max_body_size: int | None = _UNSET,
    ) -> None:
        if scope["type"] != "http":
            raise ASGIError(f"Request needs an http scope, got {scope['type']!r}", fault="local")
        self.scope = scope
        self._receive = receive
        if max_body_size is Request._UNSET:
            max_body_size = scope.get(MAX_BODY_SIZE_KEY, DEFAULT_MAX_BODY_SIZE)
        self.max_body_size: int | None = max_body_size
        self.max_form_fields = 1000
        self.max_form_files = 100
        self.max_form_field_size = 1024 * 1024
        self._body: bytes | None = None
        self._consumed = False
        self._form: FormData | None = None

    @property
    def method(self) -> str:
        """The HTTP method, upper-case (``GET``, ``POST``, ...)."""
        method: str = self.scope["method"]
        return method

    @property
    def receive(self) -> Receive:
        """The underlying ASGI receive callable."""
        return self._receive

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header, if any."""
        value: str | None = self.headers.get("content-type")
        return value

    def _announced_length(self) -> int | None:
        for name, raw in self.scope.get("headers", ()):
            if name == b"content-length":
                value = raw.decode("latin-1")
                break
        else:
            return None
        try:
            length = int(value)
        except ValueError:
            raise HTTPException(400, f"invalid Content-Length header {value!r}") from None
        if length < 0:
            raise HTTPException(400, f"invalid Content-Length header {value!r}")
        return length

    def _start_reading(self) -> int | None:
        if self._consumed:
            raise ASGIError("the request body has already been consumed", fault="local")
        self._consumed = True
        limit = self.max_body_size
        if limit is not None:
            announced = self._announced_length()
            if announced is not None and announced > limit:
                raise HTTPException(
                    413, f"request body of {announced} bytes exceeds the limit of {limit} bytes"
                )
        return limit

    async def body(self) -> bytes:
        """The whole request body (read once, then cached).

        Raises:
            HTTPException: 413 when the body exceeds ``max_body_size``; 400 for a malformed
                ``Content-Length``.
            ClientDisconnect: the client went away before sending the whole body.
        """
        if self._body is not None:
            return self._body
        limit = self._start_reading()
        receive = self._receive
        message = await receive()
        if message["type"] == "http.request":
            body: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                # The common case: the whole body in one event.
                if limit is not None and len(body) > limit:
                    raise self._too_large(limit)
                self._body = body
                return body
            chunks = [body]
            size = len(body)
            while True:
                if limit is not None and size > limit:
                    raise self._too_large(limit)
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                if not message.get("more_body", False):
                    if limit is not None and size > limit:
                        raise self._too_large(limit)
                    self._body = b"".join(chunks)
                    return self._body
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        raise ASGIError(f"unexpected ASGI message {message['type']!r} while reading a body")

    @staticmethod
    def _too_large(limit: int) -> HTTPException:
        return HTTPException(413, f"request body exceeds the limit of {limit} bytes")

    def stream(self) -> AsyncIterator[bytes]:
        """Iterate over the body chunk by chunk as it arrives, without buffering it:
        ``async for chunk in request.stream()``.

        The size limit applies as in :meth:`body`. If the body was already read with
        :meth:`body`, the cached body is yielded as one chunk. (The iterator is a plain
        object, not an async generator, so leaving the loop early needs no cleanup.)

        Raises:
            HTTPException: 413 when the body exceeds ``max_body_size``.
            ClientDisconnect: the client went away before sending the whole body.
            ASGIError: the body was already consumed by an earlier ``stream()``.
        """
        return _BodyStream(self)

    async def json(self) -> Any:
        """The body decoded as JSON (UTF-8).

        Raises:
            HTTPException: 400 with a message naming the problem when the body is empty or
                not valid JSON; 413 when it is too large.
        """
        body = await self.body()
        if not body:
            raise HTTPException(400, "invalid JSON body: the body is empty")
        try:
            # JSON is UTF-8 (RFC 8259); decoding first skips json's encoding detection.
            return decode_json(body.decode("utf-8"))
        except CodecError as exc:  # invalid, or nested deeper than DEFAULT_MAX_DEPTH
            reason = exc.__cause__ if isinstance(exc.__cause__, ValueError) else exc
            raise HTTPException(400, f"invalid JSON body: {reason}") from None
        except ValueError as exc:  # UnicodeDecodeError
            raise HTTPException(400, f"invalid JSON body: {exc}") from None

    async def form(self) -> FormData:
        """The body parsed as a form (``application/x-www-form-urlencoded`` or multipart).

        Text fields are ``str``; files of a ``multipart/form-data`` body are
        :class:`UploadFile` objects. ``form[name]`` is the last value, ``form.getlist(name)``
        all of them.

        Raises:
            HTTPException: 400 for a malformed body or too many fields, 413 for a body or
                field over its limit, 415 for another content type.
        """
        if self._form is not None:
            return self._form
        content_type, params = parse_options_header(self.headers.get("content-type", ""))
        charset = params.get("charset", "utf-8")
        if content_type == "application/x-www-form-urlencoded":
            body = await self.body()
            try:
                text = body.decode(charset)
                pairs = parse_qsl(
                    text,
                    keep_blank_values=True,
                    encoding=charset,
                    errors="strict",
                    max_num_fields=self.max_form_fields,
                )
            except LookupError:
                raise HTTPException(
                    400, f"invalid form body: unknown charset {charset!r}"
                ) from None
            except ValueError as exc:  # UnicodeDecodeError or too many fields
                raise HTTPException(400, f"invalid form body: {exc}") from None
            self._form = FormData(pairs)
        elif content_type == "multipart/form-data":
            boundary = params.get("boundary")
            if not boundary:
                raise HTTPException(400, "malformed multipart body: no boundary parameter")
            body = await self.body()
            self._form = parse_multipart(
                body,
                boundary,
                max_fields=self.max_form_fields,
                max_files=self.max_form_files,
                max_field_size=self.max_form_field_size,
                charset=charset,
            )
        else:
            raise HTTPException(
                415,
                "form() needs an application/x-www-form-urlencoded or multipart/form-data body, "
                f"got {content_type or 'no content type'!r}",
            )
        return self._form

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path!r}>"


class _BodyStream(AsyncIterator[bytes]):
    """The iterator behind :meth:`Request.stream`."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._cached = request._body
        self._limit: int | None = None
        self._size = 0
        self._started = False
        self._done = False

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        if self._cached is not None:
            self._done = True
            if self._cached:
                return self._cached
            raise StopAsyncIteration
        if not self._started:
            self._limit = self._request._start_reading()
            self._started = True
        while True:
            message = await self._request._receive()
            kind = message["type"]
            if kind == "http.disconnect":
                self._done = True
                raise ClientDisconnect()
            if kind != "http.request":
                raise ASGIError(f"unexpected ASGI message {kind!r} while reading a body")
            chunk: bytes = message.get("body", b"")
            self._size += len(chunk)
            if self._limit is not None and self._size > self._limit:
                self._done = True
                raise Request._too_large(self._limit)
            if not message.get("more_body", False):
                self._done = True
                if chunk:
                    return chunk
                raise StopAsyncIteration
            if chunk:
                return chunk
