"""HTTP routes bound to bus requests (200, the responder's status, 413, 503, 504, the
correlation id), and streams fed by bus sockets and Kafka consumers."""

from __future__ import annotations

import json

import trio
from bridges_support import SlowBrowser, stream_events, unique

from trionet.asgi import ASGIApplication, RequestIdMiddleware, Router, TestClient
from trionet.bridges import HTTP_STATUS_HEADER, Bridge, bus_request, bus_source, kafka_source
from trionet.bus import BusMessage, BusSocket, from_url
from trionet.kafka import KafkaProducer
from trionet.observability import CORRELATION_HEADER
from trionet.testing import KafkaBroker, MosquittoServer


async def _responder(socket: BusSocket, seen: list[BusMessage]) -> None:
    async for message in socket:
        seen.append(message)
        order = json.loads(message.payload)
        if "item" not in order:
            await socket.reply(message, b'{"error":"no item"}', content_type="application/json",
                               headers={HTTP_STATUS_HEADER: "400"})
        else:
            await socket.reply(message, json.dumps({"accepted": order["item"]}),
                               content_type="application/json")


def _app(gateway: BusSocket | None, **kwargs: object) -> ASGIApplication:
    router = Router()
    router.add_route("/orders", bus_request(lambda: gateway, "orders/new", **kwargs),  # type: ignore[arg-type]
                     methods=["POST"])
    app = ASGIApplication(router)
    app.add_middleware(RequestIdMiddleware)
    return app


async def _bus_request_contract(url: str) -> None:
    provider = from_url(url)
    seen: list[BusMessage] = []
    async with provider.create_socket(["orders/new"], name="orders") as orders, \
            provider.create_socket(name="gateway") as gateway, trio.open_nursery() as nursery:
        nursery.start_soon(_responder, orders, seen)
        client = TestClient(_app(gateway, timeout=5, max_body_size=100))
        response = await client.post("/orders", json={"item": "widget"})
        assert response.status_code == 200
        assert response.json() == {"accepted": "widget"}
        assert response.headers["content-type"] == "application/json"
        # The correlation id travels: the HTTP request id went out with the bus request.
        request_id = response.headers["x-request-id"]
        assert response.headers[CORRELATION_HEADER] == request_id
        assert seen[-1].headers[CORRELATION_HEADER] == request_id
        assert seen[-1].content_type == "application/json"
        # The responder chooses the status.
        response = await client.post("/orders", json={"qty": 1})
        assert response.status_code == 400 and response.json() == {"error": "no item"}
        # The body is bounded: refused before it reaches the bus.
        before = len(seen)
        response = await client.post("/orders", content=b"x" * 101)
        assert response.status_code == 413 and len(seen) == before
        nursery.cancel_scope.cancel()


async def test_bus_request_route_on_memory() -> None:
    await _bus_request_contract(f"memory://{unique('bridges')}")


async def test_bus_request_route_on_mqtt(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    await _bus_request_contract(f"mqtt://{info.host}:{info.port}")


async def test_no_responder_is_a_504_and_no_socket_a_503() -> None:
    provider = from_url(f"memory://{unique('bridges')}")
    async with provider.create_socket(name="gateway") as gateway:
        client = TestClient(_app(gateway, timeout=0.2))
        response = await client.post("/orders", json={"item": "widget"},
                                     headers={"x-request-id": "abc-123"})
        assert response.status_code == 504
        assert "no reply on 'orders/new'" in response.json()["error"]
        assert response.headers[CORRELATION_HEADER] == "abc-123"
    # The socket is closed now; and before there is one at all.
    for socket in (gateway, None):
        response = await TestClient(_app(socket)).post("/orders", json={"item": "widget"})
        assert response.status_code == 503
        assert response.json() == {"error": "the bus is not available for 'orders/new'"}


async def test_event_stream_fed_by_a_bus_socket() -> None:
    url = f"memory://{unique('bridges')}"
    bridge = Bridge(bus_source(url, "sensors/+"), max_buffer_size=4)
    browser = SlowBrowser()
    async with from_url(url).create_socket(name="sensor") as sensor, \
            trio.open_nursery() as nursery:
        nursery.start_soon(stream_events, bridge.event_stream, browser)
        await browser.started.wait()
        await sensor.publish(BusMessage("21.5", "sensors/kitchen", content_type="text/plain"))
        events = await browser.wait_for_payload("21.5")
        browser.leave()
    assert events == [{"topic": "sensors/kitchen", "payload": "21.5",
                       "content_type": "text/plain"}]


async def test_event_stream_fed_by_a_kafka_consumer(kafka_broker: KafkaBroker) -> None:
    topic = unique("bridges-kafka")
    servers = kafka_broker.info.bootstrap_servers
    async with KafkaProducer(servers) as producer:
        await producer.send(topic, b"first", key=b"k")
        bridge = Bridge(kafka_source(topic, bootstrap_servers=servers,
                                     auto_offset_reset="earliest"), max_buffer_size=4)
        browser = SlowBrowser()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_events, bridge.event_stream, browser)
            await browser.started.wait()
            await producer.send(topic, b"second", key=b"k")
            events = await browser.wait_for_payload("second")
            browser.leave()
    assert [(e["topic"], e["key"], e["payload"], e["offset"]) for e in events] == [
        (topic, "k", "first", 0), (topic, "k", "second", 1)]


async def test_close_ends_open_streams_after_their_buffer_and_refuses_new_ones() -> None:
    url = f"memory://{unique('bridges')}"
    bridge = Bridge(bus_source(url, "sensors/+"), max_buffer_size=4)
    browser = SlowBrowser()
    async with from_url(url).create_socket(name="sensor") as sensor:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_events, bridge.event_stream, browser)
            await browser.started.wait()
            await sensor.publish(BusMessage("last", "sensors/kitchen"))
            await browser.wait_for_payload("last")
            bridge.close()
        # The stream ended by itself (stream_events returned): no disconnect was needed.
        assert browser.body.endswith(b"\n\n")
        late = SlowBrowser()
        late.allow(10)
        await stream_events(bridge.event_stream, late)
    assert late.status == 503
    stats = bridge.statistics
    assert (stats.open_streams, stats.streams, stats.refused) == (0, 1, 1)


async def test_kafka_pause_loses_nothing_with_a_slow_browser(kafka_broker: KafkaBroker) -> None:
    topic = unique("bridges-kafka-pause")
    servers = kafka_broker.info.bootstrap_servers
    count = 50
    async with KafkaProducer(servers) as producer:
        bridge = Bridge(kafka_source(topic, bootstrap_servers=servers,
                                     auto_offset_reset="earliest"),
                        max_buffer_size=2, overflow="pause")
        browser = SlowBrowser()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_events, bridge.event_stream, browser)
            await browser.started.wait()
            for n in range(count):
                await producer.send(topic, str(n).encode())
            events = await browser.wait_for_payload(str(count - 1))
            browser.leave()
    stats = bridge.statistics
    assert [e["payload"] for e in events] == [str(n) for n in range(count)]
    assert stats.dropped == 0 and stats.high_water <= 2
