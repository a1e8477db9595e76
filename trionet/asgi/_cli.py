"""``trionet serve MODULE:APP``: serve an ASGI application from the shell.

One process serves by default. ``--workers N`` and ``--reload`` add a supervising parent
process (see :mod:`trionet.asgi._supervise`) that binds the listening socket once and runs the
serving processes, which this module also implements (the hidden ``--control-fd`` option).

Every expected failure is reported in one line by :func:`trionet.cli.report_failure`.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import trio

from ..errors import ASGIError, ConfigurationError
from ..tls import CertificateReloader, TLSOptions
from ._app import ASGIApplication
from ._serve import BoundAddress, Worker, serve
from ._types import ASGIApp
from ._util import collapse_single_error

if TYPE_CHECKING:
    from hypercorn.config import Config

__all__ = ["ServeOptions", "add_serve_arguments", "load_asgi_app", "serve_command"]

logger = logging.getLogger("trionet.asgi")

#: The access log line: client, request line, status, response bytes, seconds.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(Uq)s HTTP/%(H)s" %(s)s %(b)s %(L)ss'
#: Hypercorn's ``shutdown_timeout`` (the lifespan shutdown) under ``trionet serve``.
SHUTDOWN_TIMEOUT = 10.0
#: The default ``--graceful-timeout``.
GRACEFUL_TIMEOUT = 5.0
#: The text log format of a serving process under the supervisor (with its process id).
_CHILD_TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [%(process)d] [%(correlation_id)s] %(message)s"
)


@dataclass
class ServeOptions:
    """The options of ``trionet serve`` (see :func:`add_serve_arguments`)."""

    app: str
    bind: str = "127.0.0.1:8000"
    factory: bool = False
    workers: int = 1
    reload: bool = False
    reload_dirs: list[str] = field(default_factory=list)
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = True
    certfile: str | None = None
    keyfile: str | None = None
    ca_certs: str | None = None
    graceful_timeout: float = GRACEFUL_TIMEOUT
    worker: Worker | None = None
    debug: bool = False
    #: Set in a serving process started by the supervisor: its end of the control socket.
    control_fd: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        return cls(
            app=args.app, bind=args.bind, factory=args.factory, workers=args.workers,
            reload=args.reload, reload_dirs=list(args.reload_dir or []),
            log_level=args.log_level, log_format=args.log_format, access_log=args.access_log,
            certfile=args.certfile, keyfile=args.keyfile, ca_certs=args.ca_certs,
            graceful_timeout=args.graceful_timeout, worker=args.worker,
            debug=bool(getattr(args, "debug", False)), control_fd=args.control_fd,
        )

    def child_arguments(self, bind: str, control_fd: int) -> list[str]:
        """The ``trionet serve`` arguments of a serving process started by the supervisor."""
        args = [self.app, "--bind", bind, "--control-fd", str(control_fd),
                "--log-level", self.log_level, "--log-format", self.log_format,
                "--graceful-timeout", str(self.graceful_timeout)]
        if self.factory:
            args.append("--factory")
        if not self.access_log:
            args.append("--no-access-log")
        for flag, value in (("--certfile", self.certfile), ("--keyfile", self.keyfile),
                            ("--ca-certs", self.ca_certs), ("--worker", self.worker)):
            if value is not None:
                args += [flag, value]
        if self.debug:
            args.append("--debug")
        return args


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``trionet serve``."""
    from .._commands import add_logging_arguments

    parser.add_argument("app", metavar="MODULE:APP",
                        help="the application, e.g. 'myproject.web:app' (the attribute defaults "
                        "to 'app'), importable from the current directory")
    parser.add_argument("--bind", default="127.0.0.1:8000", metavar="ADDRESS",
                        help="HOST:PORT (port 0: a free one), [IPv6]:PORT or unix:PATH "
                        "(default %(default)s)")
    parser.add_argument("--factory", action="store_true",
                        help="MODULE:APP is a function that takes no arguments and returns "
                        "the application")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="serving processes sharing the listening socket (default 1)")
    parser.add_argument("--reload", action="store_true",
                        help="restart the serving process when a .py file changes (for "
                        "development)")
    parser.add_argument("--reload-dir", action="append", metavar="DIR",
                        help="a directory to watch with --reload (repeatable; default: the "
                        "current directory)")
    add_logging_arguments(parser)
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="do not log a line per request (logger 'trionet.access', level "
                        "info)")
    parser.add_argument("--certfile", metavar="PEM",
                        help="serve HTTPS with this certificate (chain); needs --keyfile. "
                        "SIGHUP reads the files again (new connections get the new "
                        "certificate)")
    parser.add_argument("--keyfile", metavar="PEM", help="the private key of --certfile")
    parser.add_argument("--ca-certs", metavar="PEM",
                        help="require client certificates issued by these CAs (with --certfile)")
    parser.add_argument("--graceful-timeout", type=float, default=GRACEFUL_TIMEOUT,
                        metavar="SECONDS",
                        help="how long in-flight requests may run once shutdown begins "
                        "(default %(default)s)")
    parser.add_argument("--worker", choices=("trionet", "hypercorn"), default=None,
                        help="the trio worker: trionet's (the default) or Hypercorn's")
    parser.add_argument("--control-fd", type=int, default=None, help=argparse.SUPPRESS)


