"""The Kafka producer: kafka-python's thread-safe producer, driven from trio.

kafka-python's producer is thread-safe and does its network I/O on its own sender thread, so the
trio side calls ``send`` directly: appending a record to kafka-python's buffer does not block
once the topic's metadata is known (the first record for a new topic waits for its metadata in
the background, in order with the records after it).

Delivery reports cost the sender thread nothing per record. A :class:`Delivery` keeps
kafka-python's record future and reads its outcome when asked; the producer keeps its
deliveries in send order and, on the trio thread, counts (and checks for failures) the finished
ones at the front of that queue, every 1024 sends and whenever a task waits. A task that waits
(:meth:`Delivery.wait`, :meth:`KafkaProducer.flush`, back-pressure) asks for one wake-up from
the sender thread: when that record's future (the last one sent, for a flush; the oldest
pending one, for room) is done. So trio is woken about once per wait, or once per batch that
makes room, never once per record, and no failure goes unseen: each one is found by the
counting, and the first one nobody waited for is raised by the next flush.

Blocking steps (the bootstrap, the first metadata lookup of a topic, the final flush and close)
run on worker threads through :mod:`trionet._threads`; the ``async with`` block waits for every
thread it started, including kafka-python's sender thread.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import trio

from .._threads import TrioPortal, run_blocking
from ..errors import CodecError, ConfigurationError, KafkaError
from . import _kafka_python as kp
from ._common import (
    DEFAULT_BOOTSTRAP_TIMEOUT_MS,
    check_servers,
    hidden_nursery,
    servers_text,
    with_defaults,
)
from ._errors import KafkaDeliveryError, UnknownTopicError
from ._records import (
    HeadersInput,
    RecordMetadata,
    Serializer,
    TopicPartition,
    bytes_or_none,
    make_encoder,
    normalize_headers,
)
from ._url import parse_kafka_url

if TYPE_CHECKING:
    from ._consumer import KafkaConsumer

__all__ = ["Delivery", "KafkaProducer", "ProducerStatistics"]

_DEFAULT_MAX_BLOCK_MS: Final = 10_000
#: send_nowait counts the finished deliveries every this many records (a power of 2, minus 1).
_COLLECT_MASK: Final = 1023
_HANDLED: Final = frozenset({"key_serializer", "value_serializer"})


def _serialize(encode: Callable[[Any], Any], value: Any, what: str) -> Any:
    try:
        return encode(value)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"the {what} serializer failed on {type(value).__name__}: {exc}",
                         codec="serializer", fault="local") from exc


@dataclass(frozen=True)
class ProducerStatistics:
    """A snapshot of a producer's counters (see :meth:`KafkaProducer.statistics`)."""

    pending: int
    """Records handed to the producer and not yet acknowledged or failed."""
    acknowledged: int
    """Records the broker acknowledged."""
    failed: int
    """Records that could not be delivered."""


