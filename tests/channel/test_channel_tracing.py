"""trionet.tracing for the Channel and RPC: a CLIENT span per call, a SERVER span per request
served (current while the handler runs); no context on the wire, which stays aiomas'."""

from __future__ import annotations

from typing import Any

import trio
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_channel_interop import aiomas_server
from tracing_checks import ids, spans

from trionet import rpc, tracing
from trionet.channel import open_connection
from trionet.errors import RemoteException


class Service:
    router = rpc.Service()

    def __init__(self) -> None:
        self.inside: list[trace.Span] = []

    @rpc.expose
    def add(self, a: int, b: int) -> int:
        self.inside.append(trace.get_current_span())
        return a + b

    @rpc.expose
    async def divide(self, a: int, b: int) -> float:
        await trio.lowlevel.checkpoint()
        self.inside.append(trace.get_current_span())
        return a / b




async def test_rpc_calls_make_client_and_server_spans(
    span_exporter: InMemorySpanExporter,
) -> None:
    service = Service()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            (address,) = await nursery.start(rpc.start_server, ("127.0.0.1", 0), service)
            async with rpc.open_connection(address[:2]) as client:
                with tracing.tracer().start_as_current_span("caller") as caller:
                    assert await client.remote.add(1, 2) == 3
                try:
                    await client.remote.divide(1, 0)
                except RemoteException as exc:
                    assert exc.remote_type == "ZeroDivisionError"
                else:
                    raise AssertionError("no RemoteException")
            nursery.cancel_scope.cancel()
    add_client, divide_client = spans(span_exporter, trace.SpanKind.CLIENT)
    add_server, divide_server = spans(span_exporter, trace.SpanKind.SERVER)
    assert [s.name for s in (add_client, add_server)] == ["add", "add"]
    assert add_client.parent is not None and (
        add_client.parent.trace_id, add_client.parent.span_id) == ids(caller)
    assert add_client.attributes == {
        "rpc.system": "aiomas", "rpc.method": "add", "server.address": "127.0.0.1",
        "server.port": address[1], "network.transport": "tcp"}
    assert add_server.attributes is not None
    assert add_server.attributes["rpc.method"] == "add"
    assert add_server.attributes["client.address"] == "127.0.0.1"
    # aiomas' frames carry no trace context: the server's span starts a trace of its own.
    assert add_server.parent is None
    assert [ids(s) for s in service.inside] == [ids(add_server), ids(divide_server)]
    for span, error in ((divide_client, "RemoteException"), (divide_server, "ZeroDivisionError")):
        assert span.status.status_code is trace.StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == error


async def test_the_wire_stays_aiomas(span_exporter: InMemorySpanExporter) -> None:
    answers: list[Any] = []
    with trio.fail_after(20):
        async with aiomas_server("server", "json") as address, \
                open_connection(address) as channel:
            answers.append(await channel.send(["echo", ["ping", 42]]))
    assert answers == [["ping", 42]]
    (client,) = spans(span_exporter, trace.SpanKind.CLIENT)
    assert client.name == "aiomas request"
    assert client.attributes is not None and "rpc.method" not in client.attributes
