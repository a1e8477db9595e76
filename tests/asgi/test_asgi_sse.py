"""Server-sent events: framing, keep-alive, disconnects and backpressure (through a real server
where the connection matters)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from asgi_support import running_server

from trionet.asgi import (
    BoundAddress,
    EventSourceResponse,
    Request,
    Response,
    Router,
    ServerSentEvent,
    TestClient,
)

# -- framing -------------------------------------------------------------------------------


def test_multi_line_data_becomes_one_data_field_per_line() -> None:
    event = ServerSentEvent("a\r\nb\rc\nd", event="update", id=7, retry=1500)
    assert event.encode() == (
        b"event: update\nid: 7\nretry: 1500\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )
    # A line that looks like a field stays data: no injected "event:" or blank line.
    sneaky = ServerSentEvent("x\n\nevent: admin\ndata: y")
    assert sneaky.encode() == b"data: x\ndata: \ndata: event: admin\ndata: data: y\n\n"
    assert ServerSentEvent("").encode() == b"data: \n\n"
    assert ServerSentEvent({"n": 1, "s": "é"}).encode() == 'data: {"n":1,"s":"é"}\n\n'.encode()
    assert ServerSentEvent(b"raw").encode() == b"data: raw\n\n"
    assert ServerSentEvent(comment="two\nlines").encode() == b": two\n: lines\n\n"


@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"event": "a\rb"}, {"id": "1\n2"}, {"id": "1\x002"}, {"retry": -1}],
)
def test_single_line_fields_reject_line_breaks(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ServerSentEvent("data", **kwargs)  # type: ignore[arg-type]


async def test_items_headers_and_head_in_process() -> None:
    router = Router()
    closed: list[str] = []

    async def produce() -> AsyncIterator[object]:
        try:
            yield "plain"
            yield {"data": [1, 2], "event": "list", "id": "a"}
            yield ServerSentEvent("obj", retry=10)
        finally:
            closed.append("closed")

    @router.route("/events")
    async def events(request: Request) -> Response:
        return EventSourceResponse(produce(), retry=3000, headers={"X-Extra": "1"})

    async with TestClient(router) as client:
        response = await client.get("/events")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-extra"] == "1"
        assert "content-length" not in response.headers
        assert response.text == (
            "retry: 3000\n\n"
            "data: plain\n\n"
            "event: list\nid: a\ndata: [1,2]\n\n"
            "retry: 10\ndata: obj\n\n"
        )
        assert closed == ["closed"]
        head = await client.head("/events")
        assert (head.status_code, head.text) == (200, "")
        assert closed == ["closed"]  # HEAD closes the generator without running it


async def test_ping_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventSourceResponse(trio.open_memory_channel[object](0)[1], ping=0)


# -- through a real server -----------------------------------------------------------------


async def open_events(address: BoundAddress, path: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return stream


async def read_until(stream: trio.SocketStream, data: bytearray, marker: bytes) -> None:
    start = 0
    while data.find(marker, start) < 0:
        start = max(0, len(data) - len(marker))
        chunk = await stream.receive_some(1 << 20)
        assert chunk, f"connection closed before {marker!r}"
        data += chunk


async def test_keep_alive_comments_while_the_producer_is_idle() -> None:
    send_channel, receive_channel = trio.open_memory_channel[object](0)
    router = Router()

    @router.route("/events")
    async def events(request: Request) -> Response:
        return EventSourceResponse(receive_channel, ping=0.01, ping_comment="still here")

    async with running_server(router) as address:
        stream = await open_events(address, "/events")
        async with stream:
            data = bytearray()
            await read_until(stream, data, b"text/event-stream")
            await read_until(stream, data, b": still here\n\n")
            await send_channel.send(ServerSentEvent("after", id=1))
            await read_until(stream, data, b"id: 1\ndata: after\n\n")
            # And pings go on after an event.
            del data[:]
            await read_until(stream, data, b": still here\n\n")
            await send_channel.aclose()
            await read_until(stream, data, b"0\r\n\r\n")  # the chunked body's end


async def test_client_disconnect_cancels_the_producer_and_closes_the_channel() -> None:
    router = Router()
    generator_closed = trio.Event()
    cancelled: list[bool] = []
    send_channel, receive_channel = trio.open_memory_channel[object](1)

    async def produce() -> AsyncIterator[str]:
        try:
            yield "first"
            await trio.sleep_forever()
            yield "never"
        except trio.Cancelled:
            cancelled.append(True)
            raise
        finally:
            generator_closed.set()

    @router.route("/generator")
    async def from_generator(request: Request) -> Response:
        return EventSourceResponse(produce())

    @router.route("/channel")
    async def from_channel(request: Request) -> Response:
        return EventSourceResponse(receive_channel)

    with trio.fail_after(20):  # a hang guard, not a measurement
        async with running_server(router) as address:
            stream = await open_events(address, "/generator")
            data = bytearray()
            await read_until(stream, data, b"data: first\n\n")
            await stream.aclose()
            await generator_closed.wait()
            assert cancelled == [True]

            stream = await open_events(address, "/channel")
            await send_channel.send("one")
            data = bytearray()
            await read_until(stream, data, b"data: one\n\n")
            await stream.aclose()
            # The response closed its end: the producer learns it on its next send.
            with pytest.raises(trio.BrokenResourceError):
                while True:
                    await send_channel.send("more")


async def test_a_client_that_does_not_read_pauses_the_producer() -> None:
    size, total = 64 * 1024, 200
    pulled = 0
    finished = trio.Event()
    router = Router()

    async def produce() -> AsyncIterator[ServerSentEvent]:
        nonlocal pulled
        for number in range(total):
            pulled += 1
            yield ServerSentEvent("x" * size, id=number)
        finished.set()

    @router.route("/events")
    async def events(request: Request) -> Response:
        return EventSourceResponse(produce(), ping=None)

    async with running_server(router) as address:
        stream = await open_events(address, "/events")
        async with stream:
            # Nothing is read: the server fills the socket buffers, then waits.
            await trio.testing.wait_all_tasks_blocked(cushion=0.02)
            stalled = pulled
            # Kernel buffers (a few MiB on loopback) plus the worker's queue, in 64 KiB events:
            # far fewer than the 400 an unbounded producer would have been pulled for.
            assert 0 < stalled < total // 2
            assert not finished.is_set()
            # Reading lets the producer go on, to the end, with every event in order.
            data = bytearray()
            await read_until(stream, data, b"0\r\n\r\n")
            assert finished.is_set()
            ids = [int(line[4:]) for line in bytes(data).split(b"\n") if line.startswith(b"id: ")]
            assert ids == list(range(total))
