"""The live page of ``trionet demo``: a browser page that shows messages of a topic as they come.

``GET /live`` serves one self-contained HTML page (no network resources: inline script and
style) that opens an ``EventSource`` on ``/live/events``; ``/ws/live`` is the same stream over
a websocket. Both are a :class:`trionet.bridges.Bridge`: on an ``mqtt://`` broker, fed by an MQTT
subscription to ``trionet/demo/live/#`` on the stack's own MQTT client (so anything published
there, by any MQTT client, shows up); on ``memory://`` and ``kafka://``, by a bus socket on the
stack's broker. The orders consumer announces every order it handles on
``trionet/demo/live/orders`` (:func:`announce`), and ``trionet demo`` reads them back through
``/live/events`` (:func:`read_live_events`), as a browser on the page would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from ..asgi import Request, Response, Router
from ..bridges import Bridge, bus_source, mqtt_source
from ..bus import BusMessage, BusSocket, MqttConfig, parse_url

__all__ = ["LIVE_FILTER", "LIVE_TOPIC", "add_live_routes", "announce", "mqtt_client_for",
           "read_live_events"]

#: Where the demo's live readings are published (and the page's subscription).
LIVE_TOPIC = "trionet/demo/live"
LIVE_FILTER = f"{LIVE_TOPIC}/#"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>trionet live</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 2em; }
#state { color: #666; }
li { font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1>trionet: live messages</h1>
<p>Messages published on <code>TOPIC</code>, streamed over server-sent events
(<code>/live/events</code>; the same stream is on the websocket <code>/ws/live</code>).</p>
<p id="state">connecting</p>
<ol id="messages"></ol>
<script>
"use strict";
const list = document.getElementById("messages");
const state = document.getElementById("state");
let received = 0;
let opened;
const waiting = [];
window.trionetLive = {
  opened: new Promise((resolve) => { opened = resolve; }),
  // Resolves with the texts shown once at least n messages have arrived.
  atLeast(n) {
    return new Promise((resolve) => { waiting.push([n, resolve]); check(); });
  },
};
function texts() { return Array.from(list.children, (li) => li.textContent); }
function check() {
  for (let i = waiting.length - 1; i >= 0; i--) {
    if (received >= waiting[i][0]) { waiting[i][1](texts()); waiting.splice(i, 1); }
  }
}
const source = new EventSource("/live/events");
source.onopen = () => { state.textContent = "connected"; opened(true); };
source.onerror = () => { state.textContent = "reconnecting"; };
source.onmessage = (event) => {
  const message = JSON.parse(event.data);
  const item = document.createElement("li");
  item.textContent = message.topic + ": " + message.payload;
  list.appendChild(item);
  received += 1;
  check();
};
</script>
</body>
</html>
"""


def mqtt_client_for(broker: str) -> Callable[[], Any] | None:
    """For an ``mqtt://`` bus broker URL, a function that opens an MQTT client to the same
    broker (an async context manager); ``None`` for other brokers."""
    config = parse_url(broker)
    if not isinstance(config, MqttConfig):
        return None

    @asynccontextmanager
    async def open_client() -> AsyncIterator[Any]:
        from ..mqtt import open_mqtt_client

        async with open_mqtt_client(
            config.host, config.port, username=config.username, password=config.password,
            allow_insecure_auth=config.allow_insecure_auth, tls=config.tls or None,
        ) as client:
            yield client

    return open_client


def add_live_routes(router: Router, broker: str, mqtt_client: Callable[[], Any]) -> Bridge[Any]:
    """Add ``/live``, ``/live/events`` and ``/ws/live`` to *router*; returns their bridge.

    Args:
        broker: the stack's bus broker URL.
        mqtt_client: returns the stack's open MQTT client (used on ``mqtt://`` brokers).
    """
    source: Any
    if isinstance(parse_url(broker), MqttConfig):
        source = mqtt_source(mqtt_client, LIVE_FILTER)
    else:
        source = bus_source(broker, LIVE_FILTER, name="live")
    live: Bridge[Any] = Bridge(source, max_buffer_size=64)
    page = _PAGE.replace("TOPIC", LIVE_FILTER)

    @router.route("/live")
    async def live_page(request: Request) -> Response:
        return Response.html(page)

    router.add_route("/live/events", live.event_stream)
    router.add_websocket_route("/ws/live", live.websocket)
    return live


async def announce(socket: BusSocket, broker: str, name: str, text: str) -> None:
    """Publish *text* on ``trionet/demo/live/<name>``, so that the live page shows it: as a
    plain MQTT payload on an ``mqtt://`` broker (what the page's MQTT subscription reads), as a
    bus message elsewhere."""
    topic = f"{LIVE_TOPIC}/{name}"
    if isinstance(parse_url(broker), MqttConfig):
        await socket.publish_raw(topic, text.encode())
    else:
        await socket.publish(BusMessage(text, topic, content_type="text/plain"))


async def read_live_events(
    host: str, port: int, wanted: int,
    *, task_status: trio.TaskStatus[Callable[[], Awaitable[list[dict[str, Any]]]]],
) -> None:
    """Open ``/live/events`` as a browser would; once the stream has started (subscribed),
    report a function that reads *wanted* events and closes the stream."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(b"GET /live/events HTTP/1.0\r\nHost: demo\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        events: list[dict[str, Any]] = []
        done = trio.Event()

        async def read() -> list[dict[str, Any]]:
            await done.wait()
            return events

        task_status.started(read)
        while data.count(b"\ndata: ") < wanted:
            data += await stream.receive_some(4096)
    events.extend(json.loads(line[6:]) for line in data.split(b"\n")
                  if line.startswith(b"data: "))
    done.set()
