"""``kafka://``: bus sockets on :mod:`trionet.kafka` (kafka-python underneath).

Topic names: a bus topic's ``/`` becomes ``.`` on Kafka (``sensors/kitchen`` is the Kafka topic
``sensors.kitchen``), and filters with ``+``/``#`` become one regular-expression subscription,
so an application runs unchanged on every broker. A filter starting with a wildcard does not
match Kafka topics starting with ``_`` (internal topics, the bus's reply topics), as MQTT's
wildcards skip ``$`` topics.

Each socket has a producer; the first subscription starts a consumer in the application's
group (``{group prefix}.{app name}``), read by one task that feeds the socket's bounded queue.
Offsets are committed for acknowledged messages only, contiguously per partition, every
``commit_interval`` seconds, when partitions are revoked, and when the socket closes: a message
that was received but not handled (or whose handler failed under ``on_error="raise"``) is read
again by the group's next consumer (at-least-once).

Request/response: replies travel on one Kafka topic per socket, ``_trionet.reply.<client id>``,
read by a consumer that is assigned its partition manually (no group, no rebalances) and that
has fixed its position before the first request goes out, so no reply can slip past it.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Final

import trio

from ..errors import ConfigurationError, KafkaError
from ..kafka import (
    ConsumerRebalanceListener,
    KafkaAdmin,
    KafkaConsumer,
    KafkaPartitionsRevokedError,
    KafkaProducer,
    NewTopic,
    TopicPartition,
)
from ._config import KafkaConfig, Topics
from ._message import BusMessage
from ._ordering import ContiguousOffsets
from ._socket import CLOSE_TIMEOUT, REPLY_PREFIX, BusSocket, SocketProvider, client_label

__all__ = ["KafkaSocket", "KafkaSocketProvider", "filter_to_pattern", "kafka_topic"]

logger = logging.getLogger("trionet.bus")

_LEGAL: Final = re.compile(r"[A-Za-z0-9._-]+")
#: How long subscribing waits for the group to assign partitions before going on.
ASSIGNMENT_TIMEOUT: Final = 60.0
_CONSUMER_DEFAULTS: Final = {
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 3_000,
    "metadata_max_age_ms": 1_000,  # wildcard subscriptions see new topics within a second
    "fetch_max_wait_ms": 100,  # bounds latency on brokers that hold fetches
}


def kafka_topic(topic: str) -> str:
    """The Kafka topic for a bus topic (``/`` becomes ``.``).

    Raises:
        ConfigurationError: if the result is not a legal Kafka topic name.
    """
    name = topic.replace("/", ".")
    if not _LEGAL.fullmatch(name) or len(name) > 249 or name in (".", ".."):
        raise ConfigurationError(
            f"{topic!r} cannot be a Kafka topic: use letters, digits, '.', '_', '-' and '/' "
            "(at most 249 characters)"
        )
    return name


def filter_to_pattern(topic_filter: str) -> str:
    """A regular expression for the Kafka topics a bus topic filter matches.

    Levels are separated by ``/`` or ``.``; ``+`` matches one level, a final ``#`` the parent
    level and everything below. A leading wildcard does not match topics starting with ``_``.
    """
    levels = topic_filter.replace("/", ".").split(".")
    parts: list[str] = []
    multi = levels[-1] == "#"
    if multi:
        levels = levels[:-1]
    for level in levels:
        if level == "+":
            parts.append(r"[^.]*")
        else:
            kafka_topic(level or "x")  # legal characters only
            parts.append(re.escape(level))
    body = r"\.".join(parts)
    if multi:
        body = r".*" if not parts else body + r"(?:\..*)?"
    if not levels or levels[0] == "+":
        body = "(?!_)" + body
    return body


#: Acknowledged offsets per partition, committed contiguously (see trionet.bus._ordering).
_Offsets = ContiguousOffsets[TopicPartition]


class _Reader:
    __slots__ = ("consumer", "done", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.consumer: KafkaConsumer | None = None


class KafkaSocket(BusSocket):
    """A bus socket on a Kafka cluster (made by :class:`KafkaSocketProvider`)."""

    config: KafkaConfig

    def __init__(self, config: KafkaConfig, *, topics: Sequence[str] = (),
                 name: str | None = None) -> None:
        self._reply_topic = ""
        super().__init__(config, topics=topics, name=name,
                         client_id_base=config.client_id,
                         endpoint=f"kafka {config.servers}",
                         default_codec="msgpack")
        self.group_id = f"{config.group_id or 'trionet'}.{client_label(self.name)}"
        self._servers = config.servers
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdmin | None = None
        self._nursery: trio.Nursery | None = None
        self._known_topics: set[str] = set()
        self._filters: list[str] = []
        self._reader: _Reader | None = None
        self._reply_reader: _Reader | None = None
        self._offsets = _Offsets()
        self._assigned: trio.Event = trio.Event()
        self._pattern_mode: bool | None = None
        # Where a partition without a committed offset starts once the subscription is ready
        # (offset_reset="latest" only; None before it is first ready): the end offset recorded
        # when it became ready, or, for a partition that did not exist then, its beginning.
        self._start_at: dict[TopicPartition, int] | None = None
        self._held: set[TopicPartition] = set()
        self._held_changed = trio.Event()

    def _set_client_id(self, client_id: str) -> None:
        super()._set_client_id(client_id)
        self._reply_topic = kafka_topic(self._reply_base.replace("/", "."))

    # -- connection -----------------------------------------------------------------------------

    def _tls(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """*options* with the configuration's ``tls`` (unless they set ``tls`` themselves)."""
        out = dict(options)
        if self.config.tls:
            out.setdefault("tls", self.config.tls)
        return out

    @asynccontextmanager
    async def _connect(self, nursery: trio.Nursery) -> AsyncIterator[None]:
        config = self.config
        async with AsyncExitStack() as stack:
            self._producer = await stack.enter_async_context(KafkaProducer(
                self._servers, client_id=self.client_id, close_timeout=CLOSE_TIMEOUT,
                backend=config.backend, **self._tls(config.producer_config),
            ))
            self._producer._traced = False  # the bus traces its messages (trionet.tracing)
            if config.create_topics:
                self._admin = await stack.enter_async_context(
                    KafkaAdmin(self._servers, client_id=f"{self.client_id}-admin",
                               backend=config.backend, **self._tls({})))
            self._nursery = nursery
            try:
                yield
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                    await self._commit_now()
                    for reader in (self._reader, self._reply_reader):
                        if reader is not None:
                            reader.scope.cancel()
                            await reader.done.wait()
                    self._reader = self._reply_reader = None
                self._producer = None
                self._admin = None

    def _connection(self, nursery: trio.Nursery) -> AbstractAsyncContextManager[None]:
        return self._connect(nursery)

    async def _ensure_topics(self, names: Sequence[str], *, partitions: int | None = None
                             ) -> None:
        """Create the topics of *names* that may not exist (with the configured partitions
        and replication factor, or *partitions*); existing topics are left as they are."""
        missing = [name for name in names if name not in self._known_topics]
        if missing and self._admin is not None:
            config = self.config
            count = config.partitions if partitions is None else partitions
            await self._admin.create_topics([
                NewTopic(name, count, config.replication_factor) for name in missing
            ])
        self._known_topics.update(missing)

    # -- publishing -----------------------------------------------------------------------------

    async def _send(self, topic: str, data: bytes | BusMessage) -> None:
        await self._send_with_key(topic, data, None)

    async def _send_with_key(self, topic: str, data: bytes | BusMessage, key: str | None
                             ) -> None:
        assert isinstance(data, bytes)
        assert self._producer is not None
        if topic.startswith(REPLY_PREFIX + "/"):
            # <reply base>/<correlation id>: the requester's reply topic is the base.
            name = kafka_topic(topic.rpartition("/")[0])
        else:
            name = kafka_topic(topic)
            await self._ensure_topics([name])
        # The message's key is the record key: the records of one key share a partition.
        await self._producer.send(name, data,
                                  key=None if key is None else key.encode("utf-8"))

    # -- subscriptions --------------------------------------------------------------------------

    def _subscription_args(self) -> tuple[list[str], str | None]:
        if any("+" in f or "#" in f for f in self._filters):
            pattern = "|".join(filter_to_pattern(f) for f in self._filters)
            return [], f"(?:{pattern})$"
        return [kafka_topic(f) for f in self._filters], None

    async def _subscribe(self, filters: Sequence[str]) -> None:
        for topic_filter in filters:
            if "+" in topic_filter or "#" in topic_filter:
                filter_to_pattern(topic_filter)
            else:
                kafka_topic(topic_filter)
        self._filters.extend(filters)
        try:
            await self._apply_subscription()
        except BaseException:
            del self._filters[-len(filters):]
            raise

    async def _unsubscribe(self, filters: Sequence[str]) -> None:
        self._filters = [f for f in self._filters if f not in filters]
        await self._apply_subscription()

    async def _apply_subscription(self) -> None:
        topics, pattern = self._subscription_args()
        await self._ensure_topics(topics)
        reader = self._reader
        if reader is None:
            if topics or pattern:
                assert self._nursery is not None
                self._reader = await self._nursery.start(self._read_subscription)
            return
        consumer = reader.consumer
        assert consumer is not None
        self._assigned = trio.Event()
        if not topics and pattern is None:
            await consumer.unsubscribe()
            self._pattern_mode = None
            return
        if self._pattern_mode is not None and self._pattern_mode != (pattern is not None):
            await consumer.unsubscribe()  # kafka-python cannot switch topics <-> pattern
        self._pattern_mode = pattern is not None
        await consumer.subscribe(topics, pattern=pattern, listener=_Listener(self))
        with trio.move_on_after(ASSIGNMENT_TIMEOUT):
            await self._assigned.wait()
        await self._mark_ready(consumer)

    async def _read_subscription(
        self, *, task_status: trio.TaskStatus[_Reader] = trio.TASK_STATUS_IGNORED
    ) -> None:
        reader = _Reader()
        topics, pattern = self._subscription_args()
        options = self._tls({**_CONSUMER_DEFAULTS, **self.config.consumer_config})
        try:
            with reader.scope:
                async with KafkaConsumer(
                    bootstrap_servers=self._servers,
                    group_id=self.group_id,
                    client_id=self.client_id,
                    auto_offset_reset=self.config.offset_reset,
                    commit_on_exit=False,
                    close_timeout=CLOSE_TIMEOUT,
                    backend=self.config.backend,
                    **options,
                ) as consumer:
                    consumer._traced = False  # the bus traces its messages (trionet.tracing)
                    reader.consumer = consumer
                    self._assigned = trio.Event()
                    self._pattern_mode = pattern is not None
                    await consumer.subscribe(topics, pattern=pattern, listener=_Listener(self))
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, consumer)  # polling joins the group
                        nursery.start_soon(self._commit_periodically)
                        nursery.start_soon(self._position_held, consumer)
                        with trio.move_on_after(ASSIGNMENT_TIMEOUT) as waited:
                            await self._assigned.wait()
                        if waited.cancelled_caught:
                            logger.warning("%s: no partitions assigned to group %r after %g s",
                                           self.client_id, self.group_id, ASSIGNMENT_TIMEOUT)
                        await self._mark_ready(consumer)
                        task_status.started(reader)
        finally:
            reader.done.set()

    async def _pump(self, consumer: KafkaConsumer) -> None:
        send = self._inbound_send.send
        handed = self._offsets.handed
        ack = self._ack
        async for record in consumer:
            tp = TopicPartition(record.topic, record.partition)
            handed(tp, record.offset)
            await send((record.topic, record.value or b"",
                        functools.partial(ack, tp, record.offset), trio.current_time()))

    async def _ack(self, tp: TopicPartition, offset: int) -> None:
        self._offsets.acked(tp, offset)

    async def _commit_periodically(self) -> None:
        while True:
            await trio.sleep(self.config.commit_interval)
            await self._commit_now()

    async def _commit_now(self, only: frozenset[TopicPartition] | None = None) -> None:
        reader = self._reader
        if reader is None or reader.consumer is None:
            return
        offsets = self._offsets.take(only)
        if not offsets:
            return
        try:
            await reader.consumer.commit(offsets)
        except KafkaPartitionsRevokedError as exc:
            # The group rejoined (a broker restart, a rebalance) and took exc.partitions away
            # after these offsets were taken: they belong to the old generation and are
            # dropped, never committed later (the partitions' next owner, maybe this socket,
            # reads those records again; what it acknowledges is tracked afresh). The others
            # were committed (exc.committed); anything else is tried again.
            done = exc.partitions | exc.committed.keys()
            self._offsets.restore({tp: off for tp, off in offsets.items() if tp not in done})
            logger.info("%s: %s", self.client_id, exc)
        except KafkaError as exc:
            # Usually a rebalance in progress: the revocation hook commits them again (or, if
            # the partitions went to another member, it reads them again: at-least-once).
            self._offsets.restore(offsets)
            logger.info("%s: committing offsets failed: %s", self.client_id, exc)

    # -- replies --------------------------------------------------------------------------------

    async def _open_reply_route(self) -> None:
        await self._ensure_topics([self._reply_topic], partitions=1)  # read as partition 0
        assert self._nursery is not None
        self._reply_reader = await self._nursery.start(self._read_replies)

    async def _read_replies(
        self, *, task_status: trio.TaskStatus[_Reader] = trio.TASK_STATUS_IGNORED
    ) -> None:
        reader = _Reader()
        partition = (self._reply_topic, 0)
        options = self._tls({**_CONSUMER_DEFAULTS, **self.config.consumer_config})
        try:
            with reader.scope:
                async with KafkaConsumer(
                    bootstrap_servers=self._servers,
                    partitions=[partition],
                    client_id=f"{self.client_id}-replies",
                    auto_offset_reset="latest",
                    close_timeout=CLOSE_TIMEOUT,
                    backend=self.config.backend,
                    **options,
                ) as consumer:
                    consumer._traced = False  # the bus traces its messages (trionet.tracing)
                    reader.consumer = consumer
                    # Fixed at the end before any request goes out (seeking first: the
                    # confluent engine's position() only reads it, and librdkafka would
                    # resolve "latest" at its first fetch, after the first reply was written).
                    await consumer.seek_to_end(partition)
                    await consumer.position(partition)
                    task_status.started(reader)
                    async for record in consumer:
                        self._route_reply(record.topic, record.value or b"")
        finally:
            reader.done.set()

    # -- new topics and partitions -------------------------------------------------------------
    #
    # With offset_reset="latest", a partition that the group has no committed offset for would
    # start at its end whenever it is assigned: a topic created after the subscription was ready
    # (a wildcard subscription discovers it at the next metadata refresh, then rebalances) would
    # lose the messages published before that, among them the one whose publish created it. So
    # once the subscription is ready, every newly assigned partition is paused in the rebalance
    # listener, and positioned before it is read: at its committed offset if there is one, else
    # at the position it had when the subscription became ready (if it was assigned then), else
    # at its beginning (a partition of a topic created later, or one the group had not yet picked
    # up: reading it from the start may repeat older messages, but loses none).

    async def _mark_ready(self, consumer: KafkaConsumer) -> None:
        if self.config.offset_reset != "latest":
            return
        start_at = self._start_at or {}
        for tp in await consumer.assignment():
            # An earlier readiness promised more: keep its (smaller) offset.
            start_at.setdefault(tp, await consumer.position(tp))
        self._start_at = start_at

    async def _hold(self, consumer: KafkaConsumer, assigned: frozenset[TopicPartition]) -> None:
        """In the rebalance listener: keep *assigned* from being read until positioned."""
        if self._start_at is None or not assigned:
            return
        await consumer.pause(*assigned)
        self._held |= assigned
        self._held_changed.set()

    async def _position_held(self, consumer: KafkaConsumer) -> None:
        # A task of its own (not the listener's): reading committed offsets needs the broker.
        while True:
            await self._held_changed.wait()
            self._held_changed = trio.Event()
            while self._held:
                tp = min(self._held)
                try:
                    if await consumer.committed(tp) is None:
                        start = (self._start_at or {}).get(tp)
                        if start is None:
                            await consumer.seek_to_beginning(tp)
                        else:
                            await consumer.seek(tp, start)
                        logger.debug("%s: %s starts at %s", self.client_id, tp,
                                     "its beginning" if start is None else start)
                    if tp in self._held:  # not revoked meanwhile
                        await consumer.resume(tp)
                except KafkaError as exc:  # revoked meanwhile: the next owner positions it
                    logger.debug("%s: positioning %s: %s", self.client_id, tp, exc)
                self._held.discard(tp)

    # -- rebalances -----------------------------------------------------------------------------

    def _partitions_assigned(self) -> None:
        self._assigned.set()


