"""Read-ahead (prefetch): seeks, commits and pauses neither repeat nor skip records."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
from kafka_support import CONSUMER, new_topic, produce, read_while_paused, unique

from trionet.errors import ConfigurationError
from trionet.kafka import (
    KafkaAdmin,
    KafkaConsumer,
    KafkaRecord,
    TopicPartition,
)

#: Small polls so that read-ahead spans many of them: at most 8 * 5 records are buffered.
SMALL: dict[str, Any] = {"max_poll_records": 5, "prefetch": 8}
BOUND = 40


async def _read_ahead(consumer: KafkaConsumer, at_least: int) -> list[KafkaRecord]:
    """Read slowly, one record at a time, until the consumer's thread has buffered *at_least*
    records beyond what was read; returns the records read meanwhile."""
    taken: list[KafkaRecord] = []
    while consumer.buffered < at_least:
        assert consumer.buffered <= BOUND
        taken.extend(await consumer.getmany(max_records=1))
        await trio.sleep(0.01)
    assert consumer.buffered <= BOUND
    return taken


async def _take(consumer: KafkaConsumer, count: int) -> list[KafkaRecord]:
    records: list[KafkaRecord] = []
    while len(records) < count:
        records.extend(await consumer.getmany(max_records=count - len(records)))
        assert consumer.buffered <= BOUND
    return records


async def test_seek_after_read_ahead_delivers_from_the_seek_position(servers: str) -> None:
    async with new_topic(servers, "pfseek", partitions=1) as topic:
        await produce(servers, topic, [b"%03d" % n for n in range(200)])
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 **SMALL, **CONSUMER) as consumer:
            with trio.fail_after(20):
                read = await _take(consumer, 3)
                read += await _read_ahead(consumer, 2 * 5)  # several polls ahead of the reader
                assert [r.offset for r in read] == list(range(len(read)))
                await consumer.seek((topic, 0), 150)
                assert [r.offset for r in await _take(consumer, 20)] == list(range(150, 170))
                read = await _read_ahead(consumer, 10)
                assert [r.offset for r in read] == list(range(170, 170 + len(read)))
                await consumer.seek((topic, 0), 7)  # backwards, past what was read ahead
                assert [r.offset for r in await _take(consumer, 10)] == list(range(7, 17))
                await _read_ahead(consumer, 10)
                await consumer.seek_to_beginning()
                assert [r.value for r in await _take(consumer, 4)] == [b"000", b"001", b"002",
                                                                       b"003"]


async def test_commit_covers_only_what_was_handed_out(servers: str) -> None:
    values = [b"%03d" % n for n in range(120)]
    async with new_topic(servers, "pfcommit", partitions=1) as topic:
        await produce(servers, topic, values)
        group = unique("pfcommit")
        tp = TopicPartition(topic, 0)
        async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=group,
                                 commit_on_exit=False, **SMALL, **CONSUMER) as consumer:
            with trio.fail_after(20):
                read = await _take(consumer, 12)  # part of a hand-off
                read += await _read_ahead(consumer, 15)
                first = [r.value for r in read]
                # kafka-python's position includes the read-ahead; the commit does not.
                assert await consumer.position(tp) >= len(first) + 15
                assert await consumer.commit() == {tp: len(first)}
        async with KafkaAdmin(servers) as admin:
            assert await admin.list_consumer_group_offsets(group) == {tp: len(first)}
        async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=group,
                                 **SMALL, **CONSUMER) as consumer:
            with trio.fail_after(20):
                rest = [r.value for r in await _take(consumer, len(values) - len(first))]
        assert first + rest == values  # resumed exactly: no gap, no duplicate


async def test_pause_stops_delivery_of_read_ahead_records(servers: str) -> None:
    async with new_topic(servers, "pfpause", partitions=2) as topic:
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        await produce(servers, topic, [b"a%02d" % n for n in range(60)], partition=0)
        await produce(servers, topic, [b"b%02d" % n for n in range(60)], partition=1)
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[p0, p1],
                                 **SMALL, **CONSUMER) as consumer:
            seen: list[tuple[int, int]] = []
            with trio.fail_after(30):
                read = await _take(consumer, 2)
                read += await _read_ahead(consumer, 20)
                seen.extend((r.partition, r.offset) for r in read)
                await consumer.pause(p0)

                async def one() -> KafkaRecord:
                    (record,) = await _take(consumer, 1)
                    return record

                await read_while_paused(consumer, one, seen, 1, 60)
                await consumer.resume(p0)
                while len(seen) < 120:
                    seen.extend((r.partition, r.offset) for r in await _take(consumer, 1))
        assert sorted(seen) == [(p, o) for p in (0, 1) for o in range(60)]


async def test_buffer_stays_within_its_bound_and_prefetch_zero_reads_on_demand(
        servers: str) -> None:
    async with new_topic(servers, "pfbound", partitions=1) as topic:
        await produce(servers, topic, [b"%03d" % n for n in range(100)])
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 **SMALL, **CONSUMER) as consumer:
            with trio.fail_after(20):
                read = await _take(consumer, 1)
                read += await _read_ahead(consumer, BOUND - 5)  # up to the bound, not beyond
                read += await _take(consumer, 100 - len(read))
                assert [r.offset for r in read] == list(range(100))
        for options in ({"prefetch": 0}, {"enable_auto_commit": True,
                                          "group_id": unique("pfauto")}):
            async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                     max_poll_records=5, **options, **CONSUMER) as consumer:
                with trio.fail_after(20):
                    offsets = []
                    for _ in range(30):
                        offsets.append((await consumer.getone()).offset)
                        # Without read-ahead a poll happens only with an empty buffer.
                        assert consumer.buffered < 5
                        await trio.lowlevel.checkpoint()
                    assert offsets == list(range(30))


async def test_prefetch_bytes_bounds_read_ahead_of_large_records(servers: str) -> None:
    big = 10_000
    async with new_topic(servers, "pfbytes", partitions=1) as topic:
        await produce(servers, topic, [b"%03d" % n + b"." * big for n in range(80)])
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[(topic, 0)],
                                 prefetch_bytes=5 * big, **SMALL, **CONSUMER) as consumer:
            with trio.fail_after(20):
                offsets: list[int] = []
                most = 0
                while len(offsets) < 80:
                    offsets.extend(r.offset for r in await consumer.getmany(max_records=1))
                    most = max(most, consumer.buffered)
                    # 5 records' worth of bytes, give or take one poll (5 records).
                    assert consumer.buffered <= 5 + 5
                    await trio.sleep(0.005)
        assert offsets == list(range(80))
        assert most >= 2  # it did read ahead, within the byte bound


@pytest.mark.parametrize("in_trio", [True, False], ids=["decode-in-trio", "decode-on-thread"])
async def test_defaults_for_group_subscriptions_and_assigned_partitions(
        servers: str, in_trio: bool, kafka_backend: str) -> None:
    # The deserializer runs wherever records are decoded: it tells which thread did it.
    decoded_on: list[str] = []

    def note_thread(value: bytes) -> bytes:
        decoded_on.append(threading.current_thread().name)
        return value

    trio_thread = threading.current_thread().name
    # The confluent engine deserializes on its consumer's thread (docs/kafka.rst, Engines).
    on_trio = in_trio and kafka_backend == "kafka-python"
    async with new_topic(servers, "defaults", partitions=1) as topic:
        await produce(servers, topic, [b"%03d" % n for n in range(60)])
        async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=unique("defaults"),
                                 max_poll_records=5, value_deserializer=note_thread,
                                 decode_in_trio=in_trio, **CONSUMER) as consumer:
            with trio.fail_after(20):
                # A group subscription: no read-ahead (a poll only with an empty buffer).
                for expected in range(20):
                    assert (await consumer.getone()).offset == expected
                    assert consumer.buffered < 5
                    await trio.sleep(0.005)
                # The first records come from a poll on the consumer's thread (it joins the
                # group and fetches); the rest of the fetched records are decoded in trio.
                assert (trio_thread in decoded_on) is on_trio
                assert decoded_on[0] != trio_thread
                await consumer.unsubscribe()
                await consumer.assign([(topic, 0)])
                await consumer.seek((topic, 0), 20)
                before = len(decoded_on)
                most = 0
                for expected in range(20, 60):
                    record = await consumer.getone()
                    assert (record.offset, record.value) == (expected, b"%03d" % expected)
                    most = max(most, consumer.buffered)
                    await trio.sleep(0.005)
                assert len(decoded_on) == 60
                assert (trio_thread in decoded_on[before:]) is on_trio
                if in_trio:
                    assert most < 5  # no read-ahead
                else:
                    # Assigned partitions decoded on the thread: read-ahead is on by default.
                    assert most >= 5


async def test_decoding_in_trio_keeps_seeks_and_commits_exact(servers: str) -> None:
    group = unique("intrio-commit")
    async with new_topic(servers, "intrio-commit", partitions=2) as topic:
        await produce(servers, topic, [b"%03d" % n for n in range(100)], partition=0)
        await produce(servers, topic, [b"%03d" % n for n in range(100)], partition=1)
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        async with KafkaConsumer(bootstrap_servers=servers, partitions=[p0, p1],
                                 group_id=group, max_poll_records=7, **CONSUMER) as consumer:
            with trio.fail_after(20):
                seen: dict[int, list[int]] = {0: [], 1: []}
                while min(len(seen[0]), len(seen[1])) < 10:
                    for record in await consumer.getmany(3):
                        seen[record.partition].append(record.offset)
                for offsets in seen.values():
                    assert offsets == list(range(len(offsets)))
                committed = await consumer.commit()
                assert committed == {p0: len(seen[0]), p1: len(seen[1])}
                await consumer.seek(p0, 90)
                rest = [await consumer.getone() for _ in range(10 + 100 - len(seen[1]))]
                assert sorted(r.offset for r in rest if r.partition == 0) == list(range(90, 100))
                assert sorted(r.offset for r in rest if r.partition == 1) == list(
                    range(len(seen[1]), 100))
            assert await consumer.committed(p0) == len(seen[0])


def test_prefetch_must_be_a_count() -> None:
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigurationError, match="prefetch"):
            KafkaConsumer("t", prefetch=bad)  # type: ignore[arg-type]
    for bad_bytes in (0, -5, 1.5):
        with pytest.raises(ConfigurationError, match="prefetch_bytes"):
            KafkaConsumer("t", prefetch_bytes=bad_bytes)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="decode_in_trio"):
        KafkaConsumer("t", decode_in_trio=1)  # type: ignore[arg-type]
