"""The ``trionet`` command line (also ``python -m trionet``).

Expected failures (an address in use or invalid, a module or attribute that is not there, an
unreachable or refused broker, a missing optional dependency, a failing application startup)
print one or two lines and exit with a non-zero status: 2 for a usage error (a bad argument,
module path or broker URL), 1 otherwise. ``--debug`` (anywhere on the command line) or the
environment variable ``TRIONET_DEBUG=1`` prints the traceback as well. An unexpected exception
(a bug) always prints its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio

from . import __version__
from ._extras import EXTRAS
from .errors import ConfigurationError, TrionetError

__all__ = ["debug_requested", "import_target", "main", "report_failure", "run_reporting"]

_DEBUG_HINT = "(run with --debug, or TRIONET_DEBUG=1, to see the traceback)"


def debug_requested(flag: bool | None = None) -> bool:
    """Whether tracebacks are wanted: ``flag`` (the ``--debug`` option) or ``TRIONET_DEBUG``."""
    if flag:
        return True
    return os.environ.get("TRIONET_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _describe(error: BaseException) -> str | None:
    """One line for an expected failure, or ``None`` for an unexpected one."""
    if isinstance(error, ImportError):
        text = " ".join(str(error).split())
        if "pip install 'trionet[" in text:  # the subpackage's own message (trionet._extras)
            return text
        top = (error.name or "").partition(".")[0]
        if top in EXTRAS:
            return (
                f"the optional dependency {top!r} is not installed; "
                f"install it with: pip install 'trionet[{EXTRAS[top]}]'"
            )
    if isinstance(error, (TrionetError, OSError)):
        text = " ".join(str(error).split()) or type(error).__name__
        notes = [" ".join(str(note).split()) for note in getattr(error, "__notes__", ())]
        return text + "".join(f" ({note})" for note in notes if note)
    return None


def report_failure(prog: str, error: BaseException, *, debug: bool | None = None) -> int:
    """Print a failure of command ``prog`` on stderr; returns the exit status (2 or 1).

    An expected failure (a :class:`~trionet.errors.TrionetError`, an :class:`OSError`, a
    missing optional dependency; inside exception groups too) gets one line each, plus a hint
    about ``--debug``; with debugging on, or for an unexpected exception, the traceback is
    printed too. A :class:`~trionet.errors.ConfigurationError` is a usage error: status 2.
    """
    leaves = _leaves(error)
    messages = [_describe(leaf) for leaf in leaves]
    expected = all(message is not None for message in messages)
    if debug_requested(debug) or not expected:
        traceback.print_exception(error)
    if not expected:
        print(f"{prog}: unexpected error (the traceback is above)", file=sys.stderr)
        return 1
    for message in dict.fromkeys(messages):  # the same failure of several tasks: once
        print(f"{prog}: {message}", file=sys.stderr)
    if not debug_requested(debug):
        print(_DEBUG_HINT, file=sys.stderr)
    return 2 if all(isinstance(leaf, ConfigurationError) for leaf in leaves) else 1


def run_reporting(prog: str, command: Callable[[], int], *, debug: bool | None = None) -> int:
    """Run ``command`` and return its exit status; a failure is reported by
    :func:`report_failure`."""
    try:
        return command()
    except Exception as error:  # reported, with the traceback unless expected
        return report_failure(prog, error, debug=debug)


def import_target(target: str) -> Any:
    """Import ``MODULE[:ATTRIBUTE]`` (the attribute defaults to ``app`` and may be dotted) and
    return the object it names; what ``trionet serve`` and ``trionet run`` accept.

    The current directory is importable, as with ``python -m``. A file path (``./webapp.py``,
    ``webapp.py:app``) is refused with the module path to use instead.

    Raises:
        ConfigurationError: the reference is malformed or a file path, the module cannot be
            imported, or the attribute is not there.
    """
    module_name, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        path = module_name.removesuffix(".py").replace(os.sep, "/")
        module = ".".join(part for part in path.split("/") if part not in ("", "."))
        raise ConfigurationError(
            f"{target!r} is a file path; name the module instead: {module or 'MODULE'}:{attribute}"
            " (MODULE:ATTRIBUTE, importable from the current directory)"
        )
    if not module_name or not all(
        part.isidentifier() for part in [*module_name.split("."), *attribute.split(".")]
    ):
        raise ConfigurationError(
            f"expected MODULE:ATTRIBUTE (e.g. 'myproject.web:app'), got {target!r}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] in EXTRAS or "pip install 'trionet[" in str(exc):
            raise  # a missing optional dependency: reported with the extra to install
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return obj


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trionet", description="trio-native networking toolkit"
    )
    parser.add_argument("--version", action="version", version=f"trionet {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of a failure (also: TRIONET_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run every component in one nursery on embedded defaults and print what happened",
    )
    demo.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="PART",
        help="run only this component's own demo (repeatable): framing, asgi, channel, "
        "aproto, bus (and mqtt or kafka with --broker, mail with --smtp and --imap)",
    )
    demo.add_argument("--smtp", metavar="URL", default=None,
                      help="for --only mail: smtp[s]://USER:PASSWORD@HOST:PORT to send with")
    demo.add_argument("--imap", metavar="URL", default=None,
                      help="for --only mail: imap[s]://USER:PASSWORD@HOST:PORT to read with")
    demo.add_argument("--ca-file", metavar="FILE", default=None,
                      help="for --only mail: the CA certificates to verify the servers with "
                      "(default: the system's)")
    demo.add_argument(
        "--broker",
        default="memory://",
        metavar="URL",
        help="the message bus: memory:// (embedded, default), mqtt://host:port, kafka://host:port",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep the servers running and print their addresses; the first SIGINT/SIGTERM "
        "stops them gracefully (exit 0), a second one at once (exit 130/143)",
    )
    from ._commands import add_logging_arguments

    add_logging_arguments(demo, level="warning")
    from .bus._cli import add_asyncapi_parser, add_run_parser

    add_run_parser(sub)
    add_asyncapi_parser(sub)
    serve = sub.add_parser(
        "serve",
        help="serve an ASGI app on trio (Hypercorn's protocol stack)",
        description="Serve an ASGI app until SIGINT/SIGTERM: the first signal shuts down "
        "gracefully (exit 0), a second one stops at once (exit 130 for SIGINT, 143 for SIGTERM).",
    )
    from .asgi._cli import add_serve_arguments

    add_serve_arguments(serve)
    from ._commands import add_commands

    add_commands(sub)
    for command in sub.choices.values():
        # After the command too (``trionet serve app:app --debug``); SUPPRESS keeps a
        # ``--debug`` given before the command.
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print the traceback of a failure (also: TRIONET_DEBUG=1)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trionet`` console script. Returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    debug: bool = args.debug
    if args.command == "demo":
        from ._commands import setup_logging
        from .demo._run import run_demo

        setup_logging(args)

        def demo() -> int:
            mail = (args.smtp, args.imap, args.ca_file)
            status: int = trio.run(partial(run_demo, args.only, args.broker, args.serve, mail))
            return status

        return run_reporting("trionet demo", demo, debug=debug)
    if args.command == "run":
        from .bus._cli import run_command

        return run_command(args)
    if args.command == "asyncapi":
        from .bus._cli import asyncapi_command

        return asyncapi_command(args)
    if args.command == "serve":
        from .asgi._cli import ServeOptions, serve_command

        return serve_command(ServeOptions.from_args(args))
    from ._commands import COMMANDS, run_command

    if args.command in COMMANDS:
        return run_command(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
