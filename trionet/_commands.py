"""The operators' commands of the ``trionet`` command line, and the logging options every
command shares.

:func:`add_logging_arguments` gives a command ``--log-level`` and ``--log-format text|json``;
:func:`setup_logging` applies them with :func:`trionet.observability.configure_logging`, the
one logging setup of ``trionet serve``, ``run``, ``demo`` and the commands below.
"""

from __future__ import annotations

import argparse

from .observability import LOG_FORMATS, LOG_LEVELS, configure_logging

__all__ = ["add_logging_arguments", "setup_logging"]


def add_logging_arguments(parser: argparse.ArgumentParser, *, level: str = "info") -> None:
    """Add ``--log-level`` and ``--log-format`` to *parser* (a command's parser)."""
    parser.add_argument("--log-level", default=level, choices=LOG_LEVELS, type=str.lower,
                        help=f"the logging level (default: {level})")
    parser.add_argument("--log-format", default="text", choices=LOG_FORMATS, type=str.lower,
                        help="text: human-readable lines (default); json: one JSON object "
                             "per line (time, level, logger, message, correlation_id)")


def setup_logging(args: argparse.Namespace, *, text_format: str = "text") -> None:
    """Configure the root logger from a command's parsed ``--log-level``/``--log-format``
    (replacing any handler it has); *text_format* is the format string used for ``text``."""
    fmt = "json" if getattr(args, "log_format", "text") == "json" else text_format
    configure_logging(getattr(args, "log_level", "info"), fmt, replace=True)
