"""The Kafka clients' engine-free cores, without a broker or a socket: the consumer's fetch
buffer and commit bookkeeping, and the producer's delivery ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from trionet.kafka import (
    KafkaConnectionError,
    KafkaDeliveryError,
    KafkaRecord,
    RecordDecodeError,
    RecordMetadata,
    TopicPartition,
)
from trionet.kafka._deliveries import DeliveryLedger
from trionet.kafka._fetch import FetchBuffer, Undecodable

A0 = TopicPartition("a", 0)
A1 = TopicPartition("a", 1)


def _records(tp: TopicPartition, offsets: range) -> list[KafkaRecord | Undecodable]:
    return [KafkaRecord(tp.topic, tp.partition, n, None, b"v%d" % n, (), 0, 0) for n in offsets]


def _undecodable(tp: TopicPartition, offset: int) -> Undecodable:
    record = KafkaRecord(tp.topic, tp.partition, offset, None, b"?", (), 0, 0)
    return Undecodable(record, RecordDecodeError("bad", record=record))


def _buffer(broker_timeout: float | None = 30.0) -> FetchBuffer:
    return FetchBuffer(servers="h:1", broker_timeout=broker_timeout)


@pytest.mark.parametrize("decoding", [True, False])
def test_records_handed_out_are_what_a_commit_commits(decoding: bool) -> None:
    # decoding=False: no deserializers, so no Undecodable: take() hands out whole batches.
    buffer = FetchBuffer(servers="h:1", broker_timeout=30.0, decoding=decoding)
    buffer.fetched(_records(A0, range(3)) + _records(A1, range(10, 12)), unreachable=False,
                   now=0.0)
    assert buffer.received == 5
    taken = buffer.take(4)
    assert [(r.partition, r.offset) for r in taken] == [(0, 0), (0, 1), (0, 2), (1, 10)]
    # Read-ahead (the record still buffered) is never committed.
    assert buffer.delivered_offsets() == {A0: 3, A1: 11}
    assert [r.offset for r in buffer.take(None)] == [11]
    assert buffer.delivered_offsets() == {A0: 3, A1: 12}


def test_an_undecodable_record_counts_as_handed_out_and_ends_a_batch() -> None:
    buffer = _buffer()
    buffer.fetched([*_records(A0, range(2)), _undecodable(A0, 2), *_records(A0, range(3, 4))],
                   unreachable=False, now=0.0)
    assert [r.offset for r in buffer.take(None)] == [0, 1]
    with pytest.raises(RecordDecodeError):
        buffer.take(None)
    assert buffer.delivered_offsets() == {A0: 3}
    assert [r.offset for r in buffer.take(None)] == [3]


def test_seek_pause_and_revocation_keep_the_books_in_step() -> None:
    buffer = _buffer()
    buffer.fetched(_records(A0, range(4)) + _records(A1, range(4)), unreachable=False,
                   now=0.0)
    buffer.take(1)
    buffer.paused([A1])  # A1's buffered records are read again after resume
    assert buffer.take_rewind([A1]) == {A1: 0}
    assert buffer.take_rewind([A1]) == {}
    buffer.sought(A0, 2)  # the rest of A0 is dropped; the next commit starts from 2
    assert len(buffer) == 0
    assert buffer.delivered_offsets() == {A0: 2}
    buffer.fetched(_records(A0, range(2, 4)), unreachable=False, now=0.0)
    buffer.moved([A0])
    assert len(buffer) == 0 and buffer.delivered_offsets() == {}


def test_a_commit_leaves_out_partitions_revoked_after_it_was_computed() -> None:
    buffer = _buffer()
    buffer.fetched(_records(A0, range(2)) + _records(A1, range(2)), unreachable=False,
                   now=0.0)
    buffer.take(None)
    wanted = buffer.delivered_offsets()
    since = buffer.revocations
    buffer.forget([A1])  # a rebalance took A1 away
    assert buffer.delivered_offsets() == {A0: 2}
    keep, revoked = buffer.split_revoked(wanted, since)
    assert keep == {A0: 2} and revoked == {A1}
    # A commit computed after the revocation commits everything it names.
    assert buffer.split_revoked({A0: 2}, buffer.revocations) == ({A0: 2}, frozenset())


def test_empty_fetches_without_brokers_fail_after_broker_timeout() -> None:
    buffer = _buffer(broker_timeout=5.0)
    buffer.fetched([], unreachable=True, now=100.0)
    buffer.fetched([], unreachable=True, now=104.0)
    assert buffer.take_error() is None
    buffer.fetched([], unreachable=False, now=104.5)  # a broker answered: the clock restarts
    buffer.fetched([], unreachable=True, now=105.0)
    buffer.fetched([], unreachable=True, now=109.0)
    assert buffer.take_error() is None
    buffer.fetched([], unreachable=True, now=110.0)
    error = buffer.take_error()
    assert isinstance(error, KafkaConnectionError) and "5 s" in str(error)
    assert buffer.take_error() is None
    never = _buffer(broker_timeout=None)
    for now in range(0, 1000, 100):
        never.fetched([], unreachable=True, now=float(now))
    assert never.take_error() is None


class _Handle:
    """A record's DeliveryHandle, as an engine's thread would finish it."""

    def __init__(self, topic: str = "t", partition: int = 0) -> None:
        self.is_done = False
        self.exception: BaseException | None = None
        self.value: Any = None
        self.topic, self.partition = topic, partition
        self.wakes: list[Callable[[], object]] = []

    def finish(self, offset: int | None = None, error: BaseException | None = None) -> None:
        self.value = RecordMetadata(self.topic, self.partition, offset or 0, 0)
        self.exception = error
        self.is_done = True
        for wake in self.wakes:
            wake()


class _Engine:
    """The four ProducerEngine methods the ledger uses, over _Handle objects."""

    def __init__(self) -> None:
        self.watched = 0

    def watch(self, handle: _Handle, wake: Callable[[], object]) -> None:
        self.watched += 1
        if handle.is_done:
            wake()
        else:
            handle.wakes.append(wake)

    def metadata(self, handle: _Handle) -> RecordMetadata:
        metadata: RecordMetadata = handle.value
        return metadata

    def failure(self, handle: _Handle, topic: str | None = None,
                partition: int | None = None) -> KafkaDeliveryError:
        error = KafkaDeliveryError(f"not delivered: {handle.exception}", topic=handle.topic,
                                   partition=handle.partition)
        error.__cause__ = handle.exception
        return error

    def is_transaction_abort(self, error: BaseException | None) -> bool:
        return isinstance(error, InterruptedError)  # stands for the engine's "aborted" error


def _ledger() -> tuple[DeliveryLedger, _Engine]:
    engine = _Engine()
    return DeliveryLedger(engine), engine  # type: ignore[arg-type]


async def test_the_ledger_counts_in_send_order_and_keeps_unobserved_failures() -> None:
    ledger, _ = _ledger()
    handles = [_Handle() for _ in range(4)]
    deliveries = [ledger.add("t", 0, handle) for handle in handles]
    handles[1].finish(1)  # finished behind a pending one: counted by statistics, not collect
    ledger.collect()
    assert ledger.completed == 0
    stats = ledger.statistics()
    assert (stats.pending, stats.acknowledged, stats.failed) == (3, 1, 0)
    handles[0].finish(0)
    handles[2].finish(error=OSError("gone"))
    handles[3].finish(error=InterruptedError("aborted"))
    ledger.collect()
    assert ledger.completed == 4 and ledger.all_done()
    stats = ledger.statistics()
    assert (stats.pending, stats.acknowledged, stats.failed) == (0, 2, 2)
    first = ledger.take_unobserved()  # the transaction abort is not reported
    assert isinstance(first, KafkaDeliveryError) and "gone" in str(first)
    assert ledger.take_unobserved() is None
    assert deliveries[1].result().offset == 1
    with pytest.raises(KafkaDeliveryError):
        deliveries[2].result()


async def test_a_failure_someone_waited_for_is_not_reported_again() -> None:
    ledger, engine = _ledger()
    handle = _Handle()
    delivery = ledger.add("t", 0, handle)
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            with pytest.raises(KafkaDeliveryError):
                await delivery.wait()

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        handle.finish(error=OSError("refused"))
    assert engine.watched == 1  # one wake-up for the waiting record, none per record
    ledger.collect()
    assert ledger.failed == 1 and ledger.take_unobserved() is None


async def test_waiting_for_room_wakes_once_per_finished_oldest_record() -> None:
    ledger, engine = _ledger()
    handles = [_Handle() for _ in range(3)]
    for handle in handles:
        ledger.add("t", 0, handle)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.wait_until, lambda: ledger.has_room(2))
        await trio.testing.wait_all_tasks_blocked()
        handles[1].finish(1)  # not the oldest: no room yet
        await trio.testing.wait_all_tasks_blocked()
        handles[0].finish(0)
    assert len(ledger.pending) == 1
    assert engine.watched == 2  # the last record sent, and the oldest one
    delivery = ledger.add("t", 0, None)  # waits for its topic's metadata
    ledger.fail_locally(delivery, KafkaDeliveryError("closed", topic="t", fault="local"))
    handles[2].finish(2)
    await ledger.wait_until(ledger.all_done)
    assert ledger.take_unobserved() is not None
