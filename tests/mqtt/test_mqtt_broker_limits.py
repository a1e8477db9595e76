"""What the broker refuses or limits: ACL-denied publishes (PUBACK/PUBREC reason codes) and the
limits a broker announces in its MQTT 5 CONNACK (Maximum Packet Size and friends)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
import trustme
from mqtt_helpers import BACKENDS, TEST_DEADLINE, Backend, unique
from mqtt_scripted_broker import PUBLISH, PUBREC, PUBREL, Packet, Session, serve_script

from trionet.mqtt import MQTTV5, MQTTClient, MQTTPublishError, QoS, open_mqtt_client
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
