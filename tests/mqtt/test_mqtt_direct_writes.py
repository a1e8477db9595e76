"""Publishes and acknowledgements written by the trio thread itself (``ThreadDriver.try_direct``).

With the default thread backend, a publish made while the network thread idles in ``poll`` is
written by the trio thread under the engine lock; one made while the thread is busy (reading a
flood, here) is queued for it. Both kinds interleave in these tests, which check what must not
change: one task's messages keep their order, none is lost or doubled, QoS 1 completes, and the
client's thread is gone afterwards.
"""

from __future__ import annotations

import pytest
import trio
from mqtt_helpers import (
    BACKENDS,
    TEST_DEADLINE,
    Backend,
    PahoPeer,
    connected,
    mqtt_threads,
    unique,
)

from trionet.mqtt import MQTTClient
from trionet.mqtt._driver import ThreadDriver
from trionet.testing import MosquittoServer

FLOOD = 800  # below mosquitto's queue of 1000 a client: it never drops any of them
OUT = 400


@BACKENDS
async def test_publishes_keep_their_order_while_the_network_thread_reads_a_flood(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    info = shared_mosquitto.info
    flood_topic = unique("flood")
    out_topic = unique("out")
    peer = await trio.to_thread.run_sync(PahoPeer, info)
    try:
        with trio.fail_after(TEST_DEADLINE):
            async with (
                connected(info) as watcher,
                watcher.subscription(out_topic, qos=1, max_buffer_size=2 * OUT) as seen,
                connected(info, backend=backend) as client,
                client.subscription(flood_topic, qos=1, max_buffer_size=FLOOD) as flood,
            ):
                flood_payloads = [b"f%d" % i for i in range(FLOOD)]

                async def drain() -> None:
                    for _ in range(FLOOD):
                        await flood.receive()  # QoS 1: each one acknowledged by trio

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(drain)
                    nursery.start_soon(
                        trio.to_thread.run_sync, peer.publish, flood_topic, flood_payloads, 1
                    )
                    # one task, alternating QoS 0 and 1: order must survive any mix of
                    # direct writes and calls queued for the network thread (QoS 0 returns
                    # once written or queued, so several can be on their way at once)
                    for i in range(OUT):
                        await client.publish(out_topic, b"p%d" % i, qos=i % 2)
                got = [await seen.receive() for _ in range(OUT)]
                driver = client._driver
                if isinstance(driver, ThreadDriver):
                    assert driver.direct_calls > 0
    finally:
        await trio.to_thread.run_sync(peer.close)
    # MQTT orders messages per QoS level only (the broker may let a QoS 0 message overtake a
    # QoS 1 message that waits for its in-flight window), so check each level on its own
    for qos in (0, 1):
        assert [m.payload for m in got if m.qos == qos] == [
            b"p%d" % i for i in range(OUT) if i % 2 == qos
        ]
    assert len(got) == OUT
    assert mqtt_threads() == []


@BACKENDS
async def test_concurrent_qos1_publishers_all_complete_once(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    info = shared_mosquitto.info
    topic = unique("many")
    tasks, each = 20, 25
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info) as watcher,
            watcher.subscription(topic, qos=1, max_buffer_size=tasks * each) as seen,
            MQTTClient(backend=backend, max_inflight=5) as client,
        ):
            await client.connect(info.host, info.port)

            async def publisher(n: int) -> None:
                for i in range(each):
                    await client.publish(topic, b"%d-%d" % (n, i), qos=1)

            async with trio.open_nursery() as nursery:
                for n in range(tasks):
                    nursery.start_soon(publisher, n)
            got = [await seen.receive() for _ in range(tasks * each)]
            await trio.sleep(0.2)  # a duplicate would arrive meanwhile
            with pytest.raises(trio.WouldBlock):
                seen.receive_nowait()
    assert sorted(m.payload for m in got) == sorted(
        b"%d-%d" % (n, i) for n in range(tasks) for i in range(each)
    )
    for n in range(tasks):  # each publisher's own messages in its order
        mine = [m.payload for m in got if m.payload.startswith(b"%d-" % n)]
        assert mine == [b"%d-%d" % (n, i) for i in range(each)]
