"""Kafka peers for bench/kafka.py, each in its own process: aiokafka (asyncio) and
confluent-kafka (librdkafka). Nothing here imports trionet.

``python bench/_kafka_peers.py KIND`` (KIND: ``aiokafka`` or ``confluent``) reads one JSON job a
line on stdin and answers one JSON line on stdout:

* ``{"op": "setup", "servers", "produce_topics", "consume_topics", "latency_topic",
  "partitions", "count", "counts", "passes"}`` (the topics by record size, ``{"100": topic,
  "1024": topic}``; ``counts``: the records a measurement moves, by size): create the producer
  and the consumer, send one record to each produce topic and wait for it, read each consume
  topic once (connections and metadata set up outside the timings), then pause the consumer;
* ``{"op": "produce", "size": n}``: ``counts[n]`` records of ``n`` bytes, ``acks=1``, then a flush;
  every record must be acknowledged, else the answer is ``{"error": ...}``;
* ``{"op": "consume", "size": n}``: resume the consumer, read the ``count`` records of the
  ``n``-byte consume topic ``passes`` times over (seeking back to the beginning in between),
  pause it again (the broker
  answers an idle fetch at once, so a resumed idle consumer would spin against it while the
  other contenders are measured). confluent-kafka's consumer is assigned the partitions for the
  measurement and unassigned after it instead: librdkafka 2.16 took ~0.9 s to fetch again after
  ``resume()`` here, where a fresh ``assign()`` fetches at once;
* confluent-kafka only, the bounds of a wrapper that hands out what trionet does:
  ``{"op": "produce_reports", "size": n}`` is ``produce`` with a delivery report per record (a
  small callable per record keeps its partition and offset, as a delivery result needs), by a
  second producer writing to ``report_topics``; ``{"op": "consume_records", "size": n}`` is
  ``consume`` building one tuple of the record's fields (topic, partition, offset, key, value,
  headers, timestamp) per message;
* ``{"op": "latency", "samples": k}`` (confluent-kafka only): ``k`` times, one record sent to
  the 1-partition ``latency_topic`` by a producer with ``linger.ms=0`` and awaited by a consumer
  (``consume(1, timeout)``) that reads that partition from its end; the answer carries the
  ``p50`` and ``p99`` of the ``k`` send-to-receive times in microseconds. A record that does
  not arrive (or arrives out of turn) is an error;
* ``{"op": "close"}``.

Answers carry ``count`` (records moved) and ``cpu`` (this process's CPU seconds for the job, all
threads). Each client is configured for throughput as its own documentation recommends:

* aiokafka: ``linger_ms`` and a larger ``max_batch_size`` on the producer, whose batches are
  filled with ``create_batch()`` / ``send_batch()`` per partition (the documented batch API;
  the per-record ``send()`` futures are the slower of the two here); ``getmany()`` on the
  consumer.
* confluent-kafka: ``linger.ms`` (``queue.buffering.max.ms``), ``batch.num.messages`` and a
  local queue that holds a whole measurement; ``produce()`` in a loop with ``poll(0)`` to serve
  delivery reports, which are asked for errors only (``delivery.report.only.error``), then
  ``flush()``; ``consume(num_messages=...)`` batches on the consumer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

TIME_CAP = 120.0
LINGER_MS = 5
AIOKAFKA_BATCH_BYTES = 256 * 1024
CONFLUENT_BATCH = 10_000
CONSUME_BATCH = 10_000
#: noida-db answers a fetch with every record it has, ignoring ``fetch.max.bytes``: 100k records
#: of 1 KiB exceed librdkafka's default limit on a response (100 MB), which it then refuses.
RECEIVE_MAX_BYTES = 1_000_000_000


def _value(size: int) -> bytes:
    return b"x" * size


def _percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 of *samples* (seconds), in microseconds."""
    ordered = sorted(samples)
    return {"p50": ordered[len(ordered) // 2] * 1e6,
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6}


def _sized(job: dict[str, Any], size: str) -> dict[str, Any]:
    """*job* with ``count`` the number of records of *size* bytes a measurement moves."""
    return {**job, "count": job["counts"][size]}


def _answer(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# -- aiokafka ------------------------------------------------------------------------------------


def aiokafka_main() -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        producer: AIOKafkaProducer | None = None
        consumer: AIOKafkaConsumer | None = None
        job: dict[str, Any] = {}
        tps: dict[str, list[TopicPartition]] = {}
        try:
            while line := await reader.readline():
                request = json.loads(line)
                op = request["op"]
                cpu = time.process_time()
                if op == "setup":
                    job = request
                    producer = AIOKafkaProducer(
                        bootstrap_servers=job["servers"], acks=1, enable_idempotence=False,
                        linger_ms=LINGER_MS, max_batch_size=AIOKAFKA_BATCH_BYTES)
                    await producer.start()
                    for size, topic in job["produce_topics"].items():
                        await producer.send_and_wait(topic, _value(int(size)))
                    tps = {size: [TopicPartition(topic, p) for p in range(job["partitions"])]
                           for size, topic in job["consume_topics"].items()}
                    consumer = AIOKafkaConsumer(
                        bootstrap_servers=job["servers"], enable_auto_commit=False,
                        auto_offset_reset="earliest")
                    await consumer.start()
                    consumer.assign([tp for each in tps.values() for tp in each])
                    consumer.pause(*consumer.assignment())
                    for size in tps:  # warm-up
                        consumer.resume(*tps[size])
                        await _aiokafka_consume(consumer, {**_sized(job, size), "passes": 1},
                                                tps[size])
                        consumer.pause(*tps[size])
                    _answer({"count": 0})
                    continue
                if op == "close":
                    break
                assert producer is not None and consumer is not None
                size = str(request["size"])
                sized = _sized(job, size)
                async with asyncio.timeout(TIME_CAP):
                    if op == "produce":
                        count = await _aiokafka_produce(producer, sized, int(size))
                    else:
                        consumer.resume(*tps[size])
                        try:
                            count = await _aiokafka_consume(consumer, sized, tps[size])
                        finally:
                            consumer.pause(*tps[size])
                _answer({"count": count, "cpu": time.process_time() - cpu})
        finally:
            if producer is not None:
                await producer.stop()
            if consumer is not None:
                await consumer.stop()

    asyncio.run(main())


async def _aiokafka_produce(producer: Any, job: dict[str, Any], size: int) -> int:
    """``count`` records in batches made with ``create_batch()``, round-robin over partitions."""
    import asyncio

    topic, partitions, count = job["produce_topics"][str(size)], job["partitions"], job["count"]
    value = _value(size)
    pending = []
    partition = 0
    batch = producer.create_batch()
    for _ in range(count):
        if batch.append(key=None, value=value, timestamp=None) is None:
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            partition = (partition + 1) % partitions
            batch = producer.create_batch()
            batch.append(key=None, value=value, timestamp=None)
    batch.close()
    pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)  # raises if a batch was not acknowledged
    return count


async def _aiokafka_consume(consumer: Any, job: dict[str, Any], tps: list[Any]) -> int:
    count = job["count"]
    total = 0
    for _ in range(job["passes"]):
        await consumer.seek_to_beginning(*tps)
        got = 0
        while got < count:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                got += len(records)
        total += got
    return total


# -- confluent-kafka -----------------------------------------------------------------------------


def confluent_main() -> None:
    import confluent_kafka as ck

    producer: Any = None
    reporting: Any = None
    consumer: Any = None
    latency: tuple[Any, Any] | None = None
    job: dict[str, Any] = {}
    tps: dict[str, list[Any]] = {}
    failed: list[str] = []

    def on_delivery(error: Any, message: Any) -> None:  # called for failed records only
        if error is not None:
            failed.append(str(error))

    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request["op"]
            cpu = time.process_time()
            if op == "setup":
                job = request
                producer = ck.Producer({
                    "bootstrap.servers": job["servers"], "acks": 1,
                    "enable.idempotence": False, "linger.ms": LINGER_MS,
                    "batch.num.messages": CONFLUENT_BATCH,
                    "queue.buffering.max.messages": max(100_000, job["count"]),
                    "delivery.report.only.error": True, "on_delivery": on_delivery,
                })
                for size, topic in job["produce_topics"].items():
                    producer.produce(topic, _value(int(size)))
                if producer.flush(30) != 0:
                    raise TimeoutError("confluent-kafka could not deliver the first record")
                if job.get("report_topics"):
                    reporting = ck.Producer({
                        "bootstrap.servers": job["servers"], "acks": 1,
                        "enable.idempotence": False, "linger.ms": LINGER_MS,
                        "batch.num.messages": CONFLUENT_BATCH,
                        "queue.buffering.max.messages": max(100_000, job["count"])})
                    for size, topic in job["report_topics"].items():
                        reporting.produce(topic, _value(int(size)))
                    if reporting.flush(30) != 0:
                        raise TimeoutError("confluent-kafka could not deliver the first record")
                tps = {size: [ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)
                              for p in range(job["partitions"])]
                       for size, topic in job["consume_topics"].items()}
                consumer = ck.Consumer({
                    "bootstrap.servers": job["servers"], "group.id": "bench-confluent-unused",
                    "enable.auto.commit": False, "auto.offset.reset": "earliest",
                    "receive.message.max.bytes": RECEIVE_MAX_BYTES,
                })
                for size in tps:  # warm-up: connections and metadata
                    consumer.assign(tps[size])
                    _confluent_consume(ck, consumer, tps[size], {**_sized(job, size), "passes": 1},
                                       time.monotonic() + TIME_CAP)
                    consumer.unassign()
                if job.get("latency_topic"):
                    latency = _confluent_latency_clients(ck, job)
                _answer({"count": 0})
                continue
            if op == "close":
                break
            deadline = time.monotonic() + TIME_CAP
            if op == "latency":
                assert latency is not None
                samples = _confluent_latency(ck, *latency, job["latency_topic"],
                                             request["samples"], deadline)
                _answer({"count": len(samples), **_percentiles(samples),
                         "cpu": time.process_time() - cpu})
                continue
            size = str(request["size"])
            sized = _sized(job, size)
            if op == "produce":
                count = _confluent_produce(producer, sized, int(size), deadline)
                if failed:
                    _answer({"error": f"{len(failed)} records not delivered: {failed[0]}"})
                    failed.clear()
                    continue
            elif op == "produce_reports":
                count = _confluent_produce_reports(reporting, sized, int(size), deadline)
            else:
                # Assigned only while measured (see the module's docstring).
                consumer.assign(tps[size])
                try:
                    count = _confluent_consume(ck, consumer, tps[size], sized, deadline,
                                               records=op == "consume_records")
                finally:
                    consumer.unassign()
            _answer({"count": count, "cpu": time.process_time() - cpu})
    finally:
        if latency is not None:
            latency[1].close()
            latency[0].flush(10)
        if consumer is not None:
            consumer.close()
        if producer is not None:
            producer.flush(10)
        if reporting is not None:
            reporting.flush(10)


