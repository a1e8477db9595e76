"""Host names: a strict parser for the ``Host`` header, host-based routing and the HTTPS
redirect.

The ``Host`` header is whatever the client chose to send. Everything here reads it through
:func:`parse_host`, which accepts only a DNS name, an IPv4 address or a bracketed IPv6 address,
with an optional port, in at most :data:`MAX_HOST_LENGTH` characters; anything else is treated
as no host at all (no route matches; the redirect answers 400).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._middleware import ASGIMiddleware
from ._responses import Response
from ._types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from ._routing import Router

__all__ = ["MAX_HOST_LENGTH", "HTTPSRedirectMiddleware", "Host", "parse_host"]

#: The longest ``Host`` header value accepted (a DNS name is at most 253 characters).
MAX_HOST_LENGTH = 262

_HOST = re.compile(
    r"(?P<host>\[[0-9a-f:.]{2,45}\]|[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_.])?)"
    r"(?::(?P<port>[0-9]{1,5}))?",
)


def parse_host(value: str | None) -> tuple[str, int | None] | None:
    """``(host, port)`` from a ``Host`` header value, lower-cased, without a final dot; ``None``
    when the value is missing, too long or not a host name, IPv4 or ``[IPv6]`` address with an
    optional port (1-65535)."""
    if not value or len(value) > MAX_HOST_LENGTH:
        return None
    found = _HOST.fullmatch(value.lower())
    if found is None:
        return None
    host = found.group("host")
    if ".." in host:
        return None
    port_text = found.group("port")
    port = int(port_text) if port_text is not None else None
    if port is not None and not 0 < port < 65536:
        return None
    return host.rstrip("."), port


def request_host(scope: Scope) -> tuple[str, int | None] | None:
    """The parsed ``Host`` of a connection scope (see :func:`parse_host`)."""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return parse_host(value.decode("latin-1"))
    return None


_PARAM = re.compile(r"{([^{}]*)}")


class Host:
    """Routes by the request's host name: a :class:`~trionet.asgi.Router` entry, next to
    routes and mounts.

    ``pattern`` is a host name, with ``{name}`` standing for one label (no dots) that becomes a
    path parameter: ``api.example.com`` or ``{tenant}.example.com``. It is matched against the
    ``Host`` header (port ignored, case-insensitive); a request whose ``Host`` is missing or
    malformed matches no :class:`Host`. The sub-application sees the unchanged path.

    Args:
        pattern: the host pattern.
        app: a :class:`~trionet.asgi.Router` or any ASGI application.
        name: makes the sub-router's routes reachable as ``"name:route"`` in ``url_for``
            (which builds paths, not host names).
    """

    def __init__(self, pattern: str, app: Router | ASGIApp, *, name: str | None = None) -> None:
        if not pattern or pattern != pattern.strip() or "/" in pattern or ":" in pattern:
            raise ValueError(f"a host pattern is a host name without port or path: {pattern!r}")
        regex = ""
        pos = 0
        names: list[str] = []
        for found in _PARAM.finditer(pattern):
            param = found.group(1)
            if not param.isidentifier() or param in names:
                raise ValueError(f"invalid host parameter {param!r} in {pattern!r}")
            names.append(param)
            regex += re.escape(pattern[pos : found.start()].lower()) + f"(?P<{param}>[^.]+)"
            pos = found.end()
        tail = pattern[pos:]
        if "{" in tail or "}" in tail:
            raise ValueError(f"unbalanced braces in host pattern {pattern!r}")
        regex += re.escape(tail.lower())
        self.pattern = pattern
        self.param_names = frozenset(names)
        self._regex = re.compile(regex)
        self.app = app
        self.name = name

    def match(self, scope: Scope) -> dict[str, Any] | None:
        """The host parameters if the scope's ``Host`` matches, else ``None``."""
        parsed = request_host(scope)
        if parsed is None:
            return None
        found = self._regex.fullmatch(parsed[0])
        return None if found is None else found.groupdict()

    def __repr__(self) -> str:
        return f"Host({self.pattern!r}, {self.app!r}, name={self.name!r})"


class HTTPSRedirectMiddleware(ASGIMiddleware):
    """Redirect plain ``http``/``ws`` requests to ``https``/``wss``.

    An HTTP request gets a redirect (307 by default, which keeps the method and body) to the
    same host, path and query over HTTPS; a websocket is closed with code 1008 before it is
    accepted (a websocket cannot follow a redirect). Requests that arrived over TLS pass
    through. A ``Host`` header that is missing or malformed is answered with 400 rather than
    copied into a ``Location``.

    Behind a proxy that terminates TLS, the scheme the server sees is ``http``: put this
    middleware where the proxy's ``X-Forwarded-Proto`` has been applied to the scope (for
    example Hypercorn's ``ProxyFixMiddleware``), or let the proxy do the redirect.

    Args:
        app: the wrapped application.
        https_port: the port HTTPS is served on (left out of the URL when 443).
        status_code: the redirect status: 307 or 308 keep the method, 301 and 302 may not.
        exempt_paths: paths served over plain HTTP too (an ACME challenge, a load balancer's
            health probe); each is an exact path or a prefix ending with ``/``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        https_port: int = 443,
        status_code: int = 307,
        exempt_paths: Sequence[str] = (),
    ) -> None:
        super().__init__(app)
        if status_code not in (301, 302, 307, 308):
            raise ValueError(f"status_code must be 301, 302, 307 or 308, got {status_code}")
        if not 0 < https_port < 65536:
            raise ValueError(f"https_port must be 1-65535, got {https_port}")
        self.https_port = https_port
        self.status_code = status_code
        self.exempt_paths = tuple(exempt_paths)

    def _exempt(self, path: str) -> bool:
        for exempt in self.exempt_paths:
            if path == exempt or (exempt.endswith("/") and path.startswith(exempt)):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass secure requests on; redirect (or close) the others."""
        kind = scope["type"]
        if (
            kind not in ("http", "websocket")
            or scope.get("scheme") in ("https", "wss")
            or self._exempt(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        parsed = request_host(scope)
        if parsed is None:
            await Response.text("Invalid host header", 400).send_to(scope, receive, send)
            return
        host = parsed[0]
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if self.https_port != 443:
            host += f":{self.https_port}"
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope.get("path", "/"))
        if not path.startswith("/"):
            path = "/" + path
        location = f"https://{host}{path}"
        query = scope.get("query_string", b"")
        if query:
            location += "?" + query.decode("latin-1")
        response = Response.redirect(location, self.status_code)
        await response.send_to(scope, receive, send)
