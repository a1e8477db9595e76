"""``trionet run module:app --broker URL``: run a :class:`DistributedApplication` from the shell;
``trionet asyncapi module:app [--yaml]``: print its AsyncAPI 3.0 document.

:func:`add_run_parser` adds the ``run`` sub-command to an :mod:`argparse` parser and
:func:`run_command` executes it; :func:`add_asyncapi_parser` and :func:`asyncapi_command` do the
same for ``asyncapi``; :func:`main` is a stand-alone entry point
(``python -m trionet.bus._cli run module:app``).

The application runs until its applications are done, or until SIGINT/SIGTERM (graceful: running
handlers finish within the shutdown timeout, exit status 0; a second signal cancels them at once,
exit status 128 + the signal number: 130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from .._util import collapse_single_error
from ..errors import ConfigurationError
from ._app import DistributedApplication
from ._providers import from_url

__all__ = [
    "add_asyncapi_parser",
    "add_run_parser",
    "asyncapi_command",
    "load_application",
    "main",
    "print_asyncapi",
    "run",
    "run_command",
]

logger = logging.getLogger("trionet.run")


def load_application(target: str) -> DistributedApplication:
    """Import ``module[:attribute]`` and return the :class:`DistributedApplication` it names.

    The attribute defaults to ``app`` and may be a dotted path, and may be a callable returning
    the application (a factory, called with no arguments). The current directory is
    importable, as with ``python -m``; see :func:`trionet.cli.import_target`.

    Raises:
        ConfigurationError: if *target* is malformed, cannot be imported, or is not an
            application.
    """
    from ..cli import import_target

    obj: Any = import_target(target)
    if not isinstance(obj, DistributedApplication) and callable(obj):
        obj = obj()
    if not isinstance(obj, DistributedApplication):
        raise ConfigurationError(
            f"{target!r} is a {type(obj).__name__}, not a DistributedApplication"
        )
    return obj


def run(target: str, *, broker: str | None = None, shutdown_timeout: float | None = None) -> int:
    """Load *target* (``module:app``) and run it until it is done or signalled.

    Args:
        target: ``module:attribute`` naming the application (or a factory of it).
        broker: a broker URL for the applications that name no provider of their own
            (replaces the application's default).
        shutdown_timeout: seconds running handlers get when shutting down.

    Returns:
        The process exit status: 0, or 128 + the signal number (130 for SIGINT, 143 for
        SIGTERM) when a second signal forced the stop.
    """
    app = load_application(target)
    if broker is not None:
        app.default_socket_provider = from_url(broker)
    if shutdown_timeout is not None:
        if not shutdown_timeout >= 0:
            raise ConfigurationError("--shutdown-timeout must be >= 0")
        app.shutdown_timeout = shutdown_timeout
    _describe(target, app)
    trio.run(_start_and_announce, app)
    forced_by = app.forced_by_signal
    return 0 if forced_by is None else 128 + forced_by


def _describe(target: str, app: DistributedApplication) -> None:
    """Log what is about to run: the broker, each application and its subscriptions."""
    default = app.default_socket_provider or from_url("memory://")
    logger.info("running %s: %d application(s), default broker %s",
                target, len(app.applications), default.url)
    private = default.url.startswith("memory:") and any(
        spec.socket_provider is None for spec in app.applications
    )
    for spec in app.applications:
        provider = spec.socket_provider or default
        if spec.kind == "consumer":
            logger.info("  %s (consumer) on %s: subscribes to %s", spec.name, provider.url,
                        ", ".join(spec.topics))
        else:
            logger.info("  %s (producer) on %s", spec.name, provider.url)
        private = private or provider.url.startswith("memory:")
    if private:
        logger.warning(
            "the memory:// broker is private to this process: no other process (another "
            "'trionet run', a client) can publish to or receive from it; to connect processes, "
            "use --broker mqtt://HOST:PORT or --broker kafka://HOST:PORT"
        )


async def _start_and_announce(app: DistributedApplication) -> None:
    """:meth:`DistributedApplication.start_async`, with one "ready" line once every consumer
    is connected and subscribed (when the producers start)."""
    app.forced_by_signal = None
    with collapse_single_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(app._watch_signals)

            async def serve(*, task_status: trio.TaskStatus[None]) -> None:
                await app.serve(task_status=task_status)
                nursery.cancel_scope.cancel()  # done: no more signals to wait for

            await nursery.start(serve)
            consumers = sum(spec.kind == "consumer" for spec in app.applications)
            logger.info("ready: %d consumer(s) subscribed, %d producer(s) started "
                        "(Ctrl+C or SIGTERM to stop)",
                        consumers, len(app.applications) - consumers)


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``run`` sub-command to *subparsers* (from ``parser.add_subparsers()``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run a message-bus DistributedApplication (MODULE:APP)",
        description="Run a trionet.bus DistributedApplication until SIGINT/SIGTERM.",
    )
    parser.add_argument("target", metavar="MODULE:APP",
                        help="the application, e.g. 'myservice:app' (or a factory of it)")
    parser.add_argument("--broker", metavar="URL", default=None,
                        help="broker for applications without their own: memory://, "
                             "mqtt://user:pass@host:1883, kafka://host:9092?group=g")
    parser.add_argument("--shutdown-timeout", metavar="SECONDS", type=float, default=None,
                        help="time running handlers get to finish on shutdown")
    from .._commands import add_logging_arguments

    add_logging_arguments(parser)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Execute a parsed ``run`` command; returns the exit status.

    A failure prints one or two lines (see :func:`trionet.cli.report_failure`): status 2 for a
    usage error (a bad MODULE:APP or broker URL), 1 for others (an unreachable broker...);
    ``args.debug`` or ``TRIONET_DEBUG=1`` adds the traceback.
    """
    from .._commands import setup_logging
    from ..cli import run_reporting

    setup_logging(args)

    return run_reporting(
        "trionet run",
        partial(run, args.target, broker=args.broker, shutdown_timeout=args.shutdown_timeout),
        debug=getattr(args, "debug", None),
    )


def print_asyncapi(target: str, *, yaml: bool = False, broker: str | None = None,
                   title: str | None = None, version: str = "0.1.0") -> int:
    """Load *target* (``module:app``) and print its AsyncAPI 3.0 document on stdout: JSON, or
    YAML with *yaml* (needs PyYAML). *broker* replaces the application's default broker, as
    ``trionet run --broker`` does; *title* defaults to *target*. Returns 0.

    Raises:
        ConfigurationError: for a bad target or broker URL, or ``yaml`` without PyYAML.
    """
    from ._asyncapi import asyncapi_yaml

    app = load_application(target)
    if broker is not None:
        app.default_socket_provider = from_url(broker)
    document = app.asyncapi(title=title or target, version=version)
    text = asyncapi_yaml(document) if yaml else json.dumps(document, indent=2,
                                                          ensure_ascii=False) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def add_asyncapi_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``asyncapi`` sub-command to *subparsers* (from ``parser.add_subparsers()``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "asyncapi",
        help="print the AsyncAPI 3.0 document of a DistributedApplication (MODULE:APP)",
        description="Print the AsyncAPI 3.0 document of a trionet.bus DistributedApplication "
        "(JSON, or YAML with --yaml).",
    )
    parser.add_argument("target", metavar="MODULE:APP",
                        help="the application, e.g. 'myservice:app' (or a factory of it)")
    parser.add_argument("--yaml", action="store_true", help="print YAML (needs PyYAML)")
    parser.add_argument("--broker", metavar="URL", default=None,
                        help="the broker the application runs on, as for 'trionet run'")
    parser.add_argument("--title", default=None, help="info.title (default: MODULE:APP)")
    parser.add_argument("--api-version", metavar="VERSION", default="0.1.0",
                        help="info.version, the API's version (default %(default)s)")
    return parser


def asyncapi_command(args: argparse.Namespace) -> int:
    """Execute a parsed ``asyncapi`` command; a failure prints one line (status 2 for a bad
    MODULE:APP or broker URL)."""
    from ..cli import run_reporting

    return run_reporting(
        "trionet asyncapi",
        partial(print_asyncapi, args.target, yaml=args.yaml, broker=args.broker,
                title=args.title, version=args.api_version),
        debug=getattr(args, "debug", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m trionet.bus._cli run MODULE:APP [--broker URL]``."""
    parser = argparse.ArgumentParser(prog="trionet")
    run_parser = add_run_parser(parser.add_subparsers(dest="command", required=True))
    run_parser.add_argument("--debug", action="store_true",
                            help="print the traceback of a failure (also: TRIONET_DEBUG=1)")
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
