"""What the broker refuses or limits: ACL-denied publishes (PUBACK/PUBREC reason codes) and the
limits a broker announces in its MQTT 5 CONNACK (Maximum Packet Size and friends)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
import trustme
from mqtt_helpers import BACKENDS, TEST_DEADLINE, Backend, unique, wait_for, wait_state
from mqtt_scripted_broker import PUBLISH, PUBREC, PUBREL, Packet, Session, serve_script

from trionet.mqtt import (
    MQTTV5,
    ConnectionState,
    MQTTClient,
    MQTTPublishError,
    QoS,
    ReconnectPolicy,
    open_mqtt_client,
)
from trionet.testing import MosquittoServer

# everything is allowed on the plain listener except the denied/ tree
ACL = "topic readwrite #\ntopic deny denied/#\n"
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def acl_mosquitto(tls_ca: trustme.CA) -> Iterator[MosquittoServer]:
    with MosquittoServer(ca=tls_ca, acl=ACL) as server:
        yield server


@BACKENDS
@pytest.mark.parametrize("qos", [1, 2])
async def test_an_acl_denied_publish_raises_with_the_brokers_reason_code(
    acl_mosquitto: MosquittoServer, qos: int, backend: Backend
) -> None:
    # mosquitto answers an ACL-denied QoS 1 publish with PUBACK 0x87 and a QoS 2 one with
    # PUBREC 0x87: either way the message was not accepted, and publish() must say so
    info = acl_mosquitto.info
    allowed = unique("allowed")
    with trio.fail_after(TEST_DEADLINE):
        async with (
            open_mqtt_client(info.host, info.port, protocol=MQTTV5, backend=backend) as client,
            client.subscription(allowed, qos=2) as messages,
        ):
            for _ in range(3):  # the refusal frees its packet id and in-flight slot
                with pytest.raises(MQTTPublishError) as refused:
                    await client.publish(unique("denied"), b"secret", qos=qos)
                assert refused.value.reason_code == NOT_AUTHORIZED
                assert refused.value.topic.startswith("denied/")
                assert "not authorized" in str(refused.value)
            # the connection is fine and allowed topics still work
            await client.publish(allowed, b"fine", qos=qos)
            assert (await messages.receive()).payload == b"fine"
            assert client.statistics().publishes_pending == 0
            assert client.statistics().reconnects == 0


@BACKENDS
async def test_a_refusing_pubrec_ends_the_exchange_without_pubrel(backend: Backend) -> None:
    # MQTT 5 §4.3.3: after a PUBREC with reason code 0x80 or above the sender must not send
    # PUBREL. The scripted broker records every packet the client sends after the refusal.
    after_refusal: list[int] = []
    done = trio.Event()

    async def script(session: Session, connect: Packet) -> None:
        await session.connack()
        refused = False
        while True:
            received = await session.read()
            if received is None:
                break
            if refused:
                after_refusal.append(received.kind)
            if received.kind == PUBLISH:
                qos = (received.flags >> 1) & 3
                if not refused:
                    refused = True
                    await session.ack(PUBREC, received.packet_id, NOT_AUTHORIZED)
                elif qos == 2:
                    await session.ack(PUBREC, received.packet_id, 0)
            elif received.kind == PUBREL:
                await session.ack(7, received.packet_id, 0)  # PUBCOMP
                done.set()

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, script)
            async with MQTTClient(protocol=MQTTV5, backend=backend) as client:
                await client.connect("127.0.0.1", port)
                with pytest.raises(MQTTPublishError) as refused:
                    await client.publish("t/refused", b"x", qos=QoS.EXACTLY_ONCE)
                assert refused.value.reason_code == NOT_AUTHORIZED
                # a second publish goes through the whole handshake: its PUBREL is the first
                # PUBREL the broker sees
                await client.publish("t/accepted", b"y", qos=QoS.EXACTLY_ONCE)
                await done.wait()
            nursery.cancel_scope.cancel()
    assert after_refusal[:2] == [PUBLISH, PUBREL]
    assert after_refusal.count(PUBREL) == 1


# -- limits announced in CONNACK ----------------------------------------------------------------

LIMIT = 1024
PACKET_TOO_LARGE = 0x95


@pytest.fixture(scope="module")
def small_packets_mosquitto(tls_ca: trustme.CA) -> Iterator[MosquittoServer]:
    with MosquittoServer(ca=tls_ca, max_packet_size=LIMIT) as server:
        yield server


def largest_payload(topic: str, qos: int, v5: bool) -> int:
    """The payload size that makes a PUBLISH exactly LIMIT bytes (2-byte remaining length)."""
    return LIMIT - 1 - 2 - (2 + len(topic)) - (2 if qos else 0) - (1 if v5 else 0)


@BACKENDS
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("protocol", [4, 5])
async def test_an_oversize_publish_raises_at_once_and_is_never_sent(
    small_packets_mosquitto: MosquittoServer, qos: int, protocol: int, backend: Backend
) -> None:
    # MQTT 5: mosquitto announces max_packet_size in CONNACK. MQTT 3.1.1 has no way to announce
    # it, so the client is told (max_packet_size=). Before, the client sent the packet, mosquitto
    # closed the connection, and the client reconnected and resent it for ever.
    info = small_packets_mosquitto.info
    topic = unique("big")
    v5 = protocol == MQTTV5
    options = {} if v5 else {"max_packet_size": LIMIT}
    fits = b"f" * largest_payload(topic, qos, v5)
    with trio.fail_after(TEST_DEADLINE):
        async with (
            open_mqtt_client(info.host, info.port, protocol=protocol, backend=backend,
                             **options) as client,
            client.subscription(topic, qos=2) as messages,
        ):
            with pytest.raises(MQTTPublishError) as refused:
                await client.publish(topic, fits + b"x", qos=qos)
            assert (refused.value.reason_code, refused.value.sent) == (PACKET_TOO_LARGE, False)
            assert f"{LIMIT + 1} bytes" in str(refused.value)
            with pytest.raises(MQTTPublishError):
                await client.publish_many([(topic, b"ok"), (topic, b"x" * 5000)], qos=qos)
            # a packet of exactly the limit goes through: the size is computed as MQTT does
            await client.publish(topic, fits, qos=qos)
            got = await messages.receive()
            assert got.payload == fits
            await client.publish(topic, b"last", qos=qos)
            assert (await messages.receive()).payload == b"last"
            stats = client.statistics()
            assert (stats.reconnects, stats.publishes_pending) == (0, 0)
            assert client.broker_limits.max_packet_size == LIMIT


@BACKENDS
async def test_a_queued_publish_that_the_new_brokers_limit_forbids_fails_once(
    mosquitto: MosquittoServer, backend: Backend
) -> None:
    # A QoS 1 publish is queued while the broker is away; it comes back with a smaller
    # Maximum Packet Size. The publish fails (it is never sent) instead of making the broker
    # close every new connection.
    info = mosquitto.info
    topic = unique("shrunk")
    policy = ReconnectPolicy(initial_delay=0.05, max_delay=0.2)
    with trio.fail_after(TEST_DEADLINE):
        async with (
            open_mqtt_client(info.host, info.port, protocol=MQTTV5, backend=backend,
                             reconnect=policy) as client,
            client.subscription(topic, qos=1) as messages,
        ):
            assert client.broker_limits.max_packet_size > 1 << 20
            await trio.to_thread.run_sync(mosquitto.stop)
            await wait_state(client, ConnectionState.RECONNECTING)
            conf = mosquitto.directory / "mosquitto.conf"
            conf.write_text(conf.read_text() + f"max_packet_size {LIMIT}\n")
            failures: list[MQTTPublishError] = []

            async def publish_big() -> None:
                with pytest.raises(MQTTPublishError) as refused:
                    await client.publish(topic, b"x" * 5000, qos=1)
                failures.append(refused.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_big)
                await wait_for(lambda: client.statistics().publishes_pending == 1)
                await trio.to_thread.run_sync(mosquitto.start)
            assert [(f.reason_code, f.sent) for f in failures] == [(PACKET_TOO_LARGE, False)]
            assert client.broker_limits.max_packet_size == LIMIT
            with pytest.raises(MQTTPublishError):  # known now: refused at once
                await client.publish(topic, b"x" * 5000, qos=1)
            await client.publish(topic, b"small", qos=1)
            assert (await messages.receive()).payload == b"small"
            assert client.statistics().reconnects == 1


async def test_retain_available_and_maximum_qos_are_obeyed(tls_ca: trustme.CA) -> None:
    with MosquittoServer(
        ca=tls_ca, extra_config="retain_available false\n", listener_config="max_qos 1\n"
    ) as broker:
        info = broker.info
        topic = unique("limited")
        with trio.fail_after(TEST_DEADLINE):
            async with (
                open_mqtt_client(info.host, info.port, protocol=MQTTV5) as client,
                client.subscription(topic, qos=1) as messages,
            ):
                limits = client.broker_limits
                assert (limits.retain_available, limits.maximum_qos) == (False, 1)
                with pytest.raises(MQTTPublishError) as refused:
                    await client.publish(topic, b"kept", qos=1, retain=True)
                assert (refused.value.reason_code, refused.value.sent) == (0x9A, False)
                with pytest.raises(MQTTPublishError) as refused:
                    await client.publish(topic, b"exactly once", qos=2)
                assert (refused.value.reason_code, refused.value.sent) == (0x9B, False)
                await client.publish(topic, b"fine", qos=1)
                assert (await messages.receive()).payload == b"fine"
                assert client.statistics().reconnects == 0