class Delivery:
    """The outcome of one record given to :meth:`KafkaProducer.send_nowait`.

    ``await delivery.wait()`` returns its :class:`RecordMetadata` once the broker acknowledged
    it (per ``acks``), or raises why it was not delivered. A failure nobody waited for is not
    lost: :meth:`KafkaProducer.flush` and the end of the producer's ``async with`` raise it.
    """

    __slots__ = ("_error", "_future", "_metadata", "_producer", "_seq", "_waited", "partition",
                 "topic")

    def __init__(self, producer: KafkaProducer, topic: str, partition: int | None, seq: int,
                 future: Any = None) -> None:
        self.topic = topic
        self.partition = partition
        self._producer = producer
        #: The record's place in the producer's send order (see KafkaProducer._collect).
        self._seq = seq
        #: kafka-python's FutureRecordMetadata (None while the topic's metadata is awaited).
        self._future = future
        self._metadata: RecordMetadata | None = None
        self._error: BaseException | None = None
        self._waited = False

    def __repr__(self) -> str:
        state = "pending"
        if self.done():
            state = "failed" if self._failure() is not None else "acknowledged"
        return f"<Delivery to {self.topic!r}: {state}>"

    def done(self) -> bool:
        """Whether the record was acknowledged or failed."""
        if self._error is not None:
            return True
        future = self._future
        return future is not None and future.is_done

    def result(self) -> RecordMetadata:
        """The record's metadata, if it was acknowledged.

        Raises:
            KafkaDeliveryError: (or another :class:`~trionet.errors.KafkaError`) the record was
                not delivered.
            trio.WouldBlock: it is still pending.
        """
        if not self.done():
            raise trio.WouldBlock
        error = self._failure()
        if error is not None:
            self._observe()
            raise error
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = kp.record_metadata(self._future.value)
        return metadata

    async def wait(self) -> RecordMetadata:
        """Wait until the record is acknowledged and return where it was written.

        Raises:
            KafkaDeliveryError: (or another :class:`~trionet.errors.KafkaError`) the record was
                not delivered.
        """
        self._observe()
        if self.done():
            await trio.lowlevel.checkpoint()
        else:
            await self._producer._wait_for(self)
        return self.result()

    def _observe(self) -> None:
        """Someone looks at this record's outcome: a failure is theirs, not flush()'s."""
        self._waited = True
        producer = self._producer
        if self._future is not None and self._seq >= producer._completed:
            producer._observed.add(self._future)  # not counted yet; _collect removes it

    def _failure(self) -> BaseException | None:
        """Why the (finished) record was not delivered, translated once; None if it was."""
        error = self._error
        if error is None:
            future = self._future
            if future is not None and future.exception is not None:
                producer = self._producer
                error = self._error = kp.delivery_error(
                    future.exception, topic=self.topic, partition=self.partition,
                    servers=producer._servers_text)
        return error


