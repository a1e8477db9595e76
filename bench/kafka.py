"""Kafka throughput: trionet.kafka vs raw kafka-python used synchronously, in one run.

Both sides talk to the same broker: a private noida-db started by this script, or the broker
named by ``TRIONET_KAFKA_BOOTSTRAP=host:port``. Every client is created once, before the rounds;
each round then moves the same records:

* ``produce``: N records of 100 bytes with ``acks=1`` to a 3-partition topic, then a flush.
  raw: ``producer.send(topic, value)`` in a loop, ``producer.flush()``. trionet:
  ``producer.send_nowait(topic, value)`` in a loop, ``await producer.flush()``.
* ``consume``: the same N records read back from a 3-partition topic (manually assigned, from
  the beginning). raw: ``consumer.poll(timeout_ms=100)`` until N records. trionet, with its
  defaults (fetched records decoded in trio): ``await consumer.getmany()`` batches and ``async
  for record in consumer`` (the main row, on which the goal is judged); and ``getmany`` of a
  consumer made with ``decode_in_trio=False``, whose thread polls and decodes (with read-ahead)
  and hands batches to trio.
* ``consume, group member``: the same records read by a member of a consumer group (subscribed;
  its partitions come from the group). raw: ``poll(timeout_ms=100)``; trionet: ``getmany()``.

Each consume measurement reads the N records ``PASSES`` (3) times over, seeking back to the
beginning of the partitions in between, on both sides.

The trionet clients live in one trio loop on a helper thread for the whole run (a measurement
is one ``trio.from_thread.run`` call), so client start-up is outside the timings on both sides.
Per-record overhead is the per-round difference of the time per record, trionet minus raw.

Goals (issue 7): produce ≥ 0.9× and consume ≥ 0.9× raw kafka-python; overhead ≤ 15 µs/record.

Run: ``.venv/bin/python bench/kafka.py [--quick] [--rounds N]`` (``--quick``: 10k records,
2 rounds; default 100k records, 5 rounds). Each measurement gives up after 120 s.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import trio
from _harness import Contender, Row, main_args, run_rows

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
        produce_topic = f"bench-produce-{run_id}"
        consume_topic = f"bench-consume-{run_id}"
        host = TrioHost()
        try:
            admin = host.enter(_admin(servers))
            host.run(admin.create_topics, [NewTopic(produce_topic, PARTITIONS),
                                           NewTopic(consume_topic, PARTITIONS)])
            cleanup: list[Callable[[], object]] = []
            try:
                rows = _rows(host, servers, produce_topic, consume_topic, count, cleanup)
                _run_and_report(rows, args.rounds, count, broker.external)
            finally:
                for close in cleanup:
                    close()
            host.run(admin.delete_topics, [produce_topic, consume_topic])
        finally:
            host.close()


def _rows(host: TrioHost, servers: str, produce_topic: str, consume_topic: str,
          count: int, cleanup: list[Callable[[], object]]) -> list[Row]:
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
    host.run(producer.send, produce_topic, VALUE)
    consumer = host.enter(KafkaConsumer(
        bootstrap_servers=servers, partitions=[(consume_topic, p) for p in range(PARTITIONS)],
        auto_offset_reset="earliest"))
    threaded = host.enter(KafkaConsumer(
        bootstrap_servers=servers, partitions=[(consume_topic, p) for p in range(PARTITIONS)],
        auto_offset_reset="earliest", decode_in_trio=False))

    async def trionet_produce() -> float:
        with trio.fail_after(TIME_CAP):
            send_nowait = producer.send_nowait
            for _ in range(count):
                send_nowait(produce_topic, VALUE)
            await producer.flush()
        return count

    async def trionet_consume_iter() -> float:
        total = 0
        with trio.fail_after(TIME_CAP):
            for _ in range(PASSES):
                await consumer.seek_to_beginning()
                got = 0
                async for _record in consumer:
                    got += 1
                    if got == count:
                        break
                total += got
        return total

    async def trionet_consume_many(reader: KafkaConsumer = consumer) -> float:
        total = 0
        with trio.fail_after(TIME_CAP):
            for _ in range(PASSES):
                await reader.seek_to_beginning()
                got = 0
                while got < count:
                    got += len(await reader.getmany())
                total += got
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

    return [
        Row("produce 100 B, acks=1", [
            Contender("raw kafka-python", CPU.meter("produce", "raw kafka-python", raw_produce)),
            Contender("trionet send_nowait", CPU.meter(
                "produce", "trionet send_nowait", lambda: host.run(trionet_produce))),
        ], goal=GOAL),
        Row("consume 100 B", [
            Contender("raw kafka-python", CPU.meter("consume", "raw kafka-python", raw_consume)),
            Contender("trionet getmany", CPU.meter(
                "consume", "trionet getmany", lambda: host.run(trionet_consume_many))),
            Contender("trionet getmany, decode_in_trio=False", CPU.meter(
                "consume", "trionet getmany, decode_in_trio=False",
                lambda: host.run(trionet_consume_threaded))),
            # Last: the harness judges the goal on the last contender of a row.
            Contender("trionet async for", CPU.meter(
                "consume", "trionet async for", lambda: host.run(trionet_consume_iter))),
        ], goal=GOAL),
        Row("consume 100 B, group member", [
            Contender("raw kafka-python", CPU.meter("group", "raw kafka-python",
                                                   raw_group_consume)),
            Contender("trionet getmany", CPU.meter(
                "group", "trionet getmany", lambda: host.run(trionet_group_consume))),
        ], goal=GOAL),
    ]


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
            per_record = (time.process_time() - start) / count * 1e6
            self.samples.setdefault(row, {}).setdefault(name, []).append(per_record)
            return count

        return measured


CPU = CpuMeter()


def _run_and_report(rows: list[Row], rounds: int, count: int, external: bool) -> None:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        run_rows("kafka", rows, rounds=rounds,
                 note=f"{count:,} records of 100 B per measurement, broker: "
                      f"{'external (TRIONET_KAFKA_BOOTSTRAP)' if external else 'noida-db'}")
    lines = captured.getvalue().rstrip("\n").split("\n")
    result = json.loads(lines[-1])
    print("\n".join(lines[:-1]))
    overheads: dict[str, float] = {}
    for row in rows:
        base = row.contenders[0].name
        for contender in row.contenders[1:]:
            per_round = [
                (1 / mine - 1 / theirs) * 1e6
                for mine, theirs in zip(row.results[contender.name], row.results[base],
                                        strict=True)
            ]
            overheads[f"{row.name}: {contender.name}"] = statistics.median(per_round)
    print("per round (ops/s, in round order):")
    for row in rows:
        for name, values in row.results.items():
            print(f"  {row.name}: {name}: {', '.join(f'{v:,.0f}' for v in values)}")
    print()
    print("per-record overhead from wall time, trionet minus raw kafka-python (median of "
          f"per-round differences; goal ≤ {OVERHEAD_GOAL_US:g} µs):")
    for name, value in overheads.items():
        verdict = "yes" if value <= OVERHEAD_GOAL_US else "NO"
        print(f"  {name}: {value:+.2f} µs/record (met: {verdict})")
    print()
    print("CPU time per record, whole process (median of rounds; less sensitive to other load):")
    cpu: dict[str, dict[str, float]] = {}
    cpu_overheads: dict[str, float] = {}
    for row_name, per_contender in CPU.samples.items():
        medians = {name: statistics.median(values) for name, values in per_contender.items()}
        cpu[row_name] = medians
        base_name, base = next(iter(medians.items()))
        for name, value in medians.items():
            if name == base_name:
                print(f"  {row_name}: {name}: {value:.2f} µs")
            else:
                cpu_overheads[f"{row_name}: {name}"] = value - base
                print(f"  {row_name}: {name}: {value:.2f} µs ({value - base:+.2f} µs, "
                      f"CPU ratio {base / value:.2f}×)")
    print()
    result["records"] = count
    result["overhead_us"] = overheads
    result["cpu_us_per_record"] = cpu
    result["cpu_overhead_us"] = cpu_overheads
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
