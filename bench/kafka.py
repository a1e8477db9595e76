"""Kafka throughput: trionet.kafka vs raw kafka-python, aiokafka and confluent-kafka, in one run.

Every contender talks to the same broker: a private noida-db started by this script, or the
broker named by ``TRIONET_KAFKA_BOOTSTRAP=host:port``. Every client is created once, before the
rounds; each round then moves the same records:

* ``produce 100 B`` and ``produce 1 KiB``: N records of that size with ``acks=1`` to a
  3-partition topic, then a flush.
  raw: ``producer.send(topic, value)`` in a loop, ``producer.flush()``. trionet:
  ``producer.send_nowait(topic, value)`` in a loop, ``await producer.flush()`` (the goals'
  contender); and ``await producer.send_many(topic, values)`` (no Delivery per record). aiokafka and
  confluent-kafka: configured for throughput as their documentation recommends (linger and batch
  sizes; aiokafka's ``create_batch()``/``send_batch()``, confluent's ``produce()`` loop with
  ``linger.ms`` and ``batch.num.messages``), each in its own process (``bench/_kafka_peers.py``,
  which says exactly how; it does not import trionet). Each producer writes to a topic of its
  own per size; after the rounds the broker must hold every record each one sent (end
  offsets), else the row fails (``lost_records`` in the JSON line).
* ``consume 100 B`` and ``consume 1 KiB``: N records of that size read back from a 3-partition
  topic (manually assigned, from the beginning). raw: ``consumer.poll(timeout_ms=100)`` until N
  records. trionet, with its defaults (fetched records decoded in trio): ``await
  consumer.getmany()`` batches and ``async for record in consumer`` (the main row, on which the
  goal is judged); and ``getmany`` of a consumer made with ``decode_in_trio=False``, whose
  thread polls and decodes (with read-ahead) and hands batches to trio. aiokafka: ``getmany()``;
  confluent-kafka: ``consume(num_messages=...)`` batches.
* ``consume, group member``: the same records read by a member of a consumer group (subscribed;
  its partitions come from the group). raw: ``poll(timeout_ms=100)``; trionet: ``getmany()``.
  (The peers are not in this row.)
* ``latency p50, one record`` and ``latency p99, one record``: end to end, one record at a
  time: the time from handing a record to a producer (``linger_ms=0``, ``acks=1``) until a
  consumer reading the 1-partition topic from its end returned it, ``LATENCY_SAMPLES`` (200)
  records per measurement, for raw kafka-python (``send()`` and ``poll(max_records=1)``),
  confluent-kafka (``produce()`` + ``poll(0)`` and ``consume(1, ...)``, in its process) and
  trionet (``send_nowait()`` and ``getone()``); one measurement gives both rows (the p99 row
  replays it). A record that does not arrive fails the measurement (so the row).

trionet runs on both engines: the default (kafka-python, contenders ``trionet ...``) with its
defaults, and ``backend="confluent"`` (contenders ``trionet confluent ...``: ``send_nowait``,
``getmany``, ``async for``) configured as the raw confluent-kafka peer is (``linger.ms``,
``batch.num.messages``, the local queue, 10 000 records per ``consume()`` as
``max_poll_records``), so that the ratio measures what trionet adds to librdkafka. Two more
raw confluent-kafka contenders (in its process; bounds, not goals) show what any wrapper that
hands out trionet's results pays in confluent-kafka's Python binding itself: ``confluent-kafka,
report per record`` asks for a delivery report per record (the binding builds a Message and
calls Python for each; the raw row asks for failed records only), ``confluent-kafka, tuple per
record`` reads each message's fields into a tuple (the raw row only counts messages).

Consumers that fetch in the background (trionet's, aiokafka's, confluent-kafka's) are paused
between their measurements: noida-db answers a fetch with no records at once, so an idle
consumer left running spins against the broker and slows whoever is being measured. (raw
kafka-python fetches only inside ``poll()``.)

Each consume measurement reads the N records ``PASSES`` (3) times over, seeking back to the
beginning of the partitions in between, on both sides.

The trionet clients live in one trio loop on a helper thread for the whole run (a measurement
is one ``trio.from_thread.run`` call), so client start-up is outside the timings on both sides.
Per-record overhead is the per-round difference of the time per record, trionet minus raw.

Goals: produce ≥ 0.9× and consume ≥ 0.9× raw kafka-python, overhead ≤ 15 µs/record (issue
7: what trionet adds to the client it wraps); and ≥ 0.9× each of aiokafka and confluent-kafka,
what users pick instead (issue 17); and trionet on the confluent engine ≥ 0.9× raw
confluent-kafka, produce and consume (``getmany`` and ``async for``), both sizes (issue 19).
The table judges every goal of a row on its own; a row's ``goal``/``met`` in the JSON line
hold one entry per goal.

Run: ``.venv/bin/python bench/kafka.py [--quick] [--rounds N]`` (``--quick``: 10k records and
50 latency samples, 2 rounds; default 100k records, 200 samples, 5 rounds). Each measurement
gives up after 120 s.
"""

