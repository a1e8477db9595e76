"""A producer's delivery bookkeeping, engine-free: :class:`Delivery`, and the ledger of records
sent and not yet counted.

Delivery reports cost the engine's thread nothing per record. A :class:`Delivery` keeps the
engine's :class:`~._engine.DeliveryHandle` and reads its outcome when asked; the
:class:`DeliveryLedger` keeps the handles in send order and, on the trio thread, counts (and
checks for failures) the finished ones at the front of that queue, every 1024 sends and
whenever a task waits. A task that waits (:meth:`Delivery.wait`, a flush, back-pressure) asks
the engine for one wake-up (:meth:`~._engine.ProducerEngine.watch`): when that record's handle
(the last one sent, for a flush; the oldest pending one, for room) is done. So trio is woken
about once per wait, or once per batch that makes room, never once per record, and no failure
goes unseen: each one is found by the counting, and the first one nobody waited for is raised
by the next flush.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ._engine import BatchHandle, DeliveryHandle, ProducerEngine
from ._records import RecordMetadata

__all__ = ["Batch", "Delivery", "DeliveryLedger", "ProducerStatistics"]


@dataclass(frozen=True)
class ProducerStatistics:
    """A snapshot of a producer's counters (see :meth:`KafkaProducer.statistics`)."""

    pending: int
    """Records handed to the producer and not yet acknowledged or failed."""
    acknowledged: int
    """Records the broker acknowledged."""
    failed: int
    """Records that could not be delivered."""


class Delivery:
    """The outcome of one record given to :meth:`KafkaProducer.send_nowait`.

    ``await delivery.wait()`` returns its :class:`RecordMetadata` once the broker acknowledged
    it (per ``acks``), or raises why it was not delivered. A failure nobody waited for is not
    lost: :meth:`KafkaProducer.flush` and the end of the producer's ``async with`` raise it.
    """

    __slots__ = ("_error", "_future", "_ledger", "_metadata", "_seq", "_waited", "partition",
                 "topic")

    def __init__(self, ledger: DeliveryLedger, topic: str, partition: int | None, seq: int,
                 future: Any = None) -> None:
        self.topic = topic
        self.partition = partition
        self._ledger = ledger
        #: The record's place in the producer's send order (see DeliveryLedger.collect).
        self._seq = seq
        #: The engine's DeliveryHandle (None while the topic's metadata is awaited).
        self._future = future
        self._metadata: RecordMetadata | None = None
        self._error: BaseException | None = None
        self._waited = False

    def __repr__(self) -> str:
        state = "pending"
        if self.done():
            state = "failed" if self._failure() is not None else "acknowledged"
        return f"<Delivery to {self.topic!r}: {state}>"

    def done(self) -> bool:
        """Whether the record was acknowledged or failed."""
        if self._error is not None:
            return True
        future = self._future
        return future is not None and future.is_done

    def result(self) -> RecordMetadata:
        """The record's metadata, if it was acknowledged.

        Raises:
            KafkaDeliveryError: (or another :class:`~trionet.errors.KafkaError`) the record was
                not delivered.
            trio.WouldBlock: it is still pending.
        """
        if not self.done():
            raise trio.WouldBlock
        error = self._failure()
        if error is not None:
            self._observe()
            raise error
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = self._ledger.engine.metadata(self._future)
        return metadata

    async def wait(self) -> RecordMetadata:
        """Wait until the record is acknowledged and return where it was written.

        Raises:
            KafkaDeliveryError: (or another :class:`~trionet.errors.KafkaError`) the record was
                not delivered.
        """
        self._observe()
        if self.done():
            await trio.lowlevel.checkpoint()
        else:
            await self._ledger.wait_for(self)
        return self.result()

    def _observe(self) -> None:
        """Someone looks at this record's outcome: a failure is theirs, not flush()'s."""
        self._waited = True
        ledger = self._ledger
        if self._future is not None and self._seq >= ledger.completed:
            ledger.observed.add(self._future)  # not counted yet; collect() removes it

    def _failure(self) -> BaseException | None:
        """Why the (finished) record was not delivered, translated once; None if it was."""
        error = self._error
        if error is None:
            future = self._future
            if future is not None and future.exception is not None:
                error = self._error = self._ledger.engine.failure(
                    future, self.topic, self.partition)
        return error


class Batch:
    """The ledger's entry for the records of one :meth:`~._engine.ProducerEngine.send_batch`
    (:meth:`KafkaProducer.send_many`): they are counted together, once all are done."""

    __slots__ = ("handle", "partition", "topic", "waited")

    def __init__(self, handle: BatchHandle, topic: str, partition: int | None) -> None:
        self.handle = handle
        self.topic = topic
        self.partition = partition
        #: Someone will raise its failure (send_many); else flush() does.
        self.waited = True