def _confluent_produce(producer: Any, job: dict[str, Any], size: int, deadline: float) -> int:
    topic, count = job["produce_topics"][str(size)], job["count"]
    value = _value(size)
    produce, poll = producer.produce, producer.poll
    for n in range(count):
        while True:
            try:
                produce(topic, value)
                break
            except BufferError:
                _wait_for_room(poll, deadline)
        if n % 1000 == 0:
            poll(0)
    left = producer.flush(max(0.0, deadline - time.monotonic()))
    if left:
        raise TimeoutError(f"confluent-kafka: {left} records still queued at the time cap")
    return count


def _wait_for_room(poll: Callable[[float], object], deadline: float) -> None:
    """librdkafka's local queue is full: let it send some."""
    poll(0.01)
    if time.monotonic() > deadline:
        raise TimeoutError("confluent-kafka produce exceeded the time cap")


class _Report:
    """One record's delivery report: what a delivery result needs (where it was written)."""

    __slots__ = ("error", "offset", "partition")

    def __init__(self) -> None:
        self.error: Any = None
        self.partition = -1
        self.offset = -1

    def __call__(self, error: Any, message: Any) -> None:
        if error is not None:
            self.error = error
        else:
            self.partition = message.partition()
            self.offset = message.offset()


def _confluent_produce_reports(producer: Any, job: dict[str, Any], size: int,
                               deadline: float) -> int:
    topic, count = job["report_topics"][str(size)], job["count"]
    value = _value(size)
    produce, poll = producer.produce, producer.poll
    reports = []
    for n in range(count):
        report = _Report()
        reports.append(report)
        while True:
            try:
                produce(topic, value, on_delivery=report)
                break
            except BufferError:
                _wait_for_room(poll, deadline)
        if n % 1000 == 0:
            poll(0)
    left = producer.flush(max(0.0, deadline - time.monotonic()))
    if left or any(r.error is not None or r.offset < 0 for r in reports):
        raise RuntimeError("confluent-kafka: records not delivered")
    return count


