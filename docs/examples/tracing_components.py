"""One trace across an MQTT 5 message and an RPC call (OpenTelemetry SDK, in-memory exporter).

A sensor publishes a reading inside its own span; the reading's trace context travels in MQTT 5
user properties, so the consumer's ``process`` span (around its ``on_message`` handler) joins
the sensor's trace, and the RPC call the handler makes is a ``CLIENT`` span in it too. The RPC
server's span starts a trace of its own: aiomas' frames have no room for a context.

Run: ``python tracing_components.py [URL]``; without a broker URL it starts a private mosquitto.
Needs ``opentelemetry-sdk``.
"""

import sys

import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trionet import rpc, tracing
from trionet.mqtt import MQTTV5, MQTTMessage, open_mqtt_client


class Thresholds:
    router = rpc.Service()

    @rpc.expose
    def too_hot(self, celsius: float) -> bool:
        return celsius > 30


async def main(url: str) -> None:
    exported = InMemorySpanExporter()  # an OTLP exporter in production
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    with tracing.installed(provider):  # or trace.set_tracer_provider(provider)
        async with trio.open_nursery() as nursery:
            (address,) = await nursery.start(rpc.start_server, ("127.0.0.1", 0), Thresholds())
            async with rpc.open_connection(address[:2]) as thresholds, \
                    open_mqtt_client(url, protocol=MQTTV5) as client:
                done = trio.Event()

                @client.on_message("sensors/#")
                async def check(message: MQTTMessage) -> None:  # in a CONSUMER span
                    alarm = await thresholds.remote.too_hot(float(message.text))
                    print(f"{message.topic}: {message.text} °C, alarm: {alarm}")
                    done.set()

                await client.subscribe("sensors/#", qos=1)
                with tracing.tracer().start_as_current_span("read sensor"):
                    await client.publish("sensors/kitchen", "31.5", qos=1)  # a PRODUCER span
                await done.wait()
            nursery.cancel_scope.cancel()
    for span in sorted(exported.get_finished_spans(), key=lambda span: span.start_time or 0):
        same_trace = span.context is not None and span.context.trace_id == first_trace(exported)
        print(f"{span.kind.name:8} {span.name:24} {'sensor trace' if same_trace else 'own trace'}")


def first_trace(exported: InMemorySpanExporter) -> int:
    """The trace id of the sensor's own span."""
    (sensor,) = [span for span in exported.get_finished_spans() if span.name == "read sensor"]
    assert sensor.context is not None
    return sensor.context.trace_id


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:  # no broker given: use a private, throwaway mosquitto (needs the mosquitto program)
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(main, f"mqtt://{broker.info.host}:{broker.info.port}")
