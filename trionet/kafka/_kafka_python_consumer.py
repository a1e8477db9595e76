"""The kafka-python consumer engine: one kafka-python consumer owned by one thread.

kafka-python's consumer is not thread-safe, so each engine owns a
:class:`~trionet._threads.ThreadWorker`: one OS thread, started in the consumer's nursery, on
which the kafka-python object is built, closed and used for every call that may wait (the one
exception, a poll that cannot wait, is described below). Records cross into trio a batch at a
time (one hand-off per one or more ``poll()`` calls, never per record) into the driver's
:class:`~trionet.kafka._fetch.FetchBuffer`. Each ``poll()`` is short (``poll_interval``), so
cancelling a reader takes effect promptly; records polled for a reader that was cancelled
meanwhile stay in the buffer for the next one.

Decoding in trio (``decode_in_trio``, on by default unless read-ahead or auto-commit is on). A
reader that finds the buffer empty while kafka-python holds records it has already fetched
(``kp.records_ready``) decodes up to ``_DIRECT_RECORDS`` of them itself, on the trio thread,
with ``kp.drain_fetched``: the fetcher's ``fetched_records``, the decoding half of ``poll()``,
without group coordination, offset resets or new fetch requests. It does so only while nothing
is submitted to the consumer's thread or on its way back from it (``_polling`` is False and
``_calls`` is 0): the thread is then idle, waiting for its next job, and stays so while the trio
thread is busy, so kafka-python's consumer is still used by one thread at a time, with the
hand-over ordered by the job queue and the trio token's FIFO. Every ``poll()`` still runs on
the consumer's thread: when the fetched records run out (new fetch requests are sent from
``poll()``), at least every ``_DIRECT_WINDOW`` seconds (kafka-python counts the time between
``poll()`` calls against ``max_poll_interval_ms``), and while a group (re)join is under way.
Rebalances happen only inside ``poll()`` (or ``close()``), so never during a drain. Why: the
records were otherwise built on the consumer's thread and used and freed on the trio thread, on
another core; those cache misses cost more per record than all of trionet's own work.

Prefetch (a pipeline; off by default, except for manually assigned partitions with
``decode_in_trio=False``, see ``_DEFAULT_PREFETCH``). With ``prefetch`` = P >= 2 and
``max_poll_records`` = M, the buffer holds at most P * M records (counting those on their way
to trio). The first read starts a poll;
consecutive polls of records already fetched join one hand-off of up to (P // 2) * M records,
so trio is woken (and the GIL changes hands) once per hand-off rather than once per poll (no
poll waits for more records to join: a trickle is handed over record by record). After a hand-off
the thread starts the next one at once if at most (P - P // 2) * M records are outstanding, so
kafka-python fetches and decodes the next hand-off while trio gives out the previous one.
Otherwise the chain stops (stalls), and readers restart it as they take records. Read-ahead
polls (trio still has records) wait at most 10 ms for the network, so a call queued behind one
(``commit``, ``seek``...) never waits for ``poll_interval``; one that finds nothing stalls the
chain too. A poll made for a reader that found the buffer empty waits up to ``poll_interval``;
if it finds nothing the chain ends until the next read. With P < 2 a poll happens only when the
buffer is empty.

Ordering is what keeps read-ahead correct (the engine seam's ordering contract). Every call on
kafka-python runs on the one thread, in the order submitted (a drain in trio happens only when
nothing is submitted), and every result (a poll's batch or a call's outcome) is handed to trio
through the same FIFO (``TrioPortal.call_soon``). So when the trio-side bookkeeping of a
``seek``, ``pause``, ``assign``... runs, every batch polled before that call is already in the
buffer (and is dropped there for the affected partitions), and every batch polled after it
reflects the new position: nothing is delivered twice or skipped, with no generation counter
needed.

Rebalances happen inside ``poll()`` (or ``close()``), on kafka-python's I/O thread, while the
consumer's thread waits. The driver's listener runs in trio meanwhile; the calls it makes on
the consumer (``commit``, ``seek``, ``assignment``...) are run on kafka-python's I/O loop,
since the consumer's own thread is busy waiting for the listener.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import outcome
import trio

from .._threads import Handoff, ThreadWorker, TrioPortal
from ..errors import KafkaError
from . import _kafka_python as kp
from ._engine import ConsumerHooks, EngineConfig, RebalanceDone, RebalanceKind
from ._errors import KafkaCommitError, RecordDecodeError
from ._fetch import Item, Undecodable
from ._options import ConsumerOptions
from ._records import KafkaRecord, TopicPartition

__all__ = ["KafkaPythonConsumer"]

T = TypeVar("T")

_new_tuple = tuple.__new__

#: A drain on the trio thread decodes at most this many records (about 2 ms of kafka-python's
#: pure-Python decoding), so other tasks wait no longer than that. Measured: polls of 100
#: records are as fast per record as polls of 500.
_DIRECT_RECORDS: Final = 100
#: Decoding in trio stops for a ``poll()`` on the consumer's thread at least this often (s).
_DIRECT_WINDOW: Final = 1.0
#: ``prefetch`` for manually assigned partitions with ``decode_in_trio=False`` when not given.
#: Group subscriptions default to no read-ahead: against noida-db, kafka-python 3.0.12's
#: rebalances were seen to stall (a join completed while no poll() waited for it is thrown away
#: and sent again) when the consumer's thread polls ahead of a slow reader.
_DEFAULT_PREFETCH: Final = 8


class KafkaPythonConsumer:
    """A :class:`~trionet.kafka._engine.ConsumerEngine` on ``kafka.KafkaConsumer`` (see the
    module's docstring)."""

    def __init__(self, config: EngineConfig, options: ConsumerOptions,
                 hooks: ConsumerHooks) -> None:
        self._config = config
        self._options = options
        self._hooks = hooks
        self._buffer = hooks.buffer
        self._servers = config.servers
        self._group_id = options.group_id
        self._max_records = config.max_records
        self._auto_commit = config.auto_commit
        self._poll_ms = options.poll_ms
        self._read_ahead_ms = options.read_ahead_ms
        self._bytes_bound = options.prefetch_bytes
        self._close_timeout = options.close_timeout
        self._check_unreachable = options.broker_timeout is not None
        self._decode_key = hooks.decode_key
        self._decode_value = hooks.decode_value
        self._set_prefetch(group_managed=options.partitions is None)
        #: Average serialized size of the records of the last poll (written by whichever thread
        #: polls; never two at once).
        self._record_size = 0
        self._kc: Any = None
        self._trap = kp.ClientTrap()
        self._worker = ThreadWorker(f"trionet-kafka-consumer-{id(hooks):x}",
                                    on_exit=self._close_on_thread)
        self._portal: TrioPortal | None = None
        # The poll pipeline. _polling and _stalled are trio's: _polling is True from the moment
        # trio submits a poll until a result says the thread's chain of polls has ended;
        # _stalled says it ended for want of room (readers restart it). The hand-off counts the
        # records the thread handed over (on the thread, or kafka-python's I/O thread during a
        # rebalance), the buffer those trio took in: their difference is the records on their
        # way.
        self._polling = False
        self._stalled = False
        #: Records polled and not handed over yet (a rebalance on the I/O thread may take them).
        self._pending: Handoff[Item] = Handoff()
        self._arrived: trio.Event | None = None
        #: Calls submitted to the consumer's thread whose result trio has not taken in yet.
        self._calls = 0
        #: When a poll() on the consumer's thread last returned (trio's clock).
        self._thread_polled_at = -math.inf
        self._aborting = False

    # -- lifetime -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self._portal = TrioPortal()
        # Shielded: cancelling the consumer's surroundings must not stop its thread before the
        # graceful close has run on it. The driver stops it explicitly, and every call on it is
        # bounded (short polls, kafka-python's timeouts), so the nursery's wait is too.
        with trio.CancelScope(shield=True):
            await self._worker.run(task_status=task_status)

    def stop(self) -> None:
        self._aborting = True
        self._worker.stop()  # after the calls already queued; then it closes the consumer

    async def start(self) -> None:
        try:
            await self._run(self._build, operation="starting the Kafka consumer")
        except BaseException:
            self._trap.abort()  # a cancelled bootstrap gives up at once
            raise

    def _build(self) -> None:  # consumer thread
        self._kc = kp.build_consumer(self._config.options, self._trap, servers=self._servers)

    async def close(self, *, timeout_ms: int) -> None:
        if self._kc is None:
            return
        # Revokes (the listener runs) and leaves the group.
        await self._run(kp.close_consumer, self._kc, operation="closing the consumer",
                        timeout_ms=timeout_ms)

    def _close_on_thread(self) -> None:  # consumer thread, as it exits
        self._aborting = True
        kc = self._kc
        if kc is not None:
            try:
                kp.close_consumer(kc, timeout_ms=max(1, int(self._close_timeout * 1000)))
            finally:
                self._kc = None
        else:
            self._trap.close()

    # -- running calls on the consumer's thread -------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, operation: str,
                   after: Callable[[T], object] | None = None, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the consumer's thread (or, inside a rebalance listener,
        on kafka-python's I/O loop) and return its result, translated errors included.

        *after(result)* runs in trio when ``fn`` succeeded, before the caller resumes and even if
        the caller was cancelled meanwhile (buffer bookkeeping that must match what ``fn`` did).
        """
        portal = self._portal
        assert portal is not None
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []

        def finish(result: outcome.Outcome[T]) -> None:  # trio thread
            self._calls -= 1
            if after is not None and isinstance(result, outcome.Value):
                try:
                    after(result.value)
                except Exception as exc:  # our own bookkeeping; report it to the caller
                    result = outcome.Error(exc)
            box.append(result)
            done.set()

        if self._hooks.in_listener() and self._kc is not None:

            def io_done(error: BaseException | None, value: Any) -> None:  # I/O thread
                if isinstance(error, RuntimeError):  # it needed a broker round trip
                    blocked = KafkaError(f"{operation} is not possible inside a rebalance "
                                         "listener (it needs kafka-python's I/O loop, which "
                                         "waits for the listener)", fault="local")
                    blocked.__cause__ = error
                    error = blocked
                portal.call_soon(finish, outcome.Error(error) if error is not None
                                 else outcome.Value(value))

            self._calls += 1
            try:
                kp.call_on_io_loop(self._kc, lambda: fn(*args, **kwargs), (), io_done)
            except RuntimeError:  # kafka-python's loop has stopped
                self._calls -= 1
                raise trio.ClosedResourceError("the Kafka consumer is closed") from None
        else:
            worker = self._worker

            def job() -> None:  # consumer thread (or trio, if the thread has stopped)
                if worker.in_worker_thread():
                    result = outcome.capture(fn, *args, **kwargs)
                else:
                    result = outcome.Error(
                        trio.ClosedResourceError("the Kafka consumer's thread has stopped"))
                portal.call_soon(finish, result)

            self._calls += 1
            try:
                worker.submit(job)
            except BaseException:
                self._calls -= 1
                raise
        await done.wait()
        result = box[0]
        if isinstance(result, outcome.Error):
            error = kp.translated(result.error, servers=self._servers, operation=operation)
            if error is not result.error:
                raise error
        return result.unwrap()

    # -- fetching -------------------------------------------------------------------------------

    @property
    def buffered_max(self) -> int:
        return self._bound

    async def fetch(self) -> None:
        if not self._polling:
            if self._may_drain() and self._drain():
                # The records were decoded on this thread: let other tasks run first.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            self._start_polling()
        if self._arrived is None:
            self._arrived = trio.Event()
        await self._arrived.wait()

    def taken(self) -> None:
        if self._stalled:
            self._restart_polling()

    def _may_drain(self) -> bool:
        """Whether a reader may decode fetched records on the trio thread now (see the
        module's docstring)."""
        return (self._direct and not self._calls and not self._aborting
                and trio.current_time() - self._thread_polled_at < _DIRECT_WINDOW
                and kp.records_ready(self._kc)
                and (self._group_id is None or not kp.group_joining(self._kc)))

    def _drain(self) -> bool:
        """Decode records kafka-python has already fetched, on the trio thread; whether that
        gave records (or an error to raise)."""
        try:
            records = self._decoded(kp.drain_fetched(
                self._kc, min(self._max_records, _DIRECT_RECORDS)))
        except Exception as exc:
            self._buffer.error = kp.translated(exc, servers=self._servers, operation="polling")
            return True
        if not records:
            return False
        self._buffer.fetched(records, unreachable=False, now=0.0, handed=False)
        return True

    def _outstanding(self) -> int:
        """Records buffered or on their way to trio (either thread; read in this order, a race
        can only overestimate it)."""
        buffer = self._buffer
        return self._pending.handed - buffer.received + len(buffer.records)

    def _start_polling(self) -> None:  # trio thread
        self._polling = True
        self._stalled = False
        try:
            self._worker.submit(self._poll_job)
        except trio.ClosedResourceError:
            self._polling = False
            raise trio.ClosedResourceError("the Kafka consumer's thread has stopped") from None

    def _restart_polling(self) -> None:  # trio thread, when a reader took records
        if (self._stalled and not self._polling and self._hooks.open
                and self._outstanding() <= self._ahead):
            self._start_polling()

    def _set_prefetch(self, *, group_managed: bool) -> None:
        """Apply ``prefetch`` and ``decode_in_trio`` (by default, fetched records are decoded on
        the trio thread when possible, and read-ahead is off)."""
        setting = self._options.prefetch
        decode_in_trio = self._options.decode_in_trio
        if self._auto_commit:
            prefetch = 0  # kafka-python's auto-commit commits its positions, read-ahead included
        elif setting is not None:
            prefetch = setting
        elif group_managed or decode_in_trio:
            prefetch = 0
        else:
            prefetch = _DEFAULT_PREFETCH
        self._prefetch = prefetch
        #: Whether a reader that finds the buffer empty may decode fetched records itself.
        self._direct = decode_in_trio and prefetch < 2 and not self._auto_commit
        #: At most this many records are buffered or on their way to trio.
        self._bound = max(1, prefetch) * self._max_records
        #: At most this many records cross into trio in one hand-off.
        self._handoff = max(1, prefetch // 2) * self._max_records
        #: The thread starts the next hand-off at once while at most this many are outstanding.
        self._ahead = self._bound - self._handoff

    def _byte_bounds(self) -> tuple[int, int]:
        """The record bound and hand-off size, lowered so that the buffer stays within
        ``prefetch_bytes`` at the size of the records seen last (consumer thread)."""
        size = self._record_size
        bound, handoff = self._bound, self._handoff
        if size and size * bound > self._bytes_bound:
            bound = max(1, self._bytes_bound // size)
            handoff = min(handoff, max(1, bound // 2))
        return bound, handoff

    def _reading(self) -> bool:
        """Whether reading may go on (consumer thread): the consumer is open, not closing."""
        return self._hooks.open and not self._aborting

    def _poll_job(self) -> None:
        """Poll on the consumer's thread and hand the records to trio; chain the next poll
        while records flow and there is room."""
        portal = self._portal
        assert portal is not None
        worker = self._worker
        if not worker.in_worker_thread():  # run by the worker's drain: the thread has stopped
            portal.call_soon(self._poll_finished, outcome.Error(
                trio.ClosedResourceError("the Kafka consumer's thread has stopped")), False,
                False)
            return
        outstanding = self._outstanding()
        # Read-ahead (trio still has records) waits only briefly for the network: calls queued
        # behind this poll wait with it. A group join needs long polls (see kp.group_joining).
        brief = self._read_ahead_ms
        if not outstanding or (self._group_id is not None and kp.group_joining(self._kc)):
            wait_ms = self._poll_ms
        else:
            wait_ms = brief
        first = outcome.capture(self._poll_once, wait_ms)
        if isinstance(first, outcome.Error):
            portal.call_soon(self._poll_finished, first, False, False)
            return
        batch, unreachable = first.value
        failure: outcome.Error | None = None
        bound, handoff = self._byte_bounds()
        pending = self._pending
        if batch and self._prefetch > 1:
            # Records already fetched come in the same hand-off: one wake-up of trio (and one
            # round of GIL hand-overs) per up to _handoff records, not per poll. While they
            # wait in the hand-off, a rebalance inside one of these polls hands them over
            # before its listener runs (see _dispatch_rebalance).
            per_poll = self._max_records
            limit = min(handoff, bound - outstanding)
            taken = len(batch)
            pending.open(batch)
            # Only records kafka-python has already fetched join the hand-off: waiting for more
            # (up to the brief wait) would hold back the ones polled, 10 ms per record when
            # they trickle in.
            while (taken + per_poll <= limit and self._reading()
                   and kp.records_ready(self._kc)):
                more = outcome.capture(self._poll_once, brief)
                if isinstance(more, outcome.Error):
                    failure = more
                    break
                records = more.value[0]
                if not records:
                    break
                taken += len(records)
                pending.add(records)
            batch = pending.close()
        elif batch:
            pending.count(len(batch))
        again = stalled = False
        reading_ahead = self._prefetch > 1 and self._reading()
        if batch:
            if failure is None and reading_ahead:
                bound, handoff = self._byte_bounds()
                self._ahead = bound - handoff  # for readers restarting the chain
                again = self._outstanding() <= self._ahead
                stalled = not again
        elif outstanding and reading_ahead:
            # Nothing arrived within the brief wait of a read-ahead poll: stop here, and let
            # readers start the next poll as they take records (as for a full buffer).
            stalled = True
        if (failure is None and self._reading()
                and self._group_id is not None and kp.group_joining(self._kc)):
            # A rebalance is under way: keep polling until it completes, whatever the buffer
            # holds (no records come meanwhile).
            again, stalled = True, False
        portal.call_soon(self._poll_finished, outcome.Value((batch, unreachable)), again, stalled)
        if failure is not None:
            portal.call_soon(self._poll_finished, failure, False, False)
        elif again:
            worker.submit(self._poll_job)

    def _poll_once(self, timeout_ms: int) -> tuple[list[Item], bool]:
        raw = kp.poll(self._kc, timeout_ms, self._max_records)
        if not raw:
            unreachable = self._check_unreachable and kp.brokers_unreachable(self._kc)
            return [], unreachable
        return self._decoded(raw), False

    def _decoded(self, raw: list[Any]) -> list[Item]:
        """kafka-python's records as trionet's (deserialized), on whichever thread decodes."""
        if not raw:
            return []
        # The average size, estimated from at most 64 records spread over the batch.
        sample = raw if len(raw) <= 64 else raw[::len(raw) // 64]
        self._record_size = max(1, kp.serialized_size(sample) // len(sample))
        decode_key = self._decode_key
        decode_value = self._decode_value
        if decode_key is None and decode_value is None:
            # tuple.__new__ skips the NamedTuple's Python-level __new__: this loop is the
            # per-record cost of crossing into trio. No headers become one shared empty tuple,
            # not kafka-python's fresh list: a record then holds no container, so the garbage
            # collector stops tracking it while it waits in the buffer (and trio does not free
            # one more object per record that the consumer's thread allocated, on another
            # core). Together that was about 10 % of the consumer's throughput.
            return [
                _new_tuple(KafkaRecord, (r.topic, r.partition, r.offset, r.key, r.value,
                                         r.headers or (), r.timestamp, r.timestamp_type))
                for r in raw
            ]
        out: list[Item] = []
        for r in raw:
            key, value = r.key, r.value
            try:
                if decode_key is not None and key is not None:
                    key = decode_key(key)
                if decode_value is not None and value is not None:
                    value = decode_value(value)
            except Exception as exc:
                raw_record = KafkaRecord(r.topic, r.partition, r.offset, r.key, r.value,
                                         r.headers or (), r.timestamp, r.timestamp_type)
                error = RecordDecodeError(
                    f"cannot deserialize the record at offset {r.offset} of "
                    f"{r.topic}[{r.partition}]: {exc}", record=raw_record)
                error.__cause__ = exc
                out.append(Undecodable(raw_record, error))
                continue
            out.append(KafkaRecord(r.topic, r.partition, r.offset, key, value, r.headers or (),
                                   r.timestamp, r.timestamp_type))
        return out

    def _poll_finished(self, result: outcome.Outcome[tuple[list[Item], bool]], again: bool,
                       stalled: bool) -> None:  # trio thread
        self._thread_polled_at = now = trio.current_time()
        if not again:
            self._polling = False
            self._stalled = stalled
        try:
            if isinstance(result, outcome.Error):
                self._buffer.error = kp.translated(result.error, servers=self._servers,
                                                   operation="polling")
                return
            records, unreachable = result.unwrap()
            self._buffer.fetched(records, unreachable=unreachable, now=now)
        finally:
            arrived, self._arrived = self._arrived, None
            if arrived is not None:
                arrived.set()

    # -- subscription, assignment, positions ----------------------------------------------------

    async def subscribe(self, topics: Sequence[str], pattern: str | None, *,
                        after: Callable[[None], object]) -> None:
        bridge = kp.ListenerBridge(self._kc, self._dispatch_rebalance,
                                   self._config.rebalance_timeout_ms)

        def subscribed(result: None) -> None:
            self._set_prefetch(group_managed=True)
            after(result)

        await self._run(kp.subscribe, self._kc, topics, pattern, bridge, after=subscribed,
                        operation="subscribing")

    async def unsubscribe(self, *, after: Callable[[None], object]) -> None:
        await self._run(kp.unsubscribe, self._kc, operation="unsubscribing", after=after)

    async def assign(self, partitions: frozenset[TopicPartition], *,
                     after: Callable[[None], object]) -> None:
        def assigned(result: None) -> None:
            self._set_prefetch(group_managed=False)
            after(result)

        await self._run(kp.assign, self._kc, partitions, operation="assigning partitions",
                        after=assigned)

    async def assignment(self) -> frozenset[TopicPartition]:
        return await self._run(kp.assignment, self._kc, operation="reading the assignment")

    async def subscription(self) -> frozenset[str] | None:
        return await self._run(kp.subscription, self._kc, operation="reading the subscription")

    async def topics(self) -> set[str]:
        return await self._run(kp.topics, self._kc, operation="listing topics")

    async def partitions_for_topic(self, topic: str) -> set[int]:
        return await self._run(kp.existing_partitions, self._kc, topic,
                               operation="reading topic metadata")

    async def seek(self, tp: TopicPartition, offset: int, *,
                   after: Callable[[None], object]) -> None:
        await self._run(kp.seek, self._kc, tp, offset, after=after, operation="seeking")

    async def seek_to(self, partitions: frozenset[TopicPartition], where: str, *,
                      after: Callable[[frozenset[TopicPartition]], object]) -> None:
        await self._run(kp.seek_to, self._kc, partitions, where, after=after,
                        operation=f"seeking to the {where}")

    async def pause(self, partitions: frozenset[TopicPartition], *,
                    after: Callable[[None], object]) -> None:
        await self._run(kp.pause, self._kc, partitions, after=after, operation="pausing")

    async def resume(self, partitions: frozenset[TopicPartition],
                     rewind: Mapping[TopicPartition, int]) -> None:
        await self._run(kp.resume, self._kc, partitions, rewind, operation="resuming")

    async def paused(self) -> frozenset[TopicPartition]:
        return await self._run(kp.paused, self._kc, operation="reading paused partitions")

    async def position(self, tp: TopicPartition) -> int:
        return await self._run(kp.position, self._kc, tp, operation="reading a position")

    async def committed(self, tp: TopicPartition) -> int | None:
        return await self._run(kp.committed, self._kc, tp,
                               operation="reading a committed offset")

    async def edge_offsets(self, partitions: Sequence[TopicPartition], where: str
                           ) -> dict[TopicPartition, int]:
        return await self._run(kp.edge_offsets, self._kc, list(partitions), where,
                               operation="listing offsets")

    async def group_metadata(self) -> Any:
        return await self._run(kp.group_metadata, self._kc, operation="reading group metadata")

    # -- commits --------------------------------------------------------------------------------

    async def commit(self, select: Callable[[], Mapping[TopicPartition, int]], *,
                     only_assigned: bool, timeout_ms: int | None) -> dict[TopicPartition, int]:
        if self._hooks.in_listener():
            return await self._commit_in_listener(select())

        def commit() -> dict[TopicPartition, int]:  # consumer thread
            keep = select()
            return kp.commit(self._kc, keep, only_assigned=only_assigned,
                             timeout_ms=timeout_ms) if keep else {}

        return await self._run(commit, operation="committing offsets")

    def is_membership_error(self, error: BaseException | None) -> bool:
        return kp.is_membership_error(error)

    async def rejoin(self, timeout_ms: int) -> bool:
        return await self._run(kp.rejoin_group, self._kc, timeout_ms,
                               operation="rejoining the consumer group")

    async def _commit_in_listener(self, offsets: Mapping[TopicPartition, int]
                                  ) -> dict[TopicPartition, int]:
        portal = self._portal
        assert portal is not None
        if not offsets:
            await trio.lowlevel.checkpoint()
            return {}
        done = trio.Event()
        box: list[BaseException | None] = []

        def finish(error: BaseException | None) -> None:
            box.append(error)
            done.set()

        kp.commit_on_io_loop(self._kc, offsets, self._config.request_timeout_ms,
                             lambda error: portal.call_soon(finish, error))
        await done.wait()
        if box[0] is not None:
            error = kp.translated(box[0], servers=self._servers, operation="committing offsets")
            if isinstance(error, KafkaError) and not isinstance(error, KafkaCommitError):
                raise KafkaCommitError(str(error), fault="remote") from box[0]
            raise error
        return dict(offsets)

    # -- rebalances -----------------------------------------------------------------------------

    def _dispatch_rebalance(self, kind: RebalanceKind, partitions: frozenset[TopicPartition],
                            done: RebalanceDone) -> bool:
        # kafka-python's I/O thread, inside poll() or close() on the consumer's thread.
        if self._aborting or self._portal is None or (kind != "assigned" and not partitions):
            return False  # (kafka-python revokes an empty set before the first join)
        # Records polled before this rebalance and still waiting on the consumer's thread (it
        # is blocked in poll() meanwhile) must reach the buffer before the listener runs, so
        # that forgetting revoked partitions (or a seek in the listener) covers them too.
        early = self._pending.steal()
        if early:
            self._portal.call_soon(self._poll_finished, outcome.Value((early, False)), True,
                                   False)
        return self._portal.call_soon(self._hooks.rebalance, kind, partitions, done)
