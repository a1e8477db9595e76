"""The Kafka producer: a trio driver around a producer engine.

:class:`KafkaProducer` checks and serializes records and hands them to the engine
(:mod:`._engine`; kafka-python's is :mod:`._kafka_python_engine`) on the trio thread: buffering
a record never blocks once its topic's metadata is known (the first record for a new topic
waits for its metadata in the background, in order with the records after it). Delivery
reports are counted by the engine-free :class:`~._deliveries.DeliveryLedger`, with at most one
wake-up from the engine's thread per wait. The ``async with`` block waits for every thread the
engine started.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Self

import trio

from .. import metrics as _metrics, tracing as _tracing
from .._util import EnterOnce
from ..errors import CodecError, ConfigurationError, KafkaError
from . import _tracing as _kafka_tracing
from ._deliveries import Batch, Delivery, DeliveryLedger, ProducerStatistics
from ._engine import ProducerEngine, load_engine
from ._errors import KafkaDeliveryError
from ._options import ProducerOptions, with_tls
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
from ._util import check_servers, hidden_nursery, servers_text

if TYPE_CHECKING:
    from ._consumer import KafkaConsumer

__all__ = ["Delivery", "KafkaProducer", "ProducerStatistics"]

#: send_nowait counts the finished deliveries every this many records (a power of 2, minus 1).
_COLLECT_MASK: Final = 1023
#: send_many hands records to the engine in batches of at most this many.
_BATCH: Final = 4096
_HANDLED: Final = frozenset({"key_serializer", "value_serializer"})


def _serialize(encode: Callable[[Any], Any], value: Any, what: str) -> Any:
    try:
        return encode(value)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"the {what} serializer failed on {type(value).__name__}: {exc}",
                         codec="serializer", fault="local") from exc


class KafkaProducer(EnterOnce):
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
    *close_timeout*), stops the engine's threads (kafka-python's sender thread) and waits for them,
    and raises the first
    delivery failure nobody had waited for.

    Args:
        bootstrap_servers: ``"host:port"`` or a list of them.
        key_serializer: turns keys into bytes: a callable, a :class:`~trionet.codecs.Codec` or a
            codec name (``"json"``, ``"msgpack"``). Without one, keys must be bytes.
        value_serializer: the same for values.
        max_pending: at most this many records may be unacknowledged at once;
            :meth:`send_nowait` raises :exc:`trio.WouldBlock` beyond it, :meth:`send` waits.
        close_timeout: seconds the exit may spend flushing before undelivered records fail.
        backend: the engine (``"kafka-python"`` by default; see the Kafka guide).
        **config: any other option of the engine's producer; for kafka-python, its
            ``KafkaProducer`` options (``acks``, ``linger_ms``,
            ``compression_type``, ``security_protocol``, ``sasl_*``, ``ssl_*`` (or ``tls=``
            in the :mod:`trionet.tls` vocabulary, which sets them),
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
        backend: str | None = None,
        **config: Any,
    ) -> None:
        engine = load_engine(backend)
        servers = check_servers(bootstrap_servers)
        self._config = engine.configure("producer", with_tls(config), servers=servers,
                                        handled=_HANDLED)
        self._options = ProducerOptions(max_pending, close_timeout)
        self._servers_text = servers_text(servers)
        self._encode_key = make_encoder(key_serializer, "key")
        self._encode_value = make_encoder(value_serializer, "value")
        self._max_pending = max_pending
        self._engine: ProducerEngine = engine.producer(self._config)
        self._ledger = DeliveryLedger(self._engine)
        self._open = False
        self._traced = True  # False for a producer a higher layer traces (the bus's)
        #: The engine is started and not closed yet (open, or flushing on exit).
        self._started = False
        self._nursery: trio.Nursery | None = None
        self._ready_topics: set[str] = set()
        self._waiting: dict[str, list[tuple[Delivery, tuple[Any, ...]]]] = {}

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> KafkaProducer:
        """A producer for a ``kafka://host:port[,host:port]?option=value`` URL.

        Query options are the engine's options (``acks=1``, ``linger_ms=5``...; ``backend``
        picks the engine); user information in the URL becomes SASL PLAIN credentials.
        *overrides* win over the URL. ``group`` is ignored (it is a consumer option).
        """
        parsed = parse_kafka_url(url)
        options = parsed.client_options()
        options.update(overrides)
        return cls(parsed.bootstrap_servers, **options)

    def __repr__(self) -> str:
        pending = self._ledger.sent - self._ledger.completed
        return f"<trionet.kafka.KafkaProducer {self._servers_text} pending={pending}>"

    # -- lifecycle --------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        await self._engine.start()
        self._open = self._started = True
        clean_exit = False
        try:
            async with hidden_nursery() as nursery:
                self._nursery = nursery
                try:
                    yield self
                    clean_exit = True
                finally:
                    # Flush on exit, even after an error or a cancellation, within the deadline.
                    self._open = False
                    with trio.move_on_after(self._options.close_timeout, shield=True):
                        await self._ledger.wait_until(self._ledger.all_done)
                    nursery.cancel_scope.cancel()
        finally:
            self._open = False
            await self._shutdown(clean_exit)

    async def _shutdown(self, clean_exit: bool) -> None:
        # Records still waiting for their topic's metadata were never handed to the engine.
        waiting, self._waiting = self._waiting, {}
        for topic, queued in waiting.items():
            error = KafkaDeliveryError(
                f"the producer closed before the metadata of {topic!r} arrived", topic=topic,
                fault="local",
            )
            for delivery, _ in queued:
                self._ledger.fail_locally(delivery, error)
        ledger = self._ledger
        timeout = 0.0 if not ledger.all_done() else self._options.close_timeout
        with trio.CancelScope(shield=True):
            await self._engine.close(timeout)
        self._started = False
        # The engine's threads have been joined: every record is acknowledged or failed.
        ledger.collect()
        first = ledger.take_unobserved()
        if clean_exit and first is not None:
            raise first

    def _check_open(self) -> None:
        if not self._open:
            raise trio.ClosedResourceError("the Kafka producer is not open")

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
        if not self._open:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        ledger = self._ledger
        pending = ledger.pending
        if ledger.sent - ledger.completed >= self._max_pending:
            ledger.collect()
            if ledger.sent - ledger.completed >= self._max_pending:
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
        if _metrics.sinks:
            _metrics.message("kafka", "out")
        if _tracing.enabled() and self._traced:
            return self._send_traced(topic, value, key, header_list, partition, timestamp_ms)
        engine = self._engine
        if topic in self._ready_topics and engine.ready(topic):
            # The hot path, inlined: the engine's send does not block once ready().
            try:
                future = engine.send(topic, value, key, header_list, partition, timestamp_ms)
            except Exception as exc:
                raise engine.send_error(exc, topic, partition)  # noqa: B904 (it sets the cause)
            seq = ledger.sent
            pending.append(future)
            ledger.sent = seq + 1
            if not seq & _COLLECT_MASK:
                ledger.collect()
            return Delivery(ledger, topic, partition, seq, future)
        return self._enqueue(topic, value, key, header_list, partition, timestamp_ms)

    def _send_traced(self, topic: str, value: bytes | bytearray | memoryview | None,
                     key: bytes | bytearray | memoryview | None,
                     headers: list[tuple[str, bytes]], partition: int | None,
                     timestamp_ms: int | None) -> Delivery:
        """``send_nowait`` in a PRODUCER span (handing the record over), its context in the
        record's headers (trionet.tracing)."""
        span = _kafka_tracing.send_span(topic, partition, value)
        if span is None:
            return self._enqueue(topic, value, key, headers, partition, timestamp_ms)
        try:
            return self._enqueue(topic, value, key, _kafka_tracing.with_carrier(headers, span),
                                 partition, timestamp_ms)
        except Exception as exc:
            span.failed(exc)
            raise
        finally:
            span.end()

    def _enqueue(self, topic: str, value: bytes | bytearray | memoryview | None,
                 key: bytes | bytearray | memoryview | None, headers: list[tuple[str, bytes]],
                 partition: int | None, timestamp_ms: int | None) -> Delivery:
        engine = self._engine
        if topic in self._ready_topics and engine.ready(topic):
            try:
                future = engine.send(topic, value, key, headers, partition, timestamp_ms)
            except Exception as exc:
                raise engine.send_error(exc, topic, partition)  # noqa: B904 (it sets the cause)
            return self._ledger.add(topic, partition, future)
        self._ready_topics.discard(topic)
        args = (value, key, headers, partition, timestamp_ms)
        queued = self._waiting.get(topic)
        if queued is None:
            if engine.ready(topic):
                self._ready_topics.add(topic)
                return self._enqueue(topic, value, key, headers, partition, timestamp_ms)
            queued = self._waiting[topic] = []
            assert self._nursery is not None
            self._nursery.start_soon(self._fetch_metadata, topic)
        delivery = self._ledger.add(topic, partition, None)
        queued.append((delivery, args))
        return delivery

    async def _send_bytes(self, topic: str, value: bytes | None, key: bytes | None,
                          headers: list[tuple[str, bytes]], partition: int | None
                          ) -> RecordMetadata:
        """Send already-serialized bytes (serializers bypassed) and wait for the ack."""
        await self._ledger.wait_until(self._has_room)
        self._check_open()
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
                await self._ledger.wait_until(self._has_room)
            else:
                return await delivery.wait()

    async def send_many(
        self,
        topic: str,
        values: Iterable[Any],
        *,
        key: Any = None,
        headers: HeadersInput | None = None,
        partition: int | None = None,
    ) -> int:
        """Send many records to *topic* and wait until every one is acknowledged or failed.

        The fast way to send records whose individual :class:`RecordMetadata` nobody needs:
        there is no :class:`Delivery` per record, and the engine reports their outcome in
        batches (on the confluent engine without a Python call per record). The records are
        handed to the engine in batches of up to 4096, in order with what else is sent;
        ``max_pending`` applies as for :meth:`send` (it waits for room).

        Args:
            topic: the topic of every record.
            values: the records' values (serialized by ``value_serializer``; ``None`` makes a
                tombstone, which needs a *key*). Any iterable; it is read as it is sent.
            key: the key of every record (it also picks their partition), or None.
            headers: the headers of every record.
            partition: an explicit partition for every record.

        Returns:
            How many records were sent.

        Raises:
            KafkaDeliveryError: (or another :class:`~trionet.errors.KafkaError`) the first
                record that was not delivered, once every record handed over is done (its
                failure is not raised again by :meth:`flush`).
            UnknownTopicError: no metadata for *topic* within ``max_block_ms``, or
                *partition* does not exist.
            CodecError, ConfigurationError: as for :meth:`send_nowait`, at once; the records
                before the bad one are sent, and a failure among them comes out of
                :meth:`flush`.
            trio.ClosedResourceError: the producer is not open.

        If the call is cancelled, the records handed over may still be delivered; their
        failures then come out of :meth:`flush` or the end of the ``async with`` block.
        """
        self._check_open()
        if type(topic) is not str or not topic:
            raise ConfigurationError(f"topic must be a non-empty string, not {topic!r}")
        if key is not None:
            if self._encode_key is not None:
                key = _serialize(self._encode_key, key, "key")
            if type(key) is not bytes:
                key = bytes_or_none(key, "key")
        header_list = normalize_headers(headers) if headers else []
        if partition is not None and (type(partition) is not int or partition < 0):
            raise ConfigurationError(f"partition must be an int >= 0, not {partition!r}")
        ledger, engine = self._ledger, self._engine
        size = max(1, min(_BATCH, self._max_pending))
        mine: list[Batch] = []
        sent = 0
        span = None
        if _tracing.enabled() and self._traced:  # one PRODUCER span for the records
            span = _kafka_tracing.send_span(topic, partition, None, 0)
            if span is not None:
                header_list = _kafka_tracing.with_carrier(header_list, span)
        try:
            iterator = iter(values)
            while chunk := list(itertools.islice(iterator, size)):
                chunk = self._encode_values(chunk, key is None)
                while chunk:
                    await self._room_for(topic, len(chunk))
                    handle, error = engine.send_batch(topic, chunk, key, header_list, partition)
                    if handle.count:
                        batch = Batch(handle, topic, partition)
                        ledger.add_batch(batch)
                        mine.append(batch)
                        sent += handle.count
                        if _metrics.sinks:
                            _metrics.message("kafka", "out", handle.count)
                    if error is None:
                        break
                    chunk = chunk[handle.count:]
                    if not engine.is_queue_full(error):
                        raise engine.send_error(error, topic, partition)
                    # The engine's own queue is full: wait until some record finished.
                    await self._some_finished()
            for batch in mine:
                await self._wait_batch(batch)
        except BaseException as exc:
            for batch in mine:  # their failures are flush()'s now
                batch.waited = False
            if span is not None:
                _tracing.end_span(span, exc, sent)
            raise
        ledger.collect()
        for batch in mine:
            if batch.handle.exception is not None:
                error = engine.failure(batch.handle, topic, partition)
                if span is not None:
                    _tracing.end_span(span, error, sent)
                raise error
        if span is not None:
            _tracing.end_span(span, None, sent)
        return sent

    def _encode_values(self, chunk: list[Any], keyless: bool) -> list[Any]:
        encode = self._encode_value
        if encode is not None:
            return [None if value is None else _serialize(encode, value, "value")
                    for value in chunk]
        for n, value in enumerate(chunk):
            if type(value) is not bytes:
                if value is None:
                    if keyless:
                        raise ConfigurationError("a record needs a key or a value (or both)")
                else:
                    chunk[n] = bytes_or_none(value, "value")
        return chunk

    async def _room_for(self, topic: str, count: int) -> None:
        """Wait until *count* more records fit under ``max_pending`` and *topic*'s metadata is
        known (after the records of send_nowait that wait for it)."""
        ledger = self._ledger
        room = self._max_pending - count
        await ledger.wait_until(lambda: ledger.has_room(room + 1) and topic not in self._waiting)
        self._check_open()
        if not (topic in self._ready_topics and self._engine.ready(topic)):
            await self._engine.partitions_for(topic)
            self._check_open()
            self._ready_topics.add(topic)

    async def _some_finished(self) -> None:
        ledger = self._ledger
        completed = ledger.completed
        await ledger.wait_until(lambda: ledger.completed > completed or not ledger.pending)

    async def _wait_batch(self, batch: Batch) -> None:
        engine, handle = self._engine, batch.handle
        while not handle.is_done:
            finished = trio.Event()
            engine.watch(handle, finished.set)
            await finished.wait()

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged or failed.

        With ``linger_ms``, records may wait that long before kafka-python sends them.

        Raises:
            KafkaDeliveryError: (or another :class:`~trionet.errors.KafkaError`) the first
                failure, since the last flush, of a record nobody waited for.
        """
        await self._ledger.wait_until(self._ledger.all_done)
        first = self._ledger.take_unobserved()
        if first is not None:
            raise first

    async def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of *topic* (fetched from the broker if not known yet).

        Raises:
            UnknownTopicError: no metadata for the topic within ``max_block_ms``.
        """
        if not self._started:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        known = self._engine.known_partitions(topic)
        if known is not None:
            await trio.lowlevel.checkpoint()
            return known
        return await self._engine.partitions_for(topic)

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
        self._check_open()
        if not self._config.transactional:
            raise KafkaError("transactions need a transactional_id", fault="local")
        engine = self._engine
        await engine.begin_transaction()
        try:
            yield
            await self.flush()
        except BaseException:
            with trio.CancelScope(shield=True):
                await engine.abort_transaction()
            raise
        try:
            await engine.commit_transaction()
        except BaseException:
            with trio.CancelScope(shield=True):
                await engine.abort_transaction()
            raise

    async def send_offsets_to_transaction(
        self, consumer: KafkaConsumer, offsets: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        """Commit *consumer*'s offsets as part of the open transaction (consume-transform-produce).

        Args:
            consumer: the consumer whose group the offsets belong to.
            offsets: ``{partition: next offset}``; by default what *consumer* handed out.
        """
        self._check_open()
        wanted = consumer.delivered_offsets() if offsets is None else dict(offsets)
        metadata = await consumer._group_metadata()
        await self._engine.send_offsets_to_transaction(wanted, metadata)

    def statistics(self) -> ProducerStatistics:
        """The producer's counters."""
        return self._ledger.statistics()

    # -- internals --------------------------------------------------------------------------------

    async def _fetch_metadata(self, topic: str) -> None:
        error: BaseException | None = None
        try:
            await self._engine.partitions_for(topic)
        except KafkaError as exc:
            error = exc
        queued = self._waiting.pop(topic, [])
        if error is None:
            self._ready_topics.add(topic)
        for delivery, args in queued:
            if error is None:
                self._hand_over(delivery, args)
            else:
                self._ledger.fail_locally(delivery, error)
        self._ledger.notify()

    def _hand_over(self, delivery: Delivery, args: tuple[Any, ...]) -> None:
        value, key, headers, partition, timestamp_ms = args
        engine = self._engine
        try:
            future = engine.send(delivery.topic, value, key, headers, partition, timestamp_ms)
        except Exception as exc:  # the record's own failure; KeyboardInterrupt & co. propagate
            self._ledger.fail_locally(delivery, engine.send_error(exc, delivery.topic,
                                                                   partition))
            return
        delivery._future = future

    def _has_room(self) -> bool:
        return self._ledger.has_room(self._max_pending)
