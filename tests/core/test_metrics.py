"""trionet.metrics: the registry and its Prometheus text, the OpenTelemetry adapter, and what
the ASGI app, the Channel, the AsyncAProto server and the bus report (real sockets)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trionet import metrics
from trionet.asgi import ASGIApplication, Request, Response, TestClient


def test_counters_histograms_and_exposition() -> None:
    registry = metrics.MetricsRegistry(buckets=(0.1, 1.0))
    with metrics.installed(registry):
        metrics.count("jobs_total", kind="a")
        metrics.count("jobs_total", 2, kind="a")
        metrics.count("jobs_total", kind='we"ird\\\nname')
        metrics.observe("wait_seconds", 0.05)
        metrics.observe("wait_seconds", 0.5)
        metrics.observe("wait_seconds", 7)
    metrics.count("jobs_total", kind="a")  # uninstalled: not recorded
    assert registry.value("jobs_total", kind="a") == 3
    assert registry.value("wait_seconds") == 3
    text = registry.exposition()
    assert "# TYPE jobs_total counter\n" in text
    assert 'jobs_total{kind="a"} 3\n' in text
    assert 'jobs_total{kind="we\\"ird\\\\\\nname"} 1\n' in text  # escaped, one line
    assert 'wait_seconds_bucket{le="0.1"} 1\n' in text
    assert 'wait_seconds_bucket{le="1"} 2\n' in text  # cumulative
    assert 'wait_seconds_bucket{le="+Inf"} 3\n' in text
    assert "wait_seconds_sum 7.55\n" in text and "wait_seconds_count 3\n" in text


def test_series_are_bounded() -> None:
    registry = metrics.MetricsRegistry(max_series=3)
    for n in range(10):
        registry.count("by_peer_total", 1, {"peer": str(n)})
    assert registry.exposition().count("by_peer_total{") == 3
    assert registry.dropped == 7
    with pytest.raises(ValueError, match="ascending"):
        metrics.MetricsRegistry(buckets=(1.0, 0.5))


def test_opentelemetry_adapter() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    sink = metrics.OpenTelemetryMetrics(MeterProvider(metric_readers=[reader]))
    with metrics.installed(sink):
        metrics.message("mqtt", "in", 4)
        metrics.request("asgi", 0.02, True)
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = metric
    points = list(found["trionet_messages_total"].data.data_points)
    assert points[0].value == 4 and dict(points[0].attributes) == {
        "component": "mqtt", "direction": "in"}
    assert found["trionet_request_duration_seconds"].unit == "s"


async def test_asgi_requests_and_the_prometheus_endpoint() -> None:
    registry = metrics.MetricsRegistry()
    app = ASGIApplication()

    @app.route("/ok")
    async def ok(request: Request) -> Response:
        return Response.text("fine")

    @app.route("/boom")
    async def boom(request: Request) -> Response:
        raise RuntimeError("broken handler")

    app.mount("/metrics", metrics.prometheus_endpoint(registry))
    with metrics.installed(registry):
        async with TestClient(app, raise_app_exceptions=False) as client:
            assert (await client.get("/ok")).status_code == 200
            assert (await client.get("/boom")).status_code == 500
            response = await client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert 'trionet_requests_total{component="asgi",outcome="ok"} 1' in response.text
            assert 'trionet_requests_total{component="asgi",outcome="error"} 1' in response.text
            assert (await client.post("/metrics")).status_code == 405
    assert registry.value("trionet_request_duration_seconds", component="asgi") == 4


async def test_channel_requests_over_tcp() -> None:
    from trionet.channel import Channel, open_connection, start_server

    async def handle(channel: Channel) -> None:
        async def answer(content: Any) -> Any:
            if content == "fail":
                raise ValueError("no")
            await trio.lowlevel.checkpoint()
            return content

        await channel.serve(lambda c: c if c == "sync" else answer(c))

    registry = metrics.MetricsRegistry()
    with metrics.installed(registry), trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            (address,) = await nursery.start(start_server, ("127.0.0.1", 0), handle)
            async with open_connection(address) as channel:
                assert await channel.send("sync") == "sync"
                assert await channel.send("async") == "async"
                with pytest.raises(Exception, match="no"):
                    await channel.send("fail")
            nursery.cancel_scope.cancel()
    assert registry.value("trionet_requests_total", component="channel", outcome="ok") == 2
    assert registry.value("trionet_requests_total", component="channel", outcome="error") == 1


async def test_aproto_packets_over_tcp() -> None:
    from trionet.aproto import AsyncClient, HandlerClient, Packet, Server

    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler()
    async def echo(client: HandlerClient, packet: Packet) -> None:
        await client.send({"got": packet["n"]})

    registry = metrics.MetricsRegistry()
    with metrics.installed(registry), trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            async with AsyncClient(tls=False) as client:
                await client.connect("127.0.0.1", port)
                for n in range(3):
                    await client.send({"n": n})
                    assert (await client.receive())["got"] == n
            nursery.cancel_scope.cancel()
    assert registry.value("trionet_requests_total", component="aproto", outcome="ok") == 3


async def test_bus_handled_and_published() -> None:
    from trionet.bus import BusMessage, BusSocket, DistributedApplication
    from trionet.bus.testing import serving

    app = DistributedApplication("memory://metrics-test")
    last_one = trio.Event()

    @app.application("work/+")
    async def worker(message: BusMessage) -> None:
        if message.payload == b"bad":
            raise ValueError("bad job")
        if message.payload == b"last":
            last_one.set()

    registry = metrics.MetricsRegistry()
    with metrics.installed(registry), trio.fail_after(20):
        async with serving(app), app.default_socket_provider.create_socket() as socket:
            assert isinstance(socket, BusSocket)
            for payload in (b"bad", b"a", b"b", b"last"):  # handled in order
                await socket.publish(BusMessage(payload, "work/1"))
            await last_one.wait()
    assert registry.value("trionet_messages_total", component="bus", direction="out") == 4
    assert registry.value("trionet_requests_total", component="bus", outcome="error") == 1
    assert registry.value("trionet_requests_total", component="bus", outcome="ok") >= 2
