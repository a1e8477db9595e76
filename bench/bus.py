"""Message bus throughput and round trips: trionet.bus vs the transport used directly, one run.

Rows (each trionet contender against the baseline a user would write without the bus):

* ``memory produce→consume``: N messages of 100 bytes from a producer task to a consumer.
  Baseline: a bare ``trio.open_memory_channel(1000)``, ``await send.send(payload)`` and
  ``async for payload in receive``. trionet: a socket of ``memory://`` publishing
  :class:`BusMessage` objects to a consumer application (``@app.application``). Goal ≥ 0.5×.
* ``mqtt produce→consume``: N messages with QoS 1 through a private mosquitto, published one
  after the other (each waits for its PUBACK) on one connection and received on another.
  Baseline: :mod:`trionet.mqtt` directly (``client.publish`` / ``client.subscription``). trionet:
  ``mqtt://`` socket → consumer application. Goal ≥ 0.85×.
* ``kafka produce→consume``: the same through a private noida-db (or
  ``TRIONET_KAFKA_BOOTSTRAP``). Baseline: :mod:`trionet.kafka` directly (``await
  producer.send`` one after the other, ``async for record in consumer``). trionet: ``kafka://``
  socket → consumer application. Goal ≥ 0.85×. A second bus contender runs on the
  confluent-kafka engine (``kafka://...&backend=confluent``, librdkafka), in its own group.
* ``... request/response``: sequential round trips. Baselines: a pair of memory channels;
  ``MQTTClient.request``/``reply``; ``KafkaRequester`` with ``serve_requests``. trionet:
  ``socket.request`` to a responder application. No goal against the baseline (reported).

* ``... typed produce→consume`` / ``... typed request/response`` (every broker): the same,
  with a typed message: a ``Sample`` (four fields, about 100 bytes of JSON). trionet: a
  msgspec ``Struct``, ``await socket.publish(sample, topic)``, consumers declared as
  ``async def consume(sample: Sample)`` (decoded and validated by the bus), a responder that
  returns a ``Sample`` (the bus sends it back as the reply), the caller decoding the reply
  with a ``msgspec.json.Decoder(Sample)``. FastStream: a pydantic model with the same fields,
  as its documentation shows typed subscribers (``async def consume(body: Sample)``,
  ``broker.publish(sample, ...)``, a subscriber returning the model, the reply body
  validated back into it). The rows' baseline is the bus with bytes (``raw bus``): the
  typed/raw ratio is the cost of encoding and validating per message. Goal: the typed bus
  ≥ 1.0× FastStream on memory and MQTT; on Kafka (both engines) reported against 0.9×,
  like the raw row (no request/response for FastStream there, as above).

What users pick instead of a bus: FastStream 0.7 (bench-only dependency), in its own process
since it runs on asyncio (``bench/_bus_peers.py``, which does not import trionet): an
``MQTTBroker`` or ``KafkaBroker`` with a decorated subscriber counting the messages,
``await broker.publish(...)`` one after the other (QoS 1 on MQTT, returning on the PUBACK;
Kafka: FastStream's default, waiting for the broker's acknowledgement), and ``await
broker.request(...)`` to a subscriber that returns the body. It is a contender of the mqtt rows
and of ``kafka produce→consume``; FastStream 0.7's ``KafkaBroker`` has no ``request()``
(outside its test client), so it is not in the Kafka round-trip row. FastStream runs without
a server only inside its test client (``TestMQTTBroker``, an in-memory broker that calls the
subscribers directly): that is its contender in the memory rows, with fewer messages (it
handles about 1% of the bus's rate; the rate is what is compared). Goal: the bus ≥ 0.9×
FastStream, from the per-round ratios of the same rounds, judged in the table beside the row's
other goal (the row's ``goal``/``met`` in the JSON line hold one entry per goal). A FastStream
run that received fewer messages than it sent fails its row (``lost_messages``); a trionet
contender that does fails the whole run (its measurement times out).

Everything of one broker lives in one trio run: clients, sockets and applications are made and
subscribed before the rounds, so connection set-up and group joins are outside the timings; the
contenders of a row alternate round by round, and each measurement is bounded (``--timeout``).

Run: ``.venv/bin/python bench/bus.py [--quick] [--rounds N] [--only memory,mqtt,kafka]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(0, str(_HERE))

from _harness import Goal, Row, report_rows, row_load  # noqa: E402

# bench/kafka.py would shadow kafka-python (which trionet.kafka imports) from here on.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]

import msgspec  # noqa: E402

from trionet.bus import (  # noqa: E402
    BusMessage,
    BusSocket,
    DistributedApplication,
    encode_payload,
    from_url,
)

PAYLOAD = b"x" * 100


class Sample(msgspec.Struct):
    """The typed rows' message: about 100 bytes of JSON (FastStream's side: a pydantic model
    with the same fields, bench/_bus_peers.py)."""

    id: int
    name: str
    tags: list[str]
    value: float


SAMPLE = Sample(id=12345, name="sensor-kitchen-temperature-probe", tags=["home", "kitchen"],
                value=21.5)
SAMPLE_DECODER = msgspec.json.Decoder(Sample)
PEER = "FastStream"
PEER_GOAL = 0.9
#: The typed rows' goal against FastStream (issue 22).
TYPED_PEER_GOAL = 1.0
Measure = Callable[[], Awaitable[float]]


class Bench:
    """Collects per-round throughputs of a row's contenders and the per-round ratios."""

    def __init__(self, rounds: int, timeout: float) -> None:
        self.rounds = rounds
        self.timeout = timeout
        self.rows: list[Row] = []
        self.peers: list[FastStreamPeer] = []

    async def row(self, name: str, contenders: list[tuple[str, Measure]],
                  goal: float | None = None, peer_goal: float = PEER_GOAL) -> None:
        row = Row(name, [], None)
        if goal is not None:  # against the baseline: the bus on the default engine
            row.goals.append(Goal(goal, contender="trionet bus"))
        base = contenders[0][0]
        with row_load(row):
            for r in range(self.rounds):
                order = contenders if r % 2 == 0 else list(reversed(contenders))
                this_round: dict[str, float] = {}
                for label, measure in order:
                    with trio.fail_after(self.timeout):
                        this_round[label] = await measure()
                    row.results.setdefault(label, []).append(this_round[label])
                for label, _ in contenders[1:]:
                    row.ratios.setdefault(label, []).append(this_round[label] / this_round[base])
        # the table prints contender names from row.contenders: fill them in order
        row.contenders = [_Named(label) for label, _ in contenders]  # type: ignore[misc]
        if PEER in row.results:
            for label, _ in contenders:
                if label == "trionet bus" or label.startswith("trionet bus ("):
                    row.goals.append(Goal(peer_goal, baseline=PEER, contender=label))
        self.rows.append(row)


