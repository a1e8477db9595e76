"""The fabric's MQTT broker (also ``memory://``, without what only MQTT brokers have).

What it keeps of an MQTT 5 broker such as mosquitto: topic filters with ``+``/``#`` (``$``
topics not matched by a leading wildcard), shared subscriptions (``$share/{group}/{filter}``:
each message goes to one member of the group, round robin), retained messages (delivered on
subscribe, cleared by an empty payload), one copy per client of a message that matches several
of its filters, and sessions: a client with ``clean_start=false`` (and a fixed ``client_id``)
keeps its subscriptions and its queued and unacknowledged QoS 1/2 messages across disconnects
(QoS 0 messages are not queued while it is offline, as mosquitto's default),
broker restarts and its own restarts, and gets them again when it comes back; other clients
lose them. Each client's queue in the broker is bounded (``max_queued``, 1000 as in
mosquitto): what does not fit is dropped and counted.

``memory://`` on the fabric has no retained messages and no sessions, and a full queue makes
the publisher wait (``overflow="block"``, the default) or drops (``"drop"``), as the
in-process broker does.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial

import trio

from ..._topics import split_shared
from ...bus._config import BusConfig, MemoryConfig, MqttConfig
from ...bus._message import BusMessage
from ...bus._socket import BusSocket, arrival_time as _arrival
from ...bus._topics import TopicFilter
from ._broker import FabricBroker, Signal
from ._faults import Data, Faults, Item

__all__ = ["MqttFabric"]

_MAX_QUEUED = 1000


class _Queued:
    __slots__ = ("data", "qos", "redelivery", "seq", "topic")

    def __init__(self, topic: str, data: Data, qos: int, seq: int) -> None:
        self.topic = topic
        self.data = data
        self.qos = qos
        self.seq = seq
        self.redelivery = False


class _Session:
    """A client's state in the broker (outlives its connections when persistent)."""

    def __init__(self, client_id: str, persistent: bool, qos: int) -> None:
        self.client_id = client_id
        self.persistent = persistent
        self.qos = qos
        self.filters: dict[str, TopicFilter] = {}
        self.queue: collections.deque[_Queued] = collections.deque()
        self.inflight: dict[int, _Queued] = {}
        self.socket: _MqttFabricSocket | None = None
        self.connected = False
        self.generation = 0
        self.changed = Signal()
        self.space = Signal()

    def matches(self, topic: str) -> bool:
        return any(split_shared(text)[0] is None and f.matches(topic)
                   for text, f in self.filters.items())