from __future__ import annotations

import importlib
import itertools
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import _kafka_peers
import trio
from _bounds import PeerProcess
from _harness import Contender, Goal, Row, main_args, measure_rows, report_rows

from trionet.testing import KafkaBroker


def _import_kafka_python() -> Any:
    """Import kafka-python although this script, being ``bench/kafka.py``, shadows its name."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if os.path.abspath(p or os.curdir) != here]
    try:
        return importlib.import_module("kafka")
    finally:
        sys.path[:] = saved


kafka = _import_kafka_python()

from trionet.kafka import KafkaAdmin, KafkaConsumer, KafkaProducer, NewTopic  # noqa: E402

T = TypeVar("T")

VALUE = b"x" * 100
PARTITIONS = 3
#: Each consume measurement reads the N records this many times over (seeking back to the
#: beginning in between): with the crc32c extension one pass of 100k records takes well under a
#: second, too short to measure on this shared machine.
PASSES = 3
TIME_CAP = 120.0
GOAL = 0.9
OVERHEAD_GOAL_US = 15.0


class TrioHost:
    """One trio loop on a helper thread; runs async functions in it from the main thread."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), name="bench-trio")
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def enter(self, resource: AbstractAsyncContextManager[T]) -> T:
        """Enter *resource* in a task of the loop; it stays open until :meth:`close`."""

        async def hold(task_status: trio.TaskStatus[T]) -> None:
            async with resource as value:
                task_status.started(value)
                await trio.sleep_forever()

        async def start() -> T:
            assert self._nursery is not None
            value: T = await self._nursery.start(hold)
            return value

        return self.run(start)

    def close(self) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()


@asynccontextmanager
async def _admin(servers: str) -> AsyncIterator[KafkaAdmin]:
    async with KafkaAdmin(servers) as admin:
        yield admin


def main() -> None:
    args = main_args(__doc__.splitlines()[0])
    count = 10_000 if args.quick else 100_000
    samples = 50 if args.quick else LATENCY_SAMPLES
    with KafkaBroker.from_env() as broker:
        servers = broker.info.bootstrap_servers
        run_id = uuid.uuid4().hex[:8]
        # One produce topic per producer and size, so that each one's delivered records can be
        # counted; one latency topic (1 partition) per latency contender.
        produce_topics = {(name, size): f"bench-produce-{run_id}-{n}-{size}"
                          for n, name in enumerate(PRODUCERS) for size in SIZES}
        consume_topics = {size: f"bench-consume-{run_id}-{size}" for size in SIZES}
        latency_topics = {name: f"bench-latency-{run_id}-{n}"
                          for n, name in enumerate(LATENCY_CONTENDERS)}
        host = TrioHost()
        peers: list[Peer] = []
        try:
            admin = host.enter(_admin(servers))
            topics = [*produce_topics.values(), *consume_topics.values()]
            host.run(admin.create_topics,
                     [NewTopic(topic, PARTITIONS) for topic in topics]
                     + [NewTopic(topic, 1) for topic in latency_topics.values()])
            topics += latency_topics.values()
            cleanup: list[Callable[[], object]] = []
            try:
                rows, delivered = _rows(host, servers, Topics(produce_topics, consume_topics,
                                                              latency_topics),
                                        count, samples, cleanup, peers)
                _run_and_report(rows, args.rounds, count, samples, broker.external, delivered)
            finally:
                for peer in peers:
                    peer.close()
                for close in cleanup:
                    close()
            host.run(admin.delete_topics, topics)
        finally:
            host.close()


