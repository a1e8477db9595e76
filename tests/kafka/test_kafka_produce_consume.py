"""Producing and consuming against the real broker: keys, headers, partitions, serializers."""

from __future__ import annotations

import pytest
import trio
from kafka_support import CONSUMER, new_topic, unique

from trionet.errors import CodecError, ConfigurationError, KafkaError
from trionet.kafka import (
    KafkaConsumer,
    KafkaProducer,
    RecordDecodeError,
    TopicPartition,
    UnknownTopicError,
)


async def test_keys_and_headers_across_three_partitions(servers: str) -> None:
    async with new_topic(servers, "keys") as topic:
        sent: dict[bytes, list[tuple[bytes, int, int]]] = {}
        async with KafkaProducer(servers, acks=1) as producer:
            for n in range(30):
                key = b"key-%d" % (n % 10)
                value = b"value-%d" % n
                metadata = await producer.send(
                    topic, value, key=key, headers=[("n", str(n)), ("kind", b"test")])
                assert metadata.topic == topic
                sent.setdefault(key, []).append((value, metadata.partition, metadata.offset))
            assert producer.statistics().acknowledged == 30

        received = []
        async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=unique("keys"),
                                 **CONSUMER) as consumer:
            with trio.fail_after(20):
                async for record in consumer:
                    received.append(record)
                    if len(received) == 30:
                        break
            assert await consumer.assignment() == {TopicPartition(topic, p) for p in range(3)}

    assert {record.partition for record in received} == {0, 1, 2}
    for key, expected in sent.items():
        got = [r for r in received if r.key == key]
        # one key, one partition, and the partition's order is the send order
        assert [(r.value, r.partition, r.offset) for r in got] == expected
        assert len({r.partition for r in got}) == 1
    for record in received:
        n = int(record.value.split(b"-")[1])
        assert record.headers == [("n", str(n).encode()), ("kind", b"test")]
        assert record.header("kind") == b"test"
        assert record.timestamp > 0


async def test_send_nowait_batches_and_json_serializers(servers: str) -> None:
    async with new_topic(servers, "json", partitions=1) as topic:
        async with KafkaProducer(servers, value_serializer="json", key_serializer="json",
                                 linger_ms=5) as producer:
            deliveries = [producer.send_nowait(topic, {"n": n}, key=["k", n]) for n in range(200)]
            assert not all(d.done() for d in deliveries)
            await producer.flush()
            offsets = [d.result().offset for d in deliveries]
            assert offsets == sorted(offsets)
            assert len(set(offsets)) == 200
            assert (await deliveries[-1].wait()).offset == offsets[-1]

        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 value_deserializer="json", key_deserializer="json",
                                 **CONSUMER) as consumer:
            values: list[object] = []
            with trio.fail_after(20):
                while len(values) < 200:
                    batch = await consumer.getmany(max_records=64)
                    assert 1 <= len(batch) <= 64
                    values.extend(r.value for r in batch)
                    assert all(r.key == ["k", r.value["n"]] for r in batch)
            assert values == [{"n": n} for n in range(200)]


async def test_first_send_to_a_new_topic_waits_for_metadata_in_order(servers: str) -> None:
    async with new_topic(servers, "meta", partitions=1) as topic, \
            KafkaProducer(servers) as producer:
        # The producer has never seen the topic: these wait for its metadata, in order.
        deliveries = [producer.send_nowait(topic, b"%d" % n) for n in range(5)]
        assert producer.statistics().pending == 5
        await producer.flush()
        assert [d.result().offset for d in deliveries] == list(range(5))
        assert await producer.partitions_for(topic) == {0}


