"""Event streams and websockets fed by MQTT subscriptions on a real mosquitto: a slow browser
never grows a buffer past its bound, under either overflow policy, and leaving unsubscribes."""

from __future__ import annotations

import json

import trio
from bridges_support import SlowBrowser, parse_events, stream_events, tapped, unique

from trionet.asgi import ASGIApplication, Router, connect_websocket, serve
from trionet.bridges import Bridge, mqtt_source
from trionet.mqtt import open_mqtt_client
from trionet.testing import MosquittoServer


def _url(server: MosquittoServer) -> str:
    return f"mqtt://{server.info.host}:{server.info.port}"


async def test_drop_oldest_bounds_a_slow_browser_and_keeps_the_newest(
    shared_mosquitto: MosquittoServer,
) -> None:
    topic = unique("bridges/drop")
    flood = 500
    async with open_mqtt_client(_url(shared_mosquitto)) as client:
        seen = trio.Event()
        bridge = Bridge(tapped(mqtt_source(client, topic), b"end", seen), max_buffer_size=8)
        browser = SlowBrowser()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_events, bridge.event_stream, browser)
            await browser.started.wait()  # subscribed: the response has started
            assert browser.status == 200
            async with open_mqtt_client(_url(shared_mosquitto)) as publisher:
                for n in range(flood):
                    await publisher.publish(topic, str(n), qos=0)
                await publisher.publish(topic, "end", qos=1)
            await seen.wait()  # every message went through the feed; the browser read none
            events = await browser.wait_for_payload("end")
            browser.leave()
        stats = bridge.statistics
    assert stats.high_water <= 8
    assert stats.dropped > 0
    assert stats.received == stats.dropped + stats.delivered  # nothing left, nothing lost unseen
    numbers = [int(e["payload"]) for e in events if e["payload"] != "end"]
    assert numbers == sorted(numbers) and numbers[-1] == flood - 1  # the newest are kept
    assert all(e["topic"] == topic for e in events)
    assert stats.open_streams == 0 and stats.streams == 1


async def test_pause_loses_nothing_and_bounds_every_buffer(
    shared_mosquitto: MosquittoServer,
) -> None:
    topic = unique("bridges/pause")
    count = 200
    async with open_mqtt_client(_url(shared_mosquitto), max_buffered_messages=16) as client:
        bridge = Bridge(mqtt_source(client, topic, qos=1, max_buffer_size=4),
                        max_buffer_size=4, overflow="pause")
        browser = SlowBrowser()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_events, bridge.event_stream, browser)
            await browser.started.wait()
            async with open_mqtt_client(_url(shared_mosquitto)) as publisher:
                for n in range(count):
                    await publisher.publish(topic, str(n), qos=1)
            assert bridge.statistics.high_water <= 4
            # The subscription withheld acknowledgements: the broker's in-flight window, not
            # the 200 published, bounds what the client holds.
            assert client.statistics().buffered_messages < 64
            events = await browser.wait_for_payload(str(count - 1))
            browser.leave()
        stats = bridge.statistics
    assert [int(e["payload"]) for e in events] == list(range(count))
    assert stats.dropped == 0 and stats.paused > 0 and stats.high_water <= 4


async def test_event_stream_and_websocket_through_a_real_server(
    shared_mosquitto: MosquittoServer,
) -> None:
    topic = unique("bridges/live")
    async with open_mqtt_client(_url(shared_mosquitto)) as client, \
            trio.open_nursery() as nursery:
        bridge = Bridge(mqtt_source(client, f"{topic}/#"), ping=None)
        router = Router()
        router.add_route("/events", bridge.event_stream)
        router.add_websocket_route("/ws", bridge.websocket)
        address = await nursery.start(serve, ASGIApplication(router), "127.0.0.1:0")
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            await stream.send_all(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"text/event-stream" in head
            async with connect_websocket(f"{address.ws_url}/ws") as websocket:
                await client.publish(f"{topic}/kitchen", "21.5", qos=1)
                assert json.loads(await websocket.receive()) == {
                    "topic": f"{topic}/kitchen", "payload": "21.5"}
                body = head.split(b"\r\n\r\n", 1)[1]
                while not parse_events(body.replace(b"\r\n", b"")):  # (chunked framing)
                    body += await stream.receive_some(4096)
                assert b'{"topic":"' + f"{topic}/kitchen".encode() + b'","payload":"21.5"}' \
                    in body
                assert bridge.statistics.open_streams == 2
        nursery.cancel_scope.cancel()


async def test_no_subscription_is_a_503(shared_mosquitto: MosquittoServer) -> None:
    async with open_mqtt_client(_url(shared_mosquitto)) as client:
        pass
    bridge = Bridge(mqtt_source(client, "bridges/closed"))  # the client is closed
    browser = SlowBrowser()
    browser.allow(10)
    await stream_events(bridge.event_stream, browser)
    assert browser.status == 503
    assert b"no event stream" in browser.body
    assert bridge.statistics.refused == 1


async def test_streams_past_max_streams_are_refused(shared_mosquitto: MosquittoServer) -> None:
    async with open_mqtt_client(_url(shared_mosquitto)) as client, \
            trio.open_nursery() as nursery:
        bridge = Bridge(mqtt_source(client, unique("bridges/max")), max_streams=1)
        first, second = SlowBrowser(), SlowBrowser()
        nursery.start_soon(stream_events, bridge.event_stream, first)
        await first.started.wait()
        second.allow(10)
        await stream_events(bridge.event_stream, second)
        assert (first.status, second.status) == (200, 503)
        first.leave()
    assert bridge.statistics.refused == 1 and bridge.statistics.open_streams == 0
