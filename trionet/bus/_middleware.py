"""Middleware: code around every handled message and every published one, on any transport.

A middleware is an object with one or both of two async methods (subclass
:class:`Middleware`, whose methods pass everything through, and override what you need)::

    class Timing(Middleware):
        async def consume_scope(self, call_next, message):
            started = time.perf_counter()
            try:
                return await call_next(message)        # the next middleware, then the handler
            finally:
                print(message.topic, time.perf_counter() - started)

        async def publish_scope(self, call_next, message):
            return await call_next(message)            # the next middleware, then the socket

``consume_scope`` wraps the handling of one message: decoding, injection and the handler
call; it returns the handler's return value (what publishers publish). An exception it
raises goes to the application's :class:`~trionet.bus.ErrorPolicy`. ``publish_scope`` wraps
each publish of the application's socket: the handler's own, replies, publisher results,
requests and dead letters. Either may change the message, by passing another to
``call_next``.

``DistributedApplication(middleware=[...])`` applies to every application;
``@app.application(..., middleware=[...])`` adds an application's own, inside those. The first
in a list is the outermost. Instances are shared by every message (there is no per-message
instance: keep per-message data in local variables); a class is instantiated once, with no
arguments. The method names and arguments are FastStream's ``BaseMiddleware``'s, so a
FastStream middleware that only uses ``call_next`` and the message's fields runs unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from ..errors import ConfigurationError
from ._errors import BusClosed, InvalidPayload
from ._message import BusMessage
from ._payload import as_message
from ._policy import Backoff
from ._socket import BusSocket

__all__ = [
    "ConsumeNext",
    "LoggingMiddleware",
    "Middleware",
    "PublishNext",
    "RetryMiddleware",
]

#: What ``consume_scope`` calls to go on: the rest of the chain, then the handler.
ConsumeNext = Callable[[BusMessage], Awaitable[Any]]
#: What ``publish_scope`` calls to go on: the rest of the chain, then the socket.
PublishNext = Callable[[BusMessage], Awaitable[Any]]

logger = logging.getLogger("trionet.bus")


class Middleware:
    """Base class of bus middleware: both methods pass the message on unchanged."""

    async def consume_scope(self, call_next: ConsumeNext, message: BusMessage) -> Any:
        """Around the handling of *message*; returns the handler's return value."""
        return await call_next(message)

    async def publish_scope(self, call_next: PublishNext, message: BusMessage) -> Any:
        """Around one publish of *message*."""
        return await call_next(message)


def check_middleware(items: Sequence[Any]) -> tuple[Any, ...]:
    """Instances as they are, classes instantiated; anything without the methods refused.

    Raises:
        ConfigurationError: for an object with neither ``consume_scope`` nor
            ``publish_scope``.
    """
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ConfigurationError("middleware must be a list of middleware")
    checked = []
    for item in items:
        if isinstance(item, type):
            item = item()
        if not (callable(getattr(item, "consume_scope", None))
                or callable(getattr(item, "publish_scope", None))):
            raise ConfigurationError(
                f"{item!r} is not middleware (it has neither consume_scope nor publish_scope)"
            )
        checked.append(item)
    return tuple(checked)


def _overrides(item: Any, method: str) -> bool:
    found = getattr(type(item), method, None)
    return found is not None and found is not getattr(Middleware, method)


def consume_scopes(middleware: Sequence[Any]) -> tuple[Any, ...]:
    """The ``consume_scope`` methods that do something, outermost first."""
    return tuple(item.consume_scope for item in middleware if _overrides(item, "consume_scope"))


def wrap_consume(scopes: tuple[Any, ...],
                 invoke: Callable[[BusMessage, dict[str, Any]], Awaitable[Any]]
                 ) -> Callable[[BusMessage, dict[str, Any]], Awaitable[Any]]:
    """*invoke* (``invoke(message, run_kwargs)``) inside the consume scopes."""

    async def invoke_wrapped(message: BusMessage, kwargs: dict[str, Any]) -> Any:
        def step(index: int) -> ConsumeNext:
            if index == len(scopes):
                return lambda current: invoke(current, kwargs)
            scope = scopes[index]
            return lambda current: scope(step(index + 1), current)
        return await step(0)(message)

    return invoke_wrapped


