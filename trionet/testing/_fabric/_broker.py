"""What the fabric's brokers share: history, fault rules, delayed delivery, being down."""

from __future__ import annotations

import abc
import collections
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import trio

from ...bus._config import BusConfig, Topics
from ...bus._message import BusMessage
from ...bus._socket import _RESERVED, BusSocket, SocketProvider
from ...bus._topics import TopicFilter
from ._faults import Data, Faults, Item, _decoded

__all__ = ["FabricBroker", "FabricProvider", "FabricStatistics", "Signal"]

logger = logging.getLogger("trionet.testing.fabric")

#: How many published messages a broker remembers for :meth:`FabricBroker.messages`.
HISTORY = 10_000
#: How many delayed messages may wait at once (more are dropped and counted).
MAX_DELAYED = 10_000


class Signal:
    """Wakes every task waiting for a change (a fresh event after each :meth:`fire`)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass(slots=True)
class FabricStatistics:
    """Counters of a fabric broker.

    Attributes:
        published: messages that entered the broker (before the fault rules).
        delivered: copies handed to subscribers (redeliveries included).
        redelivered: copies handed out again after a disconnect or restart.
        acked: deliveries their consumer acknowledged.
        dropped: copies dropped because a subscriber's queue was full (or it was offline
            without a persistent session), and delayed messages beyond 10 000 at once.
        faulted: messages a fault rule dropped, delayed, duplicated or reordered.
    """

    published: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    dropped: int = 0
    faulted: int = 0


class FabricBroker(abc.ABC):
    """An in-memory broker of the test fabric (:class:`MqttFabric`, :class:`KafkaFabric`).

    Attributes:
        name: what the broker stands for (the URL's host, or the memory broker's name).
        faults: the :class:`Faults` rules applied to every message published to it.
        statistics: its :class:`FabricStatistics`.
    """

    scheme: ClassVar[str] = ""

    def __init__(self, name: str, *, faults: Faults | None = None,
                 history: int = HISTORY) -> None:
        self.name = name
        self.faults = faults if faults is not None else Faults()
        self.statistics = FabricStatistics()
        self._history: collections.deque[tuple[str, Data]] = collections.deque(maxlen=history)
        self._nurseries: list[trio.Nursery] = []
        self._up = trio.Event()
        self._up.set()
        self._reply_owners: dict[str, BusSocket] = {}
        self._delayed = 0
        #: Fired when a delivery is acknowledged or a delayed message is delivered.
        self.activity = Signal()

    # -- inspection ---------------------------------------------------------------------------

    def messages(self, topic: str = "#") -> list[BusMessage]:
        """The messages published to topics matching *topic* (a filter), oldest first, as
        they were published (before any fault), replies excluded. The broker remembers the
        last 10 000."""
        kafka = self.scheme == "kafka"  # where '.' separates levels too
        topic_filter = TopicFilter(topic.replace(".", "/") if kafka else topic)
        found = []
        for name, data in self._history:
            if topic_filter.matches(name.replace(".", "/") if kafka else name):
                message = _decoded(data)
                if message is not None:
                    found.append(message)
        return found

    @property
    def up(self) -> bool:
        """Whether the broker is running (not inside :meth:`down`)."""
        return self._up.is_set()

    # -- running ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        """Give the broker a nursery for delayed deliveries (cancelled on exit)."""
        async with trio.open_nursery() as nursery:
            self._nurseries.append(nursery)
            try:
                yield
            finally:
                self._nurseries.remove(nursery)
                nursery.cancel_scope.cancel()

    def _schedule(self, item: Item) -> None:
        if not self._nurseries or self._delayed >= MAX_DELAYED:
            self.statistics.dropped += 1
            logger.warning("%s: a delayed message to %r is lost: %s", self.name, item.topic,
                           "too many are delayed" if self._nurseries else "no TestBus runs")
            return
        self._delayed += 1
        self._nurseries[-1].start_soon(self._deliver_later, item)

    async def _deliver_later(self, item: Item) -> None:
        try:
            await trio.sleep(item.delay)
            item.delay = 0.0
            await self._up.wait()
            await self._deliver(item)
        finally:
            self._delayed -= 1
            self.activity.fire()

    def _idle(self) -> bool:
        """Every delivery acknowledged, no delayed message pending."""
        return self._delayed == 0 and self.statistics.acked >= self.statistics.delivered

    async def _publish(self, item: Item) -> None:
        """A message enters the broker: record it, apply the fault rules, deliver."""
        if not item.topic.startswith(_RESERVED):
            self.statistics.published += 1
            self._history.append((item.topic, item.data))
        item.origin = self
        items = self.faults._apply(item)
        if len(items) != 1 or items[0] is not item or item.delay:
            self.statistics.faulted += 1
        for one in items:
            if one.delay > 0:
                self._schedule(one)
            else:
                await self._deliver(one)
        if not items:
            await trio.lowlevel.checkpoint()

    def _route_reply(self, topic: str, data: Data) -> bool:
        owner = self._reply_owners.get(topic.rpartition("/")[0])
        if owner is None:
            return False
        owner._route_reply(topic, data)
        return True

    async def _deliver(self, item: Item) -> None:
        """Hand a message (after the fault rules) to its subscribers, or a reply to its
        requester."""
        if item.topic.startswith(_RESERVED):
            if not self._route_reply(item.topic, item.data):
                self.statistics.dropped += 1
            await trio.lowlevel.checkpoint()
            return
        await self._deliver_message(item)

    @abc.abstractmethod
    async def _deliver_message(self, item: Item) -> None:
        """Hand a message (not a reply) to its subscribers."""

    @abc.abstractmethod
    def _make_socket(self, config: BusConfig, topics: Sequence[str],
                     name: str | None) -> BusSocket:
        """A new socket of this broker."""

    # -- faults -------------------------------------------------------------------------------

    @abc.abstractmethod
    def _go_down(self) -> None:
        """Every connection is lost (what survives a restart is kept)."""

    @abc.abstractmethod
    def _come_up(self) -> None:
        """Clients reconnect."""

    @abc.abstractmethod
    def disconnect(self, client: str) -> int:
        """Cut the connections of *client* (a client id, or an application's name); they
        reconnect at once. Returns how many connections were cut."""

    @asynccontextmanager
    async def down(self) -> AsyncIterator[None]:
        """The broker is down for the duration of the block, then restarts: connections are
        lost, publishers wait, and what a real broker keeps across a restart is kept (MQTT:
        retained messages and persistent sessions with their unacknowledged messages; Kafka:
        every record and committed offset; what was handed out but not committed is read
        again)."""
        if not self.up:
            raise RuntimeError(f"the fabric broker {self.name!r} is down already")
        self._up = trio.Event()
        self._go_down()
        try:
            await trio.lowlevel.checkpoint()
            yield
        finally:
            self._up.set()
            self._come_up()

    async def restart(self) -> None:
        """Restart the broker (:meth:`down` for no time at all)."""
        async with self.down():
            pass


class FabricProvider(SocketProvider):
    """Makes sockets of a fabric broker for a broker configuration (what :class:`TestBus`
    puts in place of an application's providers).

    Args:
        config: the configuration the application gave (its URL stays the same).
        broker: the fabric broker.
    """

    def __init__(self, config: BusConfig, broker: FabricBroker) -> None:
        super().__init__(config)
        self.broker = broker

    def create_socket(self, topics: Topics = None, *, name: str | None = None) -> BusSocket:
        """A new, unopened socket of the fabric broker."""
        return self.broker._make_socket(self.config, self._topics(topics), name)

    def _with_config(self, config: Any) -> FabricProvider:
        return FabricProvider(config, self.broker)

    def __repr__(self) -> str:
        return f"<FabricProvider {self.url} on {self.broker!r}>"
