"""Pure-ASGI middleware: the seed's ``ASGIMiddleware`` base and the built-in middleware.

Every middleware wraps an ASGI application and is itself one, so the chain runs in the
request's own trio task: context variables set by a middleware are visible to the handler, and
nothing is buffered or moved to another task.

Order: :meth:`ASGIApplication.add_middleware` wraps the application built so far, so **the
middleware added last is the outermost** — it sees the request first and the response last.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import trio

from .. import observability as _observability, tracing as _tracing
from ._datastructures import Headers
from ._requests import _headers_from_scope
from ._responses import Response
from ._types import ASGIApp, Message, Receive, Scope, Send
from ._util import SendTracker

__all__ = [
    "ASGIMiddleware",
    "CORSMiddleware",
    "GZipMiddleware",
    "LoggingMiddleware",
    "RequestIdMiddleware",
    "TimeoutMiddleware",
    "TrustedHostMiddleware",
    "current_request_id",
]


class ASGIMiddleware:
    """Base class of ASGI middleware (the seed's ``ASGIMiddleware(app)``).

    Subclass it and override ``__call__``; call ``await self.app(scope, receive, send)`` to
    pass the request on. The default ``__call__`` just passes everything through.

    Example:
        ::

            class LoggingMiddleware(ASGIMiddleware):
                async def __call__(self, scope, receive, send):
                    start_time = time.time()
                    await self.app(scope, receive, send)
                    duration = time.time() - start_time
                    logger.info(f"Request processed in {duration:.2f}s")

    Args:
        app: the application (or middleware) being wrapped.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one connection; the default passes it to the wrapped application."""
        await self.app(scope, receive, send)


class LoggingMiddleware(ASGIMiddleware):
    """Time each HTTP request and log ``METHOD path status duration`` when it finishes.

    Args:
        app: the wrapped application.
        logger: where to log (default: the ``trionet.asgi.access`` logger).
        level: the log level of the access lines.
        server_timing: also add a ``Server-Timing: app;dur=<ms>`` header measured up to the
            moment the response starts.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        server_timing: bool = False,
    ) -> None:
        super().__init__(app)
        self.logger = logger if logger is not None else logging.getLogger("trionet.asgi.access")
        self.level = level
        self.server_timing = server_timing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.server_timing:
                    elapsed = (time.perf_counter() - start) * 1000
                    message = dict(message)
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"server-timing", f"app;dur={elapsed:.3f}".encode("ascii")),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if self.logger.isEnabledFor(self.level):
                duration = (time.perf_counter() - start) * 1000
                self.logger.log(
                    self.level,
                    "%s %s %s %.2fms",
                    scope["method"],
                    scope["path"],
                    status if status is not None else "-",
                    duration,
                )


# The request id is trionet's correlation id (trionet.observability), so that log records and
# messages published on the bus while handling the request carry it.
_request_id = _observability._correlation_id
_VALID_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")


def current_request_id() -> str | None:
    """The id :class:`RequestIdMiddleware` gave the request being handled (or ``None``)."""
    return _request_id.get()


class RequestIdMiddleware(ASGIMiddleware):
    """Give every request an id: in ``request.state.request_id``, in
    :func:`current_request_id` (a context variable, handy in log filters) and in a response
    header.

    Args:
        app: the wrapped application.
        header_name: the request/response header carrying the id.
        trust_incoming: reuse a well-formed id sent by the client (or a proxy) instead of
            making a new one.
        generator: makes new ids (default: ``uuid4().hex``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        header_name: str = "x-request-id",
        trust_incoming: bool = True,
        generator: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(app)
        self.header_name = header_name.lower()
        self._header = self.header_name.encode("latin-1")
        self.trust_incoming = trust_incoming
        self.generator: Callable[[], str] = (
            generator if generator is not None else (lambda: uuid.uuid4().hex)
        )

    def _pick_id(self, scope: Scope) -> str:
        if self.trust_incoming:
            for name, value in scope.get("headers", ()):
                if name == self._header:
                    text: str = value.decode("latin-1")
                    if _VALID_ID.match(text):
                        return text
                    break
        return self.generator()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Assign the id, run the request, and echo the id in the response."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = self._pick_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (self._header, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = _request_id.set(request_id)
        if _tracing.enabled():
            _tracing.note_correlation_id(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


def _add_vary(headers: list[tuple[bytes, bytes]], name: bytes) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``name`` listed in ``Vary``: merged into the first ``Vary`` header if
    there is one (unless a ``Vary`` header already lists it, or ``*``), else a new header."""
    wanted = name.lower()
    first = None
    for index, (key, value) in enumerate(headers):
        if key.lower() == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if wanted in tokens or b"*" in tokens:
                return headers
            if first is None:
                first = index
    if first is None:
        return [*headers, (b"vary", name)]
    merged = list(headers)
    key, value = merged[first]
    merged[first] = (key, value + b", " + name if value.strip() else name)
    return merged