def _confluent_latency_clients(ck: Any, job: dict[str, Any]) -> tuple[Any, Any]:
    """A producer that sends at once (``linger.ms=0``) and a consumer at the topic's end."""
    producer = ck.Producer({"bootstrap.servers": job["servers"], "acks": 1, "linger.ms": 0,
                            "enable.idempotence": False})
    consumer = ck.Consumer({"bootstrap.servers": job["servers"], "group.id": "bench-latency",
                            "enable.auto.commit": False, "auto.offset.reset": "latest"})
    _confluent_latency(ck, producer, consumer, job["latency_topic"], 1,
                       time.monotonic() + TIME_CAP)  # warm-up: connections and metadata
    return producer, consumer


def _confluent_latency(ck: Any, producer: Any, consumer: Any, topic: str, samples: int,
                       deadline: float) -> list[float]:
    """*samples* send-to-receive times (seconds), one record in flight at a time.

    The consumer is assigned the partition from its end (looked up first) while measured.
    """
    tp = ck.TopicPartition(topic, 0)
    _low, high = consumer.get_watermark_offsets(tp, timeout=max(0.1, deadline - time.monotonic()))
    consumer.assign([ck.TopicPartition(topic, 0, high)])
    out = []
    for n in range(samples):
        value = f"{time.monotonic_ns()}-{n}".encode()
        start = time.perf_counter()
        producer.produce(topic, value)
        producer.poll(0)
        while True:
            got = [m for m in consumer.consume(1, 0.1) if m.error() is None]
            if got:
                if got[0].value() != value:
                    raise RuntimeError("confluent-kafka latency: a record arrived out of turn")
                break
            if time.monotonic() > deadline:
                raise TimeoutError("confluent-kafka latency: a record did not arrive")
        out.append(time.perf_counter() - start)
    consumer.unassign()
    producer.flush(10)
    return out


