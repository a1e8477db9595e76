"""The Kafka consumer: a trio driver around a consumer engine.

:class:`KafkaConsumer` owns what every engine shares: the options, its nursery and the engine's
threads in it, the :class:`~trionet.kafka._fetch.FetchBuffer` records are handed out of (with
the commit bookkeeping that makes commit-after-processing safe: per partition, the offset after
the last record handed out, never the library's position, which includes read-ahead; records
still buffered are never committed), the rebalance listener (run as a task of the consumer's
nursery while the engine waits for it), and the commit's rejoin loop. The engine
(:mod:`._engine`; kafka-python's is :mod:`._kafka_python_consumer`) fetches records into the
buffer, a batch at a time, and runs every call on the library.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Final, Self

import trio

from .. import metrics as _metrics, tracing as _tracing
from .._util import EnterOnce
from ..errors import ConfigurationError, KafkaError
from . import _tracing as _kafka_tracing
from ._commits import commit_offsets
from ._engine import ConsumerEngine, RebalanceDone, RebalanceKind, load_engine
from ._fetch import FetchBuffer, Undecodable
from ._options import ConsumerOptions, as_tp, check_offset, check_topic, with_tls
from ._records import Deserializer, KafkaRecord, TopicPartition, make_decoder
from ._url import parse_kafka_url
from ._util import check_servers, hidden_nursery, servers_text

__all__ = ["ConsumerRebalanceListener", "KafkaConsumer"]

_HANDLED: Final = frozenset({"key_deserializer", "value_deserializer"})

#: Set in the tasks that run a consumer's rebalance listener: the consumer they belong to.
_IN_LISTENER: ContextVar[KafkaConsumer | None] = ContextVar("trionet_kafka_listener",
                                                            default=None)
#: ``__anext__`` checks for cancellation at every record; every this many records it lets other
#: tasks run, unless it did so less than _YIELD_INTERVAL seconds ago (a checkpoint costs far more
#: while the consumer's thread holds the GIL decoding the next batch).
_YIELD_EVERY: Final = 16
_YIELD_INTERVAL: Final = 0.001


class _Hooks:
    """What a consumer's engine sees of it (:class:`~._engine.ConsumerHooks`)."""

    __slots__ = ("_consumer", "buffer", "decode_key", "decode_value")

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer
        self.buffer = consumer._buffer
        self.decode_key = consumer._decode_key
        self.decode_value = consumer._decode_value

    @property
    def open(self) -> bool:
        return self._consumer._open

    def in_listener(self) -> bool:
        return _IN_LISTENER.get() is self._consumer

    def rebalance(self, kind: RebalanceKind, partitions: frozenset[TopicPartition],
                  done: RebalanceDone) -> None:
        self._consumer._rebalance(kind, partitions, done)


class ConsumerRebalanceListener:
    """Hooks called when a group rebalance takes partitions away or hands them over.

    Subclass it and override what you need; the methods run in trio, in the consumer's nursery,
    while kafka-python waits for them (its heartbeats go on). Inside them you may call the
    consumer's :meth:`~KafkaConsumer.commit`, :meth:`~KafkaConsumer.seek`,
    :meth:`~KafkaConsumer.assignment`, :meth:`~KafkaConsumer.pause` and
    :meth:`~KafkaConsumer.resume`; reading records is not possible until they return. An
    exception raised here comes out of the consumer's next read as a
    :class:`~trionet.errors.KafkaError` (with yours as its ``__cause__``).

    ``on_partitions_revoked`` is also called when the consumer closes, before it leaves the
    group: the place to commit what has been processed. Commit-after-processing example::

        class CommitOnRevoke(ConsumerRebalanceListener):
            def __init__(self) -> None:
                self.consumer: KafkaConsumer | None = None

            async def on_partitions_revoked(self, revoked):
                await self.consumer.commit()
    """

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        """The consumer is about to lose *revoked* (a rebalance starts, or it closes)."""

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        """The consumer now owns *assigned*; reading starts at their committed offsets."""

    async def on_partitions_lost(self, lost: frozenset[TopicPartition]) -> None:
        """The consumer was dropped from the group: *lost* belongs to others already.

        Committing is pointless then. By default this calls :meth:`on_partitions_revoked`.
        """
        await self.on_partitions_revoked(lost)


