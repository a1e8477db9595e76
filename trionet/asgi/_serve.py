"""Serving an ASGI application with Hypercorn's trio worker, inside the caller's nursery.

``hypercorn.trio.serve`` shuts down gracefully only when its ``shutdown_trigger`` fires; a plain
cancellation of the surrounding nursery would cancel in-flight requests at once. :func:`serve`
turns cancellation into a graceful shutdown: once the server is listening, Hypercorn runs in a
shielded cancel scope, and when the caller's scope is cancelled :func:`serve` fires the trigger
and puts a hard deadline on the shielded scope. Hypercorn then stops accepting, lets in-flight
requests finish (up to ``graceful_timeout``), runs the lifespan shutdown, and returns; only
then does the cancellation continue outwards. No Hypercorn task outlives the call. A second
stop, the ``force_stop`` event (what the command line sets on a second SIGINT/SIGTERM), cancels
Hypercorn at once instead.

Limits on untrusted input that :func:`serve` adds to Hypercorn's:

* Request heads: at most ``max_header_count`` header lines and ``max_header_size`` bytes
  (request line plus header lines), answered with 431. Hypercorn's h11 limit
  (``h11_max_incomplete_size``) only bounds a head that is still *incomplete*; a complete
  oversized head that arrives in one read gets through it, so the count and total size are also
  checked by a small ASGI guard around the application, before the application sees the scope.
* Websocket messages: Hypercorn's ``websocket_max_message_size`` is set to the largest route
  limit of the application, and Hypercorn's message buffer is replaced (once per process) by one
  that refuses a fragment *before* storing it past the limit. Hypercorn's own buffer stores
  the data first and checks afterwards, and keeps storing what a client sends after the 1009
  close, so without this a peer that ignores the close makes the server buffer the whole message.

Hypercorn is imported when :func:`serve` is first called, so ``import trionet.asgi`` stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

import trio

from .._extras import missing_extra
from ..errors import ASGIError, ConfigurationError
from ..tls import ServerTLSArgument
from ._app import ASGIApplication
from ._routing import Mount, Router, WebSocketRoute
from ._types import ASGIApp, Receive, Scope, Send
from ._util import collapse_single_error
from ._websockets import DEFAULT_MAX_MESSAGE_SIZE
from ._ws_close import install_close_code_passing

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = [
    "DEFAULT_MAX_HEADER_COUNT",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_WORKER",
    "BoundAddress",
    "largest_websocket_limit",
    "load_app",
    "serve",
    "serve_cli",
]

logger = logging.getLogger("trionet.asgi")

#: Which trio worker :func:`serve` runs: ``"trionet"`` (trionet's own, around Hypercorn's
#: protocol classes) or ``"hypercorn"`` (Hypercorn's trio worker).
Worker = Literal["trionet", "hypercorn"]
#: The worker :func:`serve` runs unless told otherwise.
DEFAULT_WORKER: Worker = "trionet"

#: Default request header count limit of :func:`serve` (more headers: 431).
DEFAULT_MAX_HEADER_COUNT = 100
#: Default request head size limit of :func:`serve`, in bytes (request line + headers; 431).
DEFAULT_MAX_HEADER_SIZE = 16 * 1024

#: Extra time allowed after ``graceful_timeout`` + ``shutdown_timeout`` before the hard stop.
_SHUTDOWN_MARGIN = 1.0


@dataclass(frozen=True)
class BoundAddress:
    """Where a server started by :func:`serve` listens (what ``nursery.start`` returns).

    Attributes:
        scheme: ``http`` or ``https``.
        host: the bound IP address.
        port: the bound port (the real one when you asked for port 0).
        urls: base URLs of every bound socket (several when the config has several binds).
    """

    scheme: str
    host: str
    port: int
    urls: tuple[str, ...]

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8000``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The base websocket URL, e.g. ``ws://127.0.0.1:8000``."""
        return ("wss" if self.scheme == "https" else "ws") + self.url[len(self.scheme) :]

    def __str__(self) -> str:
        return self.url