def _confluent_consume(ck: Any, consumer: Any, tps: list[Any], job: dict[str, Any],
                       deadline: float, *, records: bool = False) -> int:
    count = job["count"]
    new = tuple.__new__
    total = 0
    for n in range(job["passes"]):
        if n:  # the first pass starts where assign() put the partitions: their beginning
            for tp in tps:
                _confluent_seek(ck, consumer, tp, deadline)
        got = 0
        while got < count:
            for message in consumer.consume(num_messages=CONSUME_BATCH, timeout=0.1):
                if message.error() is None:
                    got += 1
                    if records:
                        new(tuple, (message.topic(), message.partition(), message.offset(),
                                    message.key(), message.value(), message.headers() or (),
                                    message.timestamp()))
                elif message.error().code() != ck.KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"confluent-kafka consume: {message.error()}")
            if time.monotonic() > deadline:
                raise TimeoutError("confluent-kafka consume exceeded the time cap")
        total += got
    return total


def _confluent_seek(ck: Any, consumer: Any, tp: Any, deadline: float) -> None:
    """Seek *tp* to its beginning (librdkafka refuses while the partition is still starting)."""
    while True:
        try:
            consumer.seek(ck.TopicPartition(tp.topic, tp.partition, ck.OFFSET_BEGINNING))
            return
        except ck.KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # (a poll() here could hand out a record of another partition)


if __name__ == "__main__":
    from _bounds import forbid_trionet

    forbid_trionet()  # a peer's process: checked, not just claimed
    {"aiokafka": aiokafka_main, "confluent": confluent_main}[sys.argv[1]]()