class FastStreamPeer:
    """FastStream in its own process (``bench/_bus_peers.py``), one job at a time."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self._buffer = b""
        self.lost: dict[str, list[int]] = {}

    @classmethod
    async def start(cls, nursery: trio.Nursery, kind: str, setup: dict[str, Any]
                    ) -> FastStreamPeer:
        process = await nursery.start(partial(
            trio.run_process, [sys.executable, str(_HERE / "_bus_peers.py"), kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, check=False))
        peer = cls(process)
        with trio.fail_after(120):
            await peer.ask({"op": "setup", **setup})
        return peer

    async def ask(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        await self._process.stdin.send_all(json.dumps(job).encode() + b"\n")
        while b"\n" not in self._buffer:
            data = await self._process.stdout.receive_some()
            if not data:
                raise RuntimeError("the FastStream worker died (its error is above)")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def measure(self, row: str, op: str, n: int) -> Measure:
        async def run() -> float:
            answer = await self.ask({"op": op, "n": n})
            if op == "throughput":
                self.lost.setdefault(row, []).append(answer["count"] - answer["received"])
            return float(answer["received"] if op == "throughput" else answer["count"]) / (
                answer["elapsed"])

        return run

    async def close(self) -> None:
        assert self._process.stdin is not None
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._process.stdin.send_all(b'{"op": "close"}\n')
        await self._process.stdin.aclose()
        with trio.move_on_after(30) as scope:
            await self._process.wait()
        if scope.cancelled_caught:
            self._process.kill()
            await self._process.wait()


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


class Counter:
    """Counts received messages; ``await wait(n)`` returns once *n* have arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = trio.Event()
        self.typed = 0
        self.typed_target = 0
        self.typed_done = trio.Event()

    def typed_hit(self) -> None:
        self.typed += 1
        if self.typed == self.typed_target:
            self.typed_done.set()

    def reset_typed(self, target: int) -> None:
        self.typed = 0
        self.typed_target = target
        self.typed_done = trio.Event()

    def reset(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done = trio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


def bus_consumer(url: str, topic: str, counter: Counter) -> DistributedApplication:
    app = DistributedApplication(url)

    @app.application(topic, name="bench-consumer")
    async def consume(message: BusMessage) -> None:
        counter.hit()

    @app.application(f"{topic}-rpc", name="bench-responder")
    async def respond(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, message.payload)

    # Typed: the payload decoded and validated into a Sample; the return value is the reply.
    @app.application(f"{topic}-typed", name="bench-typed-consumer")
    async def consume_typed(sample: Sample) -> None:
        counter.typed_hit()

    @app.application(f"{topic}-typed-rpc", name="bench-typed-responder")
    async def respond_typed(sample: Sample) -> Sample:
        return sample

    return app


def bus_contenders(publisher: BusSocket, topic: str, counter: Counter, n: int,
                   rr_n: int) -> tuple[Measure, Measure]:
    async def throughput() -> float:
        counter.reset(n)
        start = time.perf_counter()
        for _ in range(n):
            await publisher.publish(BusMessage(PAYLOAD, topic))
        await counter.done.wait()
        return n / (time.perf_counter() - start)

    async def round_trips() -> float:
        start = time.perf_counter()
        for _ in range(rr_n):
            await publisher.request(BusMessage(PAYLOAD, f"{topic}-rpc"), timeout=30)
        return rr_n / (time.perf_counter() - start)

    return throughput, round_trips


def typed_contenders(publisher: BusSocket, topic: str, counter: Counter, n: int,
                     rr_n: int) -> tuple[Measure, Measure]:
    """Publishing Sample objects (encoded by the bus) to a typed consumer; requests with a
    Sample to a typed responder, the reply decoded into a Sample."""
    async def throughput() -> float:
        counter.reset_typed(n)
        start = time.perf_counter()
        for _ in range(n):
            await publisher.publish(SAMPLE, f"{topic}-typed")
        await counter.typed_done.wait()
        return n / (time.perf_counter() - start)

    async def round_trips() -> float:
        start = time.perf_counter()
        for _ in range(rr_n):
            data, content_type = encode_payload(SAMPLE)
            reply = await publisher.request(
                BusMessage(data, f"{topic}-typed-rpc", content_type=content_type), timeout=30)
            SAMPLE_DECODER.decode(reply.payload)
        return rr_n / (time.perf_counter() - start)

    return throughput, round_trips


async def typed_rows(bench: Bench, broker: str, contenders: dict[str, tuple[Measure, Measure]],
                     peer: FastStreamPeer | None, peer_n: int, peer_rr_n: int,
                     peer_goal: float) -> None:
    """The typed rows of one broker: "raw bus" (bytes, the baseline: the typed/raw ratio is
    the cost of encoding and validation), FastStream with a pydantic model, the typed bus."""
    raw_tp, raw_rr = contenders.pop("raw bus")
    name = f"{broker} typed produce→consume"
    row: list[tuple[str, Measure]] = [("raw bus", raw_tp)]
    if peer is not None:
        row.append((PEER, peer.measure(name, "throughput", peer_n)))
    row += [(label, tp) for label, (tp, _) in contenders.items()]
    await bench.row(name, row, peer_goal=peer_goal)
    name = f"{broker} typed request/response"
    row = [("raw bus", raw_rr)]
    if peer is not None and broker != "kafka":
        row.append((PEER, peer.measure(name, "round_trips", peer_rr_n)))
    row += [(label, rr) for label, (_, rr) in contenders.items()]
    await bench.row(name, row, peer_goal=peer_goal)


# -- memory -------------------------------------------------------------------------------------


async def bench_memory(bench: Bench, n: int, rr_n: int, peer_n: int, peer_rr_n: int) -> None:
    url = f"memory://bench-{uuid.uuid4().hex[:8]}"
    topic = "bench/memory"
    counter = Counter()
    app = bus_consumer(url, topic, counter)
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        async with from_url(url).create_socket(name="bench-publisher") as publisher:
            bus_tp, bus_rr = bus_contenders(publisher, topic, counter, n, rr_n)

            async def channel_throughput() -> float:
                send, receive = trio.open_memory_channel[bytes](1000)
                start = time.perf_counter()
                async with trio.open_nursery() as inner:
                    async def consume() -> None:
                        count = 0
                        async for _ in receive:
                            count += 1
                            if count == n:
                                return

                    inner.start_soon(consume)
                    for _ in range(n):
                        await send.send(PAYLOAD)
                return n / (time.perf_counter() - start)

            async def channel_round_trips() -> float:
                req_send, req_receive = trio.open_memory_channel[bytes](0)
                rep_send, rep_receive = trio.open_memory_channel[bytes](0)
                async with trio.open_nursery() as inner:
                    async def respond() -> None:
                        async for request in req_receive:
                            await rep_send.send(request)

                    inner.start_soon(respond)
                    start = time.perf_counter()
                    for _ in range(rr_n):
                        await req_send.send(PAYLOAD)
                        await rep_receive.receive()
                    elapsed = time.perf_counter() - start
                    inner.cancel_scope.cancel()
                return rr_n / elapsed

            peer = await FastStreamPeer.start(nursery, "memory", {"topic": "bench/faststream"})
            bench.peers.append(peer)
            name = "memory produce→consume"
            await bench.row(name, [("trio channel", channel_throughput),
                                   (PEER, peer.measure(name, "throughput", peer_n)),
                                   ("trionet bus", bus_tp)], goal=0.5)
            name = "memory request/response"
            await bench.row(name, [("trio channels", channel_round_trips),
                                   (PEER, peer.measure(name, "round_trips", peer_rr_n)),
                                   ("trionet bus", bus_rr)])
            await peer.close()
            typed_peer = await FastStreamPeer.start(nursery, "memory", {
                "topic": "bench/faststream-typed", "typed": True})
            bench.peers.append(typed_peer)
            await typed_rows(bench, "memory", {
                "raw bus": (bus_tp, bus_rr),
                "trionet bus": typed_contenders(publisher, topic, counter, n, rr_n)},
                typed_peer, peer_n, peer_rr_n, TYPED_PEER_GOAL)
            await typed_peer.close()
        app.stop()


# -- MQTT ---------------------------------------------------------------------------------------


async def bench_mqtt(bench: Bench, host: str, port: int, n: int, rr_n: int,
                     typed: bool = True) -> None:
    from trionet.mqtt import MQTTV5, open_mqtt_client

    tag = uuid.uuid4().hex[:8]
    url = f"mqtt://{host}:{port}?qos=1&max_queue=1000"
    topic = f"bench/{tag}/bus"
    raw_topic = f"bench/{tag}/raw"
    counter = Counter()
    raw_counter = Counter()
    app = bus_consumer(url, topic, counter)
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        async with from_url(url).create_socket(name="bench-publisher") as publisher, \
                open_mqtt_client(host, port, protocol=MQTTV5) as raw_pub, \
                open_mqtt_client(host, port, protocol=MQTTV5) as raw_sub, \
                open_mqtt_client(host, port, protocol=MQTTV5) as raw_responder:
            bus_tp, bus_rr = bus_contenders(publisher, topic, counter, n, rr_n)

            async def receive_raw(*, task_status: trio.TaskStatus[None]) -> None:
                async with raw_sub.subscription(raw_topic, 1, max_buffer_size=1000) as box:
                    task_status.started()
                    async for _ in box:
                        raw_counter.hit()

            async def respond_raw(*, task_status: trio.TaskStatus[None]) -> None:
                async with raw_responder.subscription(f"{raw_topic}-rpc", 1) as box:
                    task_status.started()
                    async for request in box:
                        await raw_responder.reply(request, request.payload)

            await nursery.start(receive_raw)
            await nursery.start(respond_raw)
            peer = await FastStreamPeer.start(nursery, "mqtt", {
                "url": f"mqtt://{host}:{port}", "topic": f"bench/{tag}/faststream"})
            bench.peers.append(peer)

            async def raw_throughput() -> float:
                raw_counter.reset(n)
                start = time.perf_counter()
                for _ in range(n):
                    await raw_pub.publish(raw_topic, PAYLOAD, qos=1)
                await raw_counter.done.wait()
                return n / (time.perf_counter() - start)

            async def raw_round_trips() -> float:
                start = time.perf_counter()
                for _ in range(rr_n):
                    await raw_pub.request(f"{raw_topic}-rpc", PAYLOAD)
                return rr_n / (time.perf_counter() - start)

            name = "mqtt produce→consume (QoS 1)"
            await bench.row(name, [("trionet.mqtt", raw_throughput),
                                   (PEER, peer.measure(name, "throughput", n)),
                                   ("trionet bus", bus_tp)], goal=0.85)
            await bench.row("mqtt request/response",
                            [("trionet.mqtt", raw_round_trips),
                             (PEER, peer.measure("mqtt request/response", "round_trips", rr_n)),
                             ("trionet bus", bus_rr)])
            await peer.close()
            if typed:
                typed_peer = await FastStreamPeer.start(nursery, "mqtt", {
                    "url": f"mqtt://{host}:{port}", "topic": f"bench/{tag}/faststream-typed",
                    "typed": True})
                bench.peers.append(typed_peer)
                await typed_rows(bench, "mqtt", {
                    "raw bus": (bus_tp, bus_rr),
                    "trionet bus": typed_contenders(publisher, topic, counter, n, rr_n)},
                    typed_peer, n, rr_n, TYPED_PEER_GOAL)
                await typed_peer.close()
            nursery.cancel_scope.cancel()
        app.stop()


# -- Kafka --------------------------------------------------------------------------------------


async def bench_kafka(bench: Bench, servers: str, n: int, rr_n: int) -> None:
    from trionet.kafka import (
        KafkaAdmin,
        KafkaConsumer,
        KafkaProducer,
        KafkaRequester,
        NewTopic,
        serve_requests,
    )

    tag = uuid.uuid4().hex[:8]
    fast_join = "&consumer.session_timeout_ms=6000&consumer.heartbeat_interval_ms=1000"
    url = (f"kafka://{servers}?group=bench{tag}&offset_reset=earliest{fast_join}"
           "&producer.linger_ms=0")
    topic = f"bench/{tag}/bus"
    raw_topic = f"bench.{tag}.raw"
    consumer_options: dict[str, Any] = {"session_timeout_ms": 6000,
                                        "heartbeat_interval_ms": 1000,
                                        "fetch_max_wait_ms": 100,
                                        "auto_offset_reset": "earliest"}
    counter = Counter()
    raw_counter = Counter()
    app = bus_consumer(url, topic, counter)
    # The same bus on the confluent-kafka engine (librdkafka), its own group and topic.
    ck_url = url.replace(f"group=bench{tag}", f"group=benchck{tag}") + "&backend=confluent"
    ck_topic = f"bench/{tag}/busck"
    ck_counter = Counter()
    ck_app = bus_consumer(ck_url, ck_topic, ck_counter)
    peer_topic = f"bench.{tag}.faststream"
    async with KafkaAdmin(servers) as admin:
        await admin.create_topics([NewTopic(raw_topic), NewTopic(f"{raw_topic}-rpc"),
                                   NewTopic(peer_topic), NewTopic(f"{peer_topic}-typed")])
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        await nursery.start(ck_app.serve)
        async with from_url(url).create_socket(name="bench-publisher") as publisher, \
                from_url(ck_url).create_socket(name="bench-publisher") as ck_publisher, \
                KafkaProducer(servers, linger_ms=0) as raw_producer, \
                KafkaConsumer(raw_topic, bootstrap_servers=servers, group_id=f"raw{tag}",
                              **consumer_options) as raw_consumer, \
                KafkaConsumer(f"{raw_topic}-rpc", bootstrap_servers=servers,
                              group_id=f"rpc{tag}", **consumer_options) as rpc_consumer, \
                KafkaRequester(servers, producer_config={"linger_ms": 0}) as requester:
            bus_tp, bus_rr = bus_contenders(publisher, topic, counter, n, rr_n)
            ck_tp, ck_rr = bus_contenders(ck_publisher, ck_topic, ck_counter, n, rr_n)
            typed_tp, typed_rr = typed_contenders(publisher, topic, counter, n, rr_n)
            ck_typed = typed_contenders(ck_publisher, ck_topic, ck_counter, n, rr_n)

            async def consume_raw() -> None:
                async for _ in raw_consumer:
                    raw_counter.hit()

            async def echo(record: Any) -> bytes:
                return bytes(record.value)

            nursery.start_soon(consume_raw)
            await nursery.start(serve_requests, rpc_consumer, raw_producer, echo)

            async def raw_throughput() -> float:
                raw_counter.reset(n)
                start = time.perf_counter()
                for _ in range(n):
                    await raw_producer.send(raw_topic, PAYLOAD)
                await raw_counter.done.wait()
                return n / (time.perf_counter() - start)

            async def raw_round_trips() -> float:
                start = time.perf_counter()
                for _ in range(rr_n):
                    await requester.request(f"{raw_topic}-rpc", PAYLOAD)
                return rr_n / (time.perf_counter() - start)

            # Warm-up: the first records wait for the consumer groups' assignments.
            await raw_throughput()
            await bus_tp()
            await ck_tp()
            await typed_tp()
            await ck_typed[0]()
            peer = await FastStreamPeer.start(nursery, "kafka", {
                "servers": servers, "topic": peer_topic, "group": f"faststream{tag}"})
            bench.peers.append(peer)
            name = "kafka produce→consume"
            await bench.row(name, [("trionet.kafka", raw_throughput),
                                   (PEER, peer.measure(name, "throughput", n)),
                                   ("trionet bus", bus_tp),
                                   ("trionet bus (confluent)", ck_tp)], goal=0.85)
            await bench.row("kafka request/response",
                            [("trionet.kafka", raw_round_trips), ("trionet bus", bus_rr),
                             ("trionet bus (confluent)", ck_rr)])
            await peer.close()
            typed_peer = await FastStreamPeer.start(nursery, "kafka", {
                "servers": servers, "topic": f"{peer_topic}-typed",
                "group": f"faststreamtyped{tag}", "typed": True})
            bench.peers.append(typed_peer)
            await typed_rows(bench, "kafka", {
                "raw bus": (bus_tp, bus_rr), "trionet bus": (typed_tp, typed_rr),
                "trionet bus (confluent)": ck_typed}, typed_peer, n, rr_n, PEER_GOAL)
            await typed_peer.close()
            nursery.cancel_scope.cancel()
        app.stop()
        ck_app.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, small counts")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 2)")
    parser.add_argument("--only", default="memory,mqtt,kafka",
                        help="comma-separated brokers to run (default: all three)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one measurement may take")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    bench = Bench(rounds, args.timeout)
    scale = 10 if args.quick else 1

    if "memory" in only:
        # FastStream's in-memory broker handles about 1% of the bus's rate: fewer messages,
        # the same rate measured (messages per second).
        trio.run(bench_memory, bench, 200_000 // scale, 20_000 // scale, 5_000 // scale,
                 1_000 // scale)
    if "mqtt" in only:
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(bench_mqtt, bench, broker.info.host, broker.info.port,
                     5_000 // scale, 1_000 // scale)
    if "kafka" in only:
        from trionet.testing import KafkaBroker

        with KafkaBroker.from_env() as kafka:
            trio.run(bench_kafka, bench, kafka.info.bootstrap_servers,
                     1_000 // scale, 100 // max(1, scale // 2))

    lost = {name: counts for peer in bench.peers for name, counts in peer.lost.items()}
    for row in bench.rows:
        if any(lost.get(row.name, [])):
            # A row that lost messages measured nothing comparable: every goal of it fails.
            row.details["lost_messages"] = {PEER: lost[row.name]}
            row.failed = f"{PEER} lost {sum(lost[row.name])} messages"
    report_rows("bus", bench.rows, rounds=rounds,
                note="messages (or round trips) per second; producer→consume rows: sequential "
                     "publishes, timed until the consumer has them all")
    if os.environ.get("BUS_BENCH_JSON"):
        print(json.dumps({"rounds": rounds}), file=sys.stderr)


if __name__ == "__main__":
    main()