#: Record sizes of the produce and consume rows, and their labels.
SIZES = (100, 1024)
SIZE_LABELS = {100: "100 B", 1024: "1 KiB"}
#: The 1 KiB rows move a quarter as many records (about 2.5 times the bytes of the 100 B rows):
#: raw kafka-python needs minutes for 3 passes over 100k records of 1 KiB on a loaded machine.
SIZE_SHARE = {100: 1, 1024: 4}


def records(count: int, size: int) -> int:
    """How many records of *size* a measurement moves (*count* for 100 B)."""
    return count // SIZE_SHARE[size]
#: Latency rows: this many records, one at a time, per measurement (``--quick``: 50).
LATENCY_SAMPLES = 200
#: The peers users pick instead, each in its own process: (worker kind, contender name).
PEERS = (("aiokafka", "aiokafka"), ("confluent", "confluent-kafka"))
PEER_GOAL = 0.9
#: The contenders of the produce rows, each writing to its own topics.
#: Bounds shown beside raw confluent-kafka (its process; not goals): a delivery report per
#: record, and a tuple of fields per record read (what trionet's records and deliveries need).
REPORTS = "confluent-kafka, report per record"
TUPLES = "confluent-kafka, tuple per record"
PRODUCERS = ("raw kafka-python", *(name for _, name in PEERS), REPORTS,
             "trionet confluent send_many", "trionet confluent send_nowait",
             "trionet send_many", "trionet send_nowait")
#: The contenders of the latency rows (end-to-end, one record at a time).
LATENCY_CONTENDERS = ("raw kafka-python", "confluent-kafka", "trionet", "trionet confluent")
#: trionet on the confluent engine: at least this ratio to raw confluent-kafka (issue 19), for
#: these contenders of the produce and consume rows.
CONFLUENT_GOAL = 0.9
CPU_NAMES_CONFLUENT = {
    "produce": ("trionet confluent send_nowait", "trionet confluent send_many"),
    "consume": ("trionet confluent getmany", "trionet confluent async for"),
}
#: The confluent engine's settings in the throughput rows are the raw peer's.
LINGER_MS, CONFLUENT_BATCH = _kafka_peers.LINGER_MS, _kafka_peers.CONFLUENT_BATCH


@dataclass(frozen=True)
class Topics:
    produce: dict[tuple[str, int], str]
    """By (producer, record size)."""
    consume: dict[int, str]
    """By record size."""
    latency: dict[str, str]
    """By latency contender."""


class Peer:
    """A peer client in its own process (``bench/_kafka_peers.py``), one job at a time."""

    def __init__(self, kind: str, name: str, servers: str, topics: Topics, count: int) -> None:
        self.name = name
        self._worker = PeerProcess("_kafka_peers.py", kind, name=name)
        self._ask = self._worker.ask
        self.close = self._worker.close
        self._ask({"op": "setup", "servers": servers,
                   "produce_topics": {str(size): topics.produce[name, size] for size in SIZES},
                   "consume_topics": {str(size): topics.consume[size] for size in SIZES},
                   "latency_topic": topics.latency.get(name),
                   "report_topics": {str(size): topics.produce[REPORTS, size] for size in SIZES}
                   if kind == "confluent" else None,
                   "partitions": PARTITIONS, "count": count, "passes": PASSES,
                   "counts": {str(size): records(count, size) for size in SIZES}})

    def measure(self, row: str, op: str, size: int, name: str | None = None
                ) -> Callable[[], float]:
        """A contender (called *name*, the peer's name by default): one ``op`` job; records
        the worker's own CPU time per record."""

        def run() -> float:
            answer = self._ask({"op": op, "size": size})
            count = float(answer["count"])
            CPU.record(row, name or self.name, answer["cpu"] / count * 1e6)
            return count

        return run

    def latency(self, samples: int) -> tuple[float, float]:
        """p50 and p99 (µs) of *samples* one-record round trips."""
        answer = self._ask({"op": "latency", "samples": samples})
        return answer["p50"], answer["p99"]