class CORSMiddleware(ASGIMiddleware):
    """Cross-Origin Resource Sharing: answer preflights, annotate cross-origin responses.

    A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
    here: 200 with the allowed methods/headers, or 400 naming what was refused. Other requests
    from an allowed origin get ``Access-Control-Allow-Origin`` (and friends) on their response.

    Caches: when the answer depends on the request's ``Origin`` (a list of origins, a regular
    expression, or credentials allowed), **every** response passing through carries
    ``Vary: Origin`` — also those to requests without ``Origin`` or from a refused origin — so
    that a shared cache never serves one origin's answer to another (the Fetch standard's
    advice). With ``allow_origins=["*"]`` and no credentials the answer does not depend on the
    origin: every response carries ``Access-Control-Allow-Origin: *`` (and the exposed headers),
    with or without ``Origin``, and no ``Vary: Origin``. ``Origin`` is merged into a ``Vary``
    header the application set.

    Args:
        app: the wrapped application.
        allow_origins: allowed origins (``"https://example.com"``), or ``["*"]`` for any.
        allow_origin_regex: a regular expression origins may fully match instead.
        allow_methods: methods allowed in cross-origin requests, or ``["*"]``.
        allow_headers: request headers allowed, or ``["*"]`` (CORS-safelisted headers are
            always allowed).
        allow_credentials: allow cookies/authorization; the origin is then echoed instead
            of ``*``.
        expose_headers: response headers scripts may read.
        max_age: how long browsers may cache a preflight answer, in seconds.
    """

    _SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})

    def __init__(
        self,
        app: ASGIApp,
        *,
        allow_origins: Sequence[str] = (),
        allow_origin_regex: str | None = None,
        allow_methods: Sequence[str] = ("GET",),
        allow_headers: Sequence[str] = (),
        allow_credentials: bool = False,
        expose_headers: Sequence[str] = (),
        max_age: int = 600,
    ) -> None:
        super().__init__(app)
        self.allow_any_origin = "*" in allow_origins
        self.allow_origins = frozenset(o.rstrip("/") for o in allow_origins if o != "*")
        self.allow_origin_regex = re.compile(allow_origin_regex) if allow_origin_regex else None
        self.allow_any_method = "*" in allow_methods
        methods = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
        self.allow_methods = (
            methods if self.allow_any_method else tuple(sorted({m.upper() for m in allow_methods}))
        )
        self.allow_any_header = "*" in allow_headers
        self.allow_headers = frozenset(h.lower() for h in allow_headers) | self._SAFELISTED
        self.allow_credentials = allow_credentials
        self.expose_headers = tuple(expose_headers)
        self.max_age = max_age
        # Whether Access-Control-Allow-Origin echoes the request's origin (or is absent for a
        # refused one): then every answer depends on Origin and must say so to caches.
        self.varies_by_origin = allow_credentials or not self.allow_any_origin

    def origin_allowed(self, origin: str) -> bool:
        """Whether ``origin`` may make cross-origin requests."""
        if self.allow_any_origin or origin in self.allow_origins:
            return True
        return bool(self.allow_origin_regex and self.allow_origin_regex.fullmatch(origin))

    def _origin_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        value = origin if self.varies_by_origin else "*"
        headers = [(b"access-control-allow-origin", value.encode("latin-1"))]
        if self.allow_credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a preflight, or pass the request on and add CORS headers to the response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers_from_scope(scope.get("headers", []))
        origin = headers.get("origin")
        if (
            origin is not None
            and scope["method"] == "OPTIONS"
            and "access-control-request-method" in headers
        ):
            await self._preflight(origin, headers).send_to(scope, receive, send)
            return
        extra: list[tuple[bytes, bytes]] = []
        if not self.varies_by_origin or (origin is not None and self.origin_allowed(origin)):
            extra = self._origin_headers(origin or "*")
            if self.expose_headers:
                exposed = ", ".join(self.expose_headers).encode("latin-1")
                extra.append((b"access-control-expose-headers", exposed))
        vary = self.varies_by_origin

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                response_headers = [*message.get("headers", []), *extra]
                message["headers"] = (
                    _add_vary(response_headers, b"Origin") if vary else response_headers
                )
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _preflight(self, origin: str, headers: Headers) -> Response:
        problems = []
        if not self.origin_allowed(origin):
            problems.append("origin")
        method = headers["access-control-request-method"].upper()
        if not self.allow_any_method and method not in self.allow_methods:
            problems.append("method")
        requested = [
            h.strip().lower()
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        ]
        if not self.allow_any_header and any(h not in self.allow_headers for h in requested):
            problems.append("headers")
        if problems:
            refused = Response.text(f"Disallowed CORS {', '.join(problems)}", 400)
            if self.varies_by_origin:
                refused.raw_headers[:] = _add_vary(refused.raw_headers, b"Origin")
            return refused
        response = Response(None, 200)
        response.raw_headers.extend(self._origin_headers(origin))
        if self.varies_by_origin:
            response.raw_headers[:] = _add_vary(response.raw_headers, b"Origin")
        response.headers["access-control-allow-methods"] = ", ".join(self.allow_methods)
        if requested:
            allowed = requested if self.allow_any_header else sorted(self.allow_headers)
            response.headers["access-control-allow-headers"] = ", ".join(allowed)
        response.headers["access-control-max-age"] = str(self.max_age)
        return response


