"""The Kafka part of ``trionet demo --broker kafka://host:port``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial

import trio

from ..kafka import (
    KafkaAdmin,
    KafkaConsumer,
    KafkaProducer,
    KafkaRecord,
    KafkaRequester,
    NewTopic,
    _kafka_python as kp,
    parse_kafka_url,
    serve_requests,
)

__all__ = ["demo"]


async def demo(report: Callable[[str], None], url: str) -> None:
    """Create a topic, produce and consume a few records, make a request, clean up.

    Args:
        report: called with one line of text per event.
        url: the broker, ``kafka://host:port`` (query options are kafka-python options).
    """
    parsed = parse_kafka_url(url)
    servers = parsed.bootstrap_servers
    options = parsed.options  # security settings, typically; each client takes what it knows
    admin_options = {k: v for k, v in options.items() if k in kp.ADMIN_OPTIONS}
    producer_options = {k: v for k, v in options.items() if k in kp.PRODUCER_OPTIONS}
    consumer_options = {
        "auto_offset_reset": "earliest", "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        **{k: v for k, v in options.items() if k in kp.CONSUMER_OPTIONS},
    }
    run = uuid.uuid4().hex[:8]
    topic = f"trionet-demo-{run}"
    requests = f"trionet-demo-rpc-{run}"
    group = parsed.group_id or f"trionet-demo-{run}"

    async with KafkaAdmin(servers, **admin_options) as admin:
        await admin.create_topics([NewTopic(topic, num_partitions=3), NewTopic(requests)])
        report(f"kafka: created topics {topic} (3 partitions) and {requests} on {servers}")
        try:
            async with KafkaProducer(servers, value_serializer="json",
                                     **producer_options) as producer:
                for n in range(6):
                    metadata = await producer.send(topic, {"n": n}, key=b"key-%d" % (n % 3),
                                                   headers={"demo": "yes"})
                    report(f"kafka: produced {{'n': {n}}} -> partition {metadata.partition}, "
                           f"offset {metadata.offset}")

            async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=group,
                                     value_deserializer="json",
                                     **consumer_options) as consumer:
                for _ in range(6):
                    record = await consumer.getone()
                    report(f"kafka: consumed {record.value} from partition {record.partition} "
                           f"(key {record.key!r})")
                    await consumer.commit()
            report(f"kafka: group {group} committed "
                   f"{sum((await admin.list_consumer_group_offsets(group)).values())} records")

            async def double(record: KafkaRecord) -> int:
                return 2 * int(record.value)

            async with KafkaConsumer(requests, bootstrap_servers=servers,
                                     group_id=f"{group}-rpc",
                                     **consumer_options) as rpc_consumer, \
                    KafkaProducer(servers, value_serializer="json",
                                  **producer_options) as rpc_producer, \
                    KafkaRequester(servers, value_deserializer="json", **options) as requester, \
                    trio.open_nursery() as nursery:
                await nursery.start(partial(serve_requests, rpc_consumer, rpc_producer, double))
                with trio.fail_after(10):
                    answer = await requester.request(requests, b"21")
                report(f"kafka: request 21 to {requests}, reply {answer.value} "
                       f"(via {requester.reply_topic})")
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await admin.delete_topics([topic, requests], missing_ok=True)
            report("kafka: deleted the demo topics; every client closed")
