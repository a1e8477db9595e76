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


@app.route("/prices")
async def prices(request: Request) -> Response:
    # A reconnecting browser sends the last id it saw: resume after it.
    start = int(request.headers.get("last-event-id", "-1")) + 1

    async def produce() -> AsyncIterator[ServerSentEvent]:
        # Pulled only as fast as the client reads; cancelled when it goes away.
        for number in itertools.count(start):
            yield ServerSentEvent({"widget": 2.5 + number / 100}, event="price", id=number)
            await trio.sleep(0.01)

    return EventSourceResponse(produce(), ping=15)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve, app, "127.0.0.1:0")
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            # HTTP/1.0, so that the body comes without chunked framing and reads as it is.
            await stream.send_all(b"GET /prices HTTP/1.0\r\n\r\n")
            received = b""
            while received.count(b"\n\n") < 3:  # three events
                received += await stream.receive_some(4096)
        head, _, events = received.partition(b"\r\n\r\n")
        assert b"content-type: text/event-stream; charset=utf-8" in head.lower()
        print(events.decode())
        assert b"event: price\nid: 0\ndata: {\"widget\":2.5}\n\n" in events
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