async def test_max_pending_backpressure(servers: str) -> None:
    # linger_ms holds records in kafka-python's batch for a while, so the first two cannot be
    # acknowledged before the third send_nowait (without it, the test would race the broker).
    async with new_topic(servers, "pending", partitions=1) as topic, \
            KafkaProducer(servers, max_pending=2, linger_ms=1000) as producer:
        await producer.send(topic, b"warm-up")  # metadata known from here on
        first = producer.send_nowait(topic, b"1")
        producer.send_nowait(topic, b"2")
        with pytest.raises(trio.WouldBlock):
            producer.send_nowait(topic, b"3")
        # send() waits for room instead
        metadata = await producer.send(topic, b"3")
        assert first.done()
        assert metadata.offset == 3


async def test_producer_input_errors(servers: str) -> None:
    async with new_topic(servers, "badinput", partitions=3) as topic:
        async with KafkaProducer(servers) as producer:
            await producer.send(topic, b"known")
            with pytest.raises(UnknownTopicError) as info:
                producer.send_nowait(topic, b"x", partition=7)
            assert (info.value.topic, info.value.partition) == (topic, 7)
            with pytest.raises(CodecError):
                producer.send_nowait(topic, "text without a serializer")
            with pytest.raises(ConfigurationError):
                producer.send_nowait(topic)  # neither key nor value
            with pytest.raises(ConfigurationError):
                producer.send_nowait(topic, b"x", headers=[("h", 1)])  # type: ignore[list-item]
            assert producer.statistics().pending == 0
        with pytest.raises(trio.ClosedResourceError):
            producer.send_nowait(topic, b"after exit")


async def test_undecodable_record_is_reported_and_skipped(servers: str) -> None:
    async with new_topic(servers, "decode", partitions=1) as topic:
        async with KafkaProducer(servers) as producer:
            for value in (b'{"ok": 1}', b"not json", b'{"ok": 2}'):
                producer.send_nowait(topic, value)
            await producer.flush()
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 value_deserializer="json", **CONSUMER) as consumer:
            with trio.fail_after(20):
                assert (await consumer.getone()).value == {"ok": 1}
                with pytest.raises(RecordDecodeError) as info:
                    await consumer.getone()
                assert info.value.record.value == b"not json"
                assert (await consumer.getone()).value == {"ok": 2}
            assert consumer.delivered_offsets() == {TopicPartition(topic, 0): 3}


async def test_transactions_commit_or_abort_with_consumer_offsets(servers: str) -> None:
    async with new_topic(servers, "txin", partitions=1) as source, \
            new_topic(servers, "txout", partitions=1) as sink:
        async with KafkaProducer(servers) as plain:
            for value in (b"a", b"b", b"c"):
                plain.send_nowait(source, value)
            await plain.flush()
        group = unique("tx")
        async with KafkaProducer(servers, transactional_id=unique("txid")) as producer, \
                KafkaConsumer(source, bootstrap_servers=servers, group_id=group,
                              commit_on_exit=False, **CONSUMER) as consumer:
            with trio.fail_after(20):
                async with producer.transaction():
                    record = await consumer.getone()
                    producer.send_nowait(sink, record.value.upper())
                    await producer.send_offsets_to_transaction(consumer)
                with pytest.raises(RuntimeError, match="give up"):
                    async with producer.transaction():
                        record = await consumer.getone()
                        producer.send_nowait(sink, b"never seen")
                        raise RuntimeError("give up")
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(sink, 0)],
                                 isolation_level="read_committed", **CONSUMER) as reader:
            with trio.fail_after(20):
                assert (await reader.getone()).value == b"A"
                with trio.move_on_after(0.5):
                    extra = await reader.getmany()
                    pytest.fail(f"read aborted records {extra}")
        async with KafkaConsumer(source, bootstrap_servers=servers, group_id=group,
                                 **CONSUMER) as again:
            with trio.fail_after(20):
                assert (await again.getone()).value == b"b"


async def test_transaction_needs_a_transactional_id(servers: str) -> None:
    async with KafkaProducer(servers) as producer:
        with pytest.raises(KafkaError, match="transactional_id"):
            async with producer.transaction():
                pass
