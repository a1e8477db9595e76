"""Kafka peers for bench/kafka.py, each in its own process: aiokafka (asyncio) and
confluent-kafka (librdkafka). Nothing here imports trionet.

``python bench/_kafka_peers.py KIND`` (KIND: ``aiokafka`` or ``confluent``) reads one JSON job a
line on stdin and answers one JSON line on stdout:

* ``{"op": "setup", "servers", "produce_topic", "consume_topic", "partitions", "count",
  "passes"}``: create the producer and the consumer, send one record and wait for it, read
  the records once (connections and metadata set up outside the timings), then pause the
  consumer;
* ``{"op": "produce"}``: ``count`` records of 100 bytes, ``acks=1``, then a flush; every record
  must be acknowledged, else the answer is ``{"error": ...}``;
* ``{"op": "consume"}``: resume the consumer, read the ``count`` records of ``consume_topic``
  ``passes`` times over (seeking back to the beginning in between), pause it again (the broker
  answers an idle fetch at once, so a resumed idle consumer would spin against it while the
  other contenders are measured). confluent-kafka's consumer is assigned the partitions for the
  measurement and unassigned after it instead: librdkafka 2.16 took ~0.9 s to fetch again after
  ``resume()`` here, where a fresh ``assign()`` fetches at once;
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
from typing import Any

VALUE = b"x" * 100
TIME_CAP = 120.0
LINGER_MS = 5
AIOKAFKA_BATCH_BYTES = 256 * 1024
CONFLUENT_BATCH = 10_000
CONSUME_BATCH = 10_000


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
        tps: list[TopicPartition] = []
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
                    await producer.send_and_wait(job["produce_topic"], VALUE)
                    tps = [TopicPartition(job["consume_topic"], p)
                           for p in range(job["partitions"])]
                    consumer = AIOKafkaConsumer(
                        bootstrap_servers=job["servers"], enable_auto_commit=False,
                        auto_offset_reset="earliest")
                    await consumer.start()
                    consumer.assign(tps)
                    await _aiokafka_consume(consumer, {**job, "passes": 1})  # warm-up
                    consumer.pause(*tps)
                    _answer({"count": 0})
                    continue
                if op == "close":
                    break
                assert producer is not None and consumer is not None
                async with asyncio.timeout(TIME_CAP):
                    if op == "produce":
                        count = await _aiokafka_produce(producer, job)
                    else:
                        consumer.resume(*tps)
                        try:
                            count = await _aiokafka_consume(consumer, job)
                        finally:
                            consumer.pause(*tps)
                _answer({"count": count, "cpu": time.process_time() - cpu})
        finally:
            if producer is not None:
                await producer.stop()
            if consumer is not None:
                await consumer.stop()

    asyncio.run(main())


async def _aiokafka_produce(producer: Any, job: dict[str, Any]) -> int:
    """``count`` records in batches made with ``create_batch()``, round-robin over partitions."""
    import asyncio

    topic, partitions, count = job["produce_topic"], job["partitions"], job["count"]
    pending = []
    partition = 0
    batch = producer.create_batch()
    for _ in range(count):
        if batch.append(key=None, value=VALUE, timestamp=None) is None:
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            partition = (partition + 1) % partitions
            batch = producer.create_batch()
            batch.append(key=None, value=VALUE, timestamp=None)
    batch.close()
    pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)  # raises if a batch was not acknowledged
    return count


async def _aiokafka_consume(consumer: Any, job: dict[str, Any]) -> int:
    count = job["count"]
    total = 0
    for _ in range(job["passes"]):
        await consumer.seek_to_beginning()
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
    consumer: Any = None
    job: dict[str, Any] = {}
    tps: list[Any] = []
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
                producer.produce(job["produce_topic"], VALUE)
                if producer.flush(30) != 0:
                    raise TimeoutError("confluent-kafka could not deliver the first record")
                tps = [ck.TopicPartition(job["consume_topic"], p, ck.OFFSET_BEGINNING)
                       for p in range(job["partitions"])]
                consumer = ck.Consumer({
                    "bootstrap.servers": job["servers"], "group.id": "bench-confluent-unused",
                    "enable.auto.commit": False, "auto.offset.reset": "earliest",
                })
                consumer.assign(tps)  # warm-up: connections and metadata
                _confluent_consume(ck, consumer, tps, {**job, "passes": 1},
                                   time.monotonic() + TIME_CAP)
                consumer.unassign()
                _answer({"count": 0})
                continue
            if op == "close":
                break
            deadline = time.monotonic() + TIME_CAP
            if op == "produce":
                count = _confluent_produce(producer, job, deadline)
                if failed:
                    _answer({"error": f"{len(failed)} records not delivered: {failed[0]}"})
                    failed.clear()
                    continue
            else:
                # Assigned only while measured (see the module's docstring).
                consumer.assign(tps)
                try:
                    count = _confluent_consume(ck, consumer, tps, job, deadline)
                finally:
                    consumer.unassign()
            _answer({"count": count, "cpu": time.process_time() - cpu})
    finally:
        if consumer is not None:
            consumer.close()
        if producer is not None:
            producer.flush(10)


def _confluent_produce(producer: Any, job: dict[str, Any], deadline: float) -> int:
    topic, count = job["produce_topic"], job["count"]
    produce, poll = producer.produce, producer.poll
    for n in range(count):
        while True:
            try:
                produce(topic, VALUE)
                break
            except BufferError:  # the local queue is full: let librdkafka send some
                poll(0.01)
                if time.monotonic() > deadline:
                    raise TimeoutError("confluent-kafka produce exceeded the time cap") from None
        if n % 1000 == 0:
            poll(0)
    left = producer.flush(max(0.0, deadline - time.monotonic()))
    if left:
        raise TimeoutError(f"confluent-kafka: {left} records still queued at the time cap")
    return count


def _confluent_consume(ck: Any, consumer: Any, tps: list[Any], job: dict[str, Any],
                       deadline: float) -> int:
    count = job["count"]
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
