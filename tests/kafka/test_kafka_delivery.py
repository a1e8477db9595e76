"""Delivery reports of the producer: counted in send order on the trio thread, woken up once per
wait, failures never lost (against the real broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from kafka_support import new_topic, unique

from trionet.kafka import (
    KafkaAdmin,
    KafkaDeliveryError,
    KafkaProducer,
    NewTopic,
    RecordMetadata,
)
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
