"""``ASGIApplication``: the seed's application class, as a complete ASGI 3 application.

Request flow for an ``http`` scope (middleware added last is outermost)::

    server ─► guard ─► middleware N … middleware 1 ─► dispatch ─► handle_request(request)
                                                       │          (default: the Router)
                                                       ├─ HTTPException ─► http_exception_response
                                                       └─ other errors ──► handle_error

Errors are turned into responses only while nothing has been sent. Once the response has
started, the exception is re-raised so that the server aborts the connection: a client never
receives a second status line or a truncated body that looks complete.

The ``lifespan`` scope runs the startup hooks, keeps an application nursery open for
background tasks while the server runs, and at shutdown cancels those tasks, waits for them,
then runs the shutdown hooks.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import trio

from .. import metrics as _metrics, tracing as _tracing
from ..errors import ASGIError
from ._datastructures import State
from ._errors import ClientDisconnect, HTTPException, ValidationError, http_exception_for
from ._requests import DEFAULT_MAX_BODY_SIZE, MAX_BODY_SIZE_KEY, Request
from ._responses import Response
from ._routing import _UNSET, Endpoint, Router, WebSocketEndpoint, dispatch, error_response
from ._types import ASGIApp, Message, Receive, Scope, Send
from ._util import SendTracker, single_leaf
from ._websockets import DEFAULT_MAX_MESSAGE_SIZE, WebSocket

__all__ = ["ASGIApplication"]

logger = logging.getLogger("trionet.asgi")

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])
Hook = Callable[[], Awaitable[None]]
Lifespan = Callable[["ASGIApplication"], AbstractAsyncContextManager[None]]


#: What a trionet application says when a server runs it on another event loop.
FOREIGN_LOOP_MESSAGE = (
    "trionet apps run on trio, not {library}: serve this one with 'trionet serve MODULE:APP' "
    "or 'hypercorn -k trio MODULE:APP'"
)


def _running_on_trio() -> bool:
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


async def _refuse_foreign_loop(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a server that runs the application on asyncio (uvicorn, Hypercorn's default
    worker): the lifespan startup fails, a request gets 500, each with one line that says
    what to do (instead of trio's ``AttributeError`` from deep inside a nursery)."""
    try:
        import sniffio

        library = sniffio.current_async_library()
    except Exception:  # sniffio cannot tell: say "another event loop"
        library = "another event loop"
    message = FOREIGN_LOOP_MESSAGE.format(library=library)
    kind = scope["type"]
    if kind == "lifespan":
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.failed", "message": message})
        return
    logger.error("%s", message)
    if kind == "http":
        body = message.encode()
        await send({"type": "http.response.start", "status": 500, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})
    elif kind == "websocket":
        await send({"type": "websocket.close", "code": 1011})


@asynccontextmanager
async def _no_lifespan(app: ASGIApplication) -> AsyncIterator[None]:
    yield


@dataclasses.dataclass
class ApplicationStatistics:
    """Counters of an :class:`ASGIApplication` (see :meth:`ASGIApplication.statistics`).

    Attributes:
        requests: HTTP requests received.
        websockets: websocket connections received.
        in_flight: requests and websocket connections being handled now.
        errors: requests whose handling raised past the application (the server aborted them).
    """

    requests: int = 0
    websockets: int = 0
    in_flight: int = 0
    errors: int = 0


