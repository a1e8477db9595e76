"""Subscriptions: wildcard routing, shared subscriptions, bounded buffers under a flood,
several blocks on one filter, unsubscribing."""

from __future__ import annotations

from collections import Counter

import pytest
import trio
from mqtt_helpers import BACKENDS, TEST_DEADLINE, Backend, connected, unique, wait_for

from trionet.mqtt import MQTTV5, MQTTClient, MQTTMessage, QoS, topic_matches
from trionet.testing import MosquittoServer


async def _take_all(messages: trio.abc.ReceiveChannel[MQTTMessage], wait: float = 0.3
                    ) -> list[MQTTMessage]:
    got: list[MQTTMessage] = []
    with trio.move_on_after(wait):
        while True:
            got.append(await messages.receive())
    return got


@BACKENDS
@pytest.mark.parametrize("protocol", [4, 5])
async def test_wildcard_routing(
    shared_mosquitto: MosquittoServer, protocol: int, backend: Backend
) -> None:
    info = shared_mosquitto.info
    base = unique("wild")
    filters = [f"{base}/+/temp", f"{base}/kitchen/#", f"{base}/+/+", f"{base}/#"]
    topics = [f"{base}/kitchen/temp", f"{base}/hall/temp", f"{base}/kitchen/light/on",
              f"{base}/kitchen", base, f"{base}/a/b/c"]
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info, protocol=protocol, backend=backend) as client,
            client.subscription(filters[0], qos=1) as s0,
            client.subscription(filters[1], qos=1) as s1,
            client.subscription(filters[2], qos=1) as s2,
            client.subscription(filters[3], qos=1) as s3,
        ):
            for topic in topics:
                await client.publish(topic, topic, qos=1)
            received = [await _take_all(s) for s in (s0, s1, s2, s3)]
    for topic_filter, got in zip(filters, received, strict=True):
        wanted = [t for t in topics if topic_matches(topic_filter, t)]
        counts = Counter(m.topic for m in got)
        assert set(counts) == set(wanted), topic_filter
        if protocol == 5:
            # routed by subscription identifier: each block gets each message exactly once
            assert all(n == 1 for n in counts.values())


async def test_shared_subscription_splits_the_messages(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    base = unique("jobs")
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info) as a,
            connected(info, protocol=MQTTV5) as b,
            connected(info) as publisher,
            a.subscription(f"$share/workers/{base}/+", qos=1) as ja,
            b.subscription(f"$share/workers/{base}/+", qos=1) as jb,
        ):
            await publisher.publish_many([(f"{base}/job", f"{i}".encode())
                                          for i in range(100)], qos=1)
            got_a, got_b = await _take_all(ja, 0.5), await _take_all(jb, 0.5)
    payloads = [m.payload for m in got_a + got_b]
    assert sorted(payloads) == sorted(f"{i}".encode() for i in range(100))  # each exactly once
    assert got_a and got_b  # both workers got a share
    assert all(m.topic == f"{base}/job" for m in got_a + got_b)


@BACKENDS
async def test_qos1_flood_into_a_small_buffer_loses_nothing_and_stays_bounded(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    info = shared_mosquitto.info
    topic = unique("flood1")
    count = 600  # within mosquitto's queue of 1000 messages per client
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info, max_buffered_messages=50, backend=backend) as consumer,
            connected(info) as publisher,
            consumer.subscription(topic, qos=1, max_buffer_size=10) as inbox,
        ):
            # the consumer does not read while the flood arrives
            await publisher.publish_many([(topic, f"{i}".encode()) for i in range(count)],
                                         qos=1)
            await wait_for(lambda: inbox.statistics().waiting > 0)
            await trio.sleep(0.3)
            stats = inbox.statistics()
            held = consumer.statistics().buffered_messages
            # The buffer is full; what came after waits unacknowledged, so the broker's
            # in-flight window holds the rest back. (mosquitto 2.0.11 overshoots its window
            # of 20 under load; the client's own bound, twice max_buffered_messages, holds.)
            assert stats.buffered == 10
            assert stats.waiting == held - 10 > 0
            assert held <= 2 * 50
            got = [int((await inbox.receive()).payload) for _ in range(count)]
    assert got == list(range(count))  # nothing lost, nothing twice, in order


@BACKENDS
async def test_qos0_flood_pauses_reading(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    info = shared_mosquitto.info
    topic = unique("flood0")
    count = 3000
    limit = 100
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info, max_buffered_messages=limit, backend=backend) as consumer,
            connected(info) as publisher,
            consumer.subscription(topic, qos=0, max_buffer_size=10) as inbox,
        ):
            await publisher.publish_many([(topic, f"{i}".encode()) for i in range(count)])
            await wait_for(lambda: consumer.statistics().reads_paused)
            await trio.sleep(0.3)
            # at most the limit held, plus what was already on its way to trio
            assert consumer.statistics().buffered_messages <= 2 * limit
            assert inbox.statistics().buffered == 10
            # every message, however long a loaded machine takes (the test's deadline bounds it;
            # a fixed one-second window used to cut the flood short under load)
            got = [await inbox.receive() for _ in range(count)]
            assert not consumer.statistics().reads_paused
    numbers = [int(m.payload) for m in got]
    assert numbers == sorted(numbers)
    # QoS 0 may be dropped by a broker under pressure; mosquitto queues them, so all arrive
    assert len(numbers) == count


