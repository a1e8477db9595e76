"""``Last-Event-ID`` resume of :class:`EventSourceResponse`: a client that reconnects over a
real server connection gets the events after the last one it saw; malformed ids are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import count

import httpx
import pytest
import trio
from asgi_support import raw_http, running_server

from trionet import asgi
from trionet.asgi import EventSourceResponse, Request, Response, ServerSentEvent

app = asgi.ASGIApplication()
#: The Last-Event-ID each call of the factory got, in order.
resumed_from: list[str | None] = []


@app.route("/feed")
async def feed(request: Request) -> Response:
    def produce(last_id: str | None) -> AsyncIterator[ServerSentEvent]:
        resumed_from.append(last_id)
        return numbers(int(last_id) + 1 if last_id is not None else 0)

    async def numbers(first: int) -> AsyncIterator[ServerSentEvent]:
        for n in count(first):
            yield ServerSentEvent(f"event {n}", id=n)
            await trio.lowlevel.checkpoint()

    return EventSourceResponse(produce, retry=250, max_last_event_id=16)


@app.route("/id")
async def show_id(request: Request) -> Response:
    return Response.json({"last": asgi.last_event_id(request)})


async def read_events(address: asgi.BoundAddress, wanted: int, last_id: str | None = None
                      ) -> tuple[list[str], list[str]]:
    """What an ``EventSource`` does: GET the feed (with ``Last-Event-ID`` when it reconnects),
    read events until *wanted* ids arrived, hang up. The ids, and the ``retry`` fields seen."""
    header = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        # HTTP/1.0: the body comes without chunked framing and reads as it is.
        await stream.send_all(f"GET /feed HTTP/1.0\r\n{header}\r\n".encode())
        received = b""
        while received.count(b"\nid: ") < wanted:
            chunk = await stream.receive_some()
            assert chunk, received
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    fields = [line.partition(": ") for line in body.decode().split("\n")]
    ids = [value for name, _, value in fields if name == "id"][:wanted]
    return ids, [value for name, _, value in fields if name == "retry"]


async def test_a_reconnecting_client_resumes_after_its_last_event() -> None:
    resumed_from.clear()
    with trio.fail_after(20):
        async with running_server(app) as address:
            ids, retries = await read_events(address, 3)
            assert ids == ["0", "1", "2"] and retries == ["250"]
            # The connection is gone; the client reconnects with the last id it saw.
            resumed, _ = await read_events(address, 2, last_id=ids[-1])
            assert resumed == ["3", "4"]
    assert resumed_from == [None, "2"]


@pytest.mark.parametrize("header", [
    b"Last-Event-ID: 0123456789abcdefX",  # 17 bytes: over max_last_event_id=16
    b"Last-Event-ID: 1\x012",
    b"Last-Event-ID: \xff\xfe",
], ids=["too-long", "control-character", "not-utf8"])
async def test_a_malformed_last_event_id_is_refused(header: bytes) -> None:
    resumed_from.clear()
    request = b"GET /feed HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + header + b"\r\n\r\n"
    with trio.fail_after(20):
        async with running_server(app) as address:
            answer = await raw_http(address, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"Last-Event-ID" in answer
    assert resumed_from == []  # the producer was never made


async def test_last_event_id_in_a_handler() -> None:
    with trio.fail_after(20):
        async with running_server(app) as address, \
                httpx.AsyncClient(base_url=address.url) as client:
            assert (await client.get("/id")).json() == {"last": None}
            assert (await client.get("/id", headers={"Last-Event-ID": ""})).json() == {
                "last": None}
            named = await client.get("/id", headers={"Last-Event-ID": "orders:7"})
            assert named.json() == {"last": "orders:7"}
            too_long_id = "x" * (asgi.MAX_LAST_EVENT_ID + 1)
            too_long = await client.get("/id", headers={"Last-Event-ID": too_long_id})
            assert too_long.status_code == 400


def test_content_must_be_events_or_a_factory() -> None:
    with pytest.raises(TypeError, match="Last-Event-ID"):
        EventSourceResponse(42)  # type: ignore[arg-type]
