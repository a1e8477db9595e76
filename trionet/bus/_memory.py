"""``memory://``: an in-process broker with MQTT topic semantics and bounded queues.

It is the embedded default and the test double of the bus: topic filters match as on an MQTT
broker (``+``, ``#``, ``$`` topics), every subscribing socket has a bounded queue
(``max_queue``), and a full queue either makes the publisher wait (``overflow="block"``, the
default) or drops the message for that subscriber (``overflow="drop"``). Requests and replies
use the same reply route as on the real brokers.

By default messages are handed over as copies of the message objects, without encoding them
(``codec=None``); ``memory://?codec=msgpack`` sends envelope bytes instead, exactly as a network
broker would carry them.

Scheduling: publishing checks for cancellation every time but, while the subscriber's queue has
room, lets other tasks run only every 16 messages, and a consumer application does the same while
messages are queued. Messages then move in batches rather than one scheduling round each, which
is what makes the bus faster than a bare memory channel used one message at a time.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import trio

from ..errors import ConfigurationError
from ._config import MemoryConfig, Topics
from ._message import BusMessage
from ._socket import _RESERVED, BusSocket, SocketProvider, arrival_time as _arrival
from ._topics import TopicFilter, check_topic

__all__ = ["MemoryBroker", "MemoryBrokerStatistics", "MemorySocket", "MemorySocketProvider"]

_BROKERS: weakref.WeakValueDictionary[str, MemoryBroker] = weakref.WeakValueDictionary()
_anonymous = itertools.count(1)
_ROUTE_CACHE_LIMIT = 1024
#: While subscribers' queues have room, a publishing socket lets other tasks run this often.
_YIELD_EVERY = 16


@dataclass(slots=True)
class MemoryBrokerStatistics:
    """Counters of a :class:`MemoryBroker`.

    Attributes:
        published: messages published (replies included).
        delivered: copies put into subscribers' queues.
        acked: deliveries acknowledged by their consumer (the rest were never handled, or
            are still queued or being handled).
        dropped: copies dropped because a subscriber's queue was full (``overflow="drop"``).
        unroutable_replies: replies whose requesting socket is gone.
    """

    published: int = 0
    delivered: int = 0
    acked: int = 0
    dropped: int = 0
    unroutable_replies: int = 0


class _Connection:
    __slots__ = ("drop", "filters", "socket", "statistics")

    def __init__(self, socket: MemorySocket, drop: bool,
                 statistics: MemoryBrokerStatistics) -> None:
        self.socket = socket
        self.drop = drop
        self.statistics = statistics
        self.filters: dict[str, TopicFilter] = {}

    async def ack(self) -> None:
        self.statistics.acked += 1

    def matches(self, topic: str) -> bool:
        return any(f.matches(topic) for f in self.filters.values())


class MemoryBroker:
    """An in-process message broker.

    Sockets of the same broker exchange messages; brokers are found by name, so
    ``memory://name`` in two places of one process means the same broker (as long as some
    provider keeps it alive). ``MemoryBroker()`` makes a private one::

        broker = MemoryBroker()
        app = DistributedApplication(broker.provider())

    Args:
        name: the broker's name; ``None`` makes a unique one.

    Raises:
        ConfigurationError: if a live broker already has that name (use :meth:`named`).
    """

    def __init__(self, name: str | None = None) -> None:
        if name is None:
            name = f"anonymous-{next(_anonymous)}"
        if _BROKERS.get(name) is not None:
            raise ConfigurationError(
                f"a memory broker named {name!r} exists; use MemoryBroker.named({name!r})"
            )
        self.name = name
        self.statistics = MemoryBrokerStatistics()
        self._connections: dict[_Connection, None] = {}
        self._routes: dict[str, list[_Connection]] = {}
        self._reply_owners: dict[str, MemorySocket] = {}
        _BROKERS[name] = self

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The live broker called *name*, made if there is none."""
        broker = _BROKERS.get(name)
        return broker if broker is not None else cls(name)

    def provider(self, **options: object) -> MemorySocketProvider:
        """A socket provider for this broker (*options*: fields of :class:`MemoryConfig`)."""
        return MemorySocketProvider(MemoryConfig(name=self.name, **options), broker=self)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        """``memory://<name>``."""
        return MemoryConfig(name=self.name).to_url()

    def subscriptions(self) -> dict[str, tuple[str, ...]]:
        """Each connected socket's client id and its topic filters."""
        return {c.socket.client_id: tuple(c.filters) for c in self._connections}

    # -- connections (used by MemorySocket) -----------------------------------------------------

    def _attach(self, socket: MemorySocket, *, drop: bool) -> _Connection:
        connection = _Connection(socket, drop, self.statistics)
        self._connections[connection] = None
        return connection

    def _detach(self, connection: _Connection) -> None:
        self._connections.pop(connection, None)
        owner = connection.socket
        for base, socket in list(self._reply_owners.items()):
            if socket is owner:
                del self._reply_owners[base]
        self._routes.clear()

    def _subscribe(self, connection: _Connection, filters: Sequence[str]) -> None:
        for topic_filter in filters:
            connection.filters[topic_filter] = TopicFilter(topic_filter)
        self._routes.clear()

    def _unsubscribe(self, connection: _Connection, filters: Sequence[str]) -> None:
        for topic_filter in filters:
            connection.filters.pop(topic_filter, None)
        self._routes.clear()

    def _open_reply_route(self, socket: MemorySocket, base: str) -> None:
        self._reply_owners[base] = socket

    def _route(self, topic: str) -> list[_Connection]:
        targets = self._routes.get(topic)
        if targets is None:
            targets = [c for c in self._connections if c.matches(topic)]
            if len(self._routes) >= _ROUTE_CACHE_LIMIT:
                self._routes.clear()
            self._routes[topic] = targets
        return targets

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish raw bytes to *topic*, as a publisher that is not trionet would.

        Subscribers decode the bytes as an envelope; anything else is logged and skipped.

        Raises:
            ConfigurationError: if *topic* is not valid for publishing.
        """
        check_topic(topic)
        await self._publish(topic, bytes(data))

    def _publish_nowait(self, topic: str, data: bytes | BusMessage) -> bool:
        """Deliver without waiting if that is possible; False (nothing done) if not."""
        targets = self._routes.get(topic)
        if targets is None:
            if topic.startswith(_RESERVED):
                return False
            targets = self._route(topic)
        if len(targets) > 1:
            return False
        if targets:
            connection = targets[0]
            try:
                connection.socket._inbound_send.send_nowait(
                    (topic, data, connection.ack, _arrival(data)))
            except trio.WouldBlock:
                if not connection.drop:
                    return False
                self.statistics.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the subscriber closed meanwhile
            else:
                self.statistics.delivered += 1
        self.statistics.published += 1
        return True

    async def _publish(self, topic: str, data: bytes | BusMessage) -> None:
        self.statistics.published += 1
        if topic.startswith(_RESERVED):
            owner = self._reply_owners.get(topic.rpartition("/")[0])
            if owner is None:
                self.statistics.unroutable_replies += 1
            else:
                owner._route_reply(topic, data)
            await trio.lowlevel.checkpoint()
            return
        targets = self._routes.get(topic)
        if targets is None:
            targets = self._route(topic)
        if len(targets) == 1 and not targets[0].drop:  # the common case, kept short
            connection = targets[0]
            try:
                await connection.socket._inbound_send.send(
                    (topic, data, connection.ack, _arrival(data)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the subscriber closed meanwhile
            self.statistics.delivered += 1
            return
        if not targets:
            await trio.lowlevel.checkpoint()
            return
        first = True
        waited = False
        arrived = _arrival(data)
        for connection in targets:
            item = data
            if not first and isinstance(data, BusMessage):
                item = data._clone()
            first = False
            channel = connection.socket._inbound_send
            try:
                if connection.drop:
                    try:
                        channel.send_nowait((topic, item, connection.ack, arrived))
                    except trio.WouldBlock:
                        self.statistics.dropped += 1
                        continue
                else:
                    waited = True
                    await channel.send((topic, item, connection.ack, arrived))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # the subscriber closed meanwhile
            self.statistics.delivered += 1
        if not waited:
            await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.name!r}, {len(self._connections)} connection(s)>"


class MemorySocket(BusSocket):
    """A socket of a :class:`MemoryBroker` (made by :class:`MemorySocketProvider`)."""

    def __init__(
        self,
        broker: MemoryBroker,
        config: MemoryConfig,
        *,
        topics: Sequence[str] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(
            config, topics=topics, name=name, default_codec=None,
        )
        self.broker = broker
        self._drop = config.overflow == "drop"
        self._since_yield = 0
        self._connection_state: _Connection | None = None

    @asynccontextmanager
    async def _connection_cm(self) -> AsyncIterator[None]:
        self._connection_state = self.broker._attach(self, drop=self._drop)
        try:
            await trio.lowlevel.checkpoint()
            yield
        finally:
            self.broker._detach(self._connection_state)
            self._connection_state = None

    def _connection(self, nursery: trio.Nursery) -> AbstractAsyncContextManager[None]:
        return self._connection_cm()

    async def _send(self, topic: str, data: bytes | BusMessage) -> None:
        # Like trio's channels this is a checkpoint for cancellation, but while there is room
        # in the subscriber's queue it lets other tasks run only every _YIELD_EVERY messages:
        # a scheduling round per message would cost more than the rest of the bus.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.broker._publish_nowait(topic, data):
            self._since_yield += 1
            if self._since_yield >= _YIELD_EVERY:
                self._since_yield = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        self._since_yield = 0
        await self.broker._publish(topic, data)

    async def _subscribe(self, filters: Sequence[str]) -> None:
        assert self._connection_state is not None
        self.broker._subscribe(self._connection_state, filters)
        await trio.lowlevel.checkpoint()

    async def _unsubscribe(self, filters: Sequence[str]) -> None:
        assert self._connection_state is not None
        self.broker._unsubscribe(self._connection_state, filters)
        await trio.lowlevel.checkpoint()

    async def _open_reply_route(self) -> None:
        self.broker._open_reply_route(self, self._reply_base)
        await trio.lowlevel.checkpoint()


class MemorySocketProvider(SocketProvider):
    """Makes sockets of an in-process broker (``memory://name``).

    Args:
        config: the configuration (default ``memory://``).
        broker: the broker to use; by default the live broker named ``config.name`` (made if
            there is none).
    """

    config: MemoryConfig

    def __init__(
        self, config: MemoryConfig | None = None, *, broker: MemoryBroker | None = None
    ) -> None:
        config = config or MemoryConfig()
        if broker is None:
            broker = MemoryBroker.named(config.name)
        elif broker.name != config.name:
            config = config.replace(name=broker.name)  # type: ignore[assignment]
        super().__init__(config)
        self.broker = broker

    def create_socket(self, topics: Topics = None, *, name: str | None = None) -> MemorySocket:
        """A new, unopened socket of this provider's broker."""
        return MemorySocket(self.broker, self.config, topics=self._topics(topics), name=name)

    def _with_config(self, config: object) -> MemorySocketProvider:
        assert isinstance(config, MemoryConfig)
        return MemorySocketProvider(config, broker=self.broker)
