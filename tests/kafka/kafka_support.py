"""Helpers shared by the Kafka tests (all of them run against the ``kafka_broker`` fixture)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trionet.kafka import KafkaAdmin, KafkaConsumer, KafkaProducer, KafkaRecord, NewTopic
from trionet.testing import KAFKA_TEST_CONSUMER_CONFIG

#: Consumer options for every test consumer: quick group joins, start at the beginning.
CONSUMER: dict[str, Any] = {**KAFKA_TEST_CONSUMER_CONFIG, "auto_offset_reset": "earliest"}


def unique(prefix: str) -> str:
    """A topic or group name no other test (or earlier run on the same broker) uses."""
    return f"trionet-test-{prefix}-{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def new_topic(servers: str, prefix: str, partitions: int = 3) -> AsyncIterator[str]:
    """Create a fresh topic for one test and delete it afterwards."""
    name = unique(prefix)
    async with KafkaAdmin(servers) as admin:
        await admin.create_topics([NewTopic(name, num_partitions=partitions)])
    try:
        yield name
    finally:
        with trio.CancelScope(shield=True):
            async with KafkaAdmin(servers) as admin:
                await admin.delete_topics([name], missing_ok=True)


async def produce(servers: str, topic: str, values: Iterable[bytes], *,
                  partition: int | None = None) -> None:
    """Produce *values* (keyed by themselves) and wait until all are acknowledged."""
    async with KafkaProducer(servers) as producer:
        for value in values:
            producer.send_nowait(topic, value, key=value, partition=partition)
        await producer.flush()


def foreign_threads(before: set[threading.Thread]) -> list[str]:
    """Names of the threads alive now that the Kafka clients may have started.

    That is every thread started since *before*, and every thread (even a reused one from
    trio's worker cache) currently carrying a kafka-python or trionet Kafka thread name. trio's
    idle worker threads ("Trio thread N") are not counted: they belong to trio's pool.
    """
    return sorted(
        thread.name for thread in threading.enumerate()
        if thread.is_alive() and not thread.name.startswith("Trio thread")
        and (thread not in before or _is_kafka_thread(thread.name))
    )


def _is_kafka_thread(name: str) -> bool:
    return name.startswith(("kafka-", "trionet-kafka-")) or name.endswith("-network-thread")


async def read_while_paused(consumer: KafkaConsumer, read: Callable[[], Awaitable[KafkaRecord]],
                            seen: list[tuple[int, int]], partition: int, count: int) -> None:
    """With every partition but *partition* paused: read one record at a time with *read*
    until *seen* holds *count* of that partition's, then check that nothing else comes."""
    while sum(1 for p, _ in seen if p == partition) < count:
        record = await read()
        assert record.partition == partition, "a paused partition was read"
        seen.append((record.partition, record.offset))
    with trio.move_on_after(0.3):
        extra = await consumer.getmany()
        pytest.fail(f"read {extra} while the other partition was paused")