def _check_options(opts: ServeOptions) -> None:
    _check_bind(opts.bind)
    if opts.workers < 1:
        raise ConfigurationError(f"--workers must be at least 1, got {opts.workers}")
    if not opts.graceful_timeout >= 0:
        raise ConfigurationError(f"--graceful-timeout must be >= 0, got {opts.graceful_timeout}")
    if (opts.certfile is None) != (opts.keyfile is None):
        raise ConfigurationError("--certfile and --keyfile go together (HTTPS needs both)")
    if opts.ca_certs is not None and opts.certfile is None:
        raise ConfigurationError("--ca-certs needs --certfile and --keyfile (client "
                                 "certificates are checked over HTTPS only)")
    for flag, path in (("--certfile", opts.certfile), ("--keyfile", opts.keyfile),
                       ("--ca-certs", opts.ca_certs)):
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"{flag}: no such file: {path!r}")
    for directory in opts.reload_dirs:
        if not os.path.isdir(directory):
            raise ConfigurationError(f"--reload-dir: no such directory: {directory!r}")


def _check_bind(bind: str) -> None:
    """Refuse a ``--bind`` whose port is not 0-65535 (Hypercorn would fail deep inside)."""
    if bind.startswith(("unix:", "fd://")):
        return
    tail = bind.rpartition("]")[2] if bind.startswith("[") else bind
    _, colon, port = tail.rpartition(":")
    if colon and (not port.isdigit() or int(port) > 65535):
        raise ConfigurationError(
            f"invalid address {bind!r}: the port must be a number from 0 to 65535 "
            "(use --bind HOST:PORT, e.g. 127.0.0.1:8000, or unix:PATH)"
        )


