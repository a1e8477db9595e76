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

Add :class:`CorrelationIdFilter` to a logging handler and use ``%(correlation_id)s`` in its
format, or call :func:`configure_logging` for a ready-made stderr handler::

    from trionet.observability import configure_logging, correlation_scope
    import logging

    configure_logging(logging.INFO)
    with correlation_scope("job-42"):
        logging.getLogger("app").info("working")   # ... INFO app [job-42] working
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "CORRELATION_HEADER",
    "CorrelationIdFilter",
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


DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"


def configure_logging(
    level: int = logging.INFO, fmt: str = DEFAULT_FORMAT, logger: str = ""
) -> logging.Handler:
    """Attach a stderr handler with :class:`CorrelationIdFilter` to *logger* (root by default).

    Returns the handler, so that a caller can remove it again.
    """
    handler = logging.StreamHandler()
    handler.addFilter(CorrelationIdFilter())
    handler.setFormatter(logging.Formatter(fmt))
    target = logging.getLogger(logger)
    target.addHandler(handler)
    target.setLevel(level)
    return handler