async def test_several_blocks_on_one_filter_and_unsubscribe(
    shared_mosquitto: MosquittoServer,
) -> None:
    info = shared_mosquitto.info
    topic = unique("shared-filter")
    handled: list[bytes] = []
    client = MQTTClient()

    @client.on_message
    async def handler(message: MQTTMessage) -> None:
        handled.append(message.payload)

    with trio.fail_after(TEST_DEADLINE):
        async with client:
            await client.connect(info.host, info.port)
            async with client.subscription(topic, qos=1) as first:
                async with client.subscription(topic, qos=2) as second:
                    assert (first.granted_qos, second.granted_qos) == (QoS(1), QoS(2))
                    await client.publish(topic, "both", qos=1)
                    assert (await first.receive()).payload == b"both"
                    assert (await second.receive()).payload == b"both"
                # the filter is still subscribed for the first block
                await client.publish(topic, "first only", qos=1)
                assert (await first.receive()).payload == b"first only"
                await client.subscribe(topic, qos=1)
                await client.publish(topic, "block and handler", qos=1)
                assert (await first.receive()).payload == b"block and handler"
                await wait_for(lambda: handled == [b"block and handler"])
                await client.unsubscribe(topic)  # handlers stop, the block keeps receiving
                await client.publish(topic, "block again", qos=1)
                assert (await first.receive()).payload == b"block again"
            # nothing subscribed any more
            await client.publish(topic, "nobody", qos=1)
            await trio.sleep(0.2)
            assert client.statistics().unrouted_messages == 0
            assert handled == [b"block and handler"]


async def test_subscription_ends_when_the_client_closes_and_aclose(
    shared_mosquitto: MosquittoServer,
) -> None:
    info = shared_mosquitto.info
    topic = unique("end")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as client, client.subscription(topic, qos=1) as inbox:
            await client.publish(topic, "kept", qos=1)
            await wait_for(lambda: inbox.statistics().buffered == 1)
            await inbox.aclose()
            with pytest.raises(trio.ClosedResourceError):
                inbox.receive_nowait()
            async with client.subscription(topic, qos=1) as other:
                await client.publish(topic, "x", qos=1)
                assert (await other.receive()).payload == b"x"
                leftover = other
    # after the client closed, iteration ends (EndOfChannel)
    assert [m async for m in leftover] == []


@BACKENDS
async def test_a_resumed_session_does_not_route_old_subscriptions_into_new_ones(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    # Run 1 subscribes orders/# with a persistent session and goes away; orders arrive and are
    # queued. Run 2 resumes the session with a different subscription, alerts/#. The broker
    # still has orders/# (with run 1's subscription identifier) and delivers the queued orders
    # with it. They used to land in alerts/#, which had been given the same identifier (both
    # runs numbered their subscriptions from 1).
    info = shared_mosquitto.info
    base = unique("resume")
    orders, alerts = f"{base}/orders", f"{base}/alerts"
    client_id = "resume" + base.rpartition("/")[2]
    session = {"client_id": client_id, "protocol": MQTTV5, "clean_start": False,
               "backend": backend}
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info, **session) as first_run:
            await first_run.subscribe(f"{orders}/#", qos=1)
        async with connected(info, protocol=MQTTV5) as publisher:
            for i in range(3):
                await publisher.publish(f"{orders}/{i}", f"order {i}", qos=1)
        leftovers: list[MQTTMessage] = []
        second_run = MQTTClient(**session)

        @second_run.on_message
        async def collect(message: MQTTMessage) -> None:
            leftovers.append(message)

        async with second_run:
            await second_run.connect(info.host, info.port)
            async with second_run.subscription(f"{alerts}/#", qos=1) as alert_messages:
                # the queued orders come first (they are sent right after CONNACK)
                await wait_for(lambda: len(leftovers) == 3)
                async with connected(info, protocol=MQTTV5) as publisher:
                    await publisher.publish(f"{alerts}/fire", "fire", qos=1)
                    await publisher.publish(f"{orders}/3", "order 3", qos=1)
                alert = await alert_messages.receive()
                await wait_for(lambda: len(leftovers) == 4)
                assert alert.topic == f"{alerts}/fire"
                with pytest.raises(trio.WouldBlock):
                    alert_messages.receive_nowait()
        # nothing was lost either: the old subscription's messages reached the handler
        assert sorted(m.payload for m in leftovers) == [f"order {i}".encode() for i in range(4)]
        async with connected(info, client_id=client_id, protocol=MQTTV5):
            pass  # clean start: the broker forgets the session