def _positional_arguments(obj: object) -> tuple[int, int] | None:
    """How many positional arguments a plain function needs and accepts (``None``: not a
    plain function, or unknown)."""
    if not (inspect.isfunction(obj) or inspect.ismethod(obj)):
        return None
    try:
        parameters = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - callables without a signature
        return None
    positional = [p for p in parameters if p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    needed = sum(p.default is inspect.Parameter.empty for p in positional)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return needed, 1 << 16
    return needed, len(positional)


def load_asgi_app(target: str, *, factory: bool = False) -> ASGIApp:
    """Import ``MODULE[:ATTRIBUTE]`` (see :func:`trionet.cli.import_target`) and return the
    ASGI application it names; with ``factory``, call it (no arguments) to get the application.

    Raises:
        ConfigurationError: the reference cannot be imported, or does not name an
            application (a factory without ``factory``, or the reverse, gets a hint).
    """
    from ..cli import import_target

    obj: Any = import_target(target)
    if factory:
        if isinstance(obj, ASGIApplication) or not callable(obj):
            raise ConfigurationError(
                f"{target!r} ({type(obj).__name__}) is not an application factory "
                "(drop --factory to serve it as it is)"
            )
        obj = obj()
        if inspect.isawaitable(obj):
            if inspect.iscoroutine(obj):
                obj.close()
            raise ConfigurationError(
                f"{target!r} is an async function; --factory needs a plain function that "
                "returns the application"
            )
    elif (arguments := _positional_arguments(obj)) is not None and not (
        arguments[0] <= 3 <= arguments[1]
    ):
        if arguments[0] == 0:
            raise ConfigurationError(
                f"{target!r} takes no arguments, so it is not an ASGI application; if it "
                "returns one, add --factory"
            )
        raise ConfigurationError(
            f"{target!r} is not an ASGI application: it takes {arguments[0]} argument(s), an "
            "ASGI application takes (scope, receive, send)"
        )
    if not callable(obj):
        raise ConfigurationError(
            f"{target!r} is a {type(obj).__name__}, not an ASGI application (not callable)"
        )
    return cast(ASGIApp, obj)


def _hypercorn_config(opts: ServeOptions, bind: str) -> Config:
    from hypercorn.config import Config

    config = Config()
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = opts.graceful_timeout
    config.shutdown_timeout = SHUTDOWN_TIMEOUT
    config.bind = [bind]
    if opts.access_log:
        config.accesslog = logging.getLogger("trionet.access")
        config.access_log_format = ACCESS_LOG_FORMAT
    return config


def _certificate_reloader(opts: ServeOptions) -> CertificateReloader | None:
    """The HTTPS settings of ``--certfile/--keyfile/--ca-certs`` (None: plain HTTP), read
    again on SIGHUP."""
    if opts.certfile is None:
        return None
    options = TLSOptions(cert_file=opts.certfile, key_file=opts.keyfile,
                         ca_file=opts.ca_certs, require_client_cert=opts.ca_certs is not None)
    try:
        return CertificateReloader(options)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"--certfile/--keyfile/--ca-certs cannot be used: {exc}"
        ) from exc


def _reload_certificate(reloader: CertificateReloader, me: str) -> None:
    """SIGHUP: read the certificate files again for new connections; a failure keeps the
    certificate in use (and says so)."""
    try:
        reloader.reload()
    except (ConfigurationError, OSError, ssl.SSLError) as exc:
        print(f"{me}: SIGHUP received, the certificate could not be reloaded, keeping the "
              f"old one: {exc}", file=sys.stderr)
    else:
        print(f"{me}: SIGHUP received, certificate reloaded from {reloader.options.cert_file}"
              " (new connections use it)", file=sys.stderr)


