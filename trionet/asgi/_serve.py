"""Serving an ASGI application with Hypercorn's trio worker, inside the caller's nursery.

``hypercorn.trio.serve`` shuts down gracefully only when its ``shutdown_trigger`` fires; a plain
cancellation of the surrounding nursery would cancel in-flight requests at once. :func:`serve`
turns cancellation into a graceful shutdown: once the server is listening, Hypercorn runs in a
shielded cancel scope, and when the caller's scope is cancelled :func:`serve` fires the trigger
and puts a hard deadline on the shielded scope. Hypercorn then stops accepting, lets in-flight
requests finish (up to ``graceful_timeout``), runs the lifespan shutdown, and returns; only
then does the cancellation continue outwards. No Hypercorn task outlives the call.

Hypercorn is imported when :func:`serve` is first called, so ``import trionet.asgi`` stays cheap.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import trio

from ..errors import ASGIError
from ._types import ASGIApp
from ._util import collapse_single_error

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = ["BoundAddress", "load_app", "serve", "serve_cli"]

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
    config: Config | None, bind: str | Sequence[str] | None, graceful_timeout: float | None
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
    task_status: trio.TaskStatus[BoundAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with Hypercorn's trio worker until cancelled, then shut down gracefully.

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
            ``websocket_max_message_size``, ``max_app_queue_size``...). Without one,
            Hypercorn's defaults apply, except that errors are logged through the
            ``hypercorn.error`` logger and ``graceful_timeout``/``shutdown_timeout`` are
            5 s/10 s.
        graceful_timeout: how long in-flight requests may run after shutdown begins.

    Raises:
        ASGIError: the application's lifespan startup or shutdown failed or timed out.
        OSError: the address cannot be bound.
    """
    from hypercorn.trio import serve as hypercorn_serve
    from hypercorn.utils import LifespanFailureError, LifespanTimeoutError

    config = _make_config(config, bind, graceful_timeout)
    shutdown = trio.Event()
    hypercorn_scope = trio.CancelScope()

    async def run_hypercorn(
        nursery: trio.Nursery, *, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        with hypercorn_scope:
            await hypercorn_serve(
                cast(Any, app), config, shutdown_trigger=shutdown.wait, task_status=task_status
            )
        # Hypercorn stopped by itself (e.g. max_requests): stop waiting for a cancellation.
        nursery.cancel_scope.cancel()

    try:
        with collapse_single_error():
            async with trio.open_nursery() as nursery:
                urls: list[str] = await nursery.start(run_hypercorn, nursery)
                # From here on, a cancellation from outside must not reach Hypercorn directly:
                # it becomes a graceful shutdown bounded by the deadline set below.
                hypercorn_scope.shield = True
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
    module_name, _, attribute = app_ref.partition(":")
    if not module_name:
        raise ASGIError(f"expected 'module:app', got {app_ref!r}", fault="local")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ASGIError(f"cannot import {module_name!r}: {exc}", fault="local") from exc
    obj: Any = module
    for part in (attribute or "app").split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ASGIError(
                f"module {module_name!r} has no attribute {attribute or 'app'!r}", fault="local"
            ) from None
    if not callable(obj):
        raise ASGIError(f"{app_ref!r} is not an ASGI application (not callable)", fault="local")
    return cast(ASGIApp, obj)


async def _serve_until_signal(app: ASGIApp, app_ref: str, bind: str) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            address: BoundAddress = await nursery.start(serve, app, bind)
            print(f"trionet: serving {app_ref} on {address.url} (Ctrl+C to stop)", file=sys.stderr)
            async for signum in signals:
                print(
                    f"trionet: {signal.Signals(signum).name} received, shutting down",
                    file=sys.stderr,
                )
                nursery.cancel_scope.cancel()
                break


def serve_cli(app_ref: str, bind: str = "127.0.0.1:8000") -> int:
    """Run ``trionet serve module:app [--bind ADDR]``: serve until SIGINT/SIGTERM.

    Returns:
        The process exit status: 0 after a clean shutdown, 1 if serving failed, 2 if the
        application cannot be loaded.
    """
    try:
        app = load_app(app_ref)
    except ASGIError as exc:
        print(f"trionet serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        trio.run(_serve_until_signal, app, app_ref, bind)
    except (ASGIError, OSError) as exc:
        print(f"trionet serve: {exc}", file=sys.stderr)
        return 1
    return 0
