"""trionet.tracing for the Kafka producer and consumer (both engines, real broker): PRODUCER
spans for sends, CONSUMER spans for the records handed out, the W3C context in record headers."""

from __future__ import annotations

import trio
from kafka_support import CONSUMER, new_topic, unique
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tracing_checks import ids, parent_ids, spans

from trionet import tracing
from trionet.kafka import KafkaConsumer, KafkaProducer

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"





async def test_send_and_receive_are_one_trace(span_exporter: InMemorySpanExporter,
                                              servers: str) -> None:
    group = unique("tracing")
    with trio.fail_after(30):
        async with new_topic(servers, "tracing", partitions=1) as topic:
            async with KafkaProducer(servers, acks=1) as producer:
                with tracing.tracer().start_as_current_span("caller") as caller:
                    await producer.send(topic, b"one", headers={"k": "v"})
                await producer.send(topic, b"two", headers=[("traceparent", INCOMING)])
                await producer.send(topic, b"three", headers=[("traceparent", b"\xff" * 60),
                                                              ("tracestate", "x" * 600)])
            async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=group,
                                     **CONSUMER) as consumer:
                records = [await consumer.getone() for _ in range(3)]
    producer_span = spans(span_exporter, trace.SpanKind.PRODUCER)[0]
    first, second, third = spans(span_exporter, trace.SpanKind.CONSUMER)
    assert producer_span.name == f"send {topic}"
    assert parent_ids(producer_span) == ids(caller)
    assert producer_span.attributes is not None
    assert producer_span.attributes["messaging.system"] == "kafka"
    assert producer_span.attributes["messaging.destination.name"] == topic
    assert producer_span.attributes["messaging.message.body.size"] == 3
    assert records[0].header("k") == b"v"
    traceparent = records[0].header("traceparent")
    assert traceparent is not None
    assert traceparent.startswith(
        f"00-{ids(producer_span)[0]:032x}-{ids(producer_span)[1]:016x}-".encode())
    assert first.name == f"receive {topic}"
    assert parent_ids(first) == ids(producer_span)
    assert first.attributes is not None
    assert first.attributes["messaging.consumer.group.name"] == group
    assert first.attributes["messaging.destination.partition.id"] == "0"
    assert first.attributes["messaging.kafka.offset"] == records[0].offset
    # The sender's own context is kept; a malformed one starts a new trace.
    assert records[1].header("traceparent") == INCOMING.encode()
    assert parent_ids(second) == (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331)
    assert third.parent is None


async def test_batches_are_one_span_each(span_exporter: InMemorySpanExporter,
                                         servers: str) -> None:
    with trio.fail_after(30):
        async with new_topic(servers, "tracing", partitions=1) as topic:
            async with KafkaProducer(servers, acks=1) as producer:
                assert await producer.send_many(topic, [b"a", b"b", b"c"]) == 3
            async with KafkaConsumer(topic, bootstrap_servers=servers,
                                     group_id=unique("tracing"), **CONSUMER) as consumer:
                got = []
                while len(got) < 3:
                    got.extend(await consumer.getmany())
    (producer_span,) = spans(span_exporter, trace.SpanKind.PRODUCER)
    assert producer_span.attributes is not None
    assert producer_span.attributes["messaging.batch.message_count"] == 3
    for record in got:
        assert record.header("traceparent") is not None
    accounted = 0  # getmany hands out what has arrived: one span per call
    for span in spans(span_exporter, trace.SpanKind.CONSUMER):
        assert span.attributes is not None
        if span.links:  # several records: linked to each one's context
            assert [link.context.span_id for link in span.links] == (
                [ids(producer_span)[1]] * len(span.links))
            assert span.attributes["messaging.batch.message_count"] == len(span.links)
            accounted += len(span.links)
        else:  # one record: its context is the parent
            assert parent_ids(span) == ids(producer_span)
            accounted += 1
    assert accounted == 3


async def test_no_headers_without_a_provider(servers: str) -> None:
    with trio.fail_after(30):
        async with new_topic(servers, "tracing", partitions=1) as topic:
            async with KafkaProducer(servers, acks=1) as producer:
                await producer.send(topic, b"x")
            async with KafkaConsumer(topic, bootstrap_servers=servers,
                                     group_id=unique("tracing"), **CONSUMER) as consumer:
                record = await consumer.getone()
    assert record.headers == [] or not list(record.headers)
