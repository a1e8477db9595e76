"""The fabric's Kafka cluster: partitions, keys, offsets, consumer groups and commits.

What it keeps of Kafka, as the ``kafka://`` bus uses it: a bus topic ``a/b`` is the Kafka topic
``a.b``; each topic has a number of partitions (``partitions``, per topic or for all), a record
with a key goes to partition ``murmur2(key) % partitions`` (Kafka's default partitioner, so the
same key lands on the same partition as on a real cluster), a record without one to a partition
chosen by the fabric's seeded generator. Each partition is an append-only log with offsets, read
in order. Every application consumes in its group (``{group prefix}.{app name}``); the group's
partitions are shared among its members (one member per partition; a member joining or leaving
moves partitions), and each member reads its partitions in order. A record is committed once it
and every record before it in its partition are acknowledged; a partition's next reader (a
restarted application, another member, the same member after a disconnect or a broker restart)
starts after the last committed record, so records handed out but not committed are read again
(at-least-once). A group without a committed offset starts at the beginning
(``offset_reset=earliest``) or at the end (``latest``, the default; topics created after the
subscription are read from their beginning, as the bus does).

Each partition keeps its last ``retention`` records (100 000); older ones are gone, as after
Kafka's retention.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from ...bus._config import BusConfig, KafkaConfig
from ...bus._socket import (
    REPLY_PREFIX,
    BusSocket,
    arrival_time as _arrival,
    client_label,
)
from ...bus._topics import TopicFilter, check_topic
from ._broker import FabricBroker, Signal
from ._faults import Data, Faults, Item

__all__ = ["KafkaFabric", "murmur2", "partition_for"]

_RETENTION = 100_000
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of *data* (what its default partitioner hashes keys with)."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record with *key*."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True, order=True)
class _TP:
    topic: str
    partition: int


class _Log:
    __slots__ = ("records", "start")

    def __init__(self) -> None:
        self.records: collections.deque[tuple[bytes | None, Data]] = collections.deque()
        self.start = 0  # the offset of records[0]

    @property
    def end(self) -> int:
        return self.start + len(self.records)


class _Member:
    """One consuming socket in its group."""

    def __init__(self, socket: _KafkaFabricSocket, joined: int) -> None:
        self.socket = socket
        self.filters: list[TopicFilter] = []
        self.subscribed_at = 0  # the topic counter when it subscribed
        self.joined = joined
        #: Per assigned partition: which handing-out its acknowledgements belong to (a new one
        #: when the partition is assigned again or read again from its committed offset).
        self.epochs: dict[_TP, int] = {}
        self.assignment: list[_TP] = []
        self.positions: dict[_TP, int] = {}
        self.handed: dict[_TP, collections.deque[int]] = {}
        self.unacked: dict[_TP, set[int]] = {}
        self.changed = Signal()
        self.turn = 0

    def wants(self, name: str) -> bool:
        wildcard_ok = not name.startswith("_")
        topic = name.replace(".", "/")
        return any(f.matches(topic) and (wildcard_ok or f.text[:1] not in "+#")
                   for f in self.filters)


class _Group:
    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[_Member] = []
        self.committed: dict[_TP, int] = {}


class KafkaFabric(FabricBroker):
    """An in-memory Kafka cluster with the semantics tests rely on (see the module above).

    Args:
        name: what it stands for (the bootstrap servers).
        partitions: partitions of a topic made on first use: a number for every topic, or a
            mapping of Kafka topic names (``orders.created``; ``"*"`` for the rest) to numbers.
            A topic that an application's socket makes gets the configuration's
            ``partitions`` instead when that is more than 1.
        faults: the fault rules (a fresh :class:`Faults` by default).
        retention: records kept per partition.
    """

    scheme = "kafka"

    def __init__(self, name: str = "fabric", *, partitions: int | Mapping[str, int] = 1,
                 faults: Faults | None = None, retention: int = _RETENTION) -> None:
        super().__init__(name, faults=faults)
        self._partitions = partitions
        self.retention = retention
        self._topics: dict[str, list[_Log]] = {}
        self._created: dict[str, int] = {}
        self._topic_counter = itertools.count(1)
        self._groups: dict[str, _Group] = {}
        self._joins = itertools.count()
        self._epochs = itertools.count(1)

    def __repr__(self) -> str:
        return f"<Kafka fabric {self.name!r}, {len(self._topics)} topic(s)>"

    def _idle(self) -> bool:
        return super()._idle() and all(
            position >= self._topics[tp.topic][tp.partition].end
            for group in self._groups.values() for member in group.members
            for tp, position in member.positions.items())

    def _make_socket(self, config: BusConfig, topics: Sequence[str],
                     name: str | None) -> BusSocket:
        return _KafkaFabricSocket(self, config, topics=topics, name=name)

    # -- topics -------------------------------------------------------------------------------

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """Make *topic* (a bus or Kafka topic name) with *partitions* partitions, if it does not
        exist yet."""
        name = topic.replace("/", ".")
        if name in self._topics:
            return
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        self._topics[name] = [_Log() for _ in range(partitions)]
        self._created[name] = next(self._topic_counter)
        for group in self._groups.values():
            if any(m.wants(name) for m in group.members):
                self._rebalance(group)

    def _default_partitions(self, name: str, config: BusConfig | None = None) -> int:
        if isinstance(self._partitions, int):
            count = self._partitions
        else:
            count = self._partitions.get(name, self._partitions.get("*", 1))
        # An application whose configuration asks for more partitions gets them, as the
        # topics the real bus creates do; otherwise the fabric's count.
        configured = getattr(config, "partitions", 1)
        return configured if isinstance(configured, int) and configured > 1 else count

    def partitions(self, topic: str) -> int:
        """How many partitions *topic* has (0: it does not exist)."""
        return len(self._topics.get(topic.replace("/", "."), ()))

    def records(self, topic: str, partition: int) -> list[tuple[int, bytes | None, Data]]:
        """``(offset, key, value)`` of the records of one partition that are still kept."""
        log = self._topics[topic.replace("/", ".")][partition]
        return [(log.start + i, key, value) for i, (key, value) in enumerate(log.records)]

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        """The committed offset of a consumer group (``{prefix}.{app name}``) for a
        partition: the next record it will read, or ``None``."""
        found = self._groups.get(group)
        if found is None:
            return None
        return found.committed.get(_TP(topic.replace("/", "."), partition))

    # -- producing ----------------------------------------------------------------------------

    async def _deliver_message(self, item: Item) -> None:
        topic = item.topic
        name = topic.replace("/", ".")
        if name not in self._topics:
            self.create_topic(name, self._default_partitions(name))
        logs = self._topics[name]
        if item.key is not None:
            partition = partition_for(item.key, len(logs))
        else:
            partition = self.faults.random.randrange(len(logs))
        log = logs[partition]
        log.records.append((item.key, item.data))
        if len(log.records) > self.retention:
            log.records.popleft()
            log.start += 1
        for group in self._groups.values():
            for member in group.members:
                if _TP(name, partition) in member.positions:
                    member.changed.fire()
        await trio.lowlevel.checkpoint()

    # -- groups -------------------------------------------------------------------------------

    def _join(self, socket: _KafkaFabricSocket, filters: Sequence[str]) -> _Member:
        group = self._groups.setdefault(socket.group_id, _Group(socket.group_id))
        member = socket._member
        if member is None:
            member = _Member(socket, next(self._joins))
            group.members.append(member)
        member.filters = [TopicFilter(f.replace(".", "/")) for f in filters]
        member.subscribed_at = next(self._topic_counter)
        for text in filters:
            if "+" not in text and "#" not in text:
                name = text.replace("/", ".")
                if name not in self._topics:
                    self.create_topic(name, self._default_partitions(name, socket.config))
        self._rebalance(group)
        return member

    def _leave(self, member: _Member) -> None:
        group = self._groups.get(member.socket.group_id)
        if group is not None and member in group.members:
            group.members.remove(member)
            # It reads nothing more, and its late acknowledgements commit nothing.
            member.assignment, member.positions, member.epochs = [], {}, {}
            member.changed.fire()
            self._rebalance(group)

    def _rebalance(self, group: _Group) -> None:
        """Share the subscribed partitions among the members (round robin, in join order)."""
        members = sorted(group.members, key=lambda m: m.joined)
        wanted: dict[_Member, list[_TP]] = {m: [] for m in members}
        turn = 0
        for name in sorted(self._topics):
            takers = [m for m in members if m.wants(name)]
            for partition in range(len(self._topics[name])):
                if takers:
                    wanted[takers[turn % len(takers)]].append(_TP(name, partition))
                    turn += 1
        for member, assignment in wanted.items():
            if assignment == member.assignment:
                continue
            kept = set(assignment) & set(member.assignment)
            self._assign(group, member, assignment, keep=kept)

    def _assign(self, group: _Group, member: _Member, assignment: list[_TP], *,
                keep: set[_TP]) -> None:
        latest = isinstance(member.socket.config, KafkaConfig) and \
            member.socket.config.offset_reset == "latest"
        positions: dict[_TP, int] = {}
        for tp in assignment:
            if tp in keep and tp in member.positions:
                positions[tp] = member.positions[tp]
                continue
            log = self._topics[tp.topic][tp.partition]
            start = group.committed.get(tp)
            if start is None:  # nothing committed: the reset policy says where to start
                created_later = self._created[tp.topic] > member.subscribed_at
                start = log.end if latest and not created_later else log.start
            positions[tp] = max(start, log.start)
            member.handed.pop(tp, None)
            member.unacked.pop(tp, None)
            member.epochs[tp] = next(self._epochs)
        member.assignment = assignment
        member.positions = positions
        member.epochs = {tp: e for tp, e in member.epochs.items() if tp in positions}
        member.handed = {tp: q for tp, q in member.handed.items() if tp in positions}
        member.unacked = {tp: s for tp, s in member.unacked.items() if tp in positions}
        member.changed.fire()

    def _reset(self, member: _Member) -> None:
        """The member's connection was lost: it reads from the committed offsets again."""
        group = self._groups[member.socket.group_id]
        redelivered = sum(len(q) for q in member.handed.values())
        self.statistics.redelivered += redelivered
        member.handed.clear()
        member.unacked.clear()
        self._assign(group, member, list(member.assignment), keep=set())

    def disconnect(self, client: str) -> int:
        """Cut the connections of *client* (a client id or an application's name): it rejoins
        its group at once and reads again what it had not committed."""
        cut = 0
        for group in self._groups.values():
            for member in group.members:
                if client in (member.socket.client_id, member.socket.name):
                    self._reset(member)
                    cut += 1
        return cut

    def _go_down(self) -> None:
        for group in self._groups.values():
            for member in group.members:
                self._reset(member)

    def _come_up(self) -> None:
        for group in self._groups.values():
            for member in group.members:
                member.changed.fire()

    # -- consuming ----------------------------------------------------------------------------

    def _next(self, member: _Member) -> tuple[_TP, int, Data] | None:
        assignment = member.assignment
        for step in range(len(assignment)):
            tp = assignment[(member.turn + step) % len(assignment)]
            log = self._topics[tp.topic][tp.partition]
            position = max(member.positions[tp], log.start)
            if position < log.end:
                member.turn = (member.turn + step + 1) % len(assignment)
                member.positions[tp] = position + 1
                return tp, position, log.records[position - log.start][1]
        return None

    async def _ack(self, member: _Member, epoch: int, tp: _TP, offset: int) -> None:
        self.statistics.acked += 1
        self.activity.fire()
        unacked = member.unacked.get(tp)
        if member.epochs.get(tp) == epoch and unacked is not None and offset in unacked:
            unacked.discard(offset)
            handed = member.handed[tp]
            group = self._groups[member.socket.group_id]
            while handed and handed[0] not in unacked:
                group.committed[tp] = handed.popleft() + 1
        await trio.lowlevel.checkpoint()

    async def _pump(self, member: _Member) -> None:
        send = member.socket._inbound_send.send
        while True:
            found = self._next(member) if self.up else None
            if found is None:
                await member.changed.wait()
                continue
            tp, offset, data = found
            member.handed.setdefault(tp, collections.deque()).append(offset)
            member.unacked.setdefault(tp, set()).add(offset)
            self.statistics.delivered += 1
            ack = partial(self._ack, member, member.epochs.get(tp, 0), tp, offset)
            try:
                await send((tp.topic, data, ack, _arrival(data)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


class _KafkaFabricSocket(BusSocket):
    """A bus socket of a :class:`KafkaFabric` (group and client ids as the real socket's)."""

    def __init__(self, broker: KafkaFabric, config: BusConfig, *, topics: Sequence[str],
                 name: str | None) -> None:
        base = config.client_id if isinstance(config, KafkaConfig) else None
        super().__init__(config, topics=topics, name=name, client_id_base=base,
                         endpoint=f"fabric {id(broker)}", default_codec="msgpack")
        prefix = config.group_id if isinstance(config, KafkaConfig) else None
        self.group_id = f"{prefix or 'trionet'}.{client_label(self.name)}"
        self.broker = broker
        self._member: _Member | None = None
        self._filters: list[str] = []
        self._nursery: trio.Nursery | None = None

    @asynccontextmanager
    async def _connect(self, nursery: trio.Nursery) -> AsyncIterator[None]:
        await self.broker._up.wait()
        self._nursery = nursery
        try:
            await trio.lowlevel.checkpoint()
            yield
        finally:
            if self._member is not None:
                self.broker._leave(self._member)
                self._member = None
            for base, owner in list(self.broker._reply_owners.items()):
                if owner is self:
                    del self.broker._reply_owners[base]

    def _connection(self, nursery: trio.Nursery) -> AbstractAsyncContextManager[None]:
        return self._connect(nursery)

    async def _send(self, topic: str, data: Data) -> None:
        await self._send_with_key(topic, data, None)

    async def _send_with_key(self, topic: str, data: Data, key: str | None) -> None:
        if not self.broker.up:
            await self.broker._up.wait()  # the producer retries until the broker is back
        if not topic.startswith(REPLY_PREFIX + "/"):
            check_topic(topic)
            name = topic.replace("/", ".")
            if name not in self.broker._topics:
                self.broker.create_topic(name, self.broker._default_partitions(name, self.config))
        # The message's key is the record key, as on Kafka: one key, one partition.
        await self.broker._publish(Item(topic, data, key=None if key is None else key.encode()))

    async def _subscribe(self, filters: Sequence[str]) -> None:
        self._filters.extend(filters)
        await self._apply()

    async def _unsubscribe(self, filters: Sequence[str]) -> None:
        self._filters = [f for f in self._filters if f not in filters]
        await self._apply()

    async def _apply(self) -> None:
        first = self._member is None
        self._member = self.broker._join(self, self._filters)
        if first:
            assert self._nursery is not None
            self._nursery.start_soon(self.broker._pump, self._member)
        await trio.lowlevel.checkpoint()

    async def _open_reply_route(self) -> None:
        self.broker._reply_owners[self._reply_base] = self
        await trio.lowlevel.checkpoint()
