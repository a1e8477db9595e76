"""trionet.tracing for the MQTT client, against a real mosquitto: PRODUCER spans for publishes,
CONSUMER spans for deliveries, the W3C context in MQTT 5 user properties (none on 3.1.1)."""

from __future__ import annotations

import trio
from mqtt_helpers import TEST_DEADLINE, connected, unique
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tracing_checks import ids, parent_ids, spans

from trionet import tracing
from trionet.mqtt import MQTTV5, MQTTV311, MessageProperties, MQTTMessage
from trionet.testing import MosquittoServer

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"





async def test_mqtt5_publish_and_receive_are_one_trace(
    span_exporter: InMemorySpanExporter, shared_mosquitto: MosquittoServer,
) -> None:
    topic = unique("tracing")
    tracer = tracing.tracer()
    with trio.fail_after(TEST_DEADLINE):
        async with connected(shared_mosquitto.info, protocol=MQTTV5) as client, \
                client.subscription(topic, qos=1) as inbox:
            with tracer.start_as_current_span("caller") as caller:
                await client.publish(topic, b"one", qos=1)
            own = MessageProperties(user_properties=[("traceparent", INCOMING), ("k", "v")])
            await client.publish(topic, b"two", properties=own)
            first, second = await inbox.receive(), await inbox.receive()
    (producer, _) = spans(span_exporter, trace.SpanKind.PRODUCER)
    first_receive, second_receive = spans(span_exporter, trace.SpanKind.CONSUMER)
    assert producer.name == f"publish {topic}"
    assert parent_ids(producer) == ids(caller)
    assert producer.attributes == {
        "messaging.system": "mqtt", "messaging.operation.name": "publish",
        "messaging.operation.type": "send", "messaging.destination.name": topic,
        "messaging.client.id": client.client_id, "messaging.message.body.size": 3,
    }
    assert first.properties is not None
    traceparent = first.properties.user_property("traceparent")
    assert traceparent is not None and tracing.parse_traceparent(traceparent) is not None
    assert traceparent.startswith(f"00-{ids(producer)[0]:032x}-{ids(producer)[1]:016x}-")
    assert first_receive.name == f"receive {topic}"
    assert parent_ids(first_receive) == ids(producer)
    assert first_receive.attributes is not None
    assert first_receive.attributes["messaging.operation.type"] == "receive"
    # A context the publisher set itself is kept, and is the receiver's parent.
    assert second.properties is not None
    assert second.properties.user_properties == (("traceparent", INCOMING), ("k", "v"))
    assert parent_ids(second_receive) == (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331)


async def test_handlers_run_in_a_process_span(
    span_exporter: InMemorySpanExporter, shared_mosquitto: MosquittoServer,
) -> None:
    topic = unique("tracing")
    inside: list[trace.Span] = []
    done = trio.Event()
    with trio.fail_after(TEST_DEADLINE):
        async with connected(shared_mosquitto.info, protocol=MQTTV5) as client:

            @client.on_message(topic)
            async def handle(message: MQTTMessage) -> None:
                inside.append(trace.get_current_span())
                done.set()
                raise ValueError("handler failed")

            await client.subscribe(topic, qos=1)
            await client.publish(topic, b"x", qos=1)
            await done.wait()
    (producer,) = spans(span_exporter, trace.SpanKind.PRODUCER)
    (process,) = spans(span_exporter, trace.SpanKind.CONSUMER)
    assert process.name == f"process {topic}"
    assert ids(inside[0]) == ids(process)
    assert parent_ids(process) == ids(producer)
    assert process.status.status_code is trace.StatusCode.ERROR
    assert process.attributes is not None and process.attributes["error.type"] == "ValueError"


async def test_publish_many_is_one_producer_span(
    span_exporter: InMemorySpanExporter, shared_mosquitto: MosquittoServer,
) -> None:
    topic = unique("tracing")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(shared_mosquitto.info, protocol=MQTTV5) as client, \
                client.subscription(topic, qos=1) as inbox:
            sent = await client.publish_many(
                [(topic, b"a"), MQTTMessage(topic, b"b", qos=1)], qos=1)
            received = [await inbox.receive() for _ in range(sent)]
    (producer,) = spans(span_exporter, trace.SpanKind.PRODUCER)
    assert producer.name == "publish"
    assert producer.attributes is not None
    assert producer.attributes["messaging.batch.message_count"] == 2
    for message, receive in zip(received, spans(span_exporter, trace.SpanKind.CONSUMER),
                                strict=True):
        assert message.properties is not None and message.properties.user_properties
        assert parent_ids(receive) == ids(producer)


async def test_mqtt311_has_spans_but_no_propagation(
    span_exporter: InMemorySpanExporter, shared_mosquitto: MosquittoServer,
) -> None:
    topic = unique("tracing")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(shared_mosquitto.info, protocol=MQTTV311) as client, \
                client.subscription(topic) as inbox:
            with tracing.tracer().start_as_current_span("caller"):
                await client.publish(topic, b"x")
                message = await inbox.receive()
    (producer,) = spans(span_exporter, trace.SpanKind.PRODUCER)
    (receive,) = spans(span_exporter, trace.SpanKind.CONSUMER)
    assert message.properties is None
    assert receive.parent is None  # no context on the wire: a new trace
    assert ids(receive)[0] != ids(producer)[0]


async def test_malformed_trace_context_is_ignored(
    span_exporter: InMemorySpanExporter, shared_mosquitto: MosquittoServer,
) -> None:
    topic = unique("tracing")
    bad = [INCOMING.upper(), "00-" + "0" * 32 + "-b7ad6b7169203331-01", INCOMING + "x" * 5000,
           "garbage"]
    with trio.fail_after(TEST_DEADLINE):
        async with connected(shared_mosquitto.info, protocol=MQTTV5) as client, \
                client.subscription(topic) as inbox:
            for value in bad:
                props = MessageProperties(user_properties=[("traceparent", value),
                                                           ("tracestate", "v=" + "x" * 600)])
                await client.publish(topic, b"x", properties=props)
                await inbox.receive()
    receives = spans(span_exporter, trace.SpanKind.CONSUMER)
    assert len(receives) == len(bad)
    for receive in receives:
        assert receive.parent is None
        assert receive.context is not None and not receive.context.trace_state


async def test_nothing_is_traced_without_a_provider(shared_mosquitto: MosquittoServer) -> None:
    topic = unique("tracing")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(shared_mosquitto.info, protocol=MQTTV5) as client, \
                client.subscription(topic) as inbox:
            await client.publish(topic, b"x")
            message = await inbox.receive()
    assert message.properties is None or not message.properties.user_properties