class MqttFabric(FabricBroker):
    """An in-memory MQTT broker with the semantics tests rely on (see the module above).

    Args:
        name: what it stands for (``host:port``, or a ``memory://`` name).
        memory: behave as ``memory://`` (no retained messages, no sessions).
        faults: the fault rules (a fresh :class:`Faults` by default).
        max_queued: messages the broker queues per client before dropping (``memory://``:
            the client's ``max_queue``, and publishers wait unless ``overflow="drop"``).
    """

    scheme = "mqtt"

    def __init__(self, name: str = "fabric", *, memory: bool = False,
                 faults: Faults | None = None, max_queued: int = _MAX_QUEUED) -> None:
        super().__init__(name, faults=faults)
        self.memory = memory
        self.max_queued = max_queued
        self.retained: dict[str, Data] = {}
        self._sessions: dict[str, _Session] = {}
        self._shared_turn: dict[tuple[str, str], int] = {}
        self._seq = itertools.count(1)

    def __repr__(self) -> str:
        kind = "memory" if self.memory else "MQTT"
        return f"<{kind} fabric {self.name!r}, {len(self._sessions)} session(s)>"

    def sessions(self) -> dict[str, tuple[str, ...]]:
        """Each session's client id and its topic filters (persistent ones while offline)."""
        return {s.client_id: tuple(s.filters) for s in self._sessions.values()}

    def _idle(self) -> bool:
        return super()._idle() and not any(
            s.queue for s in self._sessions.values() if s.connected)

    def _make_socket(self, config: BusConfig, topics: Sequence[str],
                     name: str | None) -> BusSocket:
        return _MqttFabricSocket(self, config, topics=topics, name=name)

    # -- connections --------------------------------------------------------------------------

    def _connect(self, socket: _MqttFabricSocket) -> _Session:
        persistent = socket.persistent and not self.memory
        session = self._sessions.get(socket.client_id)
        if session is not None and session.socket is not None:
            self._lose_connection(session)  # a client id connects again: take over
        if session is None or not persistent or not session.persistent:
            session = _Session(socket.client_id, persistent, socket.qos)
            self._sessions[socket.client_id] = session
        session.socket = socket
        session.qos = socket.qos
        session.connected = True
        session.generation += 1
        session.changed.fire()
        return session

    def _close(self, session: _Session, socket: _MqttFabricSocket) -> None:
        if session.socket is not socket:
            return  # taken over meanwhile
        self._lose_connection(session)
        session.socket = None
        if not session.persistent and self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]
        for base, owner in list(self._reply_owners.items()):
            if owner is socket:
                del self._reply_owners[base]

    def _lose_connection(self, session: _Session) -> None:
        session.connected = False
        session.generation += 1  # acknowledgements of the old connection count no more
        if session.persistent:
            for seq in sorted(session.inflight, reverse=True):
                queued = session.inflight[seq]
                queued.redelivery = True
                session.queue.appendleft(queued)
        else:
            session.queue.clear()
        session.inflight.clear()
        session.changed.fire()
        session.space.fire()

    def _reconnect(self, session: _Session) -> None:
        if session.socket is None:
            return
        session.connected = True
        session.generation += 1
        if not session.persistent:  # a fresh session: the client subscribes again
            self._send_retained(session, list(session.filters))
        session.changed.fire()

    def disconnect(self, client: str) -> int:
        """Cut the connections of *client* (a client id or an application's name); they
        reconnect at once (a persistent session gets its unacknowledged messages again)."""
        cut = 0
        for session in list(self._sessions.values()):
            socket = session.socket
            if socket is not None and client in (session.client_id, socket.name):
                self._lose_connection(session)
                self._reconnect(session)
                cut += 1
        return cut

    def _go_down(self) -> None:
        for session in self._sessions.values():
            if session.socket is not None:
                self._lose_connection(session)

    def _come_up(self) -> None:
        for session in list(self._sessions.values()):
            self._reconnect(session)

    # -- subscriptions ------------------------------------------------------------------------

    def _subscribe(self, session: _Session, filters: Sequence[str]) -> None:
        for text in filters:
            session.filters[text] = TopicFilter(text)
        self._send_retained(session, filters)

    def _send_retained(self, session: _Session, filters: Sequence[str]) -> None:
        if self.memory or not self.retained:
            return
        plain = [TopicFilter(t) for t in filters if split_shared(t)[0] is None]
        for topic, data in self.retained.items():
            if any(f.matches(topic) for f in plain):
                self._queue(session, topic, data, 1)

    def _unsubscribe(self, session: _Session, filters: Sequence[str]) -> None:
        for text in filters:
            session.filters.pop(text, None)

    # -- delivery -----------------------------------------------------------------------------

    def _targets(self, topic: str) -> list[_Session]:
        targets = [s for s in self._sessions.values() if s.matches(topic)]
        groups: dict[tuple[str, str], list[_Session]] = {}
        for session in self._sessions.values():
            for text, topic_filter in session.filters.items():
                group, inner = split_shared(text)
                if group is not None and topic_filter.matches(topic):
                    groups.setdefault((group, inner), []).append(session)
        for key, members in groups.items():
            online = [s for s in members if s.connected] or members
            turn = self._shared_turn.get(key, 0)
            self._shared_turn[key] = turn + 1
            chosen = online[turn % len(online)]
            if chosen not in targets:
                targets.append(chosen)
        return targets

    async def _deliver_message(self, item: Item) -> None:
        topic = item.topic
        if item.retain and not self.memory:
            if item.data == b"":
                self.retained.pop(topic, None)
            else:
                self.retained[topic] = item.data
        first = True
        for session in self._targets(topic):
            data = item.data
            if not first and isinstance(data, BusMessage):
                data = data._clone()
            first = False
            qos = min(item.qos, session.qos)
            if not session.connected and (not session.persistent or qos == 0):
                self.statistics.dropped += 1  # QoS 0 is not queued for offline sessions
                continue
            while (self.memory and len(session.queue) >= self.max_queued and session.connected
                   and session.socket is not None and not session.socket.drop):
                await session.space.wait()  # memory:// blocks the publisher
            self._queue(session, topic, data, qos)
        await trio.lowlevel.checkpoint()

    def _queue(self, session: _Session, topic: str, data: Data, qos: int) -> None:
        if len(session.queue) >= self.max_queued:
            self.statistics.dropped += 1
            return
        session.queue.append(_Queued(topic, data, qos, next(self._seq)))
        session.changed.fire()

    async def _ack(self, session: _Session, generation: int, seq: int | None) -> None:
        self.statistics.acked += 1
        self.activity.fire()
        if seq is not None and session.generation == generation:
            session.inflight.pop(seq, None)
        await trio.lowlevel.checkpoint()

    async def _pump(self, session: _Session, socket: _MqttFabricSocket) -> None:
        """Move the session's queued messages into the socket while it is connected."""
        send = socket._inbound_send.send
        while session.socket is socket:
            if not session.connected or not session.queue:
                await session.changed.wait()
                continue
            queued = session.queue.popleft()
            session.space.fire()
            tracked = queued.qos > 0 and session.persistent
            if tracked:
                session.inflight[queued.seq] = queued
            if queued.redelivery:
                self.statistics.redelivered += 1
            self.statistics.delivered += 1
            ack = partial(self._ack, session, session.generation,
                          queued.seq if tracked else None)
            try:
                await send((queued.topic, queued.data, ack, _arrival(queued.data)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


class _MqttFabricSocket(BusSocket):
    """A bus socket of an :class:`MqttFabric` (client ids as the real socket makes them)."""

    def __init__(self, broker: MqttFabric, config: BusConfig, *, topics: Sequence[str],
                 name: str | None) -> None:
        if isinstance(config, MqttConfig):
            base, compact = config.client_id, config.version != "5"
            self.persistent, self.qos = not config.clean_start, config.qos
            codec: str | None = "msgpack"
        else:
            base, compact, self.persistent, self.qos, codec = None, False, False, 1, None
        self.drop = isinstance(config, MemoryConfig) and config.overflow == "drop"
        super().__init__(config, topics=topics, name=name, client_id_base=base,
                         compact_client_id=compact, endpoint=f"fabric {id(broker)}",
                         default_codec=codec)  # type: ignore[arg-type]
        self.broker = broker
        self._session: _Session | None = None

    @asynccontextmanager
    async def _connect(self, nursery: trio.Nursery) -> AsyncIterator[None]:
        await self.broker._up.wait()
        session = self._session = self.broker._connect(self)
        nursery.start_soon(self.broker._pump, session, self)
        try:
            await trio.lowlevel.checkpoint()
            yield
        finally:
            self.broker._close(session, self)
            self._session = None

    def _connection(self, nursery: trio.Nursery) -> AbstractAsyncContextManager[None]:
        return self._connect(nursery)

    async def _send(self, topic: str, data: Data) -> None:
        if not self.broker.up:
            await self.broker._up.wait()  # the client queues it until it has reconnected
        await self.broker._publish(Item(topic, data, qos=self.qos))

    async def _subscribe(self, filters: Sequence[str]) -> None:
        assert self._session is not None
        self.broker._subscribe(self._session, filters)
        await trio.lowlevel.checkpoint()

    async def _unsubscribe(self, filters: Sequence[str]) -> None:
        assert self._session is not None
        self.broker._unsubscribe(self._session, filters)
        await trio.lowlevel.checkpoint()

    async def _open_reply_route(self) -> None:
        self.broker._reply_owners[self._reply_base] = self
        await trio.lowlevel.checkpoint()
