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
    url = (f"mqtt://{info.username}:{info.password}@{info.host}:{info.auth_port}"
           "?version=3.1.1&allow_insecure_auth=true")
    topic = f"{unique()}/secure"
    async with from_url(url).create_socket(topic, name="auth") as socket:
        assert isinstance(socket, MqttSocket)
        assert socket.mqtt_client.is_connected
        await socket.publish(BusMessage(b"in", topic))
        assert (await socket.receive()).payload == b"in"

    app = DistributedApplication(
        f"mqtt://{info.username}:wrong@{info.host}:{info.auth_port}?allow_insecure_auth=true")

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


# -- client ids (issue 16, item 8) -------------------------------------------------------------


def reconnects(socket: object) -> int:
    assert isinstance(socket, MqttSocket)
    return socket.mqtt_client.statistics().reconnects


def assert_compliant(client_id: str, version: str) -> None:
    if version == "3.1.1":  # what every MQTT 3.1.1 broker must accept
        assert len(client_id) <= 23 and client_id.isascii() and client_id.isalnum(), client_id


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_sockets_sharing_a_fixed_client_id_do_not_take_each_other_over(
    shared_mosquitto: MosquittoServer, version: str
) -> None:
    info = shared_mosquitto.info
    url = f"mqtt://{info.host}:{info.port}?client_id={unique('fixedid')}&version={version}"
    provider = from_url(url)
    base = unique()
    count = 20
    async with provider.create_socket(f"{base}/a") as one, \
            provider.create_socket(f"{base}/b") as two, provider.create_socket() as three:
        got: dict[str, list[bytes]] = {"a": [], "b": []}

        async def read(socket: object, key: str) -> None:
            assert isinstance(socket, MqttSocket)
            while len(got[key]) < count:
                got[key].append((await socket.receive()).payload)

        with trio.fail_after(PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, one, "a")
                nursery.start_soon(read, two, "b")
                for i in range(count):  # spread over about a second: a takeover loop shows
                    await three.publish(BusMessage(str(i), f"{base}/a"))
                    await one.publish(BusMessage(str(i), f"{base}/b"))
                    await trio.sleep(0.05)
        assert got == {key: [str(i).encode() for i in range(count)] for key in got}
        assert [reconnects(s) for s in (one, two, three)] == [0, 0, 0]
        ids = {one.client_id, two.client_id, three.client_id}
        assert len(ids) == 3
        for client_id in ids:
            assert_compliant(client_id, version)
        first = one.client_id
    async with provider.create_socket() as again:  # stable: the first id is free again
        assert again.client_id == first


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_app_names_that_differ_only_in_unsafe_characters(
    shared_mosquitto: MosquittoServer, version: str
) -> None:
    info = shared_mosquitto.info
    url = f"mqtt://{info.host}:{info.port}?client_id={unique('fixedid')}&version={version}"
    base = unique()
    count = 20
    app = DistributedApplication(url)
    got: dict[str, list[bytes]] = {"a/b": [], "a_b": []}
    sockets: dict[str, object] = {}

    for name in got:
        def make(name: str) -> None:
            @app.application(f"{base}/{name.replace('/', '-')}", name=name)
            async def consumer(message: BusMessage, socket: MqttSocket) -> None:
                sockets[name] = socket
                got[name].append(message.payload)

        make(name)

    async with serving(app), from_url(f"mqtt://{info.host}:{info.port}").create_socket() as pub:
        for i in range(count):
            for name in got:
                await pub.publish(BusMessage(str(i), f"{base}/{name.replace('/', '-')}"))
            await trio.sleep(0.05)
        await wait_until(lambda: all(len(v) == count for v in got.values()))
        assert [reconnects(s) for s in sockets.values()] == [0, 0]
        ids = [s.client_id for s in sockets.values()]  # type: ignore[attr-defined]
    assert len(set(ids)) == 2
    for client_id in ids:
        assert_compliant(client_id, version)
    assert got == {name: [str(i).encode() for i in range(count)] for name in got}