def _make_config(
    config: Config | None,
    bind: str | Sequence[str] | None,
    graceful_timeout: float | None,
) -> Config:
    from hypercorn.config import Config

    if config is None:
        config = Config()
        # Log through the standard logging tree instead of Hypercorn's own stderr handler.
        config.errorlog = logging.getLogger("hypercorn.error")
        config.graceful_timeout = 5.0
        config.shutdown_timeout = 10.0
        if bind is None:
            bind = "127.0.0.1:8000"
    if bind is not None:
        config.bind = [bind] if isinstance(bind, str) else list(bind)
    if graceful_timeout is not None:
        config.graceful_timeout = graceful_timeout
    return config


def _apply_limits(
    config: Config,
    from_caller: bool,
    app: ASGIApp,
    max_header_count: int | None,
    max_header_size: int | None,
    websocket_max_message_size: int | None,
) -> tuple[int, int]:
    """Put the limits into ``config``; returns the header count and size limits to enforce.

    A limit passed to :func:`serve` wins. Otherwise the default applies, or the caller's
    config value where that is tighter (a config can tighten a default, never loosen it).
    """
    count = _check_limit(
        "max_header_count",
        DEFAULT_MAX_HEADER_COUNT if max_header_count is None else max_header_count,
    )
    if max_header_size is None:
        size = DEFAULT_MAX_HEADER_SIZE
        if from_caller:
            size = min(size, config.h11_max_incomplete_size)
    else:
        size = _check_limit("max_header_size", max_header_size)
    if websocket_max_message_size is None:
        ws_limit = largest_websocket_limit(app)
        if from_caller:
            ws_limit = min(ws_limit, config.websocket_max_message_size)
    else:
        ws_limit = _check_limit("websocket_max_message_size", websocket_max_message_size)
    # h11 answers 431 when a head still incomplete outgrows this; HTTP/2 advertises the list
    # size (which counts 32 bytes of overhead per header) in its SETTINGS frame.
    config.h11_max_incomplete_size = size
    h2_list_size = size + 32 * count
    if from_caller and max_header_size is None and max_header_count is None:
        h2_list_size = min(h2_list_size, config.h2_max_header_list_size)
    config.h2_max_header_list_size = h2_list_size
    config.websocket_max_message_size = ws_limit
    return count, size


