"""Failures in bounded time: unreachable brokers, a broker dying mid-stream, unknown topics,
and cancellation that leaves no thread behind."""

from __future__ import annotations

import socket
import threading

import pytest
import trio
from kafka_support import CONSUMER, foreign_threads, new_topic, produce, unique

from trionet.kafka import (
    KafkaAdmin,
    KafkaConnectionError,
    KafkaConsumer,
    KafkaDeliveryError,
    KafkaError,
    KafkaProducer,
    KafkaRequester,
    NewTopic,
    UnknownTopicError,
)
from trionet.testing import KafkaBroker


@pytest.fixture
def dead_address() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize("client", ["producer", "consumer", "admin"])
async def test_unreachable_bootstrap_fails_in_bounded_time(dead_address: str, client: str
                                                           ) -> None:
    before = set(threading.enumerate())
    with trio.fail_after(20), pytest.raises(KafkaConnectionError) as info:
        if client == "producer":
            async with KafkaProducer(dead_address, bootstrap_timeout_ms=1000):
                pass
        elif client == "consumer":
            async with KafkaConsumer("t", bootstrap_servers=dead_address,
                                     bootstrap_timeout_ms=1000):
                pass
        else:
            async with KafkaAdmin(dead_address, bootstrap_timeout_ms=1000):
                pass
    assert dead_address in str(info.value)
    assert info.value.bootstrap_servers == dead_address
    assert foreign_threads(before) == []


@pytest.mark.parametrize("client", ["producer", "consumer", "admin"])
async def test_cancelling_a_bootstrap_is_prompt_and_leaves_no_thread(dead_address: str,
                                                                     client: str) -> None:
    before = set(threading.enumerate())
    # bootstrap_timeout_ms is a minute: only the cancellation can end this within fail_after.
    with trio.fail_after(20):
        with trio.move_on_after(0.3) as scope:
            if client == "producer":
                async with KafkaProducer(dead_address, bootstrap_timeout_ms=60_000):
                    pytest.fail("connected to nothing")
            elif client == "consumer":
                async with KafkaConsumer(bootstrap_servers=dead_address,
                                         bootstrap_timeout_ms=60_000):
                    pytest.fail("connected to nothing")
            else:
                async with KafkaAdmin(dead_address, bootstrap_timeout_ms=60_000):
                    pytest.fail("connected to nothing")
        assert scope.cancelled_caught
    assert foreign_threads(before) == []


async def test_cancelling_readers_and_writers_leaves_no_thread(servers: str) -> None:
    before = set(threading.enumerate())
    async with new_topic(servers, "cancel") as topic:
        with trio.move_on_after(1.0) as scope:
            async with KafkaProducer(servers) as producer, \
                    KafkaConsumer(topic, bootstrap_servers=servers, group_id=unique("cancel"),
                                  **CONSUMER) as consumer:
                await producer.send(topic, b"one")
                assert (await consumer.getone()).value == b"one"
                async for record in consumer:  # nothing more comes: cancelled here
                    pytest.fail(f"unexpected {record}")
        assert scope.cancelled_caught
    assert foreign_threads(before) == []


async def test_threads_live_only_inside_the_async_with(servers: str, kafka_backend: str
                                                      ) -> None:
    before = set(threading.enumerate())
    async with new_topic(servers, "threads", partitions=1) as topic:
        async with KafkaProducer(servers) as producer:
            await producer.send(topic, b"x")
            # kafka-python's sender thread; the confluent engine's delivery-report thread
            assert foreign_threads(before)
        assert foreign_threads(before) == []
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 **CONSUMER) as consumer:
            await consumer.getone()
            running = foreign_threads(before)
            assert any(name.startswith("trionet-kafka-consumer") for name in running)
            # librdkafka's threads are native, not in threading.enumerate() (docs: Engines)
            assert any(name.startswith("kafka-io") for name in running) == (
                kafka_backend == "kafka-python")
        assert foreign_threads(before) == []
        async with KafkaRequester(servers) as requester:
            assert requester.reply_topic.startswith("trionet-replies-")
        assert foreign_threads(before) == []


async def test_unknown_topics_and_partitions(servers: str) -> None:
    missing = unique("missing")
    async with KafkaConsumer(bootstrap_servers=servers, **CONSUMER) as consumer:
        with pytest.raises(UnknownTopicError) as info:
            await consumer.assign([(missing, 0)])
        assert info.value.topic == missing
        assert await consumer.partitions_for_topic(missing) == set()
        async with new_topic(servers, "partitions", partitions=2) as topic:
            with pytest.raises(UnknownTopicError) as info:
                await consumer.assign([(topic, 0), (topic, 5)])
            assert (info.value.topic, info.value.partition) == (topic, 5)
            await consumer.assign([(topic, 1)])
            assert await consumer.assignment() == {(topic, 1)}
    before = set(threading.enumerate())
    with pytest.raises(UnknownTopicError):
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(missing, 0)]):
            pytest.fail("assigned a partition of a topic that does not exist")
    assert foreign_threads(before) == []
    async with KafkaAdmin(servers) as admin:
        with pytest.raises(UnknownTopicError):
            await admin.describe_topic(missing)
        with pytest.raises(UnknownTopicError):
            await admin.delete_topics([missing])
        assert await admin.delete_topics([missing], missing_ok=True) == []
        assert missing not in await admin.list_topics()  # nothing above created it


async def test_commit_needs_a_group_and_closed_clients_refuse(servers: str) -> None:
    async with new_topic(servers, "nogroup", partitions=1) as topic:
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 **CONSUMER) as consumer:
            with pytest.raises(KafkaError, match="group"):
                await consumer.commit()
        with pytest.raises(trio.ClosedResourceError):
            await consumer.getone()
        with pytest.raises(trio.ClosedResourceError):
            await consumer.assignment()


async def test_broker_gone_mid_stream() -> None:
    # A private broker: this test kills it.
    broker = KafkaBroker()
    await trio.to_thread.run_sync(broker.start)
    try:
        servers = broker.info.bootstrap_servers
        topic = unique("gone")
        async with KafkaAdmin(servers) as admin:
            await admin.create_topics([NewTopic(topic)])
        await produce(servers, topic, [b"before"])
        async with KafkaProducer(servers, request_timeout_ms=1000, delivery_timeout_ms=2000,
                                 retry_backoff_ms=50, close_timeout=1) as producer, \
                KafkaConsumer(topic, bootstrap_servers=servers, group_id=unique("gone"),
                              broker_timeout=1.0, close_timeout=1, **CONSUMER) as consumer, \
                KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                              broker_timeout=1.0, close_timeout=1, **CONSUMER) as assigned:
            with trio.fail_after(20):
                assert (await consumer.getone()).value == b"before"
                assert (await assigned.getone()).value == b"before"
                await trio.to_thread.run_sync(broker.kill)
                # With nothing fetched left to decode, both poll on their threads, and give
                # up after broker_timeout (1 s).
                for reader in (consumer, assigned):
                    with pytest.raises(KafkaConnectionError) as info:
                        async for record in reader:
                            pytest.fail(f"read {record} from a dead broker")
                    assert servers in str(info.value)
                with pytest.raises(KafkaDeliveryError) as delivery:
                    await producer.send(topic, b"after")
                assert delivery.value.topic == topic
    finally:
        await trio.to_thread.run_sync(broker.close)