class Latency:
    """The two latency rows from one measurement: the p50 row's contender measures (p50 and
    p99 of one run of samples), the p99 row's contender of the same name hands back the p99 of
    the same round."""

    def __init__(self) -> None:
        self._p99: dict[str, list[float]] = {}

    def p50(self, name: str, measure: Callable[[], tuple[float, float]]) -> Callable[[], float]:
        def run() -> float:
            p50, p99 = measure()
            self._p99.setdefault(name, []).append(p99)
            return p50

        return run

    def p99(self, name: str) -> Callable[[], float]:
        return lambda: self._p99[name].pop(0)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of *samples* (seconds), in microseconds."""
    ordered = sorted(samples)
    return (ordered[len(ordered) // 2] * 1e6,
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6)


def _rows(host: TrioHost, servers: str, topics: Topics, total: int, samples: int,
          cleanup: list[Callable[[], object]], peers: list[Peer]
          ) -> tuple[list[Row], Callable[[], dict[tuple[str, int], int]]]:
    """The rows, and a function that counts the records each producer's topics hold (*total*:
    records per measurement of 100 B, see :func:`records`)."""
    count = total
    # -- raw kafka-python, synchronous ---------------------------------------------------------
    raw_producer = kafka.KafkaProducer(bootstrap_servers=servers, acks=1,
                                       enable_idempotence=False)
    cleanup.append(raw_producer.close)
    for size in SIZES:
        raw_producer.send(topics.produce["raw kafka-python", size], b"x" * size).get(30)

    def raw_produce(size: int) -> Callable[[], float]:
        produce_topic = topics.produce["raw kafka-python", size]
        value = b"x" * size
        count = records(total, size)

        def run() -> float:
            deadline = time.monotonic() + TIME_CAP
            send = raw_producer.send
            for n in range(count):
                send(produce_topic, value)
                if n % 10_000 == 0 and time.monotonic() > deadline:
                    raise TimeoutError("raw produce exceeded the time cap")
            raw_producer.flush(TIME_CAP)
            return count

        return run

    # The consume topics get their records once, up front.
    for size, topic in topics.consume.items():
        for _ in range(records(total, size)):
            raw_producer.send(topic, b"x" * size)
    raw_producer.flush(TIME_CAP)
    for kind, name in PEERS:  # (their set-up reads the consume topics once)
        peers.append(Peer(kind, name, servers, topics, count))
    confluent_peer = next(peer for peer in peers if peer.name == "confluent-kafka")
    raw_consumers = {}
    for size, topic in topics.consume.items():
        raw_consumers[size] = kafka.KafkaConsumer(
            bootstrap_servers=servers, enable_auto_commit=False, auto_offset_reset="earliest")
        cleanup.append(raw_consumers[size].close)
        raw_consumers[size].assign([kafka.TopicPartition(topic, p) for p in range(PARTITIONS)])

    def raw_drain(consumer: Any, deadline: float, count: int = total) -> float:
        """PASSES times: from the beginning, poll *consumer* until it returned *count* records."""
        total = 0
        for _ in range(PASSES):
            consumer.seek_to_beginning()
            got = 0
            while got < count:
                for records in consumer.poll(timeout_ms=100).values():
                    got += len(records)
                if time.monotonic() > deadline:
                    raise TimeoutError("raw consume exceeded the time cap")
            total += got
        return total

    def raw_consume(size: int) -> Callable[[], float]:
        return lambda: raw_drain(raw_consumers[size], time.monotonic() + TIME_CAP,
                                 records(total, size))

    # A consumer group member (the subscription's partitions come from the group coordinator).
    group_options = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
    raw_member = kafka.KafkaConsumer(topics.consume[100], bootstrap_servers=servers,
                                     group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
                                     enable_auto_commit=False, auto_offset_reset="earliest",
                                     **group_options)
    cleanup.append(raw_member.close)

    def raw_group_consume() -> float:
        deadline = time.monotonic() + TIME_CAP
        while len(raw_member.assignment()) < PARTITIONS:  # the first round joins the group
            raw_member.poll(timeout_ms=100)
            if time.monotonic() > deadline:
                raise TimeoutError("raw group join exceeded the time cap")
        return raw_drain(raw_member, deadline)

    # Latency: a producer that sends at once and a consumer at the end of the latency topic.
    raw_latency_topic = topics.latency["raw kafka-python"]
    raw_latency_producer = kafka.KafkaProducer(bootstrap_servers=servers, acks=1, linger_ms=0,
                                               enable_idempotence=False)
    cleanup.append(raw_latency_producer.close)
    raw_latency_consumer = kafka.KafkaConsumer(bootstrap_servers=servers,
                                               enable_auto_commit=False)
    cleanup.append(raw_latency_consumer.close)
    raw_latency_consumer.assign([kafka.TopicPartition(raw_latency_topic, 0)])
    raw_latency_consumer.seek_to_end()
    raw_latency_consumer.position(kafka.TopicPartition(raw_latency_topic, 0))  # looked up now

    def raw_latency(k: int = samples) -> tuple[float, float]:
        deadline = time.monotonic() + TIME_CAP
        out = []
        for n in range(k):
            value = f"{time.monotonic_ns()}-{n}".encode()
            start = time.perf_counter()
            raw_latency_producer.send(raw_latency_topic, value)
            while True:
                got = [r for records in raw_latency_consumer.poll(timeout_ms=100,
                                                                  max_records=1).values()
                       for r in records]
                if got:
                    if got[0].value != value:
                        raise RuntimeError("raw latency: a record arrived out of turn")
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("raw latency: a record did not arrive")
            out.append(time.perf_counter() - start)
        raw_latency_producer.flush(TIME_CAP)
        return percentiles(out)

    raw_latency(1)  # warm-up: connections, metadata, the consumer's position

    # -- trionet, in the trio loop ---------------------------------------------------------------
    trionet = _TrionetContenders(host, servers, topics, count, samples, group_options,
                                 "kafka-python")
    confluent = _TrionetContenders(host, servers, topics, count, samples, group_options,
                                   "confluent")

    def delivered() -> dict[tuple[str, int], int]:
        """Records in each producer's topics (the partitions' end offsets)."""
        out = {}
        for (name, size), topic in topics.produce.items():
            ends = raw_consumers[100].end_offsets(
                [kafka.TopicPartition(topic, p) for p in range(PARTITIONS)])
            out[name, size] = sum(ends.values())
        return out

    # Judged on the row's last contender, like GOAL; the same rounds, per-round ratios.
    peer_goals = [Goal(PEER_GOAL, baseline=peer.name) for peer in peers]

    def confluent_goals(row: str) -> list[Goal]:
        """trionet on the confluent engine against raw confluent-kafka (issue 19)."""
        return [Goal(CONFLUENT_GOAL, baseline="confluent-kafka", contender=name)
                for name in CPU_NAMES_CONFLUENT[row.split()[0]]]
    rows = []
    for size in SIZES:
        row = f"produce {SIZE_LABELS[size]}, acks=1"
        rows.append(Row(row, [
            Contender("raw kafka-python", CPU.meter(row, "raw kafka-python", raw_produce(size))),
            *(Contender(peer.name, peer.measure(row, "produce", size)) for peer in peers),
            Contender(REPORTS, confluent_peer.measure(row, "produce_reports", size, REPORTS)),
            *confluent.produce(row, size),
            *trionet.produce(row, size),
        ], goal=GOAL, goals=[*peer_goals, *confluent_goals(row)]))
    for size in SIZES:
        row = f"consume {SIZE_LABELS[size]}"
        rows.append(Row(row, [
            Contender("raw kafka-python", CPU.meter(row, "raw kafka-python", raw_consume(size))),
            *(Contender(peer.name, peer.measure(row, "consume", size)) for peer in peers),
            Contender(TUPLES, confluent_peer.measure(row, "consume_records", size, TUPLES)),
            *confluent.consume(row, size),
            *trionet.consume(row, size),
        ], goal=GOAL, goals=[*peer_goals, *confluent_goals(row)]))
    row = "consume 100 B, group member"
    rows.append(Row(row, [
        Contender("raw kafka-python", CPU.meter(row, "raw kafka-python", raw_group_consume)),
        *trionet.group(row),
    ], goal=GOAL))
    latency = Latency()
    measures: dict[str, Callable[[], tuple[float, float]]] = {
        "raw kafka-python": raw_latency,
        "confluent-kafka": lambda: confluent_peer.latency(samples),
        **trionet.latency(),
        **confluent.latency(),
    }
    p50 = Row("latency p50, one record", [
        Contender(name, latency.p50(name, measure)) for name, measure in measures.items()
    ], unit="µs")
    rows.append(p50)
    rows.append(Row("latency p99, one record", [
        Contender(name, latency.p99(name)) for name in measures
    ], unit="µs", replays=p50))
    return rows, delivered


class _TrionetContenders:
    """trionet's contenders on one engine (their clients live in the trio loop of *host*).

    The default engine (kafka-python) runs with trionet's defaults. The confluent engine is
    configured as the raw confluent-kafka peer is (``bench/_kafka_peers.py``): ``linger_ms=5``,
    ``batch.num.messages`` and a local queue that holds a whole measurement, and consumers that
    take up to 10 000 records per ``consume()`` (``max_poll_records``), so that the rows compare
    what trionet adds, not two configurations.
    """

    def __init__(self, host: TrioHost, servers: str, topics: Topics, count: int, samples: int,
                 group_options: dict[str, Any], engine: str) -> None:
        self.host = host
        self.topics = topics
        self.count = count
        self.samples = samples
        self.engine = engine
        self.prefix = "trionet" if engine == "kafka-python" else f"trionet {engine}"
        producer_options: dict[str, Any] = {"acks": 1}
        consumer_options: dict[str, Any] = {}
        if engine == "confluent":
            producer_options.update({
                "linger_ms": LINGER_MS, "batch.num.messages": CONFLUENT_BATCH,
                "queue.buffering.max.messages": max(100_000, count)})
            consumer_options["max_poll_records"] = CONFLUENT_BATCH
            consumer_options["receive.message.max.bytes"] = _kafka_peers.RECEIVE_MAX_BYTES
        self.producer = host.enter(KafkaProducer(servers, backend=engine, **producer_options))
        for size in SIZES:
            for contender in ("send_many", "send_nowait"):
                host.run(self.producer.send, topics.produce[self.name(contender), size],
                         b"x" * size)
        self.consumers: dict[tuple[int, bool], KafkaConsumer] = {}
        for size, topic in topics.consume.items():
            for decode_in_trio in (True, False) if engine == "kafka-python" else (True,):
                consumer = self.consumers[size, decode_in_trio] = host.enter(KafkaConsumer(
                    bootstrap_servers=servers, partitions=self._partitions(topic),
                    auto_offset_reset="earliest", decode_in_trio=decode_in_trio,
                    backend=engine, **consumer_options))
                host.run(consumer.pause, *self._partitions(topic))  # (module docstring)
        if engine == "kafka-python":
            self.member = host.enter(KafkaConsumer(
                topics.consume[100], bootstrap_servers=servers,
                group_id=f"bench-trionet-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
                **group_options))
        self.latency_topic = topics.latency[self.prefix]
        self.latency_producer = host.enter(KafkaProducer(servers, acks=1, linger_ms=0,
                                                         backend=engine))
        self.latency_consumer = host.enter(KafkaConsumer(
            bootstrap_servers=servers, partitions=[(self.latency_topic, 0)],
            auto_offset_reset="latest", backend=engine))
        host.run(self.latency_consumer.pause, (self.latency_topic, 0))
        host.run(self._latency, 1)  # warm-up: connections, metadata

    def name(self, contender: str) -> str:
        return f"{self.prefix} {contender}"

    @staticmethod
    def _partitions(topic: str) -> list[tuple[str, int]]:
        return [(topic, p) for p in range(PARTITIONS)]

    def _meter(self, row: str, contender: str, fn: Callable[[], Awaitable[float]]) -> Contender:
        name = self.name(contender)
        return Contender(name, CPU.meter(row, name, lambda: self.host.run(fn)))

    def produce(self, row: str, size: int) -> list[Contender]:
        topic = self.topics.produce[self.name("send_nowait"), size]
        producer, count, value = self.producer, records(self.count, size), b"x" * size

        async def send_nowait() -> float:
            with trio.fail_after(TIME_CAP):
                send = producer.send_nowait
                for _ in range(count):
                    send(topic, value)
                await producer.flush()
            return count

        many_topic = self.topics.produce[self.name("send_many"), size]

        async def send_many() -> float:
            with trio.fail_after(TIME_CAP):
                return await producer.send_many(many_topic, itertools.repeat(value, count))

        # (send_nowait last: the default engine's row judges its goal on the last contender)
        return [self._meter(row, "send_many", send_many),
                self._meter(row, "send_nowait", send_nowait)]

    def consume(self, row: str, size: int) -> list[Contender]:
        consumer = self.consumers[size, True]
        count = records(self.count, size)

        async def iterate() -> float:
            partitions = list(await consumer.paused())
            total = 0
            with trio.fail_after(TIME_CAP):
                await consumer.resume(*partitions)
                for _ in range(PASSES):
                    await consumer.seek_to_beginning()
                    got = 0
                    async for _record in consumer:
                        got += 1
                        if got == count:
                            break
                    total += got
                await consumer.pause(*partitions)
            return total

        async def many() -> float:
            return await self._many(consumer, count)

        contenders = [self._meter(row, "getmany", many)]
        if (size, False) in self.consumers:
            threaded = self.consumers[size, False]

            async def many_threaded() -> float:
                return await self._many(threaded, count)

            contenders.append(self._meter(row, "getmany, decode_in_trio=False", many_threaded))
        # Last: the harness judges the goal on the last contender of a row.
        contenders.append(self._meter(row, "async for", iterate))
        return contenders

    async def _many(self, reader: KafkaConsumer, count: int) -> float:
        """PASSES times from the beginning: ``getmany()`` until *count* records (resumed for
        the measurement, paused after it)."""
        total = 0
        with trio.fail_after(TIME_CAP):
            partitions = list(await reader.paused())
            await reader.resume(*partitions)
            for _ in range(PASSES):
                await reader.seek_to_beginning()
                got = 0
                while got < count:
                    got += len(await reader.getmany())
                total += got
            await reader.pause(*(await reader.assignment()))
        return total

    def group(self, row: str) -> list[Contender]:
        member = self.member

        async def group_consume() -> float:
            with trio.fail_after(TIME_CAP):
                while len(await member.assignment()) < PARTITIONS:  # the first round joins
                    await member.getmany()  # reading drives the join (and may return records)
            return await self._many(member, self.count)

        return [self._meter(row, "getmany", group_consume)]

    async def _latency(self, k: int) -> tuple[float, float]:
        producer, consumer, topic = self.latency_producer, self.latency_consumer, self.latency_topic
        out = []
        tp = (topic, 0)
        with trio.fail_after(TIME_CAP):
            # From the partition's end, as an offset (not "latest", which is looked up when the
            # first fetch starts and could skip a record sent just before).
            [end] = (await consumer.end_offsets([tp])).values()
            await consumer.resume(tp)
            await consumer.seek(tp, end)
            for n in range(k):
                value = f"{time.monotonic_ns()}-{n}".encode()
                start = time.perf_counter()
                producer.send_nowait(topic, value)
                record = await consumer.getone()
                if record.value != value:
                    raise RuntimeError(f"{self.prefix} latency: a record arrived out of turn")
                out.append(time.perf_counter() - start)
            await consumer.pause(tp)
            await producer.flush()
        return percentiles(out)

    def latency(self) -> dict[str, Callable[[], tuple[float, float]]]:
        return {self.prefix: lambda: self.host.run(self._latency, self.samples)}


class CpuMeter:
    """Records the process's CPU time per record (all threads) beside the harness's wall time.

    On a shared, loaded machine the wall-clock ratios swing by ±20 % between runs; CPU time per
    record hardly depends on what other processes do, so it measures trionet's own cost.
    """

    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[float]]] = {}

    def meter(self, row: str, name: str, run: Callable[[], float]) -> Callable[[], float]:
        def measured() -> float:
            start = time.process_time()
            count = run()
            self.record(row, name, (time.process_time() - start) / count * 1e6)
            return count

        return measured

    def record(self, row: str, name: str, per_record_us: float) -> None:
        """One sample; a peer's process measures its own CPU time and reports it here."""
        self.samples.setdefault(row, {}).setdefault(name, []).append(per_record_us)