def install_publish_middleware(socket: BusSocket, middleware: Sequence[Any]) -> None:
    """Route every publish of *socket* through the ``publish_scope`` of *middleware*.

    The socket's ``publish`` is replaced, on this instance only, by one that runs the chain
    and ends in the class's own ``publish``: sockets without middleware pay nothing.
    """
    scopes = [item.publish_scope for item in middleware if _overrides(item, "publish_scope")]
    if not scopes:
        return
    unchained = type(socket).publish

    async def last(message: BusMessage) -> None:
        await unchained(socket, message)

    chain: PublishNext = last
    for scope in reversed(scopes):
        chain = _link(scope, chain)

    async def publish(message: BusMessage | Any, topic: str | None = None, *,
                      content_type: str | None = None,
                      headers: Mapping[str, str] | None = None,
                      correlation_id: str | None = None) -> None:
        await chain(as_message(message, topic, content_type=content_type, headers=headers,
                               correlation_id=correlation_id))

    publish.__doc__ = unchained.__doc__
    socket.publish = publish  # type: ignore[method-assign]


def _link(scope: Any, call_next: PublishNext) -> PublishNext:
    def linked(message: BusMessage) -> Awaitable[Any]:
        return scope(call_next, message)  # type: ignore[no-any-return]
    return linked


def _describe(message: BusMessage) -> str:
    correlation_id = message.headers.get("x-correlation-id") or message.correlation_id
    return (f"message {message.message_id or '-'} on {message.topic!r} "
            f"(correlation id {correlation_id or '-'})")


class LoggingMiddleware(Middleware):
    """Logs each handled message (with how long it took, or why it failed) and each publish.

    Args:
        logger: where to log (default: the ``trionet.bus`` logger).
        level: the level of the records (failures too; the error policy logs them as errors).
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("trionet.bus")
        self.level = level

    async def consume_scope(self, call_next: ConsumeNext, message: BusMessage) -> Any:
        """Log *message*, hand it on, log the outcome."""
        log = self.logger
        enabled = log.isEnabledFor(self.level)
        if enabled:
            log.log(self.level, "handling %s", _describe(message))
        started = time.perf_counter()
        try:
            result = await call_next(message)
        except Exception as exc:
            if enabled:
                log.log(self.level, "failed %s after %.1f ms: %s: %s", _describe(message),
                        (time.perf_counter() - started) * 1000, type(exc).__name__, exc)
            raise
        if enabled:
            log.log(self.level, "handled %s in %.1f ms", _describe(message),
                    (time.perf_counter() - started) * 1000)
        return result

    async def publish_scope(self, call_next: PublishNext, message: BusMessage) -> Any:
        """Hand *message* on, then log it."""
        result = await call_next(message)
        if self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, "published %s (%d bytes)", _describe(message),
                            len(message.payload))
        return result


class RetryMiddleware(Middleware):
    """Retries a failing handler, and a failing publish, with backoff.

    Unlike :class:`~trionet.bus.ErrorPolicy` ``retries`` (which retries the handler only), it
    also retries publishes (a broker that is briefly unreachable), and it sits where you put
    it among the middleware. It never retries :class:`~trionet.bus.InvalidPayload` (the same
    bytes fail again), :class:`~trionet.bus.BusClosed` (the socket is gone) or cancellation.

    Args:
        retries: further attempts after the first.
        backoff: the delay before each retry.
        retry_on: the exception types worth retrying.
        consume: retry handlers.
        publish: retry publishes.
    """

    def __init__(self, retries: int = 3, *, backoff: Backoff | None = None,
                 retry_on: tuple[type[Exception], ...] = (Exception,),
                 consume: bool = True, publish: bool = True) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError("RetryMiddleware: retries must be an integer >= 0")
        self.retries = retries
        self.backoff = backoff or Backoff(initial=0.05, maximum=2.0)
        self.retry_on = retry_on
        self.consume = consume
        self.publish = publish

    async def _attempt(self, call_next: ConsumeNext, message: BusMessage, what: str) -> Any:
        attempt = 0
        while True:
            try:
                return await call_next(message)
            except (InvalidPayload, BusClosed):
                raise
            except self.retry_on as exc:
                if attempt >= self.retries:
                    raise
                attempt += 1
                delay = self.backoff.delay(attempt)
                logger.warning("%s %s failed (%s: %s); retry %d of %d in %.2f s", what,
                               _describe(message), type(exc).__name__, exc, attempt,
                               self.retries, delay)
                await trio.sleep(delay)

    async def consume_scope(self, call_next: ConsumeNext, message: BusMessage) -> Any:
        """Hand *message* on, again after a failure."""
        if not self.consume:
            return await call_next(message)
        return await self._attempt(call_next, message, "handling")

    async def publish_scope(self, call_next: PublishNext, message: BusMessage) -> Any:
        """Publish *message*, again after a failure."""
        if not self.publish:
            return await call_next(message)
        return await self._attempt(call_next, message, "publishing")