class _Listener(ConsumerRebalanceListener):
    """Commits acknowledged offsets before partitions go, and signals assignments."""

    def __init__(self, socket: KafkaSocket) -> None:
        self.socket = socket

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        self.socket._held -= revoked
        await self.socket._commit_now(revoked)
        self.socket._offsets.forget(revoked)

    async def on_partitions_lost(self, lost: frozenset[TopicPartition]) -> None:
        self.socket._held -= lost
        self.socket._offsets.forget(lost)
        await trio.lowlevel.checkpoint()

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        reader = self.socket._reader
        if reader is not None and reader.consumer is not None:
            await self.socket._hold(reader.consumer, assigned)
        self.socket._partitions_assigned()
        await trio.lowlevel.checkpoint()


class KafkaSocketProvider(SocketProvider):
    """Makes sockets connected to a Kafka cluster (``kafka://host:port?group=prefix``).

    Args:
        config: the cluster configuration.
    """

    config: KafkaConfig

    def __init__(self, config: KafkaConfig) -> None:
        super().__init__(config)

    def create_socket(self, topics: Topics = None, *, name: str | None = None) -> KafkaSocket:
        """A new, unopened socket (a producer; a consumer once it subscribes)."""
        return KafkaSocket(self.config, topics=self._topics(topics), name=name)

    def _with_config(self, config: Any) -> KafkaSocketProvider:
        return KafkaSocketProvider(config)
