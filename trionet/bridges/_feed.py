"""The bounded buffer between a subscription and a response, and its overflow policy.

A :class:`Feed` is what one browser connection reads: a :class:`trio.abc.ReceiveChannel` with a
fixed capacity, filled by one *pump* task that reads the subscription. When the connection is
slower than the subscription and the feed is full, its policy decides (there is no third,
unbounded way):

* ``"drop-oldest"`` (the default): the oldest buffered message is dropped and counted in
  :attr:`FeedStatistics.dropped`; the pump keeps reading, so the subscription (and the broker)
  never wait for a slow browser, and the browser gets the newest messages.
* ``"pause"``: the pump stops reading the subscription until there is room. The subscription's
  own bounded buffer then fills and its flow control takes over: an MQTT subscription withholds
  QoS 1/2 acknowledgements and the client stops reading from the broker; a Kafka consumer stops
  polling once its bounded read-ahead is full; a bus socket's queue fills and its transport
  waits. Nothing is lost, but everything upstream of this feed (on a shared client, its other
  subscriptions too) waits for the slowest reader.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar, final

import trio

from .._util import collapse_single_error
from ..errors import ConfigurationError

__all__ = ["DEFAULT_MAX_BUFFER_SIZE", "OVERFLOW_POLICIES", "Feed", "FeedStatistics", "Overflow",
           "open_feed"]

T = TypeVar("T")

logger = logging.getLogger("trionet.bridges")

#: What a full feed does: drop its oldest message, or stop reading the subscription.
Overflow = Literal["drop-oldest", "pause"]
OVERFLOW_POLICIES: Final = ("drop-oldest", "pause")
#: The default capacity of a feed, in messages.
DEFAULT_MAX_BUFFER_SIZE: Final = 64


@dataclass(slots=True)
class FeedStatistics:
    """Counters of one :class:`Feed` (or, in :class:`~trionet.bridges.Bridge`, of them all).

    Attributes:
        max_buffer_size: the capacity.
        overflow: the policy when full.
        buffered: messages buffered now.
        high_water: the most messages ever buffered at once (never above ``max_buffer_size``).
        received: messages read from the subscription.
        delivered: messages taken out by the connection.
        dropped: messages dropped by ``"drop-oldest"``.
        paused: how many times ``"pause"`` stopped reading the subscription.
    """

    max_buffer_size: int
    overflow: str
    buffered: int = 0
    high_water: int = 0
    received: int = 0
    delivered: int = 0
    dropped: int = 0
    paused: int = 0


def check_feed_options(max_buffer_size: int, overflow: str) -> None:
    """Raise :exc:`~trionet.errors.ConfigurationError` for a bad capacity or policy."""
    if not isinstance(max_buffer_size, int) or isinstance(max_buffer_size, bool) \
            or max_buffer_size < 1:
        raise ConfigurationError(f"max_buffer_size must be an int >= 1, got {max_buffer_size!r}")
    if overflow not in OVERFLOW_POLICIES:
        raise ConfigurationError(
            f"overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, got {overflow!r}"
        )


@final
class Feed(trio.abc.ReceiveChannel[T], Generic[T]):
    """A bounded buffer of messages for one connection (see the module docstring).

    Made by :func:`open_feed` (or :meth:`Bridge.open_feed <trionet.bridges.Bridge.open_feed>`);
    read it with ``async for message in feed`` or :meth:`receive`. Iteration ends when the
    subscription ends.

    Attributes:
        statistics: this feed's :class:`FeedStatistics`.
        error: the exception that ended the subscription early, if one did (it is logged).
    """

    def __init__(self, max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
                 overflow: Overflow = "drop-oldest") -> None:
        check_feed_options(max_buffer_size, overflow)
        self.statistics = FeedStatistics(max_buffer_size, overflow)
        self.error: Exception | None = None
        self._capacity = max_buffer_size
        self._drop = overflow == "drop-oldest"
        self._queue: deque[T] = deque()
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()
        self._ended = False
        self._closed = False

    def __repr__(self) -> str:
        stats = self.statistics
        return (f"<Feed {stats.buffered}/{stats.max_buffer_size} overflow={stats.overflow!r} "
                f"dropped={stats.dropped}>")

    # -- the pump's side ----------------------------------------------------------------------

    async def put(self, item: T) -> None:
        """Add a message, applying the overflow policy when the feed is full.

        With ``"pause"`` this waits for room. A closed or ended feed ignores the message.
        """
        stats = self.statistics
        stats.received += 1
        queue = self._queue
        if len(queue) >= self._capacity and not (self._closed or self._ended):
            if self._drop:
                queue.popleft()
                stats.dropped += 1
            else:
                stats.paused += 1
                while len(queue) >= self._capacity and not (self._closed or self._ended):
                    await self._writers.park()
        else:
            await trio.lowlevel.checkpoint()
        if self._closed or self._ended:
            return
        queue.append(item)
        size = len(queue)
        stats.buffered = size
        if size > stats.high_water:
            stats.high_water = size
        if self._readers:
            self._readers.unpark()

    def end(self, error: Exception | None = None) -> None:
        """No more messages: readers get the buffered ones, then :exc:`trio.EndOfChannel`."""
        self._ended = True
        if error is not None and self.error is None:
            self.error = error
        self._readers.unpark_all()
        self._writers.unpark_all()

    # -- the connection's side ----------------------------------------------------------------

    def receive_nowait(self) -> T:
        """The oldest buffered message, without waiting.

        Raises:
            trio.WouldBlock: nothing is buffered.
            trio.EndOfChannel: the subscription ended and nothing is buffered.
            trio.ClosedResourceError: the feed was closed with :meth:`aclose`.
        """
        if self._closed:
            raise trio.ClosedResourceError("this feed was closed")
        queue = self._queue
        if queue:
            item = queue.popleft()
            stats = self.statistics
            stats.buffered = len(queue)
            stats.delivered += 1
            if self._writers:
                self._writers.unpark()
            return item
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> T:
        """Wait for the next message and return it (see :meth:`receive_nowait`)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = self.receive_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        while True:
            await self._readers.park()
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                continue

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self.statistics.buffered = 0
            self._readers.unpark_all()
            self._writers.unpark_all()

    async def aclose(self) -> None:
        """Stop reading: buffered messages are dropped, later ones ignored."""
        self._close()
        await trio.lowlevel.checkpoint()


