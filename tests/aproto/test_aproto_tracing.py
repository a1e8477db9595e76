"""trionet.tracing for AsyncAProto: a SERVER span per packet handled (named after its handler,
current while it runs), a CLIENT span per request; no context on the wire (no header field)."""

from __future__ import annotations

import trio
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trionet import tracing
from trionet.aproto import AsyncClient, Filters, HandlerClient, Packet, Server


async def test_requests_make_client_and_server_spans(
    span_exporter: InMemorySpanExporter,
) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)
    inside: list[trace.Span] = []

    @server.add_handler(Filters.Fields(cmd="ping"))
    async def ping(client: HandlerClient, packet: Packet) -> None:
        inside.append(trace.get_current_span())
        await client.send({"status": "ok"})

    @server.add_handler(Filters.Fields(cmd="boom"))
    async def boom(client: HandlerClient, packet: Packet) -> None:
        raise RuntimeError("handler bug")

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            async with AsyncClient(tls=False) as client:
                await client.connect("127.0.0.1", port)
                with tracing.tracer().start_as_current_span("caller") as caller:
                    assert await client.request({"cmd": "ping"}) == {"status": "ok"}
                assert await client.request_many([{"cmd": "ping"}] * 2) == [
                    {"status": "ok"}] * 2
                await client.send({"cmd": "boom"})
                assert await client.receive_raw() == b""  # the server closed the connection
            server.stop()
    spans = span_exporter.get_finished_spans()
    clients = [s for s in spans if s.kind is trace.SpanKind.CLIENT]
    servers = [s for s in spans if s.kind is trace.SpanKind.SERVER]
    assert [s.name for s in clients] == ["aproto request"] * 2
    assert clients[0].parent is not None
    assert clients[0].parent.span_id == caller.get_span_context().span_id
    assert clients[0].attributes == {"rpc.system": "aproto", "server.address": "127.0.0.1",
                                     "server.port": port, "network.transport": "tcp"}
    assert clients[1].attributes is not None
    assert clients[1].attributes["trionet.aproto.request_count"] == 2
    assert [s.name for s in servers] == ["ping", "ping", "ping", "boom"]
    assert [s.parent for s in servers] == [None] * 4  # a trace of its own each
    assert [span.get_span_context().span_id for span in inside] == [
        s.context.span_id for s in servers[:3] if s.context is not None]
    assert servers[0].attributes is not None
    assert servers[0].attributes["rpc.method"] == "ping"
    assert servers[0].attributes["client.address"] == "127.0.0.1"
    assert servers[3].status.status_code is trace.StatusCode.ERROR
    assert servers[3].attributes is not None
    assert servers[3].attributes["error.type"] == "RuntimeError"