class GZipMiddleware(ASGIMiddleware):
    """Compress responses with gzip for clients that accept it.

    A complete body is compressed in one go when it is at least ``minimum_size`` bytes
    (``Content-Length`` is corrected); a streamed body is compressed chunk by chunk, each
    chunk flushed so the client sees it immediately. Responses that already have a
    ``Content-Encoding``, partial content (``Content-Range``: a 206 range or a 416) and
    ``text/event-stream`` responses pass through. A compressed response's strong ``ETag``
    becomes weak (``W/"..."``): it still answers ``If-None-Match``, but an ``If-Range`` with it
    gets the whole file rather than a range of other bytes.

    A ``HEAD`` request gets the headers ``GET`` would get (``Content-Encoding: gzip``,
    ``Vary: Accept-Encoding``): when the application sends the body with its ``HEAD``
    response (trionet's :class:`Response` does; the server never transmits it), that body is
    compressed to give the exact compressed ``Content-Length`` and then dropped. When it sends
    none (:class:`StreamingResponse`, :class:`FileResponse`), the declared ``Content-Length``
    decides whether ``GET`` would be compressed (none declared: a stream, which is), and
    ``Content-Length`` is left out, since the compressed size is only known by compressing
    (RFC 9110 §9.3.2 allows that).

    Args:
        app: the wrapped application.
        minimum_size: smaller complete bodies are sent uncompressed.
        compresslevel: zlib level, 1 (fast) to 9 (small).
    """

    def __init__(self, app: ASGIApp, *, minimum_size: int = 500, compresslevel: int = 6) -> None:
        super().__init__(app)
        self.minimum_size = minimum_size
        self.compresslevel = compresslevel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, compressing the response when worthwhile."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept = _headers_from_scope(scope.get("headers", [])).get("accept-encoding", "")
        if not _accepts_gzip(accept):
            await self.app(scope, receive, send)
            return
        await _GZipResponder(self, send, head=scope.get("method") == "HEAD").run(scope, receive)


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and _is_zero(q[2:]))
    return False


def _is_zero(value: str) -> bool:
    try:
        return float(value) == 0
    except ValueError:
        return False