async def _pump(messages: AsyncIterable[T], feed: Feed[T], what: str) -> None:
    try:
        async for message in messages:
            await feed.put(message)
            if feed._closed:
                break
    except trio.ClosedResourceError:
        feed.end()  # the subscription was closed under us (its client is closing)
    except Exception as exc:  # logged; it ends this connection's stream only
        logger.warning("bridge: the subscription %s failed; ending its stream: %r", what, exc,
                       exc_info=exc)
        feed.end(exc)
    else:
        feed.end()


@asynccontextmanager
async def open_feed(
    subscription: AbstractAsyncContextManager[AsyncIterable[T]],
    *,
    max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    overflow: Overflow = "drop-oldest",
) -> AsyncIterator[Feed[T]]:
    """Enter *subscription*, pump its messages into a bounded :class:`Feed`, yield the feed.

    Leaving the block stops the pump and leaves the subscription (unsubscribing)::

        async with open_feed(client.subscription("sensors/#")) as feed:
            async for message in feed:
                ...

    Args:
        subscription: an async context manager that subscribes on entry and gives an async
            iterable of messages: ``client.subscription(...)`` (MQTT), a bus socket
            (``provider.create_socket(topics)``), a :class:`~trionet.kafka.KafkaConsumer`.
        max_buffer_size: the feed's capacity, in messages.
        overflow: ``"drop-oldest"`` or ``"pause"`` (see the module docstring).

    Raises:
        ConfigurationError: a bad capacity or policy.
    """
    feed: Feed[T] = Feed(max_buffer_size, overflow)
    with collapse_single_error():
        async with subscription as messages, trio.open_nursery() as nursery:
            nursery.start_soon(_pump, messages, feed, repr(messages))
            try:
                yield feed
            finally:
                feed._close()
                nursery.cancel_scope.cancel()
