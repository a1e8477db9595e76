"""The ``trionet`` command line (also ``python -m trionet``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial

import trio

from . import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trionet", description="trio-native networking toolkit"
    )
    parser.add_argument("--version", action="version", version=f"trionet {__version__}")
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
        "aproto, bus (and mqtt or kafka with --broker)",
    )
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
    from .bus._cli import add_run_parser

    add_run_parser(sub)
    serve = sub.add_parser(
        "serve",
        help="serve an ASGI app on Hypercorn's trio worker",
        description="Serve an ASGI app until SIGINT/SIGTERM: the first signal shuts down "
        "gracefully (exit 0), a second one stops at once (exit 130 for SIGINT, 143 for SIGTERM).",
    )
    serve.add_argument("app", help="the app to serve, as module:attribute")
    serve.add_argument("--bind", default="127.0.0.1:8000", help="host:port (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trionet`` console script. Returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        status: int = trio.run(partial(run_demo, args.only, args.broker, args.serve))
        return status
    if args.command == "run":
        from .bus._cli import run_command

        return run_command(args)
    if args.command == "serve":
        from .asgi._serve import serve_cli

        return serve_cli(args.app, args.bind)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
