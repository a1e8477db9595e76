"""A correlation id that follows one unit of work through every component, for logging.

trionet keeps the id of the request, message or session being handled in one context variable.
trio gives every task a copy of its parent's context, so the id set while handling an HTTP
request is seen by everything that request's task calls, and tasks it starts inherit it:

* the ASGI :class:`~trionet.asgi.RequestIdMiddleware` sets it to the request id;
* the AsyncAProto server sets it to the session id for each connection;
* :meth:`Channel.serve <trionet.channel.Channel.serve>` sets it to ``"<peer>#<request id>"``
  while a handler answers a request (RPC calls included);
* the message bus sets it to a message's correlation id while its handler runs, and puts the
  current id into the ``x-correlation-id`` header of messages published from a context that
  has one, so an HTTP request id travels over the bus to the consumer that answers it.

Where OpenTelemetry is configured, :mod:`trionet.tracing` carries a W3C trace context next to
the id, and work that has no id takes the trace id as its correlation id.

Add :class:`CorrelationIdFilter` to a logging handler and use ``%(correlation_id)s`` in its
format, or call :func:`configure_logging` for a ready-made stderr handler, human-readable or
JSON lines (:class:`JsonFormatter`); every ``trionet`` command sets its logging up with it
(``--log-level``, ``--log-format text|json``)::

    from trionet.observability import configure_logging, correlation_scope
    import logging

    configure_logging(logging.INFO)
    with correlation_scope("job-42"):
        logging.getLogger("app").info("working")   # ... INFO app [job-42] working

    configure_logging("info", "json", replace=True)
    # {"time": "2026-...Z", "level": "INFO", "logger": "app", "message": "working",
    #  "correlation_id": "job-42", "process": 4242}
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "CORRELATION_HEADER",
    "DEFAULT_FORMAT",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "CorrelationIdFilter",
    "JsonFormatter",
    "configure_logging",
    "correlation_scope",
    "current_correlation_id",
    "reset_correlation_id",
    "set_correlation_id",
]

#: The message header the bus uses to carry the correlation id.
CORRELATION_HEADER = "x-correlation-id"

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trionet_correlation_id", default=None
)


def current_correlation_id() -> str | None:
    """The correlation id of the work being done in this task (``None`` outside any)."""
    return _correlation_id.get()


def set_correlation_id(value: str | None) -> contextvars.Token[str | None]:
    """Set the current task's correlation id; returns a token for ``reset``.

    Prefer :func:`correlation_scope`. Setting it at the top of a task that handles one unit of
    work (a connection, a message) without resetting is fine: the task's context dies with it.
    """
    return _correlation_id.set(value)


def reset_correlation_id(token: contextvars.Token[str | None]) -> None:
    """Undo a :func:`set_correlation_id` (in the same task)."""
    _correlation_id.reset(token)


@contextmanager
def correlation_scope(value: str | None) -> Iterator[None]:
    """Use *value* as the correlation id inside the ``with`` block."""
    token = _correlation_id.set(value)
    try:
        yield
    finally:
        _correlation_id.reset(token)


class CorrelationIdFilter(logging.Filter):
    """Adds ``record.correlation_id`` (``"-"`` when there is none) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _correlation_id.get() or "-"
        return True


#: The human-readable format (``--log-format text``).
DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"

#: The ``--log-format`` choices of the command line.
LOG_FORMATS = ("text", "json")

#: The ``--log-level`` choices of the command line.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (JSON lines).

    The keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message`` (the
    arguments merged in), ``correlation_id`` (``null`` outside any unit of work) and
    ``process`` (the process id); ``exception`` (the formatted traceback) when the record
    carries one, and ``stack`` for ``stack_info``. Non-ASCII text is kept as is.
    """

    def format(self, record: logging.LogRecord) -> str:
        correlation_id = getattr(record, "correlation_id", None)
        if correlation_id is None or correlation_id == "-":
            correlation_id = _correlation_id.get()
        when = datetime.fromtimestamp(record.created, tz=UTC)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": correlation_id,
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.strip().upper())
    if not isinstance(value, int):
        choices = ", ".join(LOG_LEVELS)
        raise ValueError(f"unknown logging level {level!r}; expected one of {choices}")
    return value


def configure_logging(
    level: int | str = logging.INFO,
    fmt: str = DEFAULT_FORMAT,
    logger: str = "",
    *,
    replace: bool = False,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Attach a handler with :class:`CorrelationIdFilter` to *logger* (root by default).

    This is the logging setup of every ``trionet`` command (``serve``, ``run``, ``demo``,
    ``mqtt``, ``kafka``, ``bus``, ``rpc``, ``aproto``): their ``--log-level`` and
    ``--log-format`` options are *level* and *fmt*.

    Args:
        level: a :mod:`logging` level, or its name (``"debug"``, ``"info"``...).
        fmt: ``"json"`` for JSON lines (:class:`JsonFormatter`: one object per record, with
            the correlation id), ``"text"`` for :data:`DEFAULT_FORMAT`, or any
            :class:`logging.Formatter` format string (``%(correlation_id)s`` is available).
        logger: the logger's name (``""``: the root logger).
        replace: first remove the handlers *logger* already has (the command line does, so
            that its format is the only one).
        stream: where records are written (default: :data:`sys.stderr` at the time of the
            call).

    Returns:
        The handler, so that a caller can remove it again.

    Raises:
        ValueError: *level* is not a known level name.
    """
    numeric = _level(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(CorrelationIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(DEFAULT_FORMAT if fmt == "text" else fmt))
    target = logging.getLogger(logger)
    if replace:
        for old in list(target.handlers):
            target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(numeric)
    return handler