def _check_limit(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def largest_websocket_limit(app: object) -> int:
    """The largest ``max_message_size`` any websocket route of ``app`` accepts.

    Looks through an :class:`~trionet.asgi.ASGIApplication` or :class:`~trionet.asgi.Router`
    and the routers mounted in it. Where the limit cannot be known (an application of another
    framework, a mounted foreign ASGI app, an application that overrides ``handle_websocket``),
    trionet's default :data:`~trionet.asgi.DEFAULT_MAX_MESSAGE_SIZE` counts.
    """
    limits: list[int] = []
    seen: set[int] = set()

    def walk(obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, ASGIApplication):
            if type(obj).handle_websocket is not ASGIApplication.handle_websocket:
                limits.append(DEFAULT_MAX_MESSAGE_SIZE)
            if obj.router is not None:
                walk(obj.router)
        elif isinstance(obj, Router):
            for entry in obj.routes:
                if isinstance(entry, WebSocketRoute):
                    limits.append(entry.max_message_size)
                elif isinstance(entry, Mount):
                    walk(entry.app)
        else:
            limits.append(DEFAULT_MAX_MESSAGE_SIZE)

    walk(app)
    return max(limits, default=DEFAULT_MAX_MESSAGE_SIZE)


def _install_bounded_websocket_buffer() -> None:
    """Make Hypercorn refuse a websocket fragment before storing it past the limit (once).

    Hypercorn's ``WebsocketBuffer.extend`` writes a fragment, then compares the total with
    ``websocket_max_message_size``; after the 1009 close it goes on writing every fragment the
    client still sends, so the buffer grows to the client's full message. The replacement
    checks first and stores nothing once the limit would be passed: what arrives after the
    refusal is parsed and dropped. Only this method changes; Hypercorn builds one buffer per
    websocket from the module attribute, so the replacement applies to every server in the
    process (it only ever stores less).
    """
    from hypercorn.protocol import ws_stream

    original: Any = getattr(ws_stream, "WebsocketBuffer", None)
    if getattr(original, "_trionet_bounded", False):
        return
    probe = original(1) if original is not None else None
    if not (
        hasattr(ws_stream, "FrameTooLargeError")
        and hasattr(probe, "length")
        and hasattr(probe, "max_length")
    ):
        # A Hypercorn whose internals differ from the ones this was written for (0.17/0.18):
        # keep its own buffer rather than break every websocket.
        logger.warning(
            "cannot bound Hypercorn's websocket buffer (unknown Hypercorn internals): "
            "websocket_max_message_size applies only after a message is buffered"
        )
        return

    class _BoundedWebsocketBuffer(original):  # type: ignore[misc]
        _trionet_bounded = True

        def extend(self, event: Any) -> None:
            if self.length + len(event.data) > self.max_length:
                raise ws_stream.FrameTooLargeError()
            super().extend(event)

    ws_stream.WebsocketBuffer = _BoundedWebsocketBuffer  # type: ignore[misc]


def _head_size(scope: Scope) -> int:
    """The size of the request head as it was on the wire, near enough (HTTP/1.1 framing)."""
    size = len(scope.get("method", "GET")) + len(scope.get("raw_path") or b"") + 12
    query = scope.get("query_string", b"")
    if query:
        size += 1 + len(query)
    for name, value in scope.get("headers", ()):
        size += len(name) + len(value) + 4
    return size + 2


def _limit_request_heads(app: ASGIApp, max_count: int, max_size: int) -> ASGIApp:
    """Wrap ``app`` so that a request or websocket handshake with too big a head gets 431."""
    body = b"request header fields too large"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]

    async def limit_request_heads(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            count = len(scope.get("headers", ()))
            if count > max_count or _head_size(scope) > max_size:
                logger.debug(
                    "refused a request head from %s: %d headers, about %d bytes (limits %d, %d)",
                    scope.get("client"), count, _head_size(scope), max_count, max_size,
                )
                if kind == "http":
                    await send({"type": "http.response.start", "status": 431, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                elif "websocket.http.response" in scope.get("extensions", {}):
                    await send({"type": "websocket.http.response.start", "status": 431,
                                "headers": headers})
                    await send({"type": "websocket.http.response.body", "body": body})
                else:  # the server cannot send a custom status: it answers 403
                    await send({"type": "websocket.close"})
                return
        await app(scope, receive, send)

    return limit_request_heads


def _bound_address(urls: list[str]) -> BoundAddress:
    if not urls:
        raise ASGIError("the server did not bind any socket", fault="local")
    first = urlsplit(urls[0])
    return BoundAddress(first.scheme, first.hostname or "", first.port or 0, tuple(urls))


async def serve(
    app: ASGIApp,
    bind: str | Sequence[str] | None = None,
    *,
    config: Config | None = None,
    graceful_timeout: float | None = None,
    max_header_count: int | None = None,
    max_header_size: int | None = None,
    websocket_max_message_size: int | None = None,
    force_stop: trio.Event | None = None,
    worker: Worker | None = None,
    tls: ServerTLSArgument = None,
    task_status: trio.TaskStatus[BoundAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with Hypercorn's protocol stack on trio until cancelled, then shut down
    gracefully.

    Use it with ``nursery.start``, which returns the bound address once the server accepts
    connections (after the application's lifespan startup completed)::

        async with trio.open_nursery() as nursery:
            address = await nursery.start(serve, app, "127.0.0.1:0")
            ...  # talk to address.url
            nursery.cancel_scope.cancel()  # graceful shutdown, then the nursery exits

    Args:
        app: any ASGI 3 application.
        bind: ``"host:port"`` (port 0 picks a free port), ``"unix:/path"``, or a list of
            them; default ``127.0.0.1:8000``, or the binds of ``config``. Positional, since
            ``nursery.start`` passes no keyword arguments.
        config: a ``hypercorn.config.Config`` for everything else (TLS, HTTP/2, timeouts,
            ``max_app_queue_size``...). Without one, Hypercorn's defaults apply, except that
            errors are logged through the ``hypercorn.error`` logger and
            ``graceful_timeout``/``shutdown_timeout`` are 5 s/10 s. :func:`serve` sets the
            config's ``h11_max_incomplete_size``, ``h2_max_header_list_size`` and
            ``websocket_max_message_size`` from the three limits below; where a limit is not
            passed, the config's value counts when it is tighter than the default.
        graceful_timeout: how long in-flight requests may run after shutdown begins.
        max_header_count: the most header lines a request (or websocket handshake) may have;
            more are answered with 431 before the application sees the request. Default
            :data:`DEFAULT_MAX_HEADER_COUNT` (100).
        max_header_size: the largest request head in bytes (request line and header lines);
            a bigger one is answered with 431. Default :data:`DEFAULT_MAX_HEADER_SIZE`
            (16 KiB).
        websocket_max_message_size: the largest websocket message the server buffers; a
            bigger one is refused while it arrives (close code 1009) and what the client
            still sends of it is dropped. Default: the largest ``max_message_size`` of the
            application's websocket routes (see :func:`largest_websocket_limit`; 1 MiB for
            an application whose routes trionet cannot see). A route with a smaller limit
            still enforces its own.
        force_stop: when this event is set during the graceful shutdown (or before it), the
            shutdown is abandoned: in-flight requests and the lifespan shutdown are cancelled
            at once. The command line sets it on a second SIGINT/SIGTERM.
        worker: ``"trionet"`` (the default, :data:`DEFAULT_WORKER`): trionet's lean trio
            worker, with its own HTTP/1.1 path and Hypercorn's HTTP/2 and websocket
            protocol classes;
            ``"hypercorn"``: Hypercorn's own trio worker, which also serves HTTP/3 and WSGI
            applications. Without this argument, the ``TRIONET_ASGI_WORKER`` environment
            variable chooses, if it is set.
        tls: serve HTTPS (see :mod:`trionet.tls`): a server :class:`ssl.SSLContext` (used
            as it is: set its ALPN protocols to ``["h2", "http/1.1"]`` for HTTP/2), a
            :class:`~trionet.tls.TLSOptions` naming the certificate files, or a
            :class:`~trionet.tls.CertificateReloader`: after its ``reload()``, new
            connections get the new certificate while open ones keep theirs, without a
            restart. Contexts trionet builds offer HTTP/2 and HTTP/1.1 through ALPN. Instead
            of the config's ``certfile``/``keyfile``/``ca_certs`` (not both).

    Raises:
        ASGIError: the application's lifespan startup or shutdown failed or timed out.
        ConfigurationError: ``tls`` is not a server's ``tls=`` argument, or comes with a
            config that has a certificate too.
        OSError: the address cannot be bound, or a certificate file cannot be read.
        ssl.SSLError: a certificate file of ``tls`` is not valid.
        ValueError: a limit is not a positive int.
    """
    try:
        from hypercorn.utils import LifespanFailureError, LifespanTimeoutError
    except ImportError as exc:  # the asgi extra is not installed
        raise missing_extra("trionet.asgi.serve()", "hypercorn", exc) from exc

    if worker is None:
        worker = cast(Worker, os.environ.get("TRIONET_ASGI_WORKER") or DEFAULT_WORKER)
    hypercorn_serve: Any
    if worker == "trionet":
        from ._worker import worker_serve as hypercorn_serve
    elif worker == "hypercorn":
        from hypercorn.trio import serve as hypercorn_serve
    else:
        raise ValueError(f"worker must be 'trionet' or 'hypercorn', not {worker!r}")

    from_caller = config is not None
    config = _make_config(config, bind, graceful_timeout)
    max_header_count, max_header_size = _apply_limits(
        config, from_caller, app, max_header_count, max_header_size, websocket_max_message_size
    )
    if tls is not None:
        from ._tls import config_with_tls

        config = config_with_tls(config, tls)
    _install_bounded_websocket_buffer()
    install_close_code_passing()  # a handler sees the client's close code, not 1006
    guarded = _limit_request_heads(app, max_header_count, max_header_size)
    shutdown = trio.Event()
    hypercorn_scope = trio.CancelScope()
    # Shielded: it must go on watching while the caller's cancellation turns into the
    # graceful shutdown. Hypercorn's task cancels it when Hypercorn has stopped.
    watch_scope = trio.CancelScope(shield=True)

    async def run_hypercorn(
        nursery: trio.Nursery, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        try:
            with hypercorn_scope:
                await hypercorn_serve(
                    cast(Any, guarded),
                    config,
                    shutdown_trigger=shutdown.wait,
                    task_status=task_status,
                )
        finally:
            watch_scope.cancel()
        # Hypercorn stopped by itself (e.g. max_requests): stop waiting for a cancellation.
        nursery.cancel_scope.cancel()

    async def watch_force_stop(event: trio.Event) -> None:
        with watch_scope:
            await event.wait()
            hypercorn_scope.cancel()

    try:
        with collapse_single_error():
            async with trio.open_nursery() as nursery:
                urls: list[str] = await nursery.start(run_hypercorn, nursery)
                # From here on, a cancellation from outside must not reach Hypercorn directly:
                # it becomes a graceful shutdown bounded by the deadline set below.
                hypercorn_scope.shield = True
                if force_stop is not None:
                    nursery.start_soon(watch_force_stop, force_stop)
                task_status.started(_bound_address(urls))
                try:
                    await trio.sleep_forever()
                finally:
                    shutdown.set()
                    hypercorn_scope.deadline = (
                        trio.current_time()
                        + config.graceful_timeout
                        + config.shutdown_timeout
                        + _SHUTDOWN_MARGIN
                    )
    except LifespanFailureError as exc:
        raise ASGIError(f"the application's lifespan failed: {exc}", fault="local") from exc
    except LifespanTimeoutError as exc:
        raise ASGIError(f"the application's lifespan timed out: {exc}", fault="local") from exc


def load_app(app_ref: str) -> ASGIApp:
    """Import ``"package.module:attribute"`` (attribute defaults to ``app``).

    The current directory is put on ``sys.path`` first, as ``hypercorn`` and ``uvicorn`` do.

    Raises:
        ASGIError: the module or attribute cannot be found, or is not callable.
    """
    from ..cli import import_target

    try:
        obj: Any = import_target(app_ref)
    except ConfigurationError as exc:
        raise ASGIError(str(exc), fault="local") from exc
    if not callable(obj):
        raise ASGIError(f"{app_ref!r} is not an ASGI application (not callable)", fault="local")
    return cast(ASGIApp, obj)


def serve_cli(app_ref: str, bind: str = "127.0.0.1:8000", *, debug: bool | None = None) -> int:
    """Run ``trionet serve module:app [--bind ADDR]``: serve until SIGINT/SIGTERM.

    The first SIGINT or SIGTERM shuts down gracefully; a second one stops at once. A failure
    is printed in one or two lines on stderr (with the traceback when ``debug`` is true or the
    environment variable ``TRIONET_DEBUG=1`` is set; see :func:`trionet.cli.report_failure`).
    The command line's other options are in :mod:`trionet.asgi._cli`.

    Returns:
        The process exit status: 0 after a graceful shutdown, 128 + the signal number after a
        forced stop (130 for SIGINT, 143 for SIGTERM), 1 if serving failed (the address is in
        use, the lifespan startup failed, a dependency is missing), 2 if the application cannot
        be loaded or the address is invalid.
    """
    from ._cli import ServeOptions, serve_command

    return serve_command(ServeOptions(app_ref, bind, debug=bool(debug)))
