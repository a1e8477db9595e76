"""The consumer's fetch buffer and commit bookkeeping: synchronous, engine-free, thread-free.

A :class:`FetchBuffer` is what a consumer engine fills (a batch at a time, on the trio thread)
and what :class:`~trionet.kafka.KafkaConsumer` hands records out of. It also keeps the books
that make commit-after-processing safe, the same for every engine:

* ``delivered``: per partition, the offset after the last record handed out. That, never the
  library's fetch position (which includes read-ahead), is what a commit commits.
* ``rewind``: per paused partition, the first buffered offset dropped at pause time, to read
  again after ``resume``.
* revocations: every rebalance step that takes partitions away is counted; a commit computed
  before a partition was taken leaves that partition out (its new owner's commits must not be
  overwritten) and reports it (:class:`~trionet.kafka.KafkaPartitionsRevokedError`).
* broker reachability: a fetch that comes back empty while no broker is reachable starts a
  clock; after ``broker_timeout`` seconds of that, reading raises
  :class:`~trionet.kafka.KafkaConnectionError`.
"""

from __future__ import annotations

import collections
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping

from ._errors import KafkaConnectionError, RecordDecodeError
from ._records import KafkaRecord, TopicPartition

__all__ = ["FetchBuffer", "Undecodable"]


class Undecodable:
    """Stands in the buffer for a record the deserializers failed on."""

    __slots__ = ("error", "record")

    def __init__(self, record: KafkaRecord, error: RecordDecodeError) -> None:
        self.record = record
        self.error = error


Item = KafkaRecord | Undecodable
_TOPIC_PARTITION = operator.itemgetter(0, 1)
_OFFSET = operator.itemgetter(2)