class ASGIApplication:
    """An ASGI 3 application (``http``, ``websocket`` and ``lifespan``).

    Use it as in the seed, by subclassing and overriding :meth:`handle_request`::

        class App(ASGIApplication):
            async def handle_request(self, request: Request) -> Response:
                if request.path == "/":
                    return Response.json({"message": "Welcome to mtaio"})
                return Response.text("Not Found", status_code=404)

        app = App()

    or by giving it a :class:`Router` (``ASGIApplication(router)``) or registering routes on
    it directly (``@app.route(...)``, which creates the router on first use).

    Args:
        router: the router that the default :meth:`handle_request` and
            :meth:`handle_websocket` dispatch to.
        middleware: middleware to add, in order, as ``(class, kwargs)`` pairs or classes; the
            same as calling :meth:`add_middleware` for each.
        max_body_size: the default request body limit in bytes (``None``: unlimited); routes
            and handlers may change it per request.
        on_startup: coroutine functions run at startup, in order.
        on_shutdown: coroutine functions run at shutdown, in order, after the background
            tasks have finished.
        lifespan: ``lifespan(app)`` returns an async context manager entered at startup
            (before the startup hooks) and exited at shutdown (after the shutdown hooks).

    Attributes:
        router: the router, or ``None``.
        state: an attribute namespace for application-wide objects (clients, pools...).
        max_body_size: the default request body limit.
    """

    def __init__(
        self,
        router: Router | None = None,
        *,
        middleware: Sequence[type[Any] | tuple[type[Any], dict[str, Any]]] = (),
        max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
        on_startup: Iterable[Hook] = (),
        on_shutdown: Iterable[Hook] = (),
        lifespan: Lifespan | None = None,
    ) -> None:
        self.router = router
        self.max_body_size = max_body_size
        self.state = State()
        self._on_startup: list[Hook] = list(on_startup)
        self._on_shutdown: list[Hook] = list(on_shutdown)
        self._lifespan_context: Lifespan = lifespan if lifespan is not None else _no_lifespan
        self._middleware: list[tuple[Callable[..., ASGIApp], tuple[Any, ...], dict[str, Any]]] = []
        self._stack: ASGIApp | None = None
        self._nursery: trio.Nursery | None = None
        self._stats = ApplicationStatistics()
        self._on_trio = False  # checked at the first event (see _refuse_foreign_loop)
        for entry in middleware:
            if isinstance(entry, tuple):
                self.add_middleware(entry[0], **entry[1])
            else:
                self.add_middleware(entry)

    # -- configuration ----------------------------------------------------------------------

    def add_middleware(self, middleware: Callable[..., ASGIApp], *args: Any, **kwargs: Any) -> None:
        """Wrap the application in ``middleware(app, *args, **kwargs)``.

        Each call wraps what was built so far, so the middleware added **last is outermost**:
        it sees each request first and each response last. Middleware applies to ``http``
        and ``websocket`` scopes; the ``lifespan`` scope is handled by the application itself.
        """
        self._middleware.append((middleware, args, kwargs))
        self._stack = None

    def _get_router(self) -> Router:
        if self.router is None:
            self.router = Router()
        return self.router

    def route(self, path: str, methods: Iterable[str] | None = None, *, name: str | None = None,
              max_body_size: int | None = _UNSET, timeout: float | None = None,
              ) -> Callable[[Endpoint], Endpoint]:
        """Register an HTTP handler on the application's router (see :meth:`Router.route`)."""
        return self._get_router().route(path, methods, name=name, max_body_size=max_body_size,
                                        timeout=timeout)

    def websocket(self, path: str, *, name: str | None = None,
                  max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                  ) -> Callable[[WebSocketEndpoint], WebSocketEndpoint]:
        """Register a websocket handler on the application's router."""
        return self._get_router().websocket(path, name=name, max_message_size=max_message_size)

    def mount(self, prefix: str, app: Router | ASGIApp, *, name: str | None = None) -> None:
        """Serve a sub-router or another ASGI application under ``prefix``."""
        self._get_router().mount(prefix, app, name=name)

    def on_startup(self, hook: _F) -> _F:
        """Decorator: run ``await hook()`` at startup (inside the application nursery)."""
        self._on_startup.append(hook)
        return hook

    def on_shutdown(self, hook: _F) -> _F:
        """Decorator: run ``await hook()`` at shutdown, after background tasks finished."""
        self._on_shutdown.append(hook)
        return hook

    # -- background tasks -------------------------------------------------------------------

    @property
    def nursery(self) -> trio.Nursery:
        """The application nursery, open from startup to shutdown.

        Tasks started here directly must handle their own errors: one that raises tears the
        application's lifespan down. :meth:`start_background_task` logs errors instead.

        Raises:
            ASGIError: the application is not running (no lifespan startup happened).
        """
        if self._nursery is None:
            raise ASGIError(
                "the application is not running: background tasks need a lifespan startup "
                "(serve it, or use `async with TestClient(app)`)",
                fault="local",
            )
        return self._nursery

    def start_background_task(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Run ``await fn(*args)`` in the application nursery, beyond the current request.

        The task is cancelled at shutdown (and awaited before the shutdown hooks run). An
        exception it raises is logged and does not affect the application.

        Raises:
            ASGIError: the application is not running.
        """

        async def guarded() -> None:
            try:
                await fn(*args)
            except Exception:
                logger.exception("background task %s failed", name or getattr(fn, "__name__", fn))

        self.nursery.start_soon(guarded, name=name or getattr(fn, "__qualname__", None))

    # -- the seed's overridable hooks -------------------------------------------------------

    async def handle_request(self, request: Request) -> Response:
        """Produce the response for ``request``.

        The default dispatches to :attr:`router`; override it to handle requests yourself.
        Raise :class:`HTTPException` for error statuses.
        """
        if self.router is None:
            raise HTTPException(404)
        return await self.router.handle(request)

    async def handle_websocket(self, websocket: WebSocket) -> None:
        """Serve a websocket connection; the default dispatches to :attr:`router`."""
        if self.router is None:
            await websocket.reject(404)
            return
        await self.router.handle_websocket(websocket)

    async def handle_error(self, error: Exception, send: Send) -> None:
        """Answer an exception raised while handling a request (before the response started).

        The default answers :class:`ValidationError` with 400 and ``{"error": str(error)}``,
        and anything else with 500 ``{"error": "Internal Server Error"}`` after logging the
        traceback to the ``trionet.asgi`` logger. Override it as in the seed::

            async def handle_error(self, error, send):
                if isinstance(error, ValidationError):
                    response = Response.json({"error": str(error)}, status_code=400)
                else:
                    response = Response.json({"error": "Internal Server Error"}, status_code=500)
                await response(send)

        :class:`HTTPException`, and an ``ASGIError`` raised with ``status_code=``, never reach
        this method (see :meth:`http_exception_response`).
        """
        if isinstance(error, ValidationError):
            response = Response.json({"error": str(error)}, status_code=400)
        else:
            logger.error("unhandled error while handling a request", exc_info=error)
            response = Response.json({"error": "Internal Server Error"}, status_code=500)
        await response(send)

    def http_exception_response(self, exc: HTTPException) -> Response:
        """The response for an :class:`HTTPException`; default ``{"error": detail}`` JSON."""
        return error_response(exc)

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        if not self._on_trio:
            if not _running_on_trio():
                await _refuse_foreign_loop(scope, receive, send)
                return
            self._on_trio = True
        if scope["type"] == "lifespan":
            await self._run_lifespan(scope, receive, send)
            return
        stack = self._stack
        if stack is None:
            stack = self._stack = self._build_stack()
        scope["app"] = self
        stats = self._stats
        if scope["type"] == "http":
            stats.requests += 1
        else:
            stats.websockets += 1
        stats.in_flight += 1
        try:
            if scope["type"] == "http" and _tracing.enabled():  # a SERVER span (trionet.tracing)
                await _tracing.serve_request(
                    functools.partial(_measured_request, stack) if _metrics.recording() else stack,
                    scope, receive, send)
            elif scope["type"] == "http" and _metrics.recording():
                await _measured_request(stack, scope, receive, send)
            else:
                await stack(scope, receive, send)
        except Exception:
            stats.errors += 1
            raise
        finally:
            stats.in_flight -= 1

    def statistics(self) -> ApplicationStatistics:
        """A snapshot of the application's counters."""
        return dataclasses.replace(self._stats)

    def _build_stack(self) -> ASGIApp:
        app: ASGIApp = self._dispatcher()
        if not self._middleware:
            return app
        for factory, args, kwargs in self._middleware:
            app = factory(app, *args, **kwargs)
        inner = app

        async def guard(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            await self._guarded(scope, receive, send, inner)

        return guard

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        # Catches what escapes the middleware chain (a failing middleware, for example).
        tracker = SendTracker(send)
        try:
            await app(scope, receive, tracker.send)
        except Exception as exc:
            if tracker.started:
                raise
            await self._answer_error(exc, scope, receive, send)

    async def _answer_error(
        self, error: Exception, scope: Scope, receive: Receive, send: Send
    ) -> None:
        # Only called before the response started.
        leaf = single_leaf(error)
        http_error = http_exception_for(leaf)
        if http_error is not None:
            await self.http_exception_response(http_error).send_to(scope, receive, send)
        elif isinstance(leaf, ClientDisconnect):
            return  # nobody is listening any more
        else:
            await self.handle_error(leaf, send)

    def _dispatcher(self) -> ASGIApp:
        # The innermost application of the stack: dispatch() to this application's hooks. The
        # hooks are bound when the stack is built (like the middleware), and it is a plain
        # function returning dispatch()'s coroutine: nothing on top of dispatch() per request.
        handle_request, handle_websocket = self.handle_request, self.handle_websocket
        answer_error = self._answer_error

        def dispatch_here(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            if scope["type"] == "http":
                scope[MAX_BODY_SIZE_KEY] = self.max_body_size
            return dispatch(
                scope, receive, send, self.router, handle_request, handle_websocket,
                answer_error, Exception,
            )

        return dispatch_here

    async def _run_lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            raise ASGIError(f"expected lifespan.startup, got {message['type']!r}")
        if self._nursery is not None:
            raise ASGIError("the application is already running a lifespan", fault="local")
        failure: str | None = None
        started = shutdown_requested = False
        try:
            async with self._lifespan_context(self):
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        for hook in self._on_startup:
                            await hook()
                    except Exception as exc:
                        logger.exception("application startup failed")
                        failure = f"{type(exc).__name__}: {exc}"
                        nursery.cancel_scope.cancel()
                    else:
                        await send({"type": "lifespan.startup.complete"})
                        started = True
                        await receive()  # lifespan.shutdown
                        shutdown_requested = True
                        # Background tasks are cancelled and awaited when the nursery closes.
                        nursery.cancel_scope.cancel()
                self._nursery = None
                if failure is None:
                    for hook in self._on_shutdown:
                        await hook()
        except Exception as exc:
            logger.exception("application lifespan failed")
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            self._nursery = None
        if not started:
            # Hypercorn turns this message into an exception that stops the server: let it.
            await send({"type": "lifespan.startup.failed", "message": failure or "unknown"})
            return
        if not shutdown_requested:
            # A task started directly in the nursery crashed while serving. Requests are
            # still served; answer the shutdown request when it comes.
            await receive()
        if failure is not None:
            await send({"type": "lifespan.shutdown.failed", "message": failure})
        else:
            await send({"type": "lifespan.shutdown.complete"})


async def _measured_request(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run one HTTP request, reporting it to :mod:`trionet.metrics` (an error: an exception, or
    a status of 500 or more)."""
    began = trio.current_time()
    status = 500

    async def send_noting_status(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        await send(message)

    try:
        await app(scope, receive, send_noting_status)
    except Exception:
        status = 500
        raise
    finally:
        _metrics.request("asgi", trio.current_time() - began, status < 500)
