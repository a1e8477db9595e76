"""A slow browser on an event stream fed by MQTT while a publisher floods the topic: does the
server's memory grow?

Not a throughput comparison (there is no peer with bridges): a memory measurement. One process
serves an event stream (Hypercorn's trio worker) fed by a :class:`trionet.bridges.Bridge` on an
MQTT subscription to a private mosquitto; a slow client (a raw socket with a 4 KiB receive
buffer, reading 1 KiB every 20 ms) holds one stream open while a publisher *process* (raw paho,
so its memory is not counted) publishes N QoS 0 messages of 256 B as fast as it can. Every 20 ms
the server samples its RSS and the messages buffered between subscription and response.

Contenders, interleaved, each round in a fresh server:

* ``drop-oldest`` and ``pause``: the bridge, 64 messages per stream;
* ``unbounded``: the naive gateway the bridge replaces: a task copies the subscription into an
  unbounded memory channel that the event stream reads (what a hand-written endpoint does).

Rows (bench/_harness.py's table and JSON line; lower is better; the naive gateway is the
baseline): the most messages buffered between subscription and response (limit: the bridge's
capacity, for ``pause``; a bridge run above it fails the row), the server's RSS growth (the
highest sample above the RSS at the start of the run) and the messages dropped. (tracemalloc
is not used: tracing every allocation slows the server about threefold, and the flood then
overruns mosquitto's queue instead of the bridge's.)

Run: ``.venv/bin/python bench/bridges_memory.py [--quick] [--rounds N]`` (quick: 20 000
messages; else 50 000).
"""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from _harness import Contender, Row, main_args, measure_rows, report_rows

from trionet.asgi import (
    ASGIApplication,
    EventSourceResponse,
    Request,
    Response,
    Router,
    ServerSentEvent,
    serve,
)
from trionet.bridges import Bridge, describe, mqtt_source
from trionet.mqtt import MQTTClient, open_mqtt_client
from trionet.testing import MosquittoServer

PUBLISHER = r"""
import sys, paho.mqtt.client as mqtt
host, port, topic, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.max_queued_messages_set(0)
client.connect(host, port)
client.loop_start()
payload = b"x" * 256
for n in range(count):
    client.publish(topic, payload, qos=0)
client.publish(topic, b"end", qos=1).wait_for_publish()
client.loop_stop()
client.disconnect()
"""

CAPACITY = 64


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def naive_endpoint(client: MQTTClient, topic: str, buffered: list[int]) -> Any:
    """The hand-written gateway: subscription -> unbounded channel -> event stream."""

    async def endpoint(request: Request) -> Response:
        send, receive = trio.open_memory_channel[Any](math.inf)

        class Stream(Response):
            async def send_to(self, scope: Any, receive_: Any, send_: Any) -> None:
                async with trio.open_nursery() as nursery:
                    async def copy() -> None:
                        async with client.subscription(topic) as messages:
                            async for message in messages:
                                try:
                                    send.send_nowait(ServerSentEvent(describe(message)))
                                except trio.BrokenResourceError:
                                    return  # the browser left
                                buffered[0] = max(buffered[0],
                                                  receive.statistics().current_buffer_used)
                    nursery.start_soon(copy)
                    await EventSourceResponse(receive).send_to(scope, receive_, send_)
                    nursery.cancel_scope.cancel()

        return Stream()

    return endpoint


async def one_run(kind: str, broker: MosquittoServer, count: int) -> dict[str, float]:
    info = broker.info
    topic = f"bench/bridges/{kind}"
    samples: list[tuple[int, int]] = []
    buffered = [0]
    rss_start = rss_kib()
    bridges: list[Bridge[Any]] = []
    with trio.fail_after(120):
        await _serve_and_flood(kind, info, topic, count, samples, buffered, bridges)
    bridge = bridges[0] if bridges else None
    stats = bridge.statistics if bridge else None
    return {
        "rss_growth_kib": max(s[0] for s in samples) - rss_start,
        "max_buffered": max(max(s[1] for s in samples), stats.high_water if stats else 0,
                            buffered[0]),
        "dropped": stats.dropped if stats else 0,
    }


async def _serve_and_flood(kind: str, info: Any, topic: str, count: int,
                           samples: list[tuple[int, int]], buffered: list[int],
                           bridges: list[Bridge[Any]]) -> None:
    async with open_mqtt_client(f"mqtt://{info.host}:{info.port}") as client, \
            trio.open_nursery() as nursery:
        router = Router()
        bridge: Bridge[Any] | None = None
        if kind == "unbounded":
            router.add_route("/events", naive_endpoint(client, topic, buffered))
        else:
            bridge = Bridge(mqtt_source(client, topic), max_buffer_size=CAPACITY,
                            overflow=kind)  # type: ignore[arg-type]
            router.add_route("/events", bridge.event_stream)
            bridges.append(bridge)
        address = await nursery.start(serve, ASGIApplication(router), "127.0.0.1:0")

        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((address.host, address.port))
        stream = trio.SocketStream(sock)
        await stream.send_all(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(1024)

        async def sample() -> None:
            while True:
                level = bridge.statistics.buffered if bridge else buffered[0]
                samples.append((rss_kib(), level))
                await trio.sleep(0.02)

        nursery.start_soon(sample)
        publisher = await trio.lowlevel.open_process(
            [sys.executable, "-c", PUBLISHER, info.host, str(info.port), topic, str(count)])
        while publisher.poll() is None:
            await stream.receive_some(1024)  # the slow browser: about 50 KiB/s
            await trio.sleep(0.02)
        await publisher.wait()
        await stream.aclose()
        nursery.cancel_scope.cancel()


def main() -> None:
    args = main_args(__doc__.split("\n")[0])
    count = 20_000 if args.quick else 50_000
    kinds = ["unbounded", "drop-oldest", "pause"]  # the baseline first
    cached: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    with MosquittoServer() as broker:
        for kind in kinds:  # warm-up (imports, first-use caches), not counted
            trio.run(one_run, kind, broker, 200)

        def measure(kind: str) -> float:
            run = trio.run(one_run, kind, broker, count)
            cached[kind].append(run)
            return run["max_buffered"]

        def replay(kind: str, key: str) -> Callable[[], float]:
            taken = iter(cached[kind])
            return lambda: next(taken)[key]

        buffered = Row(
            f"most messages buffered, slow SSE reader, {count} x 256 B flood",
            [Contender(kind, partial(measure, kind)) for kind in kinds],
            unit="messages", higher_is_better=False, limit=CAPACITY,
        )
        measure_rows([buffered], rounds=args.rounds)
        rows = [buffered]
        for key, title, unit in (("rss_growth_kib", "server RSS growth", "KiB"),
                                 ("dropped", "messages dropped", "messages")):
            row = Row(f"{title}, slow SSE reader", [
                Contender(kind, replay(kind, key)) for kind in kinds],
                unit=unit, higher_is_better=False, replays=buffered)
            measure_rows([row], rounds=args.rounds)
            rows.append(row)
    over = [kind for kind in ("drop-oldest", "pause")
            if any(value > CAPACITY for value in buffered.results[kind])]
    if over:
        buffered.failed = f"{', '.join(over)} buffered more than {CAPACITY} messages"
    report_rows("bridges_memory", rows, rounds=args.rounds,
                note=f"bridge capacity {CAPACITY} messages per stream; RSS is noisy within one "
                     "process (memory freed by one run is reused by the next)")


if __name__ == "__main__":
    main()
