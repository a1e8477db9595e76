"""URL routing: path patterns with typed converters, 404/405, HEAD, mounts and ``url_for``.

A :class:`Router` holds an ordered list of HTTP routes, websocket routes and mounts. Routes are
tried in the order they were added; the first whose pattern *and* method match wins. A route
whose pattern matches but not its method is remembered, so that a request no route accepts
gets ``405 Method Not Allowed`` with an ``Allow`` header rather than 404.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import trio

from ..errors import ASGIError
from ._background import run_background
from ._errors import HTTPException, http_exception_for
from ._hosts import Host
from ._requests import ROUTER_KEY, Request
from ._responses import Response
from ._types import ASGIApp, Receive, Scope, Send
from ._util import SendTracker
from ._websockets import DEFAULT_MAX_MESSAGE_SIZE, WebSocket, run_websocket_endpoint

__all__ = [
    "Converter",
    "Host",
    "Mount",
    "Route",
    "Router",
    "WebSocketRoute",
    "error_response",
]

T = TypeVar("T")
#: An HTTP handler: ``async def handler(request, **path_params) -> Response``.
Endpoint = Callable[..., Awaitable[Response]]
#: A websocket handler: ``async def handler(websocket, **path_params) -> None``.
WebSocketEndpoint = Callable[..., Awaitable[None]]

_UNSET: Any = object()


# -- converters -------------------------------------------------------------------------------


class Converter(Protocol[T]):
    """Turns a path segment into a Python value and back (``{id:int}``).

    Attributes:
        regex: what the parameter may match (without anchors or groups).
    """

    regex: str

    def to_python(self, value: str) -> T:
        """Convert the matched text; raise ``ValueError`` to make the route not match."""
        ...

    def to_url(self, value: T) -> str:
        """Render a value for :meth:`Router.url_for`."""
        ...


class _StrConverter:
    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        value = str(value)
        if not value or "/" in value:
            raise ValueError(f"a str path parameter must be non-empty without '/', got {value!r}")
        return quote(value, safe="")


class _PathConverter:
    regex = ".*"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return quote(str(value), safe="/")


class _IntConverter:
    regex = "[0-9]+"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"an int path parameter must be a non-negative int, got {value!r}")
        return str(value)


class _FloatConverter:
    regex = r"[0-9]+(?:\.[0-9]+)?"

    def to_python(self, value: str) -> float:
        return float(value)

    def to_url(self, value: float) -> str:
        if value < 0 or value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"a float path parameter must be finite and >= 0, got {value!r}")
        return repr(float(value))


class _UUIDConverter:
    regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value: uuid.UUID) -> str:
        return str(value)


CONVERTERS: dict[str, Converter[Any]] = {
    "str": _StrConverter(),
    "path": _PathConverter(),
    "int": _IntConverter(),
    "float": _FloatConverter(),
    "uuid": _UUIDConverter(),
}

_PARAM = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")


class _Pattern:
    """A compiled path pattern such as ``/users/{user_id:int}/files/{rest:path}``."""

    __slots__ = ("converters", "format", "param_names", "path", "regex", "static")

    def __init__(
        self, path: str, converters: Mapping[str, Converter[Any]], *, prefix: bool = False
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"route paths must start with '/', got {path!r}")
        self.path = path
        regex = "^"
        fmt = ""
        self.converters: dict[str, Converter[Any]] = {}
        pos = 0
        for match in _PARAM.finditer(path):
            name, kind = match.group(1), match.group(2) or "str"
            if not name.isidentifier():
                raise ValueError(f"invalid path parameter name {name!r} in {path!r}")
            if name in self.converters:
                raise ValueError(f"duplicate path parameter {name!r} in {path!r}")
            try:
                converter = converters[kind]
            except KeyError:
                raise ValueError(f"unknown path converter {kind!r} in {path!r}") from None
            literal = path[pos : match.start()]
            regex += re.escape(literal) + f"(?P<{name}>{converter.regex})"
            fmt += literal.replace("%", "%%") + f"%({name})s"
            self.converters[name] = converter
            pos = match.end()
        tail = path[pos:]
        if "{" in tail or "}" in tail:
            raise ValueError(f"unbalanced braces in route path {path!r}")
        regex += re.escape(tail)
        fmt += tail.replace("%", "%%")
        regex += "(?=/|$)" if prefix else "$"
        self.regex = re.compile(regex)
        self.format = fmt
        self.param_names = frozenset(self.converters)
        self.static = not self.converters and not prefix

    def match(self, route_path: str) -> tuple[dict[str, Any], int] | None:
        """``(converted params, length of the matched text)``, or ``None``."""
        if self.static:
            return ({}, len(route_path)) if route_path == self.path else None
        found = self.regex.match(route_path)
        if found is None:
            return None
        try:
            params = {
                name: self.converters[name].to_python(value)
                for name, value in found.groupdict().items()
            }
        except ValueError:
            return None
        return params, found.end()

    def url_path(self, params: Mapping[str, Any]) -> str:
        missing = self.param_names - params.keys()
        if missing:
            raise ASGIError(
                f"route {self.path!r} needs path parameters {sorted(missing)}", fault="local"
            )
        try:
            rendered = {name: conv.to_url(params[name]) for name, conv in self.converters.items()}
        except (ValueError, TypeError) as exc:
            raise ASGIError(f"route {self.path!r}: {exc}", fault="local") from None
        return self.format % rendered


# -- routes -----------------------------------------------------------------------------------


class Route:
    """An HTTP route: a path pattern, a handler and the methods it accepts.

    Args:
        path: the pattern, e.g. ``/users/{user_id:int}``.
        endpoint: ``async def handler(request, **path_params) -> Response``.
        methods: the accepted methods (default ``["GET"]``); ``GET`` implies ``HEAD``.
        name: the name for :meth:`Router.url_for` (default: the handler's ``__name__``).
        max_body_size: a body limit for this route, overriding the application's.
        converters: the converter table (default: the built-in ``str``, ``int``, ``float``,
            ``path`` and ``uuid``).
        timeout: seconds the whole exchange may take (reading the request, the handler,
            sending the response; background tasks excepted). Past it the handler is cancelled
            and the client gets ``504`` if the response had not started; a response that had
            started is aborted. ``None``: no limit of the route's own.
    """

    def __init__(
        self,
        path: str,
        endpoint: Endpoint,
        *,
        methods: Iterable[str] | None = None,
        name: str | None = None,
        max_body_size: int | None = _UNSET,
        converters: Mapping[str, Converter[Any]] = CONVERTERS,
        timeout: float | None = None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = timeout
        self.pattern = _Pattern(path, converters)
        self.path = path
        self.endpoint = endpoint
        wanted = {m.upper() for m in (methods if methods is not None else ["GET"])}
        if "GET" in wanted:
            wanted.add("HEAD")
        self.methods = frozenset(wanted)
        self.name = name if name is not None else getattr(endpoint, "__name__", path)
        self.max_body_size = max_body_size

    def __repr__(self) -> str:
        return f"Route({self.path!r}, methods={sorted(self.methods)}, name={self.name!r})"


class WebSocketRoute:
    """A websocket route: ``async def handler(websocket, **path_params) -> None``.

    Args:
        path: the pattern.
        endpoint: the handler.
        name: the name for :meth:`Router.url_for`.
        max_message_size: the largest message the handler accepts; a bigger one closes the
            websocket with code 1009.
        converters: the converter table.
    """

    def __init__(
        self,
        path: str,
        endpoint: WebSocketEndpoint,
        *,
        name: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        converters: Mapping[str, Converter[Any]] = CONVERTERS,
    ) -> None:
        self.pattern = _Pattern(path, converters)
        self.path = path
        self.endpoint = endpoint
        self.name = name if name is not None else getattr(endpoint, "__name__", path)
        self.max_message_size = max_message_size

    def __repr__(self) -> str:
        return f"WebSocketRoute({self.path!r}, name={self.name!r})"


class Mount:
    """A sub-application (a :class:`Router` or any ASGI app) served under a path prefix.

    The sub-application sees the full ``path`` and a ``root_path`` extended by the prefix (as
    the ASGI spec describes); a mounted :class:`Router` routes on what follows the prefix.

    Args:
        prefix: e.g. ``/api`` or ``/users/{user_id:int}`` (no trailing slash).
        app: the sub-application.
        name: makes the sub-router's routes reachable as ``"name:route"`` in ``url_for``.
        converters: the converter table for parameters in the prefix.
    """

    def __init__(
        self,
        prefix: str,
        app: Router | ASGIApp,
        *,
        name: str | None = None,
        converters: Mapping[str, Converter[Any]] = CONVERTERS,
    ) -> None:
        prefix = prefix.rstrip("/")
        if not prefix:
            raise ValueError("a mount prefix cannot be '/' (add the routes to the router instead)")
        self.pattern = _Pattern(prefix, converters, prefix=True)
        self.prefix = prefix
        self.app = app
        self.name = name

    def __repr__(self) -> str:
        return f"Mount({self.prefix!r}, {self.app!r}, name={self.name!r})"


def error_response(exc: HTTPException) -> Response:
    """The default answer to an :class:`HTTPException`: ``{"error": detail}`` as JSON."""
    return Response.json({"error": exc.detail}, exc.status_code, exc.headers or None)


class _ASGIAppResponse(Response):
    """Hands a request over to a mounted ASGI application."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self.status_code = 200
        self.media_type = None
        self.body = b""
        self._raw_headers = []
        self.app = app
        self.scope = scope

    async def send_to(self, scope: Scope | None, receive: Receive | None, send: Send) -> None:
        if receive is None:
            raise ASGIError("a mounted application needs the receive callable", fault="local")
        await self.app(self.scope, receive, send)


_TIMED_OUT = "request timed out"


async def _call_with_deadline(
    route: Route, request: Request, params: dict[str, Any], deadline: float
) -> Response:
    with trio.move_on_at(deadline) as cancel_scope:
        response = await route.endpoint(request, **params)
    if cancel_scope.cancelled_caught:
        raise HTTPException(504, _TIMED_OUT)
    if not isinstance(response, Response):
        raise _not_a_response(route, response)
    return _DeadlineResponse(response, deadline)


def _not_a_response(route: Route, response: object) -> ASGIError:
    return ASGIError(
        f"handler {route.name!r} returned {type(response).__name__}, expected a Response",
        fault="local",
    )


class _DeadlineResponse(Response):
    """Sends a route's response under the route's deadline (see ``Route(timeout=)``)."""

    def __init__(self, inner: Response, deadline: float) -> None:
        self.status_code = inner.status_code
        self.media_type = inner.media_type
        self.body = inner.body
        self._raw_headers = inner.raw_headers
        self.background = inner.background
        self.inner = inner
        self.deadline = deadline

    async def send_to(self, scope: Scope | None, receive: Receive | None, send: Send) -> None:
        tracker = SendTracker(send)
        with trio.move_on_at(self.deadline) as cancel_scope:
            await self.inner.send_to(scope, receive, tracker.send)
        if cancel_scope.cancelled_caught:
            # Before the response started this is answered with 504; after, it is re-raised
            # to the server, which aborts the connection (never a truncated body that looks
            # complete).
            raise HTTPException(504, _TIMED_OUT)


def route_path(scope: Scope) -> str:
    """The part of the path the current router matches on: ``path`` minus ``root_path``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def _host_match(entry: Host, scope: Scope) -> tuple[dict[str, Any], int] | None:
    """What a route pattern's ``match`` gives, for a host: ``(params, 0)`` (a host takes none
    of the path), or ``None``."""
    params = entry.match(scope)
    return None if params is None else (params, 0)


def _host_url_for(entry: Host, name: str, params: dict[str, Any], near: list[str]) -> str | None:
    # A host's sub-router builds paths as if it were mounted at "/" (host parameters unused).
    sub_router = entry.app if isinstance(entry.app, Router) else getattr(entry.app, "router", None)
    if not isinstance(sub_router, Router):
        return None
    if entry.name is not None:
        head, sep, rest = name.partition(":")
        if not sep or head != entry.name:
            return None
        name = rest
    sub_params = {k: v for k, v in params.items() if k not in entry.param_names}
    return sub_router._url_for(name, sub_params, near)


async def _lifespan_noop(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


_E = TypeVar("_E", bound=Exception)


async def dispatch(
    scope: Scope,
    receive: Receive,
    send: Send,
    router: Router | None,
    handle_request: Callable[[Request], Awaitable[Response]],
    handle_websocket: Callable[[WebSocket], Awaitable[None]],
    answer_error: Callable[[_E, Scope, Receive, Send], Awaitable[None]],
    catches: type[_E],
) -> None:
    """Serve an ``http`` or ``websocket`` scope: the dispatch of both :class:`Router` and
    :class:`~trionet.asgi.ASGIApplication`.

    ``router`` (if any, and if no outer router did) becomes the scope's router for ``url_for``.
    An ``http`` scope becomes a :class:`Request` for ``handle_request``, whose response is sent;
    an error of type ``catches`` raised before anything was sent is answered by
    ``answer_error(error, scope, receive, send)``, one raised later (the response started)
    propagates so that the server aborts the connection. A ``websocket`` scope becomes a
    :class:`WebSocket` for ``handle_websocket``.

    Raises:
        ASGIError: another scope type (the caller handles ``lifespan`` itself).
    """
    kind = scope["type"]
    if router is not None and ROUTER_KEY not in scope:
        scope[ROUTER_KEY] = (router, scope.get("root_path", ""))
    if kind == "http":
        tracker = SendTracker(send)
        try:
            response = await handle_request(Request(scope, receive))
            await response.send_to(scope, receive, tracker.send)
            if response.background is not None:
                await run_background(response.background)
        except catches as exc:
            if tracker.started:
                raise
            await answer_error(exc, scope, receive, send)
    elif kind == "websocket":
        await handle_websocket(WebSocket(scope, receive, send))
    else:
        raise ASGIError(f"unsupported ASGI scope type {kind!r}", fault="remote")


async def _answer_http_exception(
    error: ASGIError, scope: Scope, receive: Receive, send: Send
) -> None:
    http_error = http_exception_for(error)
    if http_error is None:
        raise error
    await error_response(http_error).send_to(scope, receive, send)


class Router:
    """Routes requests and websockets to handlers; usable as an ASGI application on its own.

    Example:
        ::

            router = Router()

            @router.route("/users/{user_id:int}")
            async def get_user(request, user_id: int):
                return Response.json({"user_id": user_id})

    Args:
        routes: initial :class:`Route`, :class:`WebSocketRoute`, :class:`Mount` and
            :class:`Host` entries.
        redirect_slashes: answer a 404 with a 307 redirect when the path with (or without) a
            trailing slash would match a route.
        converters: extra or replacement path converters, by name.
    """

    def __init__(
        self,
        routes: Sequence[Route | WebSocketRoute | Mount | Host] = (),
        *,
        redirect_slashes: bool = True,
        converters: Mapping[str, Converter[Any]] | None = None,
    ) -> None:
        self.redirect_slashes = redirect_slashes
        self.converters: dict[str, Converter[Any]] = {**CONVERTERS, **(converters or {})}
        self._routes: list[Route | WebSocketRoute | Mount | Host] = []
        self._http: list[Route | Mount | Host] = []
        self._ws: list[WebSocketRoute | Mount | Host] = []
        # Fast path: static routes that come before any pattern route or mount, by path. A
        # request whose path and method hit one of these would match it first in a full scan.
        self._static: dict[str, list[Route]] = {}
        self._static_prefix = True
        for entry in routes:
            self._add(entry)

    @property
    def routes(self) -> list[Route | WebSocketRoute | Mount | Host]:
        """All entries in the order they were added."""
        return list(self._routes)

    def _add(self, entry: Route | WebSocketRoute | Mount | Host) -> None:
        self._routes.append(entry)
        if isinstance(entry, Route | Mount | Host):
            self._http.append(entry)
            if isinstance(entry, Route) and entry.pattern.static and self._static_prefix:
                self._static.setdefault(entry.path, []).append(entry)
            else:
                self._static_prefix = False
        if isinstance(entry, WebSocketRoute | Mount | Host):
            self._ws.append(entry)

    # -- registration -----------------------------------------------------------------------

    def add_route(
        self,
        path: str,
        endpoint: Endpoint,
        methods: Iterable[str] | None = None,
        *,
        name: str | None = None,
        max_body_size: int | None = _UNSET,
        timeout: float | None = None,
    ) -> Route:
        """Register ``endpoint`` for ``path`` and ``methods``; see :class:`Route`."""
        route = Route(
            path,
            endpoint,
            methods=methods,
            name=name,
            max_body_size=max_body_size,
            converters=self.converters,
            timeout=timeout,
        )
        self._add(route)
        return route

    def route(
        self,
        path: str,
        methods: Iterable[str] | None = None,
        *,
        name: str | None = None,
        max_body_size: int | None = _UNSET,
        timeout: float | None = None,
    ) -> Callable[[Endpoint], Endpoint]:
        """Decorator form of :meth:`add_route` (the seed's ``@router.route(path, methods)``)."""

        def decorator(endpoint: Endpoint) -> Endpoint:
            self.add_route(
                path, endpoint, methods, name=name, max_body_size=max_body_size, timeout=timeout
            )
            return endpoint

        return decorator

    def get(
        self, path: str, *, name: str | None = None, timeout: float | None = None
    ) -> Callable[[Endpoint], Endpoint]:
        """Shorthand for ``route(path, ["GET"])``."""
        return self.route(path, ["GET"], name=name, timeout=timeout)

    def post(
        self, path: str, *, name: str | None = None, max_body_size: int | None = _UNSET,
        timeout: float | None = None,
    ) -> Callable[[Endpoint], Endpoint]:
        """Shorthand for ``route(path, ["POST"])``."""
        return self.route(path, ["POST"], name=name, max_body_size=max_body_size,
                          timeout=timeout)

    def add_websocket_route(
        self,
        path: str,
        endpoint: WebSocketEndpoint,
        *,
        name: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> WebSocketRoute:
        """Register a websocket handler for ``path``; see :class:`WebSocketRoute`."""
        route = WebSocketRoute(
            path,
            endpoint,
            name=name,
            max_message_size=max_message_size,
            converters=self.converters,
        )
        self._add(route)
        return route

    def websocket(
        self,
        path: str,
        *,
        name: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> Callable[[WebSocketEndpoint], WebSocketEndpoint]:
        """Decorator form of :meth:`add_websocket_route`."""

        def decorator(endpoint: WebSocketEndpoint) -> WebSocketEndpoint:
            self.add_websocket_route(path, endpoint, name=name, max_message_size=max_message_size)
            return endpoint

        return decorator

    def mount(self, prefix: str, app: Router | ASGIApp, *, name: str | None = None) -> Mount:
        """Serve ``app`` (a sub-router or any ASGI app) under ``prefix``; see :class:`Mount`."""
        mount = Mount(prefix, app, name=name, converters=self.converters)
        self._add(mount)
        return mount

    def host(self, pattern: str, app: Router | ASGIApp, *, name: str | None = None) -> Host:
        """Serve ``app`` for requests whose ``Host`` matches ``pattern``; see :class:`Host`."""
        entry = Host(pattern, app, name=name)
        self._add(entry)
        return entry

    # -- reverse routing --------------------------------------------------------------------

    def url_for(self, name: str, /, **path_params: Any) -> str:
        """The path of the route called ``name`` (relative to this router's mount point).

        Routes of a named mount are ``"mount_name:route_name"``; routes of an unnamed mounted
        router are found by their own name. A named mount itself gives the path of a file
        under it: ``url_for("static", path="css/site.css")`` (for :class:`StaticFiles`).

        Raises:
            ASGIError: no such route, or the parameters do not fit it.
        """
        near: list[str] = []
        found = self._url_for(name, path_params, near)
        if found is None:
            if near:
                raise ASGIError(
                    f"route {name!r} takes path parameters {near[0]}, "
                    f"got {sorted(path_params)}",
                    fault="local",
                )
            raise ASGIError(f"no route named {name!r}", fault="local")
        return found

    def _url_for(self, name: str, params: dict[str, Any], near: list[str]) -> str | None:
        for entry in self._routes:
            if isinstance(entry, Host):
                sub = _host_url_for(entry, name, params, near)
                if sub is not None:
                    return sub
            elif isinstance(entry, Mount):
                if entry.name == name and "path" in params:
                    # A file under a named mount: url_for("static", path="css/site.css").
                    prefix_params = {k: v for k, v in params.items() if k != "path"}
                    if prefix_params.keys() == entry.pattern.param_names:
                        file_path = quote(str(params["path"]).lstrip("/"), safe="/")
                        return f"{entry.pattern.url_path(prefix_params)}/{file_path}"
                # A mounted Router, or a mounted application that has one (ASGIApplication).
                sub_router = entry.app if isinstance(entry.app, Router) else None
                if sub_router is None:
                    sub_router = getattr(entry.app, "router", None)
                if not isinstance(sub_router, Router):
                    continue
                inner = name
                if entry.name is not None:
                    head, sep, rest = name.partition(":")
                    if not sep or head != entry.name:
                        continue
                    inner = rest
                prefix_params = {k: params[k] for k in entry.pattern.param_names if k in params}
                sub_params = {k: v for k, v in params.items() if k not in prefix_params}
                sub = sub_router._url_for(inner, sub_params, near)
                if sub is not None:
                    return entry.pattern.url_path(prefix_params) + sub
            elif entry.name == name:
                if entry.pattern.param_names == params.keys():
                    return entry.pattern.url_path(params)
                near.append(str(sorted(entry.pattern.param_names)))
        return None

    # -- dispatch ---------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Find the route for ``request`` and return its handler's response.

        Raises:
            HTTPException: 404 when nothing matches, 405 (with ``Allow``) when only the
                method is wrong.
        """
        scope = request.scope
        path = route_path(scope)
        method: str = scope["method"]
        candidates = self._static.get(path)
        if candidates is not None:
            for route in candidates:
                if method in route.methods:
                    return await self._call(route, request, {})
        allowed: set[str] | None = None
        for entry in self._http:
            # isinstance inline, not a call per entry: this loop runs for every request
            if isinstance(entry, Host):
                found = _host_match(entry, scope)
            else:
                found = entry.pattern.match(path)
            if found is None:
                continue
            params, end = found
            if isinstance(entry, Route):
                if method not in entry.methods:
                    allowed = set(entry.methods) if allowed is None else allowed | entry.methods
                    continue
                if params:
                    scope["path_params"] = {**scope.get("path_params", {}), **params}
                return await self._call(entry, request, params)
            child = self._child_scope(scope, path, params, end)
            if isinstance(entry.app, Router):
                child_request = Request(child, request.receive, max_body_size=request.max_body_size)
                return await entry.app.handle(child_request)
            return _ASGIAppResponse(entry.app, child)
        if allowed is not None:
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        if self.redirect_slashes and method in ("GET", "HEAD"):
            redirect = self._slash_redirect(request, path)
            if redirect is not None:
                return redirect
        raise HTTPException(404)

    @staticmethod
    async def _call(route: Route, request: Request, params: dict[str, Any]) -> Response:
        if route.max_body_size is not _UNSET:
            request.max_body_size = route.max_body_size
        if route.timeout is not None:
            deadline = trio.current_time() + route.timeout
            return await _call_with_deadline(route, request, params, deadline)
        response: object = await route.endpoint(request, **params)
        if not isinstance(response, Response):  # inline: no extra call on this per-request path
            raise _not_a_response(route, response)
        return response

    def _slash_redirect(self, request: Request, path: str) -> Response | None:
        if path == "/":
            return None
        other = path[:-1] if path.endswith("/") else path + "/"
        for entry in self._http:
            if isinstance(entry, Route) and entry.pattern.match(other) is not None:
                new_path = request.url.path[: -len(path)] + quote(other)
                return Response.redirect(str(request.url.copy_with(path=new_path)), 307)
        return None

    @staticmethod
    def _child_scope(scope: Scope, path: str, params: dict[str, Any], end: int) -> Scope:
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + path[:end]
        if params:
            child["path_params"] = {**scope.get("path_params", {}), **params}
        return child

    async def handle_websocket(self, websocket: WebSocket) -> None:
        """Run the websocket handler for ``websocket``'s path, or reject it with 404."""
        scope = websocket.scope
        path = route_path(scope)
        for entry in self._ws:
            # isinstance inline, not a call per entry: this loop runs for every request
            if isinstance(entry, Host):
                found = _host_match(entry, scope)
            else:
                found = entry.pattern.match(path)
            if found is None:
                continue
            params, end = found
            if isinstance(entry, WebSocketRoute):
                if params:
                    scope["path_params"] = {**scope.get("path_params", {}), **params}
                websocket.max_message_size = entry.max_message_size
                await run_websocket_endpoint(entry.endpoint, websocket, params)
                return
            child = self._child_scope(scope, path, params, end)
            if isinstance(entry.app, Router):
                await entry.app.handle_websocket(websocket.for_scope(child))
            else:
                await entry.app(child, websocket.asgi_receive, websocket.asgi_send)
            return
        await websocket.reject(404)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``scope`` as an ASGI application (http, websocket and a no-op lifespan)."""
        if scope["type"] == "lifespan":
            await _lifespan_noop(receive, send)
            return
        await dispatch(
            scope, receive, send, self, self.handle, self.handle_websocket,
            _answer_http_exception, ASGIError,
        )

    def __repr__(self) -> str:
        return f"Router({self._routes!r})"