class KafkaProducer:
    """A Kafka producer for trio: ``async with KafkaProducer(...) as producer``.

    Example::

        async with KafkaProducer("127.0.0.1:9092", value_serializer="json") as producer:
            metadata = await producer.send("events", {"n": 1}, key=b"user-1")
            for n in range(1000):
                producer.send_nowait("events", {"n": n})   # buffered, no waiting
            await producer.flush()                          # all acknowledged (or raises)

    Entering the block connects (bootstrap) and fails with
    :class:`~trionet.kafka.KafkaConnectionError` within ``bootstrap_timeout_ms`` (10 s unless
    given) if no broker answers. Leaving it flushes every buffered record (within
    *close_timeout*), stops kafka-python's sender thread and waits for it, and raises the first
    delivery failure nobody had waited for.

    Args:
        bootstrap_servers: ``"host:port"`` or a list of them.
        key_serializer: turns keys into bytes: a callable, a :class:`~trionet.codecs.Codec` or a
            codec name (``"json"``, ``"msgpack"``). Without one, keys must be bytes.
        value_serializer: the same for values.
        max_pending: at most this many records may be unacknowledged at once;
            :meth:`send_nowait` raises :exc:`trio.WouldBlock` beyond it, :meth:`send` waits.
        close_timeout: seconds the exit may spend flushing before undelivered records fail.
        **config: any other kafka-python ``KafkaProducer`` option (``acks``, ``linger_ms``,
            ``compression_type``, ``security_protocol``, ``sasl_*``, ``ssl_*``,
            ``enable_idempotence``, ``transactional_id``, ...). trionet's defaults differ from
            kafka-python's in ``bootstrap_timeout_ms`` and ``max_block_ms`` (10 s each); and
            with an explicit ``acks`` other than ``"all"`` idempotence is switched off unless
            asked for (kafka-python would log a warning and do the same).

    Raises:
        ConfigurationError: an unknown option or an invalid value.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        max_pending: int = 100_000,
        close_timeout: float = 30.0,
        **config: Any,
    ) -> None:
        kp.check_options("producer", config, kp.PRODUCER_OPTIONS, _HANDLED)
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(f"max_pending must be a positive int, not {max_pending!r}")
        if not close_timeout >= 0:
            raise ConfigurationError(f"close_timeout must be >= 0, not {close_timeout!r}")
        self._servers = check_servers(bootstrap_servers)
        self._servers_text = servers_text(self._servers)
        self._encode_key = make_encoder(key_serializer, "key")
        self._encode_value = make_encoder(value_serializer, "value")
        self._max_pending = max_pending
        self._close_timeout = close_timeout
        settings = with_defaults(
            config,
            bootstrap_timeout_ms=DEFAULT_BOOTSTRAP_TIMEOUT_MS,
            max_block_ms=_DEFAULT_MAX_BLOCK_MS,
        )
        if settings.get("acks", "all") not in ("all", -1) and "enable_idempotence" not in config:
            settings["enable_idempotence"] = False
        settings["bootstrap_servers"] = self._servers
        self._config = settings
        self._kp: Any = None
        self._nursery: trio.Nursery | None = None
        self._cm: Any = None
        self._portal: TrioPortal | None = None
        self._ready_topics: set[str] = set()
        self._waiting: dict[str, list[tuple[Delivery, tuple[Any, ...]]]] = {}
        # Every record not counted yet, in send order (trio thread only, like the counters; the
        # record numbered n in that order is counted once _completed > n):
        # kafka-python's record future, or the Delivery while it has none (metadata wait).
        # Not the Delivery itself, which is then freed as soon as the caller drops it: keeping
        # one more object per pending record alive made the garbage collector cost more than
        # the rest of trionet's per-record work.
        self._pending: collections.deque[Any] = collections.deque()
        # Futures not counted yet whose Delivery someone waited for or read (their failures
        # are not flush()'s to raise).
        self._observed: set[Any] = set()
        self._sent = 0
        self._completed = 0
        self._failed = 0
        # Set (and replaced) when a watched future finishes or a local step changes a delivery.
        self._changed = trio.Event()
        self._watched: set[Any] = set()  # futures with a wake-up registered
        self._unobserved: list[BaseException] = []
        self._closing = False

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> KafkaProducer:
        """A producer for a ``kafka://host:port[,host:port]?option=value`` URL.

        Query options are kafka-python options (``acks=1``, ``linger_ms=5``...); user
        information in the URL becomes SASL PLAIN credentials. *overrides* win over the URL.
        ``group`` is ignored (it is a consumer option).
        """
        parsed = parse_kafka_url(url)
        options = dict(parsed.options)
        options.update(overrides)
        return cls(parsed.bootstrap_servers, **options)

    def __repr__(self) -> str:
        pending = len(self._pending)
        return f"<trionet.kafka.KafkaProducer {self._servers_text} pending={pending}>"

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> KafkaProducer:
        if self._cm is not None:
            raise RuntimeError("a KafkaProducer can be entered only once")
        self._cm = self._lifetime()
        return await self._cm.__aenter__()  # type: ignore[no-any-return]

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        return await self._cm.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[KafkaProducer]:
        self._portal = TrioPortal()
        trap = kp.ClientTrap()
        self._kp = await run_blocking(self._build, trap, on_cancel=trap.abort)
        clean_exit = False
        try:
            async with hidden_nursery() as nursery:
                self._nursery = nursery
                try:
                    yield self
                    clean_exit = True
                finally:
                    # Flush on exit, even after an error or a cancellation, within the deadline.
                    self._closing = True
                    with trio.move_on_after(self._close_timeout, shield=True):
                        await self._wait_until(self._all_done)
                    nursery.cancel_scope.cancel()
        finally:
            self._closing = True
            await self._shutdown(clean_exit)

    def _build(self, trap: kp.ClientTrap) -> Any:
        producer = kp.build_producer(self._config, trap, servers=self._servers_text)
        if self._config.get("transactional_id"):
            try:
                kp.init_transactions(producer)
            except BaseException as exc:
                kp.close_producer(producer, timeout=0)
                raise kp.translated(exc, servers=self._servers_text,  # noqa: B904
                                    operation="initializing transactions")
        return producer

    async def _shutdown(self, clean_exit: bool) -> None:
        # Records still waiting for their topic's metadata were never handed to kafka-python.
        waiting, self._waiting = self._waiting, {}
        for topic, queued in waiting.items():
            error = KafkaDeliveryError(
                f"the producer closed before the metadata of {topic!r} arrived", topic=topic,
                fault="local",
            )
            for delivery, _ in queued:
                self._fail_locally(delivery, error)
        timeout = 0.0 if not self._all_done() else self._close_timeout
        with trio.CancelScope(shield=True):
            await run_blocking(self._close_kafka_producer, timeout)
        # The sender thread has been joined: every record it had is acknowledged or failed.
        self._collect()
        self._kp = None
        if clean_exit and self._unobserved:
            first = self._unobserved[0]
            self._unobserved.clear()
            raise first

    def _close_kafka_producer(self, timeout: float) -> bool:
        return kp.close_producer(self._kp, timeout=timeout)

    # -- sending ----------------------------------------------------------------------------------

    def send_nowait(
        self,
        topic: str,
        value: Any = None,
        *,
        key: Any = None,
        headers: HeadersInput | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        """Buffer a record for sending, without waiting; returns its :class:`Delivery`.

        The first record for a topic the producer has not seen yet waits (in the background, in
        order with later records for that topic) for the topic's metadata.

        Args:
            topic: the topic.
            value: the value (serialized by ``value_serializer``); ``None`` makes a tombstone.
            key: the key, which also picks the partition when *partition* is not given.
            headers: a mapping or ``(name, value)`` pairs; values are bytes or text.
            partition: an explicit partition number.
            timestamp_ms: the record's timestamp (default: now).

        Raises:
            trio.WouldBlock: ``max_pending`` records are already unacknowledged.
            trio.ClosedResourceError: the producer is not open.
            UnknownTopicError: *partition* does not exist (for a topic already known).
            CodecError: the key or value cannot be serialized (or is not bytes without a
                serializer).
            ConfigurationError: malformed headers or arguments.
        """
        producer = self._kp
        if producer is None or self._closing:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        pending = self._pending
        if len(pending) >= self._max_pending:
            self._collect()
            if len(pending) >= self._max_pending:
                raise trio.WouldBlock
        if type(topic) is not str or not topic:
            raise ConfigurationError(f"topic must be a non-empty string, not {topic!r}")
        if value is not None:
            if self._encode_value is not None:
                value = _serialize(self._encode_value, value, "value")
            if type(value) is not bytes:
                value = bytes_or_none(value, "value")
        elif key is None:
            raise ConfigurationError("a record needs a key or a value (or both)")
        if key is not None:
            if self._encode_key is not None:
                key = _serialize(self._encode_key, key, "key")
            if type(key) is not bytes:
                key = bytes_or_none(key, "key")
        header_list = normalize_headers(headers) if headers else []
        if partition is not None and (type(partition) is not int or partition < 0):
            raise ConfigurationError(f"partition must be an int >= 0, not {partition!r}")
        if topic in self._ready_topics and kp.metadata_cached(producer, topic):
            # The hot path, inlined: kafka-python's thread-safe send does not block once the
            # topic's metadata is cached.
            try:
                future = producer.send(topic, value, key, header_list, partition, timestamp_ms)
            except BaseException as exc:
                raise self._send_error(exc, topic, partition)  # noqa: B904 (it sets the cause)
            seq = self._sent
            pending.append(future)
            self._sent = seq + 1
            if not seq & _COLLECT_MASK:
                self._collect()
            return Delivery(self, topic, partition, seq, future)
        return self._enqueue(topic, value, key, header_list, partition, timestamp_ms)

    def _enqueue(self, topic: str, value: bytes | bytearray | memoryview | None,
                 key: bytes | bytearray | memoryview | None, headers: list[tuple[str, bytes]],
                 partition: int | None, timestamp_ms: int | None) -> Delivery:
        if topic in self._ready_topics and kp.metadata_cached(self._kp, topic):
            # A direct call of kafka-python's thread-safe send, which does not block now that
            # the topic's metadata is cached.
            try:
                future = self._kp.send(topic, value=value, key=key, headers=headers,
                                       partition=partition, timestamp_ms=timestamp_ms)
            except BaseException as exc:
                raise self._send_error(exc, topic, partition)  # noqa: B904 (it sets the cause)
            seq = self._sent
            self._pending.append(future)
            self._sent = seq + 1
            return Delivery(self, topic, partition, seq, future)
        self._ready_topics.discard(topic)
        args = (value, key, headers, partition, timestamp_ms)
        queued = self._waiting.get(topic)
        if queued is None:
            if kp.metadata_cached(self._kp, topic):
                self._ready_topics.add(topic)
                return self._enqueue(topic, value, key, headers, partition, timestamp_ms)
            queued = self._waiting[topic] = []
            assert self._nursery is not None
            self._nursery.start_soon(self._fetch_metadata, topic)
        delivery = Delivery(self, topic, partition, self._sent)
        self._pending.append(delivery)
        self._sent += 1
        queued.append((delivery, args))
        return delivery

    async def _send_bytes(self, topic: str, value: bytes | None, key: bytes | None,
                          headers: list[tuple[str, bytes]], partition: int | None
                          ) -> RecordMetadata:
        """Send already-serialized bytes (serializers bypassed) and wait for the ack."""
        await self._wait_until(self._has_room)
        if self._kp is None or self._closing:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        delivery = self._enqueue(topic, value, key, headers, partition, None)
        return await delivery.wait()

    async def send(
        self,
        topic: str,
        value: Any = None,
        *,
        key: Any = None,
        headers: HeadersInput | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Send a record and wait until the broker acknowledged it (per ``acks``).

        Waits first if ``max_pending`` records are unacknowledged. If the call is cancelled
        after the record was buffered, the record may still be delivered.

        Returns:
            Where the record was written.

        Raises:
            KafkaDeliveryError: the record was not delivered (for example the broker went away
                for longer than ``delivery_timeout_ms``).
            UnknownTopicError: the topic's metadata could not be had within ``max_block_ms``,
                or *partition* does not exist.
            trio.ClosedResourceError: the producer is not open.
            CodecError, ConfigurationError: as for :meth:`send_nowait`.
        """
        while True:
            try:
                delivery = self.send_nowait(topic, value, key=key, headers=headers,
                                            partition=partition, timestamp_ms=timestamp_ms)
            except trio.WouldBlock:
                await self._wait_until(self._has_room)
            else:
                return await delivery.wait()

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged or failed.

        With ``linger_ms``, records may wait that long before kafka-python sends them.

        Raises:
            KafkaDeliveryError: (or another :class:`~trionet.errors.KafkaError`) the first
                failure, since the last flush, of a record nobody waited for.
        """
        await self._wait_until(self._all_done)
        if self._unobserved:
            first = self._unobserved[0]
            self._unobserved.clear()
            raise first

    async def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of *topic* (fetched from the broker if not known yet).

        Raises:
            UnknownTopicError: no metadata for the topic within ``max_block_ms``.
        """
        if self._kp is None:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        known = kp.known_partitions(self._kp, topic)
        if known is not None:
            await trio.lowlevel.checkpoint()
            return known
        return await run_blocking(self._lookup_partitions, topic)

    # -- transactions -----------------------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A Kafka transaction: what is sent inside is committed together, or not at all.

        Needs a ``transactional_id`` (the producer then runs ``init_transactions`` on entry).
        Leaving the block normally waits for every record, then commits; leaving it with an
        exception (cancellation included) aborts, and consumers reading with
        ``isolation_level="read_committed"`` never see the aborted records::

            async with KafkaProducer(servers, transactional_id="billing-1") as producer:
                async with producer.transaction():
                    producer.send_nowait("invoices", b"...")
                    await producer.send_offsets_to_transaction(consumer)

        Raises:
            KafkaError: no ``transactional_id``, a transaction is already open, or the broker
                refused the commit (the transaction is then aborted).
        """
        if self._kp is None or self._closing:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        if not self._config.get("transactional_id"):
            raise KafkaError("transactions need a transactional_id", fault="local")
        try:
            kp.begin_transaction(self._kp)
        except BaseException as exc:
            raise kp.translated(exc, servers=self._servers_text,  # noqa: B904
                                operation="beginning a transaction")
        try:
            yield
            await self.flush()
        except BaseException:
            with trio.CancelScope(shield=True):
                await run_blocking(self._transaction_call, kp.abort_transaction,
                                   "aborting the transaction")
            raise
        try:
            await run_blocking(self._transaction_call, kp.commit_transaction,
                               "committing the transaction")
        except BaseException:
            with trio.CancelScope(shield=True):
                await run_blocking(self._transaction_call, kp.abort_transaction,
                                   "aborting the transaction")
            raise

    async def send_offsets_to_transaction(
        self, consumer: KafkaConsumer, offsets: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        """Commit *consumer*'s offsets as part of the open transaction (consume-transform-produce).

        Args:
            consumer: the consumer whose group the offsets belong to.
            offsets: ``{partition: next offset}``; by default what *consumer* handed out.
        """
        if self._kp is None or self._closing:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        wanted = consumer.delivered_offsets() if offsets is None else dict(offsets)
        metadata = await consumer._group_metadata()
        await run_blocking(self._transaction_call, kp.send_offsets_to_transaction,
                           "sending offsets to the transaction", wanted, metadata)

    def _transaction_call(self, fn: Callable[..., None], what: str, *args: Any) -> None:
        try:
            fn(self._kp, *args)
        except BaseException as exc:
            raise kp.translated(exc, servers=self._servers_text, operation=what)  # noqa: B904

    def statistics(self) -> ProducerStatistics:
        """The producer's counters."""
        self._collect()
        # Records finished behind an older pending one are counted here too (not collected).
        acknowledged = failed = 0
        for item in self._pending:
            if type(item) is Delivery:
                if item.done():
                    if item._failure() is None:
                        acknowledged += 1
                    else:
                        failed += 1
            elif item.is_done:
                if item.exception is None:
                    acknowledged += 1
                else:
                    failed += 1
        failed += self._failed
        acknowledged += self._completed - self._failed
        return ProducerStatistics(self._sent - acknowledged - failed, acknowledged, failed)

    # -- internals --------------------------------------------------------------------------------

    def _lookup_partitions(self, topic: str) -> set[int]:  # worker thread
        try:
            return kp.partitions_for(self._kp, topic)
        except BaseException as exc:
            error = kp.translated(exc, servers=self._servers_text, topic=topic,
                                  operation=f"looking up topic {topic!r}")
            if isinstance(error, trio.TooSlowError):
                raise UnknownTopicError(
                    topic,
                    detail=f"no metadata within max_block_ms={self._config['max_block_ms']} "
                    "(does it exist? is auto-creation disabled?)",
                ) from exc
            raise error  # noqa: B904 (translated() set the cause)

    async def _fetch_metadata(self, topic: str) -> None:
        error: BaseException | None = None
        try:
            await run_blocking(self._lookup_partitions, topic)
        except KafkaError as exc:
            error = exc
        queued = self._waiting.pop(topic, [])
        if error is None:
            self._ready_topics.add(topic)
        for delivery, args in queued:
            if error is None:
                self._hand_over(delivery, args)
            else:
                self._fail_locally(delivery, error)
        self._notify()

    def _hand_over(self, delivery: Delivery, args: tuple[Any, ...]) -> None:
        value, key, headers, partition, timestamp_ms = args
        try:
            future = kp.send(self._kp, delivery.topic, value, key, headers, partition,
                             timestamp_ms)
        except Exception as exc:  # the record's own failure; KeyboardInterrupt & co. propagate
            self._fail_locally(delivery, self._send_error(exc, delivery.topic, partition))
            return
        delivery._future = future

    def _send_error(self, exc: BaseException, topic: str, partition: int | None) -> BaseException:
        """The error to raise for *exc* from a send: *exc* itself (not an Exception: Cancelled,
        KeyboardInterrupt), or a new one with *exc* as its cause."""
        error: BaseException
        if not isinstance(exc, Exception):
            return exc
        if isinstance(exc, ValueError) and "partition" in str(exc).lower():
            error = UnknownTopicError(topic, partition, detail=str(exc))
        elif isinstance(exc, (TypeError, ValueError)):
            error = ConfigurationError(f"cannot send to {topic!r}: {exc}")
        else:
            error = kp.delivery_error(
                exc, topic=topic, partition=partition, servers=self._servers_text
            )
        if error is not exc:
            error.__cause__ = exc
            error.__suppress_context__ = True
        return error

    # -- delivery bookkeeping (trio thread) ----------------------------------------------------

    def _collect(self) -> None:
        """Count the finished records at the front of the queue; note their failures."""
        pending = self._pending
        observed = self._observed
        while pending:
            item = pending[0]
            if type(item) is Delivery:
                if not item.done():
                    return
                error = item._failure()
                waited = item._waited
                future = item._future
            else:
                if not item.is_done:
                    return
                future = item
                error = None if item.exception is None else self._failure_of(item)
                waited = False
            pending.popleft()
            self._completed += 1
            if future in observed:
                observed.discard(future)
                waited = True
            if error is not None:
                self._failed += 1
                if not waited and not kp.is_transaction_abort(error.__cause__):
                    self._unobserved.append(error)

    def _failure_of(self, future: Any) -> BaseException:
        topic, partition = kp.record_partition(future)
        return kp.delivery_error(future.exception, topic=topic, partition=partition,
                                 servers=self._servers_text)

    def _fail_locally(self, delivery: Delivery, error: BaseException) -> None:
        delivery._error = error
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _watch(self, item: Any) -> None:
        """Have :meth:`_notify` called when a pending record finishes (at most one wake-up
        registered per record)."""
        future = item._future if type(item) is Delivery else item
        if future is None or future in self._watched:
            return  # a local step notifies (metadata arrived), or a wake-up is registered
        self._watched.add(future)
        portal = self._portal
        assert portal is not None

        def wake(_: object) -> None:  # sender thread, or at once if the future is done
            portal.call_soon(self._woken, future)

        kp.watch_delivery(future, wake, wake)

    def _woken(self, future: Any) -> None:
        self._watched.discard(future)
        self._notify()

    def _has_room(self) -> bool:
        return len(self._pending) < self._max_pending

    def _all_done(self) -> bool:
        return not self._pending

    async def _wait_for(self, delivery: Delivery) -> None:
        """Wait until *delivery* finished: one wake-up for this record alone."""
        portal = self._portal
        assert portal is not None
        while not delivery.done():
            future = delivery._future
            if future is None:  # waiting for its topic's metadata (a local step notifies)
                await self._changed.wait()
                continue
            finished = trio.Event()

            def wake(_: object, finished: trio.Event = finished) -> None:  # sender thread
                portal.call_soon(finished.set)

            kp.watch_delivery(future, wake, wake)
            await finished.wait()

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until *condition()* holds, re-checked as deliveries finish.

        Wakes up when the last record sent finishes (all may be done then) and, while that is
        not enough, when the oldest pending one does.
        """
        self._collect()
        if condition():
            await trio.lowlevel.checkpoint()
            return
        pending = self._pending
        self._watch(pending[-1])
        while not condition():
            changed = self._changed
            if pending:
                self._watch(pending[0])
            await changed.wait()
            self._collect()
