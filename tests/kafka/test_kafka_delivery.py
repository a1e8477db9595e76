"""Delivery reports of the producer: counted in send order on the trio thread, woken up once per
wait, failures never lost (against the real broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from kafka_support import new_topic, unique

from trionet.errors import CodecError, ConfigurationError
from trionet.kafka import (
    KafkaAdmin,
    KafkaConsumer,
    KafkaDeliveryError,
    KafkaProducer,
    NewTopic,
    RecordMetadata,
)
from trionet.kafka._producer import _BATCH
from trionet.testing import KafkaBroker


async def test_thousands_of_send_nowait_are_counted_and_acknowledged(servers: str) -> None:
    # More records than one counting interval (1024): the queue of pending records is counted
    # while sending, and flush() leaves nothing pending.
    count = 5000
    async with new_topic(servers, "many") as topic, \
            KafkaProducer(servers, acks=1) as producer:
        deliveries = [producer.send_nowait(topic, b"%d" % n) for n in range(count)]
        await producer.flush()
        stats = producer.statistics()
        assert (stats.pending, stats.acknowledged, stats.failed) == (0, count, 0)
        assert all(delivery.done() for delivery in deliveries)
        by_partition: dict[int, list[int]] = {}
        for delivery in deliveries:
            metadata = delivery.result()
            assert isinstance(metadata, RecordMetadata)
            assert metadata.topic == topic
            by_partition.setdefault(metadata.partition, []).append(metadata.offset)
        # Per partition, offsets follow the send order with no gap.
        assert sum(len(offsets) for offsets in by_partition.values()) == count
        for offsets in by_partition.values():
            assert offsets == list(range(len(offsets)))
        assert "acknowledged" in repr(deliveries[0])


async def test_many_tasks_waiting_for_their_own_records(servers: str) -> None:
    # Each send() waits for its own record; max_pending makes most of them wait for room first.
    async with new_topic(servers, "waiters", partitions=1) as topic, \
            KafkaProducer(servers, acks=1, max_pending=16) as producer:
        await producer.send(topic, b"warm-up")
        offsets: list[int] = []

        async def sender(first: int) -> None:
            for n in range(first, first + 25):
                metadata = await producer.send(topic, b"%d" % n)
                offsets.append(metadata.offset)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for task in range(40):
                    nursery.start_soon(sender, task * 25)
        assert sorted(offsets) == list(range(1, 1001))
        stats = producer.statistics()
        assert (stats.pending, stats.acknowledged, stats.failed) == (0, 1001, 0)


@asynccontextmanager
async def _broker_gone(prefix: str, **options: Any) -> AsyncIterator[tuple[KafkaProducer, str]]:
    """A producer that knows its topic, whose private broker has just been killed."""
    broker = KafkaBroker()
    await trio.to_thread.run_sync(broker.start)
    try:
        servers = broker.info.bootstrap_servers
        topic = unique(prefix)
        async with KafkaAdmin(servers) as admin:
            await admin.create_topics([NewTopic(topic)])
        async with KafkaProducer(servers, acks=1, request_timeout_ms=1000,
                                 delivery_timeout_ms=2000, retry_backoff_ms=50,
                                 close_timeout=1, **options) as producer:
            await producer.send(topic, b"warm-up")
            await trio.to_thread.run_sync(broker.kill)
            yield producer, topic
    finally:
        await trio.to_thread.run_sync(broker.close)


async def test_failures_nobody_waited_for_come_out_of_flush() -> None:
    # The producer's block ends without an exception: every failure was raised once already.
    async with _broker_gone("lost", linger_ms=200) as (producer, topic):
        watched = producer.send_nowait(topic, b"watched")
        dropped = [producer.send_nowait(topic, b"%d" % n) for n in range(2000)]
        with trio.fail_after(30):
            with pytest.raises(KafkaDeliveryError) as info:
                await watched.wait()
            assert info.value.topic == topic
            # The others failed too, unobserved: the flush raises the first of them.
            with pytest.raises(KafkaDeliveryError) as flushed:
                await producer.flush()
        assert flushed.value is not info.value
        assert flushed.value.topic == topic
        stats = producer.statistics()
        assert (stats.pending, stats.acknowledged, stats.failed) == (0, 1, 2001)
        assert all(delivery.done() for delivery in dropped)
        with pytest.raises(KafkaDeliveryError):
            dropped[-1].result()
        assert "failed" in repr(dropped[0])
        await producer.flush()  # reported once: nothing left to raise


async def test_a_failure_read_through_result_is_not_raised_again_by_flush() -> None:
    async with _broker_gone("seen") as (producer, topic):
        only = producer.send_nowait(topic, b"only")
        with trio.fail_after(30):
            # Polled on purpose: wait() would count as observing the failure too.
            while not only.done():  # noqa: ASYNC110
                await trio.sleep(0.05)
        with pytest.raises(KafkaDeliveryError):
            only.result()
        await producer.flush()  # the one failure was seen already
        assert producer.statistics().failed == 1


async def test_send_many_delivers_every_record_in_order(servers: str, kafka_backend: str
                                                         ) -> None:
    # More records than one batch (4096) and than max_pending: send_many waits for room; on
    # the confluent engine a small local queue also fills (BufferError), and it waits too.
    count = 9000
    options: dict[str, Any] = {"max_pending": 5000}
    if kafka_backend == "confluent":
        options["queue.buffering.max.messages"] = 3000
    async with new_topic(servers, "many-batch", partitions=1) as topic, \
            KafkaProducer(servers, acks=1, **options) as producer:
        single = producer.send_nowait(topic, b"first")
        with trio.fail_after(60):
            sent = await producer.send_many(topic, (b"%d" % n for n in range(count)))
        assert sent == count
        assert single.done()  # sent before: acknowledged before the batch (one partition)
        stats = producer.statistics()
        assert (stats.pending, stats.acknowledged, stats.failed) == (0, count + 1, 0)
        assert (await producer.send(topic, b"last")).offset == count + 1
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 auto_offset_reset="earliest") as consumer:
            values = []
            with trio.fail_after(60):
                while len(values) < count + 2:
                    values += [record.value for record in await consumer.getmany()]
        assert values == [b"first", *(b"%d" % n for n in range(count)), b"last"]


async def test_send_many_serializes_and_checks_its_records(servers: str) -> None:
    async with new_topic(servers, "batch-json", partitions=1) as topic, \
            KafkaProducer(servers, acks=1, value_serializer="json") as producer:
        assert await producer.send_many(topic, [{"n": 1}, {"n": 2}], key=b"k") == 2
        assert await producer.send_many(topic, []) == 0
        with pytest.raises(ConfigurationError):
            await producer.send_many("", [b"x"])
    async with new_topic(servers, "batch-bytes", partitions=1) as topic, \
            KafkaProducer(servers, acks=1) as producer:
        with pytest.raises(ConfigurationError):  # a tombstone needs a key
            await producer.send_many(topic, [b"a", None])
        with pytest.raises(CodecError):  # not bytes, no serializer
            await producer.send_many(topic, [b"a", 17])
        assert await producer.send_many(topic, [None], key=b"k") == 1
        await producer.flush()


async def test_send_many_raises_the_first_failure_once() -> None:
    async with _broker_gone("batch-lost") as (producer, topic):
        with trio.fail_after(30), pytest.raises(KafkaDeliveryError) as info:
            await producer.send_many(topic, [b"%d" % n for n in range(100)])
        assert info.value.topic == topic
        assert producer.statistics().failed == 100
        await producer.flush()  # raised once already


async def test_failures_of_a_cancelled_send_many_come_out_of_flush() -> None:
    # Nobody waits for these records any more: their failures must not be dropped.
    async with _broker_gone("batch-cancelled") as (producer, topic):
        with trio.CancelScope() as scope:

            def values() -> Iterator[bytes]:
                yield from (b"%d" % n for n in range(_BATCH))  # one batch, handed over...
                scope.cancel()  # ...then the call is cancelled while it waits for the acks

            await producer.send_many(topic, values())
        assert scope.cancelled_caught
        with trio.fail_after(30), pytest.raises(KafkaDeliveryError) as info:
            await producer.flush()
        assert info.value.topic == topic
        stats = producer.statistics()
        assert (stats.pending, stats.failed) == (0, _BATCH)
