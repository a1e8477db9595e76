"""/healthz and /readyz: trionet.asgi.Health, in-process and on a served app with real brokers."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
import trio
from asgi_support import running_server

from trionet.asgi import ASGIApplication, BoundAddress, Health, Router, TestClient
from trionet.bus import DistributedApplication
from trionet.demo._asgi import http_request
from trionet.errors import ConfigurationError
from trionet.mqtt import ConnectionState, MQTTClient, ReconnectPolicy
from trionet.testing import KafkaBroker, MosquittoServer

FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.3, jitter=0.5)


class Component:
    def __init__(self) -> None:
        self.ready = False


def build(health: Health) -> ASGIApplication:
    app = ASGIApplication(Router())
    health.add_routes(app)
    return app


async def test_readyz_reports_each_check_and_healthz_stays_up() -> None:
    component = Component()
    health = Health()
    health.add_check("component", component)
    health.add_check("db", lambda: True)
    health.add_check("cache", lambda: "cache is warming up")

    async def awaited() -> bool:
        await trio.lowlevel.checkpoint()
        return True

    health.add_check("awaited", awaited)
    app = build(health)
    async with TestClient(app) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "status": "unavailable",
            "checks": {
                "component": {"status": "unavailable", "reason": "not ready"},
                "db": {"status": "ok"},
                "cache": {"status": "unavailable", "reason": "cache is warming up"},
                "awaited": {"status": "ok"},
                "http": {"status": "ok"},
            },
        }
        healthz = await client.get("/healthz")
        assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
        assert healthz.headers["cache-control"] == "no-store"

        component.ready = True
        health.remove_check("cache")
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        head = await client.head("/readyz")
        assert (head.status_code, head.content) == (200, b"")
        assert (await client.head("/healthz")).status_code == 200

        health.begin_shutdown()
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reason"] == "shutting down"
        assert (await client.get("/healthz")).status_code == 200
    assert health.names == ["component", "db", "awaited", "http"]


async def test_a_failing_or_hanging_check_is_a_reason_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> bool:
        raise RuntimeError("pool exhausted")

    async def hangs() -> bool:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    health = Health(timeout=5)
    health.add_check("broken", broken)
    health.add_check("hangs", hangs, timeout=0.05)
    with caplog.at_level(logging.WARNING, logger="trionet.asgi.health"):
        report = await health.check()
    assert not report.ok
    assert report.as_json()["checks"] == {
        "broken": {"status": "unavailable", "reason": "RuntimeError: pool exhausted"},
        "hangs": {"status": "unavailable", "reason": "timed out after 0.05 s"},
    }
    assert "health check 'broken' failed" in caplog.text


async def test_lifespan_check_and_router_mounting() -> None:
    health = Health()
    app = build(health)
    client = TestClient(app)  # no lifespan: the application has not started
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["http"]["reason"].startswith("HTTP application is not")
    async with TestClient(app) as running:
        assert (await running.get("/readyz")).status_code == 200

    router = Router()
    plain = Health()
    plain.add_routes(router, liveness="/live", readiness="/ready")
    async with TestClient(ASGIApplication(router)) as client:
        assert (await client.get("/ready")).json() == {"status": "ok", "checks": {}}
        assert (await client.get("/live")).status_code == 200
        assert router.url_for("readyz") == "/ready"


def test_bad_checks_are_refused() -> None:
    health = Health()
    with pytest.raises(TypeError, match="cannot check a int"):
        health.add_check("x", 3)
    with pytest.raises(ConfigurationError):
        health.add_check("", lambda: True)
    with pytest.raises(ConfigurationError):
        health.add_check("x", lambda: True, timeout=0)
    with pytest.raises(ConfigurationError):
        Health(timeout=float("inf"))


async def test_a_check_returning_something_else_is_reported() -> None:
    health = Health()
    health.add_check("odd", lambda: 1)
    report = await health.check()
    assert report.checks["odd"].reason.startswith("TypeError: a health check must return")


async def test_bus_application_readiness() -> None:
    bus = DistributedApplication("memory://", shutdown_timeout=1)

    @bus.application("health/#", name="consumer")
    async def consumer(message: Any, socket: Any) -> None:
        pass

    health = Health()
    health.add_check("bus", bus)
    report = await health.check()
    assert report.checks["bus"].reason == "bus is not running"
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        assert (await health.check()).ok
        bus.stop()
        assert (await health.check()).checks["bus"].reason == "bus is starting or stopping"
    assert not (await health.check()).ok


# -- on a served app, with real brokers ---------------------------------------------------------


async def get(address: BoundAddress, target: str) -> tuple[int, dict[str, Any]]:
    status, _, body = await http_request(address.host, address.port, "GET", target)
    return status, json.loads(body)


async def wait_for_state(events: Any, state: ConnectionState) -> None:
    with trio.fail_after(30):
        async for event in events:
            if event.state is state:
                return


async def test_readyz_follows_the_mqtt_connection(mosquitto: MosquittoServer) -> None:
    info = mosquitto.info
    health = Health()
    app = build(health)
    async with MQTTClient(reconnect=FAST) as client:
        health.add_check("mqtt", client)
        async with running_server(app) as address, client.connection_events() as events:
            status, body = await get(address, "/readyz")
            assert status == 503
            assert body["checks"]["mqtt"] == {"status": "unavailable",
                                              "reason": "MQTT client is disconnected"}

            await client.connect(info.host, info.port)
            status, body = await get(address, "/readyz")
            assert (status, body["status"]) == (200, "ok")
            assert body["checks"] == {"mqtt": {"status": "ok"}, "http": {"status": "ok"}}

            await trio.to_thread.run_sync(mosquitto.kill)
            await wait_for_state(events, ConnectionState.RECONNECTING)
            status, body = await get(address, "/readyz")
            assert status == 503
            assert body["checks"]["mqtt"] == {"status": "unavailable",
                                              "reason": "MQTT client is reconnecting"}
            assert (await get(address, "/healthz")) == (200, {"status": "ok"})

            await trio.to_thread.run_sync(mosquitto.start)
            await wait_for_state(events, ConnectionState.CONNECTED)
            status, body = await get(address, "/readyz")
            assert (status, body["status"]) == (200, "ok")


async def test_readyz_follows_a_kafka_consumer(kafka_broker: KafkaBroker) -> None:
    from trionet.kafka import KafkaAdmin, KafkaConsumer, NewTopic

    servers = kafka_broker.info.bootstrap_servers
    topic = f"health-{uuid.uuid4().hex[:12]}"
    async with KafkaAdmin(servers) as admin:
        await admin.create_topics([NewTopic(topic, num_partitions=1)])
        try:
            health = Health()
            consumer = KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)])
            health.add_check("orders", consumer)
            assert (await health.check()).checks["orders"].reason == "Kafka consumer is not open"
            async with consumer:
                assert (await health.check()).ok
            assert (await health.check()).checks["orders"].reason == "Kafka consumer is not open"
        finally:
            await admin.delete_topics([topic], missing_ok=True)