CPU = CpuMeter()


def raw_for(contender: str) -> str:
    """The raw client a trionet contender's engine wraps (its overhead is measured against)."""
    return "confluent-kafka" if "confluent" in contender else "raw kafka-python"


def _run_and_report(rows: list[Row], rounds: int, count: int, samples: int, external: bool,
                    delivered: Callable[[], dict[tuple[str, int], int]]) -> None:
    measure_rows(rows, rounds=rounds)
    footer: list[str] = []
    # Every producer sent one record per size at set-up, then count per measurement.
    stored = delivered()
    for row, size in zip(rows, SIZES, strict=False):  # the produce rows, one per size
        sent = {name: 1 + len(row.results[name]) * records(count, size) for name in PRODUCERS}
        lost = {name: sent[name] - stored[name, size] for name in PRODUCERS}
        footer.append(f"{row.name}: records stored by the broker per producer (sent: "
                      + ", ".join(f"{name}: {stored[name, size]:,}/{sent[name]:,}"
                                  for name in PRODUCERS) + ")")
        if any(lost.values()):
            footer.append(f"LOST RECORDS: {lost}: the row fails")
            row.details["lost_records"] = lost
            row.failed = "records lost: " + ", ".join(
                f"{name} {n:,}" for name, n in lost.items() if n)
    footer.append("")
    overheads: dict[str, float] = {}
    for row in rows:
        if row.unit != "ops/s":
            continue
        for contender in row.contenders[1:]:
            base = raw_for(contender.name)
            if not contender.name.startswith("trionet") or base not in row.results:
                continue
            per_round = [
                (1 / mine - 1 / theirs) * 1e6
                for mine, theirs in zip(row.results[contender.name], row.results[base],
                                        strict=True)
            ]
            overheads[f"{row.name}: {contender.name}"] = statistics.median(per_round)
    footer.append("per round (in round order):")
    for row in rows:
        for name, values in row.results.items():
            footer.append(f"  {row.name}: {name}: {', '.join(f'{v:,.0f}' for v in values)}")
    footer.append("")
    footer.append("per-record overhead from wall time, trionet minus the raw client its engine "
                  "wraps (median of per-round differences; goal for kafka-python ≤ "
                  f"{OVERHEAD_GOAL_US:g} µs):")
    for name, value in overheads.items():
        verdict = "yes" if value <= OVERHEAD_GOAL_US else "NO"
        footer.append(f"  {name}: {value:+.2f} µs/record (met: {verdict})")
    footer.append("")
    footer.append("CPU time per record, whole process (each peer's own process; median of "
                  "rounds; less sensitive to other load):")
    cpu: dict[str, dict[str, float]] = {}
    cpu_overheads: dict[str, float] = {}
    for row_name, per_contender in CPU.samples.items():
        medians = {name: statistics.median(values) for name, values in per_contender.items()}
        cpu[row_name] = medians
        for name, value in medians.items():
            base_name = raw_for(name)
            if not name.startswith("trionet") or base_name not in medians:
                footer.append(f"  {row_name}: {name}: {value:.2f} µs")
                continue
            base = medians[base_name]
            cpu_overheads[f"{row_name}: {name}"] = value - base
            footer.append(f"  {row_name}: {name}: {value:.2f} µs ({value - base:+.2f} µs, "
                          f"CPU ratio to {base_name} {base / value:.2f}×)")
    report_rows(
        "kafka", rows, rounds=rounds,
        note=f"{count:,} records of 100 B and {records(count, 1024):,} of 1 KiB per measurement, "
             f"latency over {samples} "
             "records one at a time, broker: "
             f"{'external (TRIONET_KAFKA_BOOTSTRAP)' if external else 'noida-db'}",
        footer="\n".join(footer),
        extra={"records": count, "latency_samples": samples, "overhead_us": overheads,
               "cpu_us_per_record": cpu, "cpu_overhead_us": cpu_overheads},
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