class FetchBuffer:
    """Records fetched and not handed out yet, and what was handed out (see the module).

    Args:
        servers: the bootstrap servers, for messages.
        broker_timeout: seconds of empty fetches with no reachable broker before reading
            fails (None: never).
        decoding: whether deserializers are configured (only then can an engine put an
            :class:`Undecodable` in the buffer; without, :meth:`take` hands out a batch
            without looking at each record in Python).
    """

    __slots__ = ("_unreachable_since", "broker_timeout", "decoding", "delivered", "error",
                 "received", "records", "revocations", "revoked_at", "rewind", "servers")

    def __init__(self, *, servers: str, broker_timeout: float | None,
                 decoding: bool = True) -> None:
        self.servers = servers
        self.broker_timeout = broker_timeout
        self.decoding = decoding
        #: Records waiting to be handed out, in fetch order.
        self.records: collections.deque[Item] = collections.deque()
        #: ``(topic, partition)`` -> the offset after the last record handed out.
        self.delivered: dict[tuple[str, int], int] = {}
        self.rewind: dict[TopicPartition, int] = {}
        #: Rebalance steps that took partitions away; per partition, the count when it was
        #: last taken.
        self.revocations = 0
        self.revoked_at: dict[TopicPartition, int] = {}
        #: Records an engine's thread handed over and the buffer took in (see ``fetched``).
        self.received = 0
        #: Why reading must fail now (raised once by the next read).
        self.error: BaseException | None = None
        self._unreachable_since: float | None = None

    def __len__(self) -> int:
        return len(self.records)

    # -- intake (the engine) ------------------------------------------------------------------

    def fetched(self, records: list[Item], *, unreachable: bool, now: float,
                handed: bool = True) -> None:
        """Take in one fetch's records (*handed*: counted in ``received``). An empty fetch
        with *unreachable* (no broker answers) counts towards ``broker_timeout``."""
        if records:
            self._unreachable_since = None
            self.records.extend(records)  # before counting: engines read len + received
            if handed:
                self.received += len(records)
        elif not unreachable:
            self._unreachable_since = None
        elif self._unreachable_since is None:
            self._unreachable_since = now
        elif (self.broker_timeout is not None
              and now - self._unreachable_since >= self.broker_timeout):
            self.error = KafkaConnectionError(
                f"no Kafka broker has been reachable for {self.broker_timeout:g} s "
                f"(bootstrap servers {self.servers})",
                bootstrap_servers=self.servers,
            )

    def take_error(self) -> BaseException | None:
        """The pending fetch error (cleared)."""
        error, self.error = self.error, None
        return error

    # -- handing out (the driver) -------------------------------------------------------------

    def take(self, max_records: int | None) -> list[KafkaRecord]:
        """Hand out up to *max_records* buffered records (all with None), noting their offsets.

        Raises:
            RecordDecodeError: the first record is undecodable (it counts as handed out);
                an undecodable record after others ends the batch before it.
        """
        records = self.records
        count = len(records) if max_records is None else min(max_records, len(records))
        delivered = self.delivered
        if not self.decoding:  # records only: the whole batch at C speed
            plain: list[KafkaRecord]
            if count == len(records):
                plain = list(records)  # type: ignore[arg-type]
                records.clear()
            else:
                popleft = records.popleft
                plain = [popleft() for _ in range(count)]  # type: ignore[misc]
            # Per partition, the last record's offset + 1 (a later record overwrites).
            delivered.update(zip(map(_TOPIC_PARTITION, plain),
                                 map(operator.add, map(_OFFSET, plain), itertools.repeat(1)),
                                 strict=True))
            return plain
        out: list[KafkaRecord] = []
        for _ in range(count):
            item = records[0]
            if type(item) is Undecodable:
                if out:
                    break
                records.popleft()
                delivered[(item.record.topic, item.record.partition)] = item.record.offset + 1
                raise item.error
            assert isinstance(item, KafkaRecord)
            records.popleft()
            delivered[(item.topic, item.partition)] = item.offset + 1
            out.append(item)
        return out

    def delivered_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record handed out."""
        return {TopicPartition(topic, partition): offset
                for (topic, partition), offset in self.delivered.items()}

    # -- position changes (``after`` callbacks, in order with the fetches) --------------------

    def discard(self, match: Callable[[TopicPartition], bool]) -> dict[TopicPartition, int]:
        """Drop buffered records of the matching partitions; the first dropped offset of each."""
        first: dict[TopicPartition, int] = {}
        records = self.records
        if not records:
            return first
        kept: list[Item] = []
        for item in records:
            record = item.record if type(item) is Undecodable else item
            assert isinstance(record, KafkaRecord)
            tp = TopicPartition(record.topic, record.partition)
            if match(tp):
                first.setdefault(tp, record.offset)
            else:
                kept.append(item)
        # In place: readers hold on to the deque across their awaits.
        records.clear()
        records.extend(kept)
        return first

    def sought(self, tp: TopicPartition, offset: int) -> None:
        """*tp* is read from *offset* next."""
        self.discard(lambda p: p == tp)
        self.delivered[tp] = offset

    def moved(self, partitions: Iterable[TopicPartition]) -> None:
        """*partitions* were sought to their beginning or end."""
        moved = frozenset(partitions)
        self.discard(lambda p: p in moved)
        for tp in moved:
            self.delivered.pop(tp, None)

    def paused(self, partitions: Iterable[TopicPartition]) -> None:
        """*partitions* are paused: their buffered records are read again after resuming."""
        tps = frozenset(partitions)
        for tp, first in self.discard(lambda p: p in tps).items():
            self.rewind[tp] = min(first, self.rewind.get(tp, first))

    def take_rewind(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Where the resumed *partitions* must be read from again (forgotten here)."""
        return {tp: self.rewind.pop(tp) for tp in partitions if tp in self.rewind}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """A rebalance step took *partitions* away (revoked or lost)."""
        taken = frozenset(partitions)
        self.discard(lambda tp: tp in taken)
        self.revocations += 1
        for tp in taken:
            self.revoked_at[tp] = self.revocations
            self.delivered.pop(tp, None)
            self.rewind.pop(tp, None)

    # -- commits ------------------------------------------------------------------------------

    def split_revoked(self, wanted: Mapping[TopicPartition, int], since: int
                      ) -> tuple[dict[TopicPartition, int], frozenset[TopicPartition]]:
        """*wanted* without the partitions taken away after revocation count *since*, and
        those partitions. Called just before committing (on the engine's thread: a rebalance
        step updates the books before the poll that ran it returns)."""
        revoked_at = self.revoked_at
        revoked = frozenset(tp for tp in wanted if revoked_at.get(tp, 0) > since)
        keep = {tp: offset for tp, offset in wanted.items() if tp not in revoked}
        return keep, revoked
