"""trionet.tracing: W3C trace context across ASGI and the bus (memory://, real mosquitto), with
the OpenTelemetry SDK's in-memory exporter; malformed headers ignored; off without a provider."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trionet import tracing
from trionet.asgi import ASGIApplication, Request, RequestIdMiddleware, Response, TestClient
from trionet.bus import (
    BusMessage,
    BusSocket,
    ChannelSocketProvider,
    DistributedApplication,
    channel_request,
)
from trionet.bus.testing import serving
from trionet.channel import open_connection
from trionet.observability import current_correlation_id
from trionet.testing import MosquittoServer

PATIENCE = 20
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tracing_components.py"
INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with tracing.installed(provider):
        yield spans


def by_kind(spans: InMemorySpanExporter, kind: trace.SpanKind) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind is kind]


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


async def test_http_request_to_bus_request_to_handler_is_one_trace(
    exporter: InMemorySpanExporter,
) -> None:
    bus = DistributedApplication("memory://tracing-one-trace")
    seen: dict[str, Any] = {}

    @bus.application("orders/new")
    async def orders(message: BusMessage, socket: BusSocket) -> None:
        seen["correlation_id"] = current_correlation_id()
        seen["traceparent"] = message.headers.get("traceparent")
        await socket.reply(message, b"accepted")

    web = ASGIApplication()
    web.add_middleware(RequestIdMiddleware)

    async with serving(bus), bus.default_socket_provider.create_socket() as socket:

        @web.route("/orders", methods=["POST"])
        async def new_order(request: Request) -> Response:
            reply = await socket.request(BusMessage(await request.body(), "orders/new"))
            return Response.text(reply.payload.decode())

        with trio.fail_after(PATIENCE):
            async with TestClient(web) as client:
                answer = await client.post("/orders", content=b"one",
                                           headers={"traceparent": INCOMING,
                                                    "tracestate": "vendor=abc",
                                                    "x-request-id": "order-7"})
    assert answer.text == "accepted"
    (server,) = by_kind(exporter, trace.SpanKind.SERVER)
    (consumer,) = by_kind(exporter, trace.SpanKind.CONSUMER)
    assert server.parent is not None and server.parent.is_remote
    assert (server.parent.trace_id, server.parent.span_id) == (
        0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331)
    assert server.context is not None and server.context.trace_state.get("vendor") == "abc"
    assert consumer.parent is not None
    assert (consumer.parent.trace_id, consumer.parent.span_id) == ids(server)
    assert seen["traceparent"] == f"00-{ids(server)[0]:032x}-{ids(server)[1]:016x}-01"
    assert seen["correlation_id"] == "order-7"
    assert server.attributes is not None and consumer.attributes is not None
    assert server.attributes["trionet.correlation_id"] == "order-7"
    assert server.attributes["http.response.status_code"] == 200
    assert consumer.attributes["trionet.correlation_id"] == "order-7"
    assert consumer.attributes["messaging.system"] == "memory"
    assert consumer.attributes["messaging.destination"] == "orders/new"


async def test_bus_over_mosquitto(exporter: InMemorySpanExporter,
                                  shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = f"tracing/{id(exporter):x}/jobs"
    app = DistributedApplication(f"mqtt://{info.host}:{info.port}")
    handled: list[tuple[bytes, str | None]] = []
    done = trio.Event()

    @app.application(topic)
    async def worker(message: BusMessage) -> None:
        handled.append((message.payload, current_correlation_id()))
        if len(handled) == 2:
            done.set()

    tracer = trace.get_tracer("test", tracer_provider=exporter_provider(exporter))
    with trio.fail_after(PATIENCE):
        async with serving(app), app.default_socket_provider.create_socket() as socket:
            with tracer.start_as_current_span("client") as client:
                await socket.publish(BusMessage(b"in a trace", topic))
            await socket.publish(BusMessage(b"no trace", topic))  # nor correlation id
            await done.wait()
    first, second = by_kind(exporter, trace.SpanKind.CONSUMER)
    assert first.parent is not None
    assert (first.parent.trace_id, first.parent.span_id) == (
        client.get_span_context().trace_id, client.get_span_context().span_id)
    assert first.attributes is not None and first.attributes["messaging.system"] == "mqtt"
    assert first.attributes["messaging.destination"] == topic
    # A message with neither trace nor correlation id: a new trace, whose id is the correlation id.
    assert second.parent is None
    assert handled[1] == (b"no trace", f"{ids(second)[0]:032x}")
    assert second.attributes is not None
    assert second.attributes["trionet.correlation_id"] == f"{ids(second)[0]:032x}"


def exporter_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


MALFORMED = [
    "",
    INCOMING.upper(),
    INCOMING + "-00",                                                # version 00 is 55 chars
    "ff" + INCOMING[2:],                                             # forbidden version
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",       # zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",       # zero span id
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",        # short span id
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-" + "x" * 10_000,  # oversized
    INCOMING[:-1] + "g",                                             # not hex
]


def test_traceparent_validation() -> None:
    assert tracing.parse_traceparent(INCOMING) == (
        0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, 1)
    assert tracing.parse_traceparent("01" + INCOMING[2:] + "-future") is not None
    for value in [*MALFORMED, INCOMING + "\n"]:
        assert tracing.parse_traceparent(value) is None, value


async def test_malformed_traceparent_is_ignored(exporter: InMemorySpanExporter) -> None:
    web = ASGIApplication()

    @web.route("/")
    async def index(request: Request) -> Response:
        return Response.text(current_correlation_id() or "-")

    bus = DistributedApplication("memory://tracing-malformed")
    received = trio.Semaphore(0)

    @bus.application("in")
    async def consumer(message: BusMessage) -> None:
        received.release()

    with trio.fail_after(PATIENCE):
        async with TestClient(web) as client, serving(bus), \
                bus.default_socket_provider.create_socket() as socket:
            for value in MALFORMED[1:]:
                answer = await client.get("/", headers={"traceparent": value,
                                                        "tracestate": "v=" + "x" * 600})
                assert answer.status_code == 200
                await socket.publish(BusMessage(b"", "in", headers={"traceparent": value}))
                await received.acquire()
    servers = by_kind(exporter, trace.SpanKind.SERVER)
    consumers = by_kind(exporter, trace.SpanKind.CONSUMER)
    assert len(servers) == len(consumers) == len(MALFORMED) - 1
    for span in servers + consumers:
        assert span.parent is None  # a new trace each time
        assert span.context is not None and not span.context.trace_state
        assert span.attributes is not None
        assert span.attributes["trionet.correlation_id"] == f"{ids(span)[0]:032x}"


async def test_failures_mark_the_spans(exporter: InMemorySpanExporter) -> None:
    bus = DistributedApplication("memory://tracing-failures")
    failed = trio.Event()

    @bus.application("jobs")
    async def job(message: BusMessage) -> None:
        failed.set()
        raise ValueError("bad job")

    web = ASGIApplication()

    @web.route("/")
    async def index(request: Request) -> Response:
        raise RuntimeError("broken")

    with trio.fail_after(PATIENCE):
        async with serving(bus), bus.default_socket_provider.create_socket() as socket:
            await socket.publish(BusMessage(b"", "jobs"))
            await failed.wait()
            async with TestClient(web, raise_app_exceptions=False) as client:
                assert (await client.get("/")).status_code == 500
    (consumer,) = by_kind(exporter, trace.SpanKind.CONSUMER)
    (server,) = by_kind(exporter, trace.SpanKind.SERVER)
    for span, error in ((consumer, "ValueError"), (server, None)):
        assert span.status.status_code is trace.StatusCode.ERROR
        if error:
            assert [e.attributes["exception.type"] for e in span.events  # type: ignore[index]
                    if e.name == "exception"] == [error]


async def test_no_spans_and_no_headers_without_a_provider() -> None:
    spans = InMemorySpanExporter()
    unused = exporter_provider(spans)  # made, but neither installed nor global
    assert not tracing.enabled()
    web = ASGIApplication()
    bus = DistributedApplication("memory://tracing-off")
    headers: list[dict[str, str]] = []
    done = trio.Event()

    @bus.application("in")
    async def consumer(message: BusMessage) -> None:
        headers.append(dict(message.headers))
        done.set()

    with trio.fail_after(PATIENCE):
        async with serving(bus), bus.default_socket_provider.create_socket() as socket:

            @web.route("/")
            async def index(request: Request) -> Response:
                await socket.publish(BusMessage(b"", "in"))
                return Response.text("ok")

            with unused.get_tracer("test").start_as_current_span("outside"):
                async with TestClient(web) as client:
                    assert (await client.get("/", headers={"traceparent": INCOMING})).text == "ok"
            await done.wait()
    assert "traceparent" not in headers[0]
    assert [s.name for s in spans.get_finished_spans()] == ["outside"]  # only the test's own


async def test_the_global_provider_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = InMemorySpanExporter()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", exporter_provider(spans))
    assert tracing.enabled()
    web = ASGIApplication()

    @web.route("/")
    async def index(request: Request) -> Response:
        return Response.text("ok")

    async with TestClient(web) as client:
        await client.get("/")
    (server,) = spans.get_finished_spans()
    assert server.kind is trace.SpanKind.SERVER


def test_opentelemetry_is_never_imported_by_trionet() -> None:
    code = (
        "import sys, trio\n"
        "from trionet import tracing\n"
        "from trionet.asgi import ASGIApplication, TestClient\n"
        "from trionet.bus import BusMessage, DistributedApplication\n"
        "async def main():\n"
        "    async with TestClient(ASGIApplication()) as client:\n"
        "        await client.get('/', headers={'traceparent': '" + INCOMING + "'})\n"
        "    app = DistributedApplication('memory://x')\n"
        "    async with app.default_socket_provider.create_socket('t') as socket:\n"
        "        await socket.publish(BusMessage(b'', 't'))\n"
        "        await socket.receive()\n"
        "trio.run(main)\n"
        "assert not tracing.enabled()\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_the_components_example(mosquitto: MosquittoServer,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("docs_example_tracing_components", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = mosquitto.info  # a private broker: no other test's retained sensors/... messages
    with trio.fail_after(PATIENCE):
        await module.main(f"mqtt://{info.host}:{info.port}")
    assert capsys.readouterr().out.splitlines() == [
        "sensors/kitchen: 31.5 °C, alarm: True",
        "INTERNAL read sensor              sensor trace",
        "PRODUCER publish sensors/kitchen  sensor trace",
        "CONSUMER process sensors/kitchen  sensor trace",
        "CLIENT   too_hot                  sensor trace",
        "SERVER   too_hot                  own trace",
    ]


async def test_the_bus_over_the_channel_is_traced_once(exporter: InMemorySpanExporter) -> None:
    provider = ChannelSocketProvider()
    bus = DistributedApplication(provider)

    @bus.application("orders/+")
    async def orders(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, b"accepted")

    with trio.fail_after(PATIENCE):
        async with serving(bus), open_connection(provider.addresses[0]) as channel:
            reply = await channel_request(channel, b"tea", "orders/new",
                                          headers={"traceparent": INCOMING})
    assert reply.payload == b"accepted"
    # the bus's CONSUMER span, child of the request's context; no Channel SERVER span under it
    (consumer,) = by_kind(exporter, trace.SpanKind.CONSUMER)
    assert consumer.parent is not None
    assert consumer.parent.span_id == 0xb7ad6b7169203331
    assert by_kind(exporter, trace.SpanKind.SERVER) == []
    (client,) = by_kind(exporter, trace.SpanKind.CLIENT)  # the caller's Channel request
    assert client.name == "aiomas request"


def test_a_malformed_tracestate_is_dropped_quietly(exporter: InMemorySpanExporter,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for value in ["!!!", "=", "A=b", "k=" + "x" * 300, "a=b,\x00", ",".join(["k=v"] * 33)]:
        span = tracing.start_span("in", "consumer", {}, carrier=(INCOMING, value))
        assert span is not None
        span.end()
    kept = tracing.start_span("in", "consumer", {}, carrier=(INCOMING, "rojo=00f0, a@b=c "))
    assert kept is not None
    kept.end()
    finished = exporter.get_finished_spans()
    assert all(s.parent is not None and s.parent.span_id == 0xb7ad6b7169203331 for s in finished)
    assert [bool(s.context and s.context.trace_state) for s in finished] == [False] * 6 + [True]
    assert caplog.records == []  # (OpenTelemetry logs a warning for each one it parses)
