"""What the Kafka producer and consumer report to trionet.metrics (both engines, real broker)."""

from __future__ import annotations

import trio
from kafka_support import CONSUMER, new_topic, unique

from trionet import metrics
from trionet.kafka import KafkaConsumer, KafkaProducer


async def test_records_out_and_in(servers: str) -> None:
    registry = metrics.MetricsRegistry()
    with metrics.installed(registry), trio.fail_after(30):
        async with new_topic(servers, "metrics", partitions=1) as topic:
            async with KafkaProducer(servers, acks=1) as producer:
                for n in range(5):
                    producer.send_nowait(topic, b"%d" % n)
                await producer.flush()
                assert await producer.send_many(topic, [b"5", b"6", b"7"]) == 3
            async with KafkaConsumer(topic, bootstrap_servers=servers,
                                     group_id=unique("metrics"), **CONSUMER) as consumer:
                got = []
                while len(got) < 8:
                    got.extend(await consumer.getmany())
    assert registry.value("trionet_messages_total", component="kafka", direction="out") == 8
    assert registry.value("trionet_messages_total", component="kafka", direction="in") == 8