class _GZipResponder:
    def __init__(self, middleware: GZipMiddleware, send: Send, *, head: bool) -> None:
        self.middleware = middleware
        self.send = send
        self.head = head
        self.start: Message | None = None
        self.passthrough = False
        self.compressor: Any = None
        # HEAD after the (bodiless) response start went out: only the end is still sent.
        self.head_sent = False

    async def run(self, scope: Scope, receive: Receive) -> None:
        await self.middleware.app(scope, receive, self.on_send)

    def _compressor(self) -> Any:
        # wbits=31: gzip container (header and trailer) around the deflate stream.
        return zlib.compressobj(self.middleware.compresslevel, zlib.DEFLATED, 31)

    def _headers(self, length: int | None) -> list[tuple[bytes, bytes]]:
        assert self.start is not None
        headers = []
        for name, value in self.start.get("headers", []):
            lowered = name.lower()
            if lowered == b"content-length":
                continue
            if lowered == b"etag" and not value.startswith(b"W/"):
                # A strong ETag names the uncompressed bytes: the compressed ones are another
                # representation (a client must not combine their ranges, If-Range).
                value = b"W/" + value
            headers.append((name, value))
        headers.append((b"content-encoding", b"gzip"))
        headers = _add_vary(headers, b"Accept-Encoding")
        if length is not None:
            headers.append((b"content-length", str(length).encode("ascii")))
        return headers

    async def on_send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = Headers(message.get("headers", []))
            media = headers.get("content-type", "")
            # A 206 body is a byte range of the uncompressed file (its Content-Range says
            # which): compressed, the range would describe bytes the client never gets.
            self.passthrough = (
                "content-encoding" in headers
                or "content-range" in headers
                or media.startswith("text/event-stream")
            )
            if self.passthrough:
                await self.send(message)
            else:
                self.start = message
            return
        if kind != "http.response.body" or self.passthrough:
            await self.send(message)
            return
        if self.head:
            await self._on_head_body(message)
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self.start is not None and self.compressor is None:
            start, self.start = self.start, None
            if not more and len(body) < self.middleware.minimum_size:
                self.passthrough = True
                await self.send(start)
                await self.send(message)
                return
            self.start = start
            self.compressor = self._compressor()
            if not more:
                data = self.compressor.compress(body) + self.compressor.flush()
                await self.send({**start, "headers": self._headers(len(data))})
                await self.send({"type": "http.response.body", "body": data})
                return
            await self.send({**start, "headers": self._headers(None)})
        assert self.compressor is not None
        if more:
            data = self.compressor.compress(body) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
            await self.send({"type": "http.response.body", "body": data, "more_body": True})
        else:
            data = self.compressor.compress(body) + self.compressor.flush()
            await self.send({"type": "http.response.body", "body": data})

    async def _on_head_body(self, message: Message) -> None:
        """A HEAD response: send the headers the GET response would have, and no body."""
        more = message.get("more_body", False)
        if self.head_sent:
            if not more:
                await self.send({"type": "http.response.body", "body": b""})
            return
        assert self.start is not None
        start = self.start
        body: bytes = message.get("body", b"")
        status = int(start.get("status", 200))
        declared = Headers(start.get("headers", [])).get("content-length")
        if more:
            # GET would stream: compressed chunk by chunk, without a Content-Length.
            length = None
        elif body:
            if len(body) < self.middleware.minimum_size:
                length = -1  # GET would be sent as it is
            else:
                compressor = self._compressor()
                length = len(compressor.compress(body) + compressor.flush())
        elif (
            status < 200
            or status in (204, 304)
            or (declared is not None and not declared.isdigit())
            or (declared is not None and int(declared) < self.middleware.minimum_size)
        ):
            length = -1
        else:
            # No body here: GET would be compressed (a body of the declared size, or a stream
            # when no size is declared), to a size only known by compressing it.
            length = None
        if length == -1:
            self.passthrough = True
            await self.send(start)
            await self.send(message)
            return
        await self.send({**start, "headers": self._headers(length)})
        self.head_sent = True
        if not more:
            await self.send({"type": "http.response.body", "body": b""})


class TrustedHostMiddleware(ASGIMiddleware):
    """Refuse requests whose ``Host`` header is not one of ``allowed_hosts`` (400).

    This defends against Host-header attacks (poisoned password-reset links, cache poisoning).

    Args:
        app: the wrapped application.
        allowed_hosts: host names; ``*.example.com`` matches any subdomain of example.com
            (not example.com itself); ``*`` allows everything.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] = ("*",)) -> None:
        super().__init__(app)
        hosts = [h.lower() for h in allowed_hosts]
        for host in hosts:
            if "*" in host[1:]:
                raise ValueError(f"a wildcard may only start a host pattern: {host!r}")
        self.allow_any = "*" in hosts
        self.exact = frozenset(h for h in hosts if not h.startswith("*"))
        self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))

    def host_allowed(self, host: str) -> bool:
        """Whether a ``Host`` header value (port included or not) is allowed."""
        if self.allow_any:
            return True
        host = host.lower()
        if host.startswith("["):  # IPv6 literal, e.g. [::1]:8000
            host = host[: host.find("]") + 1]
        else:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return host in self.exact or (bool(host) and host.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the Host header, then pass the request on or refuse it."""
        if scope["type"] not in ("http", "websocket") or self.allow_any:
            await self.app(scope, receive, send)
            return
        host = _headers_from_scope(scope.get("headers", [])).get("host", "")
        if self.host_allowed(host):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await Response.text("Invalid host header", 400).send_to(scope, receive, send)
        else:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})


class TimeoutMiddleware(ASGIMiddleware):
    """Run each HTTP request under a trio deadline.

    If the deadline passes before the response starts, the handler is cancelled and the
    client gets ``504 Gateway Timeout``; if the response had already started, the handler is
    cancelled and the connection is aborted (the server closes it mid-response).

    Args:
        app: the wrapped application.
        timeout: seconds each request may take.
    """

    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        super().__init__(app)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with a deadline."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracker = SendTracker(send)
        with trio.move_on_after(self.timeout) as cancel_scope:
            await self.app(scope, receive, tracker.send)
        if cancel_scope.cancelled_caught and not tracker.started:
            await Response.json({"error": "request timed out"}, 504).send_to(scope, receive, send)