class KafkaConsumer(EnterOnce):
    """A Kafka consumer for trio: ``async with KafkaConsumer(...) as consumer``.

    Example (commit after processing, i.e. at-least-once)::

        async with KafkaConsumer("orders", bootstrap_servers="127.0.0.1:9092",
                                 group_id="billing", auto_offset_reset="earliest") as consumer:
            async for record in consumer:
                await process(record)
                await consumer.commit()

    Entering the block connects (failing with :class:`~trionet.kafka.KafkaConnectionError`
    within ``bootstrap_timeout_ms``, 10 s unless given) and subscribes to *topics* (or
    *pattern*), or assigns *partitions*. Leaving it stops reading, commits what was handed out if
    the block ended without an exception (``commit_on_exit``), runs the listener's
    ``on_partitions_revoked``, leaves the group and closes, all within *close_timeout* seconds,
    then waits for the consumer's threads (its own and kafka-python's I/O thread) to end.

    Args:
        *topics: topics to subscribe to.
        bootstrap_servers: ``"host:port"`` or a list of them.
        group_id: the consumer group; without one, nothing is committed and topics are read
            whole (every partition).
        pattern: a regular expression of topics to subscribe to, instead of *topics*.
        partitions: partitions to assign manually (no group management), instead of
            subscribing.
        listener: a :class:`ConsumerRebalanceListener` for the initial subscription.
        key_deserializer: turns key bytes into values: a callable, a
            :class:`~trionet.codecs.Codec` or a codec name (``"json"``, ``"msgpack"``).
        value_deserializer: the same for values.
        poll_interval: seconds each ``poll()`` may block; bounds how long cancelling a reader
            waits for the consumer's thread.
        close_timeout: seconds the exit may spend committing, revoking and leaving the group.
        prefetch: how many ``poll()`` batches trionet may buffer, so that the consumer's
            thread reads ahead while the application works: at most ``max(1, prefetch) *
            max_poll_records`` records. Below 2 there is no read-ahead (a poll only when the
            buffer is empty). Default: 0, or 8 with manually assigned partitions and
            ``decode_in_trio=False`` (see the Kafka guide). Read-ahead never
            changes what :meth:`commit` commits (only records handed out) and is off with
            ``enable_auto_commit``.
        prefetch_bytes: read-ahead also stops while the buffered records are estimated (from
            their serialized sizes) at more than this many bytes (64 MiB).
        decode_in_trio: a read that finds no buffered record, while kafka-python holds records
            it has already fetched, decodes them on the trio thread (up to 100 at a time, about
            2 ms without ``crc32c``, less with it) instead of waiting for the consumer's thread
            to do it; ``poll()`` itself (fetch requests, heartbeats, rebalances) stays on the
            consumer's thread. Faster: the records are built on the core that uses them.
            Off with read-ahead (``prefetch`` of 2 or more) and with ``enable_auto_commit``.
            ``False`` keeps all of kafka-python's work on the consumer's thread.
        commit_on_exit: commit the handed-out offsets when the block ends without an exception
            (only with a *group_id*).
        broker_timeout: seconds without any reachable broker after which reading raises
            :class:`~trionet.kafka.KafkaConnectionError` (``None``: keep retrying for ever).
        backend: the engine: ``"kafka-python"`` (the default) or another registered one (see
            the Kafka guide).
        **config: any other option of the engine's consumer; for kafka-python, its
            ``KafkaConsumer`` options (``auto_offset_reset``,
            ``enable_auto_commit``, ``max_poll_records``, ``session_timeout_ms``,
            ``security_protocol``, ``sasl_*``, ``ssl_*`` (or ``tls=`` in the :mod:`trionet.tls`
            vocabulary, which sets them), ``isolation_level``,
            ``group_instance_id``...). trionet's defaults differ from kafka-python's in
            ``enable_auto_commit`` (False: commit explicitly, after processing) and
            ``bootstrap_timeout_ms`` (10 s).

    Raises:
        ConfigurationError: an unknown option or an invalid value.
    """

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        group_id: str | None = None,
        pattern: str | None = None,
        partitions: Iterable[tuple[str, int]] | None = None,
        listener: ConsumerRebalanceListener | None = None,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
        poll_interval: float = 0.1,
        close_timeout: float = 10.0,
        prefetch: int | None = None,
        prefetch_bytes: int = 64 * 1024 * 1024,
        decode_in_trio: bool = True,
        commit_on_exit: bool = True,
        broker_timeout: float | None = 30.0,
        backend: str | None = None,
        **config: Any,
    ) -> None:
        engine = load_engine(backend)
        for name in ("group_id", "bootstrap_servers"):
            if name in config:  # pragma: no cover - Python routes them to the parameters
                raise ConfigurationError(f"{name} given twice")
        if listener is not None and not isinstance(listener, ConsumerRebalanceListener):
            raise ConfigurationError("listener must be a ConsumerRebalanceListener")
        servers = check_servers(bootstrap_servers)
        self._config = engine.configure("consumer", with_tls(config), servers=servers,
                                        group_id=group_id, handled=_HANDLED)
        self._options = options = ConsumerOptions.build(
            tuple(topics), group_id=group_id, pattern=pattern, partitions=partitions,
            poll_interval=poll_interval, close_timeout=close_timeout, prefetch=prefetch,
            prefetch_bytes=prefetch_bytes, decode_in_trio=decode_in_trio,
            commit_on_exit=commit_on_exit, broker_timeout=broker_timeout)
        self._servers_text = servers_text(servers)
        self._group_id = group_id
        self._traced = True  # False for a consumer a higher layer traces (the bus's)
        self._tracing_batch = False
        self._listener = listener
        self._decode_key = make_decoder(key_deserializer, "key")
        self._decode_value = make_decoder(value_deserializer, "value")
        self._buffer = FetchBuffer(
            servers=self._servers_text, broker_timeout=options.broker_timeout,
            decoding=self._decode_key is not None or self._decode_value is not None)
        # The buffer's deque and books, for the per-record path (never replaced, only changed).
        self._records = self._buffer.records
        self._delivered = self._buffer.delivered
        self._engine: ConsumerEngine = engine.consumer(self._config, options, _Hooks(self))
        self._nursery: trio.Nursery | None = None
        self._position_lock = trio.Lock()
        self._since_yield = 0
        self._yielded_at = 0.0
        self._open = False
        self._aborting = False

    @classmethod
    def from_url(cls, url: str, *topics: str, **overrides: Any) -> KafkaConsumer:
        """A consumer for ``kafka://host:port?group=name&option=value``.

        Query options are the engine's options (``backend`` picks the engine); user information
        becomes SASL PLAIN credentials. *overrides* win over the URL.
        """
        parsed = parse_kafka_url(url)
        options = parsed.consumer_options()
        options.update(overrides)
        return cls(*topics, bootstrap_servers=parsed.bootstrap_servers, **options)

    def __repr__(self) -> str:
        return (f"<trionet.kafka.KafkaConsumer {self._servers_text} group={self._group_id!r} "
                f"buffered={len(self._buffer.records)}>")

    @property
    def group_id(self) -> str | None:
        """The consumer group, or None."""
        return self._group_id

    @property
    def buffered(self) -> int:
        """Records polled (read ahead) and waiting in trionet to be handed out.

        At most ``max(1, prefetch) * max_poll_records`` (fewer when ``prefetch_bytes`` limits
        read-ahead). They are not committed by :meth:`commit` until handed out.
        """
        return len(self._buffer.records)

    def _in_listener(self) -> bool:
        """Whether the calling task is (or was spawned by) this consumer's rebalance listener."""
        return _IN_LISTENER.get() is self

    # -- lifecycle --------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        engine = self._engine
        async with hidden_nursery() as nursery:
            self._nursery = nursery
            try:
                await nursery.start(engine.run)
                await self._start()
                clean_exit = False
                try:
                    yield self
                    clean_exit = True
                finally:
                    self._open = False
                    with trio.move_on_after(self._options.close_timeout, shield=True):
                        await self._close_gracefully(
                            commit=clean_exit and self._options.commit_on_exit)
            finally:
                self._open = False
                self._aborting = True
                engine.stop()  # after the calls already queued; then it closes the library
                nursery.cancel_scope.cancel()

    async def _start(self) -> None:
        await self._engine.start()
        self._open = True
        options = self._options
        if options.partitions is not None:
            await self.assign(options.partitions)
        elif options.topics or options.pattern is not None:
            await self.subscribe(options.topics, pattern=options.pattern,
                                 listener=self._listener)

    async def _close_gracefully(self, *, commit: bool) -> None:
        # Runs in a shielded scope whose deadline is close_timeout from now; every call on the
        # engine gets the time that is left, since the library cannot be interrupted.
        if commit and self._group_id is not None and self._buffer.delivered:
            with contextlib.suppress(KafkaError):  # at-least-once: they will be read again
                await self._commit(None, timeout_ms=self._remaining_ms())
        with contextlib.suppress(KafkaError):  # the group forgets us after session_timeout_ms
            await self._engine.close(timeout_ms=self._remaining_ms())

    def _remaining_ms(self) -> int:
        deadline = trio.current_effective_deadline()
        budget = (self._options.close_timeout if math.isinf(deadline)
                  else deadline - trio.current_time())
        return max(1, int(budget * 1000))

    def _check_open(self) -> None:
        if not self._open and not self._in_listener():
            raise trio.ClosedResourceError("the Kafka consumer is not open")

    # -- reading -----------------------------------------------------------------------------------

    def __aiter__(self) -> KafkaConsumer:
        return self

    async def __anext__(self) -> KafkaRecord:
        """The next record, waiting for one if needed.

        Every call checks for cancellation; other tasks get to run whenever it waits for
        records, and otherwise every 16 records unless they ran less than a millisecond ago (a
        full checkpoint per buffered record would cost about as much as kafka-python's own
        per-record work).

        Raises:
            KafkaConnectionError: no broker was reachable for ``broker_timeout`` seconds.
            RecordDecodeError: the deserializers failed on this record (it counts as handed
                out; iterate again to go on).
            trio.ClosedResourceError: the consumer is closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        buffer = self._records
        if not buffer:
            await self._fill()
            self._since_yield = 0
            self._yielded_at = time.perf_counter()
        elif self._since_yield < _YIELD_EVERY:
            self._since_yield += 1
        else:
            self._since_yield = 0
            self._engine.taken()
            self._tracing_batch = self._traced and _tracing.enabled()
            if time.perf_counter() - self._yielded_at >= _YIELD_INTERVAL:
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._yielded_at = time.perf_counter()
                if not buffer:  # another task took them meanwhile
                    await self._fill()
        item = buffer.popleft()
        if type(item) is Undecodable:
            self._delivered[(item.record.topic, item.record.partition)] = item.record.offset + 1
            raise item.error
        record: KafkaRecord = item  # type: ignore[assignment]  # (no cast() call per record)
        self._delivered[(record[0], record[1])] = record[2] + 1  # topic, partition, offset
        if self._tracing_batch:  # (decided once per fetched batch, in _fill)
            _kafka_tracing.received(record, self._group_id)  # a CONSUMER span
        return record

    async def getone(self) -> KafkaRecord:
        """The next record (the same as ``await anext(consumer)``)."""
        return await self.__anext__()

    async def getmany(self, max_records: int | None = None) -> list[KafkaRecord]:
        """The records available now, at most *max_records*, waiting until there is one.

        Raises:
            RecordDecodeError: the deserializers failed on the first record available (it
                counts as handed out). Records after it come with the next call.
            KafkaConnectionError, trio.ClosedResourceError: as for ``async for``.
        """
        if max_records is not None and (not isinstance(max_records, int) or max_records < 1):
            raise ConfigurationError(f"max_records must be a positive int, not {max_records!r}")
        await trio.lowlevel.checkpoint_if_cancelled()
        buffer = self._buffer.records
        if buffer:
            await trio.lowlevel.cancel_shielded_checkpoint()
        while not buffer:
            await self._fill()
        out = self._buffer.take(max_records)
        self._engine.taken()
        if _tracing.enabled() and self._traced and out:
            _kafka_tracing.received_batch(out, self._group_id)  # a CONSUMER span
        return out

    async def _fill(self) -> None:
        """Wait for the next batch of records (or raise why there are none)."""
        buffer = self._buffer
        while not buffer.records:
            error = buffer.take_error()
            if error is not None:
                raise error
            if self._in_listener():
                raise KafkaError("a rebalance listener cannot read records: the consumer's "
                                 "poll() is waiting for the listener to return", fault="local")
            self._check_open()
            await self._engine.fetch()
        _metrics.message("kafka", "in", len(buffer.records))
        # Whether the records handed out next get CONSUMER spans: checked per batch (and every
        # 16 records), not per record (trionet.tracing).
        self._tracing_batch = self._traced and _tracing.enabled()

    # -- offsets ----------------------------------------------------------------------------------

    def delivered_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record handed out (what :meth:`commit`
        commits by default)."""
        return self._buffer.delivered_offsets()

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None
                     ) -> dict[TopicPartition, int]:
        """Commit offsets for the consumer group, waiting for the broker's answer.

        By default: per partition, the offset after the last record this consumer handed out
        (records still buffered are not included), for the partitions it still owns. Call it
        after processing to get at-least-once delivery.

        Args:
            offsets: explicit ``{partition: next offset to read}`` instead.

        Returns:
            The offsets committed.

        If the consumer has to rejoin its group first (the group is rebalancing, or the broker
        restarted and forgot the group's generation), the commit drives the rejoin and waits
        for it, up to the caller's deadline (its trio cancel scope) or, without one,
        ``request_timeout_ms`` (30 s). Offsets handed out before a rebalance that took their
        partitions away are then never committed (the new generation may belong to another
        consumer, or rewind this one): the commit raises
        :exc:`KafkaPartitionsRevokedError` once, and the records are read again.

        Raises:
            KafkaPartitionsRevokedError: a rebalance took (some of) the partitions away after
                their records were handed out; their offsets were not committed, the others
                were. The records will be read again by the partition's next owner.
            KafkaCommitError: the group could not be rejoined in time, or the broker refused
                the commit for another reason.
            KafkaError: no ``group_id``, or another failure.
        """
        self._check_open()
        return await self._commit(offsets)

    async def _commit(self, offsets: Mapping[TopicPartition, int] | None,
                      timeout_ms: int | None = None) -> dict[TopicPartition, int]:
        if self._group_id is None:
            raise KafkaError("commit needs a consumer group (group_id)", fault="local")
        wanted = self.delivered_offsets() if offsets is None else {
            as_tp(tp): check_offset(off) for tp, off in offsets.items()}
        return await commit_offsets(
            self._engine, self._buffer, wanted, only_assigned=offsets is None,
            timeout_ms=timeout_ms, in_listener=self._in_listener(),
            default_timeout=self._config.request_timeout_ms / 1000)

    async def _group_metadata(self) -> Any:
        """The engine's group membership snapshot (for transactional offset commits)."""
        self._check_open()
        if self._group_id is None:
            raise KafkaError("transactional offsets need a consumer group (group_id)",
                             fault="local")
        return await self._engine.group_metadata()

    async def committed(self, partition: tuple[str, int]) -> int | None:
        """The group's committed offset for *partition* (None if nothing was committed)."""
        self._check_open()
        return await self._engine.committed(as_tp(partition))

    async def position(self, partition: tuple[str, int]) -> int:
        """The offset of the next record the engine will fetch for *partition*.

        Records already buffered in trionet come before it.
        """
        self._check_open()
        return await self._engine.position(as_tp(partition))

    async def beginning_offsets(self, partitions: Iterable[tuple[str, int]]
                                ) -> dict[TopicPartition, int]:
        """The first offset of each partition."""
        self._check_open()
        return await self._engine.edge_offsets([as_tp(tp) for tp in partitions], "beginning")

    async def end_offsets(self, partitions: Iterable[tuple[str, int]]
                          ) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition (its high watermark)."""
        self._check_open()
        return await self._engine.edge_offsets([as_tp(tp) for tp in partitions], "end")

    # -- subscription and assignment ---------------------------------------------------------------

    async def subscribe(self, topics: Iterable[str] = (), *, pattern: str | None = None,
                        listener: ConsumerRebalanceListener | None = None) -> None:
        """Subscribe to *topics*, or to every topic matching the regex *pattern*.

        Replaces the previous subscription. Partitions are assigned by the group (or, without a
        ``group_id``, every partition of the topics).

        Raises:
            ConfigurationError: both or neither of topics and pattern, or a bad listener.
        """
        self._check_open()
        names = tuple(topics)
        if bool(names) == (pattern is not None):
            raise ConfigurationError("subscribe needs topics or a pattern (not both)")
        for topic in names:
            check_topic(topic)
        if listener is not None and not isinstance(listener, ConsumerRebalanceListener):
            raise ConfigurationError("listener must be a ConsumerRebalanceListener")
        self._listener = listener

        def after(_: None) -> None:
            if pattern is None:
                self._buffer.discard(lambda tp: tp[0] not in names)

        async with self._position_lock:
            with trio.CancelScope(shield=True):
                await self._engine.subscribe(names, pattern, after=after)

    async def unsubscribe(self) -> None:
        """Drop the subscription or assignment (and every buffered record)."""
        self._check_open()
        async with self._position_lock:
            with trio.CancelScope(shield=True):
                await self._engine.unsubscribe(
                    after=lambda _: self._buffer.discard(lambda tp: True))

    async def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions (no group management, no rebalances).

        Replaces the previous assignment; offsets still come from the group's commits when a
        ``group_id`` is set.

        Raises:
            UnknownTopicError: a topic or partition does not exist.
        """
        self._check_open()
        wanted = frozenset(as_tp(tp) for tp in partitions)
        async with self._position_lock:
            with trio.CancelScope(shield=True):
                await self._engine.assign(
                    wanted, after=lambda _: self._buffer.discard(lambda tp: tp not in wanted))

    async def assignment(self) -> frozenset[TopicPartition]:
        """The partitions currently assigned to this consumer."""
        self._check_open()
        return await self._engine.assignment()

    async def subscription(self) -> frozenset[str] | None:
        """The subscribed topics (None when partitions are assigned manually)."""
        self._check_open()
        return await self._engine.subscription()

    async def topics(self) -> set[str]:
        """Every topic in the cluster."""
        self._check_open()
        return await self._engine.topics()

    async def partitions_for_topic(self, topic: str) -> set[int]:
        """The partition numbers of *topic* (empty if it does not exist; never creates it)."""
        self._check_open()
        return await self._engine.partitions_for_topic(topic)

    # -- positions --------------------------------------------------------------------------------

    async def seek(self, partition: tuple[str, int], offset: int) -> None:
        """Read *partition* from *offset* next; buffered records of it are dropped.

        Raises:
            KafkaError: the partition is not assigned to this consumer.
        """
        self._check_open()
        tp = as_tp(partition)
        offset = check_offset(offset)
        async with self._maybe_position_lock():
            with trio.CancelScope(shield=True):  # quick, local; keeps the bookkeeping in step
                await self._engine.seek(tp, offset,
                                        after=lambda _: self._buffer.sought(tp, offset))

    async def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        """Read the given partitions (all assigned ones by default) from their first record."""
        await self._seek_to("beginning", partitions)

    async def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        """Skip to the end of the given partitions (all assigned ones by default)."""
        await self._seek_to("end", partitions)

    async def _seek_to(self, where: str, partitions: Sequence[tuple[str, int]]) -> None:
        self._check_open()
        tps = frozenset(as_tp(tp) for tp in partitions)
        async with self._maybe_position_lock():
            with trio.CancelScope(shield=True):
                await self._engine.seek_to(tps, where, after=self._buffer.moved)

    async def pause(self, *partitions: tuple[str, int]) -> None:
        """Stop reading the given partitions until :meth:`resume`.

        Their records already buffered are dropped and read again after :meth:`resume`.
        """
        self._check_open()
        tps = frozenset(as_tp(tp) for tp in partitions)
        async with self._maybe_position_lock():
            with trio.CancelScope(shield=True):
                await self._engine.pause(tps, after=lambda _: self._buffer.paused(tps))

    async def resume(self, *partitions: tuple[str, int]) -> None:
        """Read the given paused partitions again."""
        self._check_open()
        tps = frozenset(as_tp(tp) for tp in partitions)
        async with self._maybe_position_lock():
            rewind = self._buffer.take_rewind(tps)
            with trio.CancelScope(shield=True):
                await self._engine.resume(tps, rewind)

    async def paused(self) -> frozenset[TopicPartition]:
        """The partitions paused with :meth:`pause`."""
        self._check_open()
        return await self._engine.paused()

    @asynccontextmanager
    async def _maybe_position_lock(self) -> AsyncIterator[None]:
        # In a rebalance listener the lock may be held by a task whose call is queued behind the
        # very poll() that waits for the listener: do not wait for it there.
        if self._in_listener():
            await trio.lowlevel.checkpoint()
            yield
        else:
            async with self._position_lock:
                yield

    # -- rebalances -------------------------------------------------------------------------------

    def _rebalance(self, kind: RebalanceKind, partitions: frozenset[TopicPartition],
                   done: RebalanceDone) -> None:
        """Run the listener for one rebalance step (trio thread, for the engine)."""
        if self._nursery is None or self._aborting:
            done(None)
            return
        try:
            self._nursery.start_soon(self._run_listener, kind, partitions, done)
        except RuntimeError:  # the nursery is closed
            done(None)

    async def _run_listener(self, kind: RebalanceKind, partitions: frozenset[TopicPartition],
                            done: RebalanceDone) -> None:
        error: BaseException | None = None
        _IN_LISTENER.set(self)  # this task's context only (and its children's)
        try:
            listener = self._listener
            if listener is not None:
                if kind == "assigned":
                    await listener.on_partitions_assigned(partitions)
                elif kind == "lost":
                    await listener.on_partitions_lost(partitions)
                else:
                    await listener.on_partitions_revoked(partitions)
        except Exception as exc:
            error = exc
        finally:
            if kind != "assigned":
                self._buffer.forget(partitions)
            done(error)