class DeliveryLedger:
    """Every record sent and not counted yet, in send order, and the producer's counters.

    The record numbered n in send order is counted once ``completed > n``; ``sent - completed``
    records are pending. ``pending`` holds the engine's handle of each record, or its
    :class:`Delivery` while it has none (its topic's metadata is awaited), or one
    :class:`Batch` for the records of a batch. Not the Delivery itself otherwise, which is
    then freed as soon as the caller drops it: keeping one more object per pending record
    alive made the garbage collector cost more than the rest of trionet's per-record work.
    Trio thread only.
    """

    __slots__ = ("_changed", "_unobserved", "_watched", "completed", "engine", "failed",
                 "observed", "pending", "sent")

    def __init__(self, engine: ProducerEngine) -> None:
        self.engine = engine
        self.pending: collections.deque[Any] = collections.deque()
        #: Handles not counted yet whose Delivery someone waited for or read (their failures
        #: are not flush()'s to raise).
        self.observed: set[Any] = set()
        self.sent = 0
        self.completed = 0
        self.failed = 0
        # Set (and replaced) when a watched handle finishes or a local step changes a delivery.
        self._changed = trio.Event()
        self._watched: set[Any] = set()  # handles with a wake-up registered
        self._unobserved: list[BaseException] = []

    def add(self, topic: str, partition: int | None, future: DeliveryHandle | None
            ) -> Delivery:
        """Count one record sent (*future* None: it waits for its topic's metadata)."""
        seq = self.sent
        delivery = Delivery(self, topic, partition, seq, future)
        self.pending.append(delivery if future is None else future)
        self.sent = seq + 1
        return delivery

    def add_batch(self, batch: Batch) -> None:
        """Count the records of *batch* sent."""
        self.pending.append(batch)
        self.sent += batch.handle.count

    def collect(self) -> None:
        """Count the finished records at the front of the queue; note their failures."""
        pending = self.pending
        observed = self.observed
        while pending:
            item = pending[0]
            count = failed = 1
            if type(item) is Delivery:
                if not item.done():
                    return
                error = item._failure()
                waited = item._waited
                future = item._future
            elif type(item) is Batch:
                future = item.handle
                if not future.is_done:
                    return
                count, failed = future.count, future.failed
                error = None if future.exception is None else self.engine.failure(
                    future, item.topic, item.partition)
                waited = item.waited
            else:
                if not item.is_done:
                    return
                future = item
                error = None if item.exception is None else self.engine.failure(item)
                waited = False
            pending.popleft()
            self.completed += count
            if future in observed:
                observed.discard(future)
                waited = True
            if error is not None:
                self.failed += failed
                if not waited and not self.engine.is_transaction_abort(error.__cause__):
                    self._unobserved.append(error)

    def take_unobserved(self) -> BaseException | None:
        """The first failure nobody waited for since the last call (the rest are dropped)."""
        if not self._unobserved:
            return None
        first = self._unobserved[0]
        self._unobserved.clear()
        return first

    def statistics(self) -> ProducerStatistics:
        """The counters, records finished behind an older pending one included."""
        self.collect()
        acknowledged = failed = 0
        for item in self.pending:
            if type(item) is Batch:
                if item.handle.is_done:
                    failed += item.handle.failed
                    acknowledged += item.handle.count - item.handle.failed
            elif type(item) is Delivery:
                if item.done():
                    if item._failure() is None:
                        acknowledged += 1
                    else:
                        failed += 1
            elif item.is_done:
                if item.exception is None:
                    acknowledged += 1
                else:
                    failed += 1
        failed += self.failed
        acknowledged += self.completed - self.failed
        return ProducerStatistics(self.sent - acknowledged - failed, acknowledged, failed)

    def fail_locally(self, delivery: Delivery, error: BaseException) -> None:
        """*delivery* failed before reaching the engine."""
        delivery._error = error
        self.notify()

    def notify(self) -> None:
        """Wake the tasks waiting for a change."""
        self._changed.set()
        self._changed = trio.Event()

    def has_room(self, max_pending: int) -> bool:
        return self.sent - self.completed < max_pending

    def all_done(self) -> bool:
        return not self.pending

    def _watch(self, item: Any) -> None:
        """Have :meth:`notify` called when a pending record finishes (at most one wake-up
        registered per record)."""
        future = (item._future if type(item) is Delivery
                  else item.handle if type(item) is Batch else item)
        if future is None or future in self._watched:
            return  # a local step notifies (metadata arrived), or a wake-up is registered
        self._watched.add(future)

        def woken() -> None:
            self._watched.discard(future)
            self.notify()

        self.engine.watch(future, woken)

    async def wait_for(self, delivery: Delivery) -> None:
        """Wait until *delivery* finished: one wake-up for this record alone."""
        while not delivery.done():
            future = delivery._future
            if future is None:  # waiting for its topic's metadata (a local step notifies)
                await self._changed.wait()
                continue
            finished = trio.Event()
            self.engine.watch(future, finished.set)
            await finished.wait()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until *condition()* holds, re-checked as deliveries finish.

        Wakes up when the last record sent finishes (all may be done then) and, while that is
        not enough, when the oldest pending one does.
        """
        self.collect()
        if condition():
            await trio.lowlevel.checkpoint()
            return
        pending = self.pending
        self._watch(pending[-1])
        while not condition():
            changed = self._changed
            if pending:
                self._watch(pending[0])
            await changed.wait()
            self.collect()