class _OneLineLifespanErrors(logging.Filter):
    """Log a failed startup/shutdown hook as one line (the command line reports it too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _LIFESPAN_MESSAGES and record.exc_info and record.exc_info[1]:
            error = record.exc_info[1]
            record.msg = f"{record.msg}: {type(error).__name__}: {error}"
            record.exc_info = None
            record.exc_text = None
        return True


# What ASGIApplication logs, with the traceback, when a lifespan hook fails.
_LIFESPAN_MESSAGES = frozenset({"application startup failed", "application lifespan failed"})


def _setup_logging(opts: ServeOptions) -> None:
    from ..observability import configure_logging

    if opts.log_format == "json":
        fmt = "json"
    else:
        fmt = _CHILD_TEXT_FORMAT if opts.control_fd is not None else "text"
    configure_logging(opts.log_level, fmt, replace=True)
    if not opts.debug:
        logging.getLogger("trionet.asgi").addFilter(_OneLineLifespanErrors())


async def _read_control(control: trio.socket.SocketType,
                        on_signal: Callable[[signal.Signals], None],
                        stop: trio.CancelScope) -> None:
    """In a serving process under the supervisor: obey ``signal N`` lines from the
    supervisor as if signal N had arrived (a socket keeps a second signal apart from the
    first, where a signal receiver would merge them); when the supervisor's end closes (it
    is gone), shut down gracefully."""
    buffer = b""
    while data := await control.recv(256):
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            word, _, number = line.decode("ascii", "replace").partition(" ")
            if word == "signal" and number.isdigit():
                on_signal(signal.Signals(int(number)))
    if not stop.cancel_called:
        print(f"trionet[{os.getpid()}]: the supervisor is gone, shutting down", file=sys.stderr)
        stop.cancel()


async def _serve_until_signal(app: ASGIApp, opts: ServeOptions, config: Config,
                              reloader: CertificateReloader | None = None) -> int:
    """Serve until a signal; returns the exit status (0, or 128 + signal after a forced stop).

    With a *reloader* (HTTPS), SIGHUP reads the certificate files again instead.
    """
    force_stop = trio.Event()
    forced_by: list[signal.Signals] = []
    me = "trionet" if opts.control_fd is None else f"trionet[{os.getpid()}]"
    server_scope = trio.CancelScope()

    def on_signal(signum: signal.Signals) -> None:
        if signum == signal.SIGHUP:
            if reloader is not None:
                _reload_certificate(reloader, me)
        elif not server_scope.cancel_called:
            print(f"{me}: {signum.name} received, shutting down (again to stop at once)",
                  file=sys.stderr)
            server_scope.cancel()
        elif not forced_by:
            print(f"{me}: {signum.name} received again, stopping at once", file=sys.stderr)
            forced_by.append(signum)
            force_stop.set()

    # The receiver stays open, and read, until the server has stopped: a signal left unread
    # in it would be re-delivered when it closes (and kill the process after a clean stop).
    handled = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if reloader else [])
    with trio.open_signal_receiver(*handled) as signals:
        async with trio.open_nursery() as nursery:

            async def run_server(*, task_status: trio.TaskStatus[BoundAddress]) -> None:
                with server_scope:
                    await serve(app, None, config=config, force_stop=force_stop,
                                worker=opts.worker, tls=reloader, task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped: no more signals to wait for

            address: BoundAddress = await nursery.start(run_server)
            if opts.control_fd is None:
                print(f"trionet: serving {opts.app} on {address.url} (Ctrl+C to stop)",
                      file=sys.stderr)
            else:
                control = trio.socket.from_stdlib_socket(socket.socket(fileno=opts.control_fd))
                await control.send(b"ready\n")
                nursery.start_soon(_read_control, control, on_signal, server_scope)
            async for signum in signals:
                on_signal(signal.Signals(signum))
    return 128 + forced_by[0] if forced_by else 0


def _serve_one_process(opts: ServeOptions) -> int:
    app = load_asgi_app(opts.app, factory=opts.factory)
    config = _hypercorn_config(opts, opts.bind)
    reloader = _certificate_reloader(opts)
    try:
        with collapse_single_error():
            status: int = trio.run(_serve_until_signal, app, opts, config, reloader)
    except OSError as exc:
        # Raised by the bind (in use, not an address of this host, permission...).
        raise ASGIError(f"cannot listen on {opts.bind}: {exc}", fault="local") from exc
    return status


def _serve(opts: ServeOptions) -> int:
    _check_options(opts)
    _setup_logging(opts)
    if opts.control_fd is None and (opts.workers > 1 or opts.reload):
        from ._supervise import supervise

        return supervise(opts)
    return _serve_one_process(opts)


def serve_command(opts: ServeOptions) -> int:
    """Run ``trionet serve`` with ``opts``; returns the exit status.

    0 after a graceful shutdown, 128 + the signal number after a forced stop (130 for SIGINT,
    143 for SIGTERM), 1 if serving failed (the address is in use, the lifespan startup failed,
    a dependency is missing), 2 for a usage error (the application cannot be loaded, a bad
    option). A failure is printed in one or two lines (see :func:`trionet.cli.report_failure`).
    """
    from ..cli import debug_requested, run_reporting

    opts.debug = debug_requested(opts.debug)
    return run_reporting("trionet serve", partial(_serve, opts), debug=opts.debug)
