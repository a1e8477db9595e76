"""mqtt:// specifics against a real mosquitto: credentials, overlapping filters, sessions."""

from __future__ import annotations

import pytest
import trio
from bus_support import PATIENCE, serving, unique, wait_until

from trionet.bus import BusMessage, DistributedApplication, MqttConfig, from_url
from trionet.bus._mqtt import MqttSocket
from trionet.errors import MQTTConnectError
from trionet.testing import MosquittoServer


async def test_credentials_from_the_url(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    url = f"mqtt://{info.username}:{info.password}@{info.host}:{info.auth_port}?version=3.1.1"
    topic = f"{unique()}/secure"
    async with from_url(url).create_socket(topic, name="auth") as socket:
        assert isinstance(socket, MqttSocket)
        assert socket.mqtt_client.is_connected
        await socket.publish(BusMessage(b"in", topic))
        assert (await socket.receive()).payload == b"in"

    app = DistributedApplication(f"mqtt://{info.username}:wrong@{info.host}:{info.auth_port}")

    @app.application(topic)
    async def consumer(message: BusMessage) -> None:
        pass  # pragma: no cover

    with pytest.raises(MQTTConnectError), trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)


async def test_overlapping_filters_deliver_once(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    base = unique()
    async with from_url(f"mqtt://{info.host}:{info.port}").create_socket(
        [f"{base}/#", f"{base}/+/x", f"{base}/a/x"], name="overlap"
    ) as socket:
        await socket.publish(BusMessage(b"1", f"{base}/a/x"))
        await socket.publish(BusMessage(b"2", f"{base}/b"))
        assert (await socket.receive()).payload == b"1"
        assert (await socket.receive()).payload == b"2"
        await socket.unsubscribe(f"{base}/#")
        await socket.publish(BusMessage(b"3", f"{base}/b"))  # nobody subscribed any more
        await socket.publish(BusMessage(b"4", f"{base}/c/x"))
        assert (await socket.receive()).payload == b"4"
        assert socket.statistics.received == 3


async def test_persistent_session_keeps_messages_while_down(
    shared_mosquitto: MosquittoServer,
) -> None:
    info = shared_mosquitto.info
    client_id = unique("persistent")
    url = f"mqtt://{info.host}:{info.port}?client_id={client_id}&clean_start=false&qos=1"
    topic = f"{unique()}/queued"
    received: list[bytes] = []

    def make_app() -> DistributedApplication:
        app = DistributedApplication(url)

        @app.application(topic, name="worker")
        async def worker(message: BusMessage) -> None:
            received.append(message.payload)

        return app

    async with serving(make_app()):  # first run: the broker learns the subscription
        pass
    async with from_url(f"mqtt://{info.host}:{info.port}").create_socket() as publisher:
        for i in range(3):
            await publisher.publish(BusMessage(str(i), topic))
    async with serving(make_app()):
        await wait_until(lambda: len(received) == 3)
    assert received == [b"0", b"1", b"2"]
    assert isinstance(from_url(url).config, MqttConfig)
