"""What the MQTT client reports to trionet.metrics, against a real mosquitto."""

from __future__ import annotations

import trio
from mqtt_helpers import TEST_DEADLINE, unique, wait_state

from trionet import metrics
from trionet.mqtt import ConnectionState, MQTTClient, ReconnectPolicy
from trionet.testing import MosquittoServer


async def test_messages_in_out_and_reconnects(mosquitto: MosquittoServer) -> None:
    info = mosquitto.info
    topic = unique("metrics")
    registry = metrics.MetricsRegistry()
    policy = ReconnectPolicy(initial_delay=0.05, max_delay=0.2, jitter=0)
    with metrics.installed(registry), trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(reconnect=policy) as client:
            await client.connect(info.host, info.port)
            async with client.subscription(topic, qos=1) as inbox:
                await client.publish(topic, "one", qos=1)
                await client.publish_many([(topic, b"two"), (topic, b"three")], qos=1)
                assert [(await inbox.receive()).payload for _ in range(3)] == [
                    b"one", b"two", b"three"]
            await trio.to_thread.run_sync(mosquitto.kill)
            await wait_state(client, ConnectionState.RECONNECTING)
            await trio.to_thread.run_sync(mosquitto.start)
            await wait_state(client, ConnectionState.CONNECTED)
    assert registry.value("trionet_messages_total", component="mqtt", direction="out") == 3
    assert registry.value("trionet_messages_total", component="mqtt", direction="in") == 3
    assert registry.value("trionet_reconnects_total", component="mqtt") == 1
