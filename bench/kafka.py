"""Kafka throughput: trionet.kafka vs raw kafka-python, aiokafka and confluent-kafka, in one run.

Every contender talks to the same broker: a private noida-db started by this script, or the
broker named by ``TRIONET_KAFKA_BOOTSTRAP=host:port``. Every client is created once, before the
rounds; each round then moves the same records:

* ``produce``: N records of 100 bytes with ``acks=1`` to a 3-partition topic, then a flush.
  raw: ``producer.send(topic, value)`` in a loop, ``producer.flush()``. trionet:
  ``producer.send_nowait(topic, value)`` in a loop, ``await producer.flush()``. aiokafka and
  confluent-kafka: configured for throughput as their documentation recommends (linger and batch
  sizes; aiokafka's ``create_batch()``/``send_batch()``, confluent's ``produce()`` loop with
  ``linger.ms`` and ``batch.num.messages``), each in its own process (``bench/_kafka_peers.py``,
  which says exactly how; it does not import trionet). Each producer writes to a topic of its
  own; after the rounds the broker must hold every record each one sent (end offsets), else the
  row fails (``lost_records`` in the JSON line).
* ``consume``: the same N records read back from a 3-partition topic (manually assigned, from
  the beginning). raw: ``consumer.poll(timeout_ms=100)`` until N records. trionet, with its
  defaults (fetched records decoded in trio): ``await consumer.getmany()`` batches and ``async
  for record in consumer`` (the main row, on which the goal is judged); and ``getmany`` of a
  consumer made with ``decode_in_trio=False``, whose thread polls and decodes (with read-ahead)
  and hands batches to trio.
  aiokafka: ``getmany()``; confluent-kafka: ``consume(num_messages=...)`` batches.
* ``consume, group member``: the same records read by a member of a consumer group (subscribed;
  its partitions come from the group). raw: ``poll(timeout_ms=100)``; trionet: ``getmany()``.
  (The peers are not in this row.)

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
what users pick instead (issue 17). The table judges every goal of a row on its own; a row's
``goal``/``met`` in the JSON line hold one entry per goal.

Run: ``.venv/bin/python bench/kafka.py [--quick] [--rounds N]`` (``--quick``: 10k records,
2 rounds; default 100k records, 5 rounds). Each measurement gives up after 120 s.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import trio
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
    with KafkaBroker.from_env() as broker:
        servers = broker.info.bootstrap_servers
        run_id = uuid.uuid4().hex[:8]
        # One produce topic per producer, so that each one's delivered records can be counted.
        produce_topics = {name: f"bench-produce-{run_id}-{n}" for n, name in enumerate(PRODUCERS)}
        consume_topic = f"bench-consume-{run_id}"
        host = TrioHost()
        peers: list[Peer] = []
        try:
            admin = host.enter(_admin(servers))
            topics = [*produce_topics.values(), consume_topic]
            host.run(admin.create_topics, [NewTopic(topic, PARTITIONS) for topic in topics])
            cleanup: list[Callable[[], object]] = []
            try:
                rows, delivered = _rows(host, servers, produce_topics, consume_topic, count,
                                        cleanup, peers)
                _run_and_report(rows, args.rounds, count, broker.external, delivered)
            finally:
                for peer in peers:
                    peer.close()
                for close in cleanup:
                    close()
            host.run(admin.delete_topics, topics)
        finally:
            host.close()


#: The peers users pick instead, each in its own process: (worker kind, contender name).
PEERS = (("aiokafka", "aiokafka"), ("confluent", "confluent-kafka"))
PEER_GOAL = 0.9
#: The contenders of the produce row, each writing to its own topic.
PRODUCERS = ("raw kafka-python", *(name for _, name in PEERS), "trionet send_nowait")


class Peer:
    """A peer client in its own process (``bench/_kafka_peers.py``), one job at a time."""

    def __init__(self, kind: str, name: str, servers: str, produce_topic: str,
                 consume_topic: str, count: int) -> None:
        self.name = name
        here = os.path.dirname(os.path.abspath(__file__))
        self._proc = subprocess.Popen(
            [sys.executable, os.path.join(here, "_kafka_peers.py"), kind],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._ask({"op": "setup", "servers": servers, "produce_topic": produce_topic,
                   "consume_topic": consume_topic, "partitions": PARTITIONS, "count": count,
                   "passes": PASSES})

    def _ask(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died (its error is above)")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def measure(self, row: str, op: str) -> Callable[[], float]:
        """A contender: one ``op`` job; records the worker's own CPU time per record."""

        def run() -> float:
            answer = self._ask({"op": op})
            count = float(answer["count"])
            CPU.record(row, self.name, answer["cpu"] / count * 1e6)
            return count

        return run

    def close(self) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _rows(host: TrioHost, servers: str, produce_topics: dict[str, str], consume_topic: str,
          count: int, cleanup: list[Callable[[], object]], peers: list[Peer]
          ) -> tuple[list[Row], Callable[[], dict[str, int]]]:
    """The rows, and a function that counts the records each producer's topic holds."""
    produce_topic = produce_topics["raw kafka-python"]
    # -- raw kafka-python, synchronous ---------------------------------------------------------
    raw_producer = kafka.KafkaProducer(bootstrap_servers=servers, acks=1,
                                       enable_idempotence=False)
    cleanup.append(raw_producer.close)
    raw_producer.send(produce_topic, VALUE).get(30)

    def raw_produce() -> float:
        deadline = time.monotonic() + TIME_CAP
        send = raw_producer.send
        for n in range(count):
            send(produce_topic, VALUE)
            if n % 10_000 == 0 and time.monotonic() > deadline:
                raise TimeoutError("raw produce exceeded the time cap")
        raw_producer.flush(TIME_CAP)
        return count

    # The consume topic gets its records once, up front.
    for _ in range(count):
        raw_producer.send(consume_topic, VALUE)
    raw_producer.flush(TIME_CAP)
    for kind, name in PEERS:  # (their set-up reads the consume topic once)
        peers.append(Peer(kind, name, servers, produce_topics[name], consume_topic, count))
    partitions = [kafka.TopicPartition(consume_topic, p) for p in range(PARTITIONS)]
    raw_consumer = kafka.KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False,
                                       auto_offset_reset="earliest")
    cleanup.append(raw_consumer.close)
    raw_consumer.assign(partitions)

    def raw_drain(consumer: Any, deadline: float) -> float:
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

    def raw_consume() -> float:
        return raw_drain(raw_consumer, time.monotonic() + TIME_CAP)

    # A consumer group member (the subscription's partitions come from the group coordinator).
    group_options = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
    raw_member = kafka.KafkaConsumer(consume_topic, bootstrap_servers=servers,
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

    # -- trionet, in the trio loop ---------------------------------------------------------------
    producer = host.enter(KafkaProducer(servers, acks=1))
    trionet_topic = produce_topics["trionet send_nowait"]
    host.run(producer.send, trionet_topic, VALUE)
    consumer = host.enter(KafkaConsumer(
        bootstrap_servers=servers, partitions=[(consume_topic, p) for p in range(PARTITIONS)],
        auto_offset_reset="earliest"))
    threaded = host.enter(KafkaConsumer(
        bootstrap_servers=servers, partitions=[(consume_topic, p) for p in range(PARTITIONS)],
        auto_offset_reset="earliest", decode_in_trio=False))

    every_partition = [(consume_topic, p) for p in range(PARTITIONS)]
    for reader in (consumer, threaded):  # paused between measurements (docstring)
        host.run(reader.pause, *every_partition)

    async def trionet_produce() -> float:
        with trio.fail_after(TIME_CAP):
            send_nowait = producer.send_nowait
            for _ in range(count):
                send_nowait(trionet_topic, VALUE)
            await producer.flush()
        return count

    async def trionet_consume_iter() -> float:
        total = 0
        with trio.fail_after(TIME_CAP):
            await consumer.resume(*every_partition)
            for _ in range(PASSES):
                await consumer.seek_to_beginning()
                got = 0
                async for _record in consumer:
                    got += 1
                    if got == count:
                        break
                total += got
            await consumer.pause(*every_partition)
        return total

    async def trionet_consume_many(reader: KafkaConsumer = consumer) -> float:
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

    async def trionet_consume_threaded() -> float:
        return await trionet_consume_many(threaded)

    member = host.enter(KafkaConsumer(
        consume_topic, bootstrap_servers=servers, group_id=f"bench-trionet-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", **group_options))

    async def trionet_group_consume() -> float:
        with trio.fail_after(TIME_CAP):
            while len(await member.assignment()) < PARTITIONS:  # the first round joins
                await member.getmany()  # reading drives the join (and may return records)
            return await trionet_consume_many(member)

    def delivered() -> dict[str, int]:
        """Records in each producer's topic (the partitions' end offsets)."""
        out = {}
        for name, topic in produce_topics.items():
            ends = raw_consumer.end_offsets(
                [kafka.TopicPartition(topic, p) for p in range(PARTITIONS)])
            out[name] = sum(ends.values())
        return out

    # Judged on the row's last contender, like GOAL; the same rounds, per-round ratios.
    peer_goals = [Goal(PEER_GOAL, baseline=peer.name) for peer in peers]
    return [
        Row("produce 100 B, acks=1", [
            Contender("raw kafka-python", CPU.meter("produce", "raw kafka-python", raw_produce)),
            *(Contender(peer.name, peer.measure("produce", "produce")) for peer in peers),
            Contender("trionet send_nowait", CPU.meter(
                "produce", "trionet send_nowait", lambda: host.run(trionet_produce))),
        ], goal=GOAL, goals=peer_goals),
        Row("consume 100 B", [
            Contender("raw kafka-python", CPU.meter("consume", "raw kafka-python", raw_consume)),
            *(Contender(peer.name, peer.measure("consume", "consume")) for peer in peers),
            Contender("trionet getmany", CPU.meter(
                "consume", "trionet getmany", lambda: host.run(trionet_consume_many))),
            Contender("trionet getmany, decode_in_trio=False", CPU.meter(
                "consume", "trionet getmany, decode_in_trio=False",
                lambda: host.run(trionet_consume_threaded))),
            # Last: the harness judges the goal on the last contender of a row.
            Contender("trionet async for", CPU.meter(
                "consume", "trionet async for", lambda: host.run(trionet_consume_iter))),
        ], goal=GOAL, goals=peer_goals),
        Row("consume 100 B, group member", [
            Contender("raw kafka-python", CPU.meter("group", "raw kafka-python",
                                                   raw_group_consume)),
            Contender("trionet getmany", CPU.meter(
                "group", "trionet getmany", lambda: host.run(trionet_group_consume))),
        ], goal=GOAL),
    ], delivered


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


def _run_and_report(rows: list[Row], rounds: int, count: int, external: bool,
                    delivered: Callable[[], dict[str, int]]) -> None:
    measure_rows(rows, rounds=rounds)
    footer: list[str] = []
    # Every producer sent one record at set-up, then count per measurement.
    sent = {name: 1 + len(rows[0].results[name]) * count for name in PRODUCERS}
    stored = delivered()
    lost = {name: sent[name] - stored[name] for name in PRODUCERS}
    footer.append("records stored by the broker per producer (sent: "
                  + ", ".join(f"{name}: {stored[name]:,}/{sent[name]:,}" for name in PRODUCERS)
                  + ")")
    if any(lost.values()):
        footer.append(f"LOST RECORDS: {lost}: the produce row fails")
        rows[0].details["lost_records"] = lost
        rows[0].failed = "records lost: " + ", ".join(
            f"{name} {n:,}" for name, n in lost.items() if n)
    footer.append("")
    overheads: dict[str, float] = {}
    for row in rows:
        base = row.contenders[0].name
        for contender in row.contenders[1:]:
            if not contender.name.startswith("trionet"):
                continue
            per_round = [
                (1 / mine - 1 / theirs) * 1e6
                for mine, theirs in zip(row.results[contender.name], row.results[base],
                                        strict=True)
            ]
            overheads[f"{row.name}: {contender.name}"] = statistics.median(per_round)
    footer.append("per round (ops/s, in round order):")
    for row in rows:
        for name, values in row.results.items():
            footer.append(f"  {row.name}: {name}: {', '.join(f'{v:,.0f}' for v in values)}")
    footer.append("")
    footer.append("per-record overhead from wall time, trionet minus raw kafka-python (median of "
                  f"per-round differences; goal ≤ {OVERHEAD_GOAL_US:g} µs):")
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
        base_name = "raw kafka-python"
        base = medians[base_name]
        for name, value in medians.items():
            if not name.startswith("trionet"):
                footer.append(f"  {row_name}: {name}: {value:.2f} µs")
            else:
                cpu_overheads[f"{row_name}: {name}"] = value - base
                footer.append(f"  {row_name}: {name}: {value:.2f} µs ({value - base:+.2f} µs, "
                              f"CPU ratio {base / value:.2f}×)")
    report_rows(
        "kafka", rows, rounds=rounds,
        note=f"{count:,} records of 100 B per measurement, broker: "
             f"{'external (TRIONET_KAFKA_BOOTSTRAP)' if external else 'noida-db'}",
        footer="\n".join(footer),
        extra={"records": count, "overhead_us": overheads, "cpu_us_per_record": cpu,
               "cpu_overhead_us": cpu_overheads},
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
