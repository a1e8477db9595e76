"""``client.messages``: aiomqtt's one iterator over the messages of ``subscribe()`` filters,
with the flow control of ``subscription()`` blocks; and the ``tls=`` vocabulary
(:class:`~trionet.tls.TLSOptions`)."""

from __future__ import annotations

import pytest
import trio
from mqtt_helpers import TEST_DEADLINE, connected, unique, wait_for

from trionet.errors import ConfigurationError
from trionet.mqtt import MQTTClient, MQTTMessage
from trionet.testing import MosquittoServer
from trionet.tls import TLSOptions, client_context


async def test_the_aiomqtt_loop_gets_retained_and_live_messages_in_order(
    shared_mosquitto: MosquittoServer,
) -> None:
    info = shared_mosquitto.info
    base = unique("msgs")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as publisher:
            await publisher.publish(f"{base}/retained", "old", qos=1, retain=True)
            async with connected(info) as client:
                # aiomqtt's shape: subscribe first, then iterate; the retained message that
                # arrives right after the SUBACK is not lost
                await client.subscribe(f"{base}/#", qos=1)
                await publisher.publish(f"{base}/live", "new", qos=1)
                got: list[MQTTMessage] = []
                async for message in client.messages:
                    got.append(message)
                    if len(got) == 2:
                        break
            await publisher.publish(f"{base}/retained", b"", qos=1, retain=True)
    assert [(m.topic, m.payload) for m in got] == [
        (f"{base}/retained", b"old"), (f"{base}/live", b"new")
    ]


async def test_a_slow_loop_stays_bounded_and_loses_no_qos1_message(
    shared_mosquitto: MosquittoServer,
) -> None:
    info = shared_mosquitto.info
    topic = unique("msgs-flood")
    count = 300
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info, max_buffered_messages=40, subscription_buffer_size=10) as client,
            connected(info) as publisher,
        ):
            messages = client.messages
            await client.subscribe(topic, qos=1)
            await publisher.publish_many([(topic, f"{i}".encode()) for i in range(count)],
                                         qos=1)
            await wait_for(lambda: messages.statistics().waiting > 0)
            assert messages.statistics().buffered == 10
            assert client.statistics().buffered_messages <= 2 * 40
            got = [int((await messages.receive()).payload) for _ in range(count)]
    assert got == list(range(count))


async def test_handlers_take_over_an_unread_iterator_and_both_can_be_used(
    shared_mosquitto: MosquittoServer,
) -> None:
    info = shared_mosquitto.info
    base = unique("msgs-both")
    seen: list[bytes] = []
    arrived = trio.Event()
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as client:
            await client.subscribe(f"{base}/a", qos=1)  # no handler yet: kept for messages

            @client.on_message
            async def handle(message: MQTTMessage) -> None:
                seen.append(message.payload)
                if len(seen) == 2:
                    arrived.set()

            await client.publish(f"{base}/a", "1", qos=1)
            messages = client.messages  # claimed now: it gets every message as well
            await client.publish(f"{base}/a", "2", qos=1)
            assert (await messages.receive()).payload == b"2"
            with trio.move_on_after(0.2):  # "1" arrived before it was claimed
                extra = await messages.receive()
                pytest.fail(f"unexpected {extra!r}")
            await arrived.wait()
    assert seen == [b"1", b"2"]


async def test_iteration_ends_when_the_client_closes(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as client:
            messages = client.messages
        assert [m async for m in messages] == []


async def test_tls_options_with_a_private_ca(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = unique("tls-options")
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(tls=TLSOptions(ca_file=info.ca_file)) as client:
            await client.connect(info.host, info.tls_port)
            await client.subscribe(topic, qos=1)
            await client.publish(topic, "over TLS", qos=1)
            assert (await client.messages.receive()).payload == b"over TLS"


def test_the_tls_vocabulary() -> None:
    assert client_context(None) is None and client_context(False) is None
    default = client_context(True)
    assert default is not None and default.check_hostname
    with pytest.raises(ConfigurationError, match="TLSOptions"):
        client_context("yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cert_file"):
        TLSOptions(key_file="key.pem").context()
    with pytest.raises(ConfigurationError, match="tls must be"):
        MQTTClient(tls="yes")  # type: ignore[arg-type]
