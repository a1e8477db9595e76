"""Server-sent events: a live feed of prices, served by Hypercorn on trio.

Run it as a program: it serves the feed on a free loopback port and reads three events from it
over a real connection. Or serve it, ``trionet serve asgi_sse:app``, and open
``http://127.0.0.1:8000/`` in a browser.
"""

import itertools
from collections.abc import AsyncIterator

import trio

from trionet.asgi import (
    ASGIApplication,
    BoundAddress,
    EventSourceResponse,
    Request,
    Response,
    ServerSentEvent,
    serve,
)

app = ASGIApplication()

PAGE = """<!doctype html><ul id="prices"></ul><script>
const feed = new EventSource("/prices");
feed.addEventListener("price", (e) => {
  const item = document.createElement("li");
  item.textContent = e.data;
  document.getElementById("prices").append(item);
});
</script>"""


@app.route("/")
async def index(request: Request) -> Response:
    return Response.html(PAGE)


async def price_events(start: int) -> AsyncIterator[ServerSentEvent]:
    # Pulled only as fast as the client reads; cancelled when it goes away.
    for number in itertools.count(start):
        yield ServerSentEvent({"widget": 2.5 + number / 100}, event="price", id=number)
        await trio.sleep(0.01)


def resume(last_event_id: str | None) -> AsyncIterator[ServerSentEvent]:
    # A reconnecting browser sends the id of the last event it saw: resume after it.
    if last_event_id is None or not last_event_id.isdigit():
        return price_events(0)
    return price_events(int(last_event_id) + 1)


@app.route("/prices")
async def prices(request: Request) -> Response:
    # Given a function, the response calls it with the client's Last-Event-ID (checked:
    # at most 1 KiB, no control characters), once the request is being answered.
    return EventSourceResponse(resume, ping=15, retry=2000)


async def read_events(address: BoundAddress, count: int, last_id: bytes | None = None
                      ) -> bytes:
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with stream:
        # HTTP/1.0, so that the body comes without chunked framing and reads as it is.
        header = b"Last-Event-ID: " + last_id + b"\r\n" if last_id else b""
        await stream.send_all(b"GET /prices HTTP/1.0\r\n" + header + b"\r\n")
        received = b""
        while received.count(b"\nid: ") < count:
            received += await stream.receive_some(4096)
    head, _, events = received.partition(b"\r\n\r\n")
    assert b"content-type: text/event-stream; charset=utf-8" in head.lower()
    return events


async def main() -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve, app, "127.0.0.1:0")
        events = await read_events(address, 3)
        print(events.decode())
        assert events.startswith(b"retry: 2000\n\n")
        assert b"event: price\nid: 0\ndata: {\"widget\":2.5}\n\n" in events
        # The connection dropped after id 2: reconnecting resumes with id 3.
        again = await read_events(address, 1, last_id=b"2")
        assert b"event: price\nid: 3\n" in again
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
