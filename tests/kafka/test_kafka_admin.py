"""The admin client, and the ``trionet demo`` part, against the real broker."""

from __future__ import annotations

import pytest
import trio
from kafka_support import CONSUMER, produce, unique

from trionet.demo._kafka import demo
from trionet.kafka import KafkaAdmin, KafkaConsumer, NewTopic, TopicPartition, UnknownTopicError


async def test_topics_are_created_idempotently_described_and_deleted(servers: str) -> None:
    one, two = unique("admin1"), unique("admin2")
    async with KafkaAdmin(servers) as admin:
        created = await admin.create_topics([NewTopic(one, num_partitions=3), two])
        assert sorted(created) == sorted([one, two])
        # Already there: not an error, nothing created, the existing topic untouched.
        assert await admin.create_topics([NewTopic(one, num_partitions=5)]) == []
        assert await admin.create_topic(one) is False
        assert {one, two} <= await admin.list_topics()
        described = {d.name: d for d in await admin.describe_topics([one, two])}
        assert described[one].num_partitions == 3
        assert [p.partition for p in described[one].partitions] == [0, 1, 2]
        assert all(p.leader >= 0 and p.replicas for p in described[one].partitions)
        assert described[two].num_partitions == 1
        assert sorted(await admin.delete_topics([one, two])) == sorted([one, two])
        with pytest.raises(UnknownTopicError):
            await admin.describe_topic(one)
    with pytest.raises(trio.ClosedResourceError):
        await admin.list_topics()


async def test_consumer_group_offsets(servers: str) -> None:
    topic, group = unique("offsets"), unique("offsets")
    async with KafkaAdmin(servers) as admin:
        await admin.create_topics([NewTopic(topic, num_partitions=2)])
        try:
            assert await admin.list_consumer_group_offsets(group) == {}
            await produce(servers, topic, [b"a", b"b", b"c"], partition=1)
            async with KafkaConsumer(bootstrap_servers=servers, group_id=group,
                                     partitions=[(topic, 1)], **CONSUMER) as consumer:
                with trio.fail_after(20):
                    await consumer.getone()
                    await consumer.getone()
                    await consumer.commit()
                    assert await consumer.committed((topic, 1)) == 2
                    assert await consumer.committed((topic, 0)) is None
            assert await admin.list_consumer_group_offsets(group) == {
                TopicPartition(topic, 1): 2}
            assert group in await admin.list_consumer_groups()
        finally:
            await admin.delete_topics([topic], missing_ok=True)


async def test_demo_part(servers: str) -> None:
    lines: list[str] = []
    with trio.fail_after(30):
        await demo(lines.append, f"kafka://{servers}")
    text = "\n".join(lines)
    assert "created topics" in text
    assert text.count("kafka: consumed") == 6
    assert "reply 42" in text
    assert lines[-1].startswith("kafka: deleted the demo topics")
