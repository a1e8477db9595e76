"""The Kafka consumer: one kafka-python consumer owned by one thread, inside a nursery.

kafka-python's consumer is not thread-safe, so each :class:`KafkaConsumer` owns a
:class:`~trionet._threads.ThreadWorker`: one OS thread, started in the consumer's nursery, on
which the kafka-python object is built, closed and used for every call that may wait (the one
exception, a poll that cannot wait, is described below). Records cross into trio a batch at a
time (one hand-off per one or more ``poll()`` calls, never per record) and wait in a bounded
buffer until the application takes them. Each ``poll()`` is short (``poll_interval``), so
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

Ordering is what keeps read-ahead correct. Every call on kafka-python runs on the one thread, in
the order submitted (a drain in trio happens only when nothing is submitted), and every result (a
poll's batch or a call's outcome) is handed to trio through the same FIFO
(``TrioToken.run_sync_soon``). So when the trio-side bookkeeping of a
``seek``, ``pause``, ``assign``... runs, every batch polled before that call is already in the
buffer (and is dropped there for the affected partitions), and every batch polled after it
reflects the new position: nothing is delivered twice or skipped, with no generation counter
needed.

Delivery bookkeeping is what makes commits safe: :meth:`KafkaConsumer.commit` commits, per
partition, the offset after the last record handed out to the application, never kafka-python's
position (which includes read-ahead). Records still in the buffer are never committed. With
``enable_auto_commit`` kafka-python commits its own positions, so read-ahead is switched off then
(as if ``prefetch=0``).

Rebalances happen inside ``poll()`` (or ``close()``), on kafka-python's I/O thread, while the
consumer's thread waits. A :class:`ConsumerRebalanceListener` runs in trio meanwhile; the calls it
makes on the consumer (``commit``, ``seek``, ``assignment``...) are run on kafka-python's I/O
loop, since the consumer's own thread is busy waiting for the listener.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final, TypeVar

import outcome
import trio

from .._threads import ThreadWorker, TrioPortal
from ..errors import ConfigurationError, KafkaError
from . import _kafka_python as kp
from ._common import (
    DEFAULT_BOOTSTRAP_TIMEOUT_MS,
    check_servers,
    hidden_nursery,
    servers_text,
    with_defaults,
)
from ._errors import (
    KafkaCommitError,
    KafkaConnectionError,
    KafkaPartitionsRevokedError,
    RecordDecodeError,
)
from ._records import Deserializer, KafkaRecord, TopicPartition, make_decoder
from ._url import parse_kafka_url

__all__ = ["ConsumerRebalanceListener", "KafkaConsumer"]

T = TypeVar("T")

_HANDLED: Final = frozenset({"key_deserializer", "value_deserializer"})
_new_tuple = tuple.__new__

#: Set in the tasks that run a consumer's rebalance listener: the consumer they belong to.
_IN_LISTENER: ContextVar[KafkaConsumer | None] = ContextVar("trionet_kafka_listener",
                                                            default=None)
#: ``__anext__`` checks for cancellation at every record; every this many records it lets other
#: tasks run, unless it did so less than _YIELD_INTERVAL seconds ago (a checkpoint costs far more
#: while the consumer's thread holds the GIL decoding the next batch).
_YIELD_EVERY: Final = 16
_YIELD_INTERVAL: Final = 0.001
#: How long a read-ahead poll (the application still has records) may wait for the network.
#: Not 0: kafka-python abandons a group join/sync step at every poll that times out, and
#: against noida-db a rebalance driven only by zero-timeout polls was seen to stall.
_READ_AHEAD_WAIT_MS: Final = 10
#: A drain on the trio thread decodes at most this many records (about 2 ms of kafka-python's
#: pure-Python decoding), so other tasks wait no longer than that. Measured: polls of 100
#: records are as fast per record as polls of 500.
_DIRECT_RECORDS: Final = 100
#: Decoding in trio stops for a ``poll()`` on the consumer's thread at least this often (s).
_DIRECT_WINDOW: Final = 1.0
#: A commit waiting for the group rejoin drives it in calls of at most this long (ms) on the
#: consumer's thread, so that its caller's cancellation is seen between them.
_REJOIN_SLICE_MS: Final = 500
#: ``prefetch`` for manually assigned partitions with ``decode_in_trio=False`` when not given.
#: Group subscriptions default to no read-ahead: against noida-db, kafka-python 3.0.12's
#: rebalances were seen to stall (a join completed while no poll() waited for it is thrown away
#: and sent again) when the consumer's thread polls ahead of a slow reader.
_DEFAULT_PREFETCH: Final = 8


class ConsumerRebalanceListener:
    """Hooks called when a group rebalance takes partitions away or hands them over.

    Subclass it and override what you need; the methods run in trio, in the consumer's nursery,
    while kafka-python waits for them (its heartbeats go on). Inside them you may call the
    consumer's :meth:`~KafkaConsumer.commit`, :meth:`~KafkaConsumer.seek`,
    :meth:`~KafkaConsumer.assignment`, :meth:`~KafkaConsumer.pause` and
    :meth:`~KafkaConsumer.resume`; reading records is not possible until they return. An
    exception raised here comes out of the consumer's next read as a
    :class:`~trionet.errors.KafkaError` (with yours as its ``__cause__``).

    ``on_partitions_revoked`` is also called when the consumer closes, before it leaves the
    group: the place to commit what has been processed. Commit-after-processing example::

        class CommitOnRevoke(ConsumerRebalanceListener):
            def __init__(self) -> None:
                self.consumer: KafkaConsumer | None = None

            async def on_partitions_revoked(self, revoked):
                await self.consumer.commit()
    """

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        """The consumer is about to lose *revoked* (a rebalance starts, or it closes)."""

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        """The consumer now owns *assigned*; reading starts at their committed offsets."""

    async def on_partitions_lost(self, lost: frozenset[TopicPartition]) -> None:
        """The consumer was dropped from the group: *lost* belongs to others already.

        Committing is pointless then. By default this calls :meth:`on_partitions_revoked`.
        """
        await self.on_partitions_revoked(lost)


class _Undecodable:
    """Stands in the buffer for a record the deserializers failed on."""

    __slots__ = ("error", "record")

    def __init__(self, record: KafkaRecord, error: RecordDecodeError) -> None:
        self.record = record
        self.error = error


class KafkaConsumer:
    """A Kafka consumer for trio: ``async with KafkaConsumer(...) as consumer``.

    Example (commit after processing, i.e. at-least-once)::

        async with KafkaConsumer("orders", bootstrap_servers="127.0.0.1:9092",
                                 group_id="billing", auto_offset_reset="earliest") as consumer:
            async for record in consumer:
                await process(record)
                await consumer.commit()

    Entering the block connects (failing with :class:`~trionet.kafka.KafkaConnectionError`
    within ``bootstrap_timeout_ms``, 10 s unless given) and subscribes to *topics* (or
    *pattern*), or assigns *partitions*. Leaving it stops reading, commits what was handed out if
    the block ended without an exception (``commit_on_exit``), runs the listener's
    ``on_partitions_revoked``, leaves the group and closes, all within *close_timeout* seconds,
    then waits for the consumer's threads (its own and kafka-python's I/O thread) to end.

    Args:
        *topics: topics to subscribe to.
        bootstrap_servers: ``"host:port"`` or a list of them.
        group_id: the consumer group; without one, nothing is committed and topics are read
            whole (every partition).
        pattern: a regular expression of topics to subscribe to, instead of *topics*.
        partitions: partitions to assign manually (no group management), instead of
            subscribing.
        listener: a :class:`ConsumerRebalanceListener` for the initial subscription.
        key_deserializer: turns key bytes into values: a callable, a
            :class:`~trionet.codecs.Codec` or a codec name (``"json"``, ``"msgpack"``).
        value_deserializer: the same for values.
        poll_interval: seconds each ``poll()`` may block; bounds how long cancelling a reader
            waits for the consumer's thread.
        close_timeout: seconds the exit may spend committing, revoking and leaving the group.
        prefetch: how many ``poll()`` batches trionet may buffer, so that the consumer's
            thread reads ahead while the application works: at most ``max(1, prefetch) *
            max_poll_records`` records. Below 2 there is no read-ahead (a poll only when the
            buffer is empty). Default: 0, or 8 with manually assigned partitions and
            ``decode_in_trio=False`` (see the Kafka guide). Read-ahead never
            changes what :meth:`commit` commits (only records handed out) and is off with
            ``enable_auto_commit``.
        prefetch_bytes: read-ahead also stops while the buffered records are estimated (from
            their serialized sizes) at more than this many bytes (64 MiB).
        decode_in_trio: a read that finds no buffered record, while kafka-python holds records
            it has already fetched, decodes them on the trio thread (up to 100 at a time, about
            2 ms without ``crc32c``, less with it) instead of waiting for the consumer's thread
            to do it; ``poll()`` itself (fetch requests, heartbeats, rebalances) stays on the
            consumer's thread. Faster: the records are built on the core that uses them.
            Off with read-ahead (``prefetch`` of 2 or more) and with ``enable_auto_commit``.
            ``False`` keeps all of kafka-python's work on the consumer's thread.
        commit_on_exit: commit the handed-out offsets when the block ends without an exception
            (only with a *group_id*).
        broker_timeout: seconds without any reachable broker after which reading raises
            :class:`~trionet.kafka.KafkaConnectionError` (``None``: keep retrying for ever).
        **config: any other kafka-python ``KafkaConsumer`` option (``auto_offset_reset``,
            ``enable_auto_commit``, ``max_poll_records``, ``session_timeout_ms``,
            ``security_protocol``, ``sasl_*``, ``ssl_*``, ``isolation_level``,
            ``group_instance_id``...). trionet's defaults differ from kafka-python's in
            ``enable_auto_commit`` (False: commit explicitly, after processing) and
            ``bootstrap_timeout_ms`` (10 s).

    Raises:
        ConfigurationError: an unknown option or an invalid value.
    """

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        group_id: str | None = None,
        pattern: str | None = None,
        partitions: Iterable[tuple[str, int]] | None = None,
        listener: ConsumerRebalanceListener | None = None,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
        poll_interval: float = 0.1,
        close_timeout: float = 10.0,
        prefetch: int | None = None,
        prefetch_bytes: int = 64 * 1024 * 1024,
        decode_in_trio: bool = True,
        commit_on_exit: bool = True,
        broker_timeout: float | None = 30.0,
        **config: Any,
    ) -> None:
        kp.check_options("consumer", config, kp.CONSUMER_OPTIONS, _HANDLED)
        for name in ("group_id", "bootstrap_servers"):
            if name in config:  # pragma: no cover - Python routes them to the parameters
                raise ConfigurationError(f"{name} given twice")
        if sum((bool(topics), pattern is not None, partitions is not None)) > 1:
            raise ConfigurationError("give topics, a pattern or partitions, not several")
        if listener is not None and not isinstance(listener, ConsumerRebalanceListener):
            raise ConfigurationError("listener must be a ConsumerRebalanceListener")
        if not (isinstance(poll_interval, (int, float)) and 0 < poll_interval <= 60):
            raise ConfigurationError(f"poll_interval must be in (0, 60] s, not {poll_interval!r}")
        if not close_timeout >= 0:
            raise ConfigurationError(f"close_timeout must be >= 0, not {close_timeout!r}")
        if prefetch is not None and (not isinstance(prefetch, int) or isinstance(prefetch, bool)
                                     or prefetch < 0):
            raise ConfigurationError(f"prefetch must be an int >= 0, not {prefetch!r}")
        if not isinstance(decode_in_trio, bool):
            raise ConfigurationError(
                f"decode_in_trio must be True or False, not {decode_in_trio!r}")
        if broker_timeout is not None and not broker_timeout > 0:
            raise ConfigurationError(f"broker_timeout must be > 0 or None, not {broker_timeout!r}")
        for topic in topics:
            _check_topic(topic)
        self._servers = check_servers(bootstrap_servers)
        self._servers_text = servers_text(self._servers)
        self._group_id = group_id
        self._initial_topics = tuple(topics)
        self._initial_pattern = pattern
        self._initial_partitions = (
            None if partitions is None else [_as_tp(tp) for tp in partitions]
        )
        self._listener = listener
        self._decode_key = make_decoder(key_deserializer, "key")
        self._decode_value = make_decoder(value_deserializer, "value")
        self._poll_ms = max(1, round(poll_interval * 1000))
        self._read_ahead_ms = min(self._poll_ms, _READ_AHEAD_WAIT_MS)
        self._close_timeout = close_timeout
        self._commit_on_exit = commit_on_exit
        self._broker_timeout = broker_timeout
        settings = with_defaults(
            config,
            enable_auto_commit=False,
            bootstrap_timeout_ms=DEFAULT_BOOTSTRAP_TIMEOUT_MS,
        )
        settings["bootstrap_servers"] = self._servers
        settings["group_id"] = group_id
        self._config = settings
        self._max_records = int(settings.get("max_poll_records", 500))
        self._auto_commit = bool(settings.get("enable_auto_commit"))
        self._prefetch_setting = prefetch
        self._decode_in_trio = decode_in_trio
        self._set_prefetch(group_managed=partitions is None)
        if not (isinstance(prefetch_bytes, int) and prefetch_bytes > 0):
            raise ConfigurationError(
                f"prefetch_bytes must be a positive int, not {prefetch_bytes!r}")
        self._bytes_bound = prefetch_bytes
        #: Average serialized size of the records of the last poll (written by whichever thread
        #: polls; never two at once).
        self._record_size = 0
        self._listener_timeout_ms = int(settings.get("max_poll_interval_ms", 300_000))

        self._cm: Any = None
        self._kc: Any = None
        self._trap = kp.ClientTrap()
        self._worker = ThreadWorker(f"trionet-kafka-consumer-{id(self):x}",
                                    on_exit=self._close_on_thread)
        self._portal: TrioPortal | None = None
        self._nursery: trio.Nursery | None = None
        self._buffer: collections.deque[KafkaRecord | _Undecodable] = collections.deque()
        self._delivered: dict[tuple[str, int], int] = {}
        self._rewind: dict[TopicPartition, int] = {}
        # Rebalances that took partitions away (revoked or lost), counted in trio; per
        # partition, the count when it was last taken. A commit leaves out the offsets of a
        # partition taken after it computed them (read on the consumer's thread: the listener
        # step that updates them ends before the poll() that runs the rebalance returns).
        self._revocations = 0
        self._revoked_at: dict[TopicPartition, int] = {}
        # The poll pipeline. _polling and _stalled are trio's: _polling is True from the moment
        # trio submits a poll until a result says the thread's chain of polls has ended;
        # _stalled says it ended for want of room (readers restart it). _handed counts the
        # records the thread handed over (written on the thread only), _received those trio
        # took in (written in trio only): their difference is the records on their way.
        self._polling = False
        self._stalled = False
        self._handed = 0
        self._received = 0
        # Records polled and not handed over yet (consumer thread; a rebalance on kafka-python's
        # I/O thread may take them, under the lock).
        self._pending: list[KafkaRecord | _Undecodable] | None = None
        self._pending_lock = threading.Lock()
        self._arrived: trio.Event | None = None
        self._poll_error: BaseException | None = None
        self._unreachable_since: float | None = None
        self._position_lock = trio.Lock()
        #: Calls submitted to the consumer's thread whose result trio has not taken in yet.
        self._calls = 0
        #: When a poll() on the consumer's thread last returned (trio's clock).
        self._thread_polled_at = -math.inf
        self._since_yield = 0
        self._yielded_at = 0.0
        self._open = False
        self._aborting = False

    @classmethod
    def from_url(cls, url: str, *topics: str, **overrides: Any) -> KafkaConsumer:
        """A consumer for ``kafka://host:port?group=name&option=value``.

        Query options are kafka-python options; user information becomes SASL PLAIN
        credentials. *overrides* win over the URL.
        """
        parsed = parse_kafka_url(url)
        options = parsed.consumer_options()
        options.update(overrides)
        return cls(*topics, bootstrap_servers=parsed.bootstrap_servers, **options)

    def __repr__(self) -> str:
        return (f"<trionet.kafka.KafkaConsumer {self._servers_text} group={self._group_id!r} "
                f"buffered={len(self._buffer)}>")

    @property
    def group_id(self) -> str | None:
        """The consumer group, or None."""
        return self._group_id

    @property
    def buffered(self) -> int:
        """Records polled (read ahead) and waiting in trionet to be handed out.

        At most ``max(1, prefetch) * max_poll_records`` (fewer when ``prefetch_bytes`` limits
        read-ahead). They are not committed by :meth:`commit` until handed out.
        """
        return len(self._buffer)

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> KafkaConsumer:
        if self._cm is not None:
            raise RuntimeError("a KafkaConsumer can be entered only once")
        self._cm = self._lifetime()
        return await self._cm.__aenter__()  # type: ignore[no-any-return]

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        return await self._cm.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[KafkaConsumer]:
        self._portal = TrioPortal()
        async with hidden_nursery() as nursery:
            self._nursery = nursery
            try:
                await nursery.start(self._run_worker)
                await self._start()
                clean_exit = False
                try:
                    yield self
                    clean_exit = True
                finally:
                    self._open = False
                    with trio.move_on_after(self._close_timeout, shield=True):
                        await self._close_gracefully(commit=clean_exit and self._commit_on_exit)
            finally:
                self._open = False
                self._aborting = True
                self._worker.stop()  # after the calls already queued; then it closes the consumer
                nursery.cancel_scope.cancel()

    async def _run_worker(self, *, task_status: trio.TaskStatus[ThreadWorker]) -> None:
        # Shielded: cancelling the consumer's surroundings must not stop its thread before the
        # graceful close has run on it. _lifetime stops it explicitly, and every call on it is
        # bounded (short polls, kafka-python's timeouts), so the nursery's wait is too.
        with trio.CancelScope(shield=True):
            await self._worker.run(task_status=task_status)

    async def _start(self) -> None:
        try:
            await self._run(self._build, operation="starting the Kafka consumer")
        except BaseException:
            self._trap.abort()  # a cancelled bootstrap gives up at once
            raise
        self._open = True
        if self._initial_partitions is not None:
            await self.assign(self._initial_partitions)
        elif self._initial_topics or self._initial_pattern is not None:
            await self.subscribe(self._initial_topics, pattern=self._initial_pattern,
                                 listener=self._listener)

    def _build(self) -> None:  # consumer thread
        self._kc = kp.build_consumer(self._config, self._trap, servers=self._servers_text)

    async def _close_gracefully(self, *, commit: bool) -> None:
        # Runs in a shielded scope whose deadline is close_timeout from now; every call on the
        # consumer's thread gets the time that is left, since the thread cannot be interrupted.
        if self._kc is None:
            return
        if commit and self._group_id is not None and self._delivered:
            with contextlib.suppress(KafkaError):  # at-least-once: they will be read again
                await self._commit(None, timeout_ms=self._remaining_ms())
        with contextlib.suppress(KafkaError):  # the group forgets us after session_timeout_ms
            # Revokes (the listener runs) and leaves the group.
            await self._run(kp.close_consumer, self._kc, operation="closing the consumer",
                            timeout_ms=self._remaining_ms())

    def _remaining_ms(self) -> int:
        deadline = trio.current_effective_deadline()
        budget = self._close_timeout if math.isinf(deadline) else deadline - trio.current_time()
        return max(1, int(budget * 1000))

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

    # -- running calls on the consumer's thread ----------------------------------------------------

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

        if self._in_listener() and self._kc is not None:

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
            error = kp.translated(result.error, servers=self._servers_text, operation=operation)
            if error is not result.error:
                raise error
        return result.unwrap()

    def _check_open(self) -> None:
        if not self._open and not self._in_listener():
            raise trio.ClosedResourceError("the Kafka consumer is not open")

    def _in_listener(self) -> bool:
        """Whether the calling task is (or was spawned by) this consumer's rebalance listener."""
        return _IN_LISTENER.get() is self

    # -- reading -----------------------------------------------------------------------------------

    def __aiter__(self) -> KafkaConsumer:
        return self

    async def __anext__(self) -> KafkaRecord:
        """The next record, waiting for one if needed.

        Every call checks for cancellation; other tasks get to run whenever it waits for
        records, and otherwise every 16 records unless they ran less than a millisecond ago (a
        full checkpoint per buffered record would cost about as much as kafka-python's own
        per-record work).

        Raises:
            KafkaConnectionError: no broker was reachable for ``broker_timeout`` seconds.
            RecordDecodeError: the deserializers failed on this record (it counts as handed
                out; iterate again to go on).
            trio.ClosedResourceError: the consumer is closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        buffer = self._buffer
        if not buffer:
            await self._fill()
            self._since_yield = 0
            self._yielded_at = time.perf_counter()
        elif self._since_yield < _YIELD_EVERY:
            self._since_yield += 1
        else:
            self._since_yield = 0
            if self._stalled:
                self._restart_polling()
            if time.perf_counter() - self._yielded_at >= _YIELD_INTERVAL:
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._yielded_at = time.perf_counter()
                if not buffer:  # another task took them meanwhile
                    await self._fill()
        item = buffer.popleft()
        if type(item) is _Undecodable:
            self._delivered[(item.record.topic, item.record.partition)] = item.record.offset + 1
            raise item.error
        record: KafkaRecord = item  # type: ignore[assignment]  # (no cast() call per record)
        self._delivered[(record[0], record[1])] = record[2] + 1  # topic, partition, offset
        return record

    async def getone(self) -> KafkaRecord:
        """The next record (the same as ``await anext(consumer)``)."""
        return await self.__anext__()

    async def getmany(self, max_records: int | None = None) -> list[KafkaRecord]:
        """The records available now, at most *max_records*, waiting until there is one.

        Raises:
            RecordDecodeError: the deserializers failed on the first record available (it
                counts as handed out). Records after it come with the next call.
            KafkaConnectionError, trio.ClosedResourceError: as for ``async for``.
        """
        if max_records is not None and (not isinstance(max_records, int) or max_records < 1):
            raise ConfigurationError(f"max_records must be a positive int, not {max_records!r}")
        await trio.lowlevel.checkpoint_if_cancelled()
        buffer = self._buffer
        if buffer:
            await trio.lowlevel.cancel_shielded_checkpoint()
        while not buffer:
            await self._fill()
        count = len(buffer) if max_records is None else min(max_records, len(buffer))
        out: list[KafkaRecord] = []
        delivered = self._delivered
        for _ in range(count):
            item = buffer[0]
            if type(item) is _Undecodable:
                if out:
                    break
                buffer.popleft()
                delivered[(item.record.topic, item.record.partition)] = item.record.offset + 1
                raise item.error
            assert isinstance(item, KafkaRecord)
            buffer.popleft()
            delivered[(item.topic, item.partition)] = item.offset + 1
            out.append(item)
        if self._stalled:
            self._restart_polling()
        return out

    async def _fill(self) -> None:
        """Wait for the next batch of records (or raise why there are none)."""
        while not self._buffer:
            if self._poll_error is not None:
                error, self._poll_error = self._poll_error, None
                raise error
            if self._in_listener():
                raise KafkaError("a rebalance listener cannot read records: the consumer's "
                                 "poll() is waiting for the listener to return", fault="local")
            self._check_open()
            if not self._polling:
                if self._may_drain() and self._drain():
                    # The records were decoded on this thread: let other tasks run first.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    continue
                self._start_polling()
            if self._arrived is None:
                self._arrived = trio.Event()
            await self._arrived.wait()

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
            self._poll_error = kp.translated(exc, servers=self._servers_text,
                                             operation="polling")
            return True
        if not records:
            return False
        self._unreachable_since = None
        self._buffer.extend(records)
        return True

    def _outstanding(self) -> int:
        """Records buffered or on their way to trio (either thread; read in this order, a race
        can only overestimate it)."""
        return self._handed - self._received + len(self._buffer)

    def _start_polling(self) -> None:  # trio thread
        self._polling = True
        self._stalled = False
        try:
            self._worker.submit(self._poll_job)
        except trio.ClosedResourceError:
            self._polling = False
            raise trio.ClosedResourceError("the Kafka consumer's thread has stopped") from None

    def _restart_polling(self) -> None:  # trio thread, when a reader took records
        if (self._stalled and not self._polling and self._open
                and self._outstanding() <= self._ahead):
            self._start_polling()

    def _set_prefetch(self, *, group_managed: bool) -> None:
        """Apply ``prefetch`` and ``decode_in_trio`` (by default, fetched records are decoded on
        the trio thread when possible, and read-ahead is off)."""
        if self._auto_commit:
            prefetch = 0  # kafka-python's auto-commit commits its positions, read-ahead included
        elif self._prefetch_setting is not None:
            prefetch = self._prefetch_setting
        elif group_managed or self._decode_in_trio:
            prefetch = 0
        else:
            prefetch = _DEFAULT_PREFETCH
        self._prefetch = prefetch
        #: Whether a reader that finds the buffer empty may decode fetched records itself.
        self._direct = self._decode_in_trio and prefetch < 2 and not self._auto_commit
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
        if batch and self._prefetch > 1:
            # Records already fetched come in the same hand-off: one wake-up of trio (and one
            # round of GIL hand-overs) per up to _handoff records, not per poll. While they
            # wait in _pending, a rebalance inside one of these polls hands them over before
            # its listener runs (see _dispatch_rebalance).
            per_poll = self._max_records
            limit = min(handoff, bound - outstanding)
            taken = len(batch)
            self._pending = batch
            # Only records kafka-python has already fetched join the hand-off: waiting for more
            # (up to the brief wait) would hold back the ones polled, 10 ms per record when
            # they trickle in.
            while (taken + per_poll <= limit and self._open and not self._aborting
                   and kp.records_ready(self._kc)):
                more = outcome.capture(self._poll_once, brief)
                if isinstance(more, outcome.Error):
                    failure = more
                    break
                records = more.value[0]
                if not records:
                    break
                taken += len(records)
                with self._pending_lock:
                    self._pending.extend(records)
            with self._pending_lock:
                batch, self._pending = self._pending, None
        again = stalled = False
        reading_ahead = self._prefetch > 1 and self._open and not self._aborting
        if batch:
            with self._pending_lock:
                self._handed += len(batch)
            if failure is None and reading_ahead:
                bound, handoff = self._byte_bounds()
                self._ahead = bound - handoff  # for readers restarting the chain
                again = self._outstanding() <= self._ahead
                stalled = not again
        elif outstanding and reading_ahead:
            # Nothing arrived within the brief wait of a read-ahead poll: stop here, and let
            # readers start the next poll as they take records (as for a full buffer).
            stalled = True
        if (failure is None and self._open and not self._aborting
                and self._group_id is not None and kp.group_joining(self._kc)):
            # A rebalance is under way: keep polling until it completes, whatever the buffer
            # holds (no records come meanwhile).
            again, stalled = True, False
        portal.call_soon(self._poll_finished, outcome.Value((batch, unreachable)), again, stalled)
        if failure is not None:
            portal.call_soon(self._poll_finished, failure, False, False)
        elif again:
            worker.submit(self._poll_job)

    def _poll_once(self, timeout_ms: int) -> tuple[list[KafkaRecord | _Undecodable], bool]:
        raw = kp.poll(self._kc, timeout_ms, self._max_records)
        if not raw:
            unreachable = self._broker_timeout is not None and kp.brokers_unreachable(self._kc)
            return [], unreachable
        return self._decoded(raw), False

    def _decoded(self, raw: list[Any]) -> list[KafkaRecord | _Undecodable]:
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
        out: list[KafkaRecord | _Undecodable] = []
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
                out.append(_Undecodable(raw_record, error))
                continue
            out.append(KafkaRecord(r.topic, r.partition, r.offset, key, value, r.headers or (),
                                   r.timestamp, r.timestamp_type))
        return out

    def _poll_finished(
        self, result: outcome.Outcome[tuple[list[KafkaRecord | _Undecodable], bool]],
        again: bool, stalled: bool,
    ) -> None:  # trio thread
        self._thread_polled_at = trio.current_time()
        if not again:
            self._polling = False
            self._stalled = stalled
        try:
            if isinstance(result, outcome.Error):
                self._poll_error = kp.translated(result.error, servers=self._servers_text,
                                                 operation="polling")
                return
            records, unreachable = result.unwrap()
            if records:
                self._unreachable_since = None
                self._buffer.extend(records)  # before counting: see _outstanding
                self._received += len(records)
            elif not unreachable:
                self._unreachable_since = None
            elif self._unreachable_since is None:
                self._unreachable_since = trio.current_time()
            elif (self._broker_timeout is not None
                  and trio.current_time() - self._unreachable_since >= self._broker_timeout):
                self._poll_error = KafkaConnectionError(
                    f"no Kafka broker has been reachable for {self._broker_timeout:g} s "
                    f"(bootstrap servers {self._servers_text})",
                    bootstrap_servers=self._servers_text,
                )
        finally:
            arrived, self._arrived = self._arrived, None
            if arrived is not None:
                arrived.set()

    # -- offsets ----------------------------------------------------------------------------------

    def delivered_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record handed out (what :meth:`commit`
        commits by default)."""
        return {TopicPartition(topic, partition): offset
                for (topic, partition), offset in self._delivered.items()}

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None
                     ) -> dict[TopicPartition, int]:
        """Commit offsets for the consumer group, waiting for the broker's answer.

        By default: per partition, the offset after the last record this consumer handed out
        (records still buffered are not included), for the partitions it still owns. Call it
        after processing to get at-least-once delivery.

        Args:
            offsets: explicit ``{partition: next offset to read}`` instead.

        Returns:
            The offsets committed.

        If the consumer has to rejoin its group first (the group is rebalancing, or the broker
        restarted and forgot the group's generation), the commit drives the rejoin and waits
        for it, up to the caller's deadline (its trio cancel scope) or, without one,
        ``request_timeout_ms`` (30 s). Offsets handed out before a rebalance that took their
        partitions away are then never committed (the new generation may belong to another
        consumer, or rewind this one): the commit raises
        :exc:`KafkaPartitionsRevokedError` once, and the records are read again.

        Raises:
            KafkaPartitionsRevokedError: a rebalance took (some of) the partitions away after
                their records were handed out; their offsets were not committed, the others
                were. The records will be read again by the partition's next owner.
            KafkaCommitError: the group could not be rejoined in time, or the broker refused
                the commit for another reason.
            KafkaError: no ``group_id``, or another failure.
        """
        self._check_open()
        return await self._commit(offsets)

    async def _commit(self, offsets: Mapping[TopicPartition, int] | None,
                      timeout_ms: int | None = None) -> dict[TopicPartition, int]:
        if self._group_id is None:
            raise KafkaError("commit needs a consumer group (group_id)", fault="local")
        only_assigned = offsets is None
        wanted = self.delivered_offsets() if offsets is None else {
            _as_tp(tp): _check_offset(off) for tp, off in offsets.items()}
        if not wanted:
            await trio.lowlevel.checkpoint()
            return {}
        if self._in_listener():
            return await self._commit_in_listener(wanted)
        start = self._revocations
        deadline = trio.current_effective_deadline()
        if math.isinf(deadline):
            deadline = trio.current_time() + int(
                self._config.get("request_timeout_ms", 30_000)) / 1000
        while True:
            try:
                committed, revoked = await self._run(
                    self._commit_owned, wanted, start, only_assigned, timeout_ms,
                    operation="committing offsets")
            except KafkaCommitError as exc:
                # Not a member of the current generation: rejoin (a revocation is then counted
                # and those offsets are left out), then commit what is still ours. Not while
                # closing (timeout_ms given): the records will simply be read again.
                if timeout_ms is not None or not kp.is_membership_error(exc.__cause__):
                    raise
                await self._await_rejoin(exc, deadline)
                continue
            break
        if revoked:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(revoked))
            raise KafkaPartitionsRevokedError(
                f"committing offsets: a group rebalance took {names} from this consumer after "
                "their records were handed out; their offsets were not committed and the "
                "records will be read again", partitions=revoked, committed=committed)
        return committed

    def _commit_owned(self, wanted: dict[TopicPartition, int], start: int, only_assigned: bool,
                      timeout_ms: int | None
                      ) -> tuple[dict[TopicPartition, int], frozenset[TopicPartition]]:
        # consumer thread: leave out the partitions a rebalance took since *start*
        revoked_at = self._revoked_at
        revoked = frozenset(tp for tp in wanted if revoked_at.get(tp, 0) > start)
        keep = {tp: offset for tp, offset in wanted.items() if tp not in revoked}
        committed = kp.commit(self._kc, keep, only_assigned=only_assigned,
                              timeout_ms=timeout_ms) if keep else {}
        return committed, revoked

    async def _await_rejoin(self, cause: KafkaCommitError, deadline: float) -> None:
        """Drive the group rejoin on the consumer's thread until it is done or *deadline*."""
        while True:
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                raise KafkaCommitError(
                    f"{cause} (the consumer did not rejoin its group before the commit's "
                    "deadline; the records will be read again)", fault="remote") from cause
            slice_ms = max(1, min(_REJOIN_SLICE_MS, int(remaining * 1000)))
            if await self._run(kp.rejoin_group, self._kc, slice_ms,
                               operation="rejoining the consumer group"):
                return

    async def _commit_in_listener(self, offsets: dict[TopicPartition, int]
                                  ) -> dict[TopicPartition, int]:
        portal = self._portal
        assert portal is not None
        done = trio.Event()
        box: list[BaseException | None] = []

        def finish(error: BaseException | None) -> None:
            box.append(error)
            done.set()

        timeout_ms = int(self._config.get("request_timeout_ms", 30_000))
        kp.commit_on_io_loop(self._kc, offsets, timeout_ms,
                             lambda error: portal.call_soon(finish, error))
        await done.wait()
        if box[0] is not None:
            error = kp.translated(box[0], servers=self._servers_text,
                                  operation="committing offsets")
            if isinstance(error, KafkaError) and not isinstance(error, KafkaCommitError):
                raise KafkaCommitError(str(error), fault="remote") from box[0]
            raise error
        return offsets

    async def _group_metadata(self) -> Any:
        """kafka-python's group membership snapshot (for transactional offset commits)."""
        self._check_open()
        if self._group_id is None:
            raise KafkaError("transactional offsets need a consumer group (group_id)",
                             fault="local")
        return await self._run(kp.group_metadata, self._kc, operation="reading group metadata")

    async def committed(self, partition: tuple[str, int]) -> int | None:
        """The group's committed offset for *partition* (None if nothing was committed)."""
        self._check_open()
        return await self._run(kp.committed, self._kc, _as_tp(partition),
                               operation="reading a committed offset")

    async def position(self, partition: tuple[str, int]) -> int:
        """The offset of the next record kafka-python will fetch for *partition*.

        Records already buffered in trionet come before it.
        """
        self._check_open()
        return await self._run(kp.position, self._kc, _as_tp(partition),
                               operation="reading a position")

    async def beginning_offsets(self, partitions: Iterable[tuple[str, int]]
                                ) -> dict[TopicPartition, int]:
        """The first offset of each partition."""
        self._check_open()
        return await self._run(kp.edge_offsets, self._kc, [_as_tp(tp) for tp in partitions],
                               "beginning", operation="listing offsets")

    async def end_offsets(self, partitions: Iterable[tuple[str, int]]
                          ) -> dict[TopicPartition, int]:
        """The offset after the last record of each partition (its high watermark)."""
        self._check_open()
        return await self._run(kp.edge_offsets, self._kc, [_as_tp(tp) for tp in partitions],
                               "end", operation="listing offsets")

    # -- subscription and assignment ---------------------------------------------------------------

    async def subscribe(self, topics: Iterable[str] = (), *, pattern: str | None = None,
                        listener: ConsumerRebalanceListener | None = None) -> None:
        """Subscribe to *topics*, or to every topic matching the regex *pattern*.

        Replaces the previous subscription. Partitions are assigned by the group (or, without a
        ``group_id``, every partition of the topics).

        Raises:
            ConfigurationError: both or neither of topics and pattern, or a bad listener.
        """
        self._check_open()
        names = tuple(topics)
        if bool(names) == (pattern is not None):
            raise ConfigurationError("subscribe needs topics or a pattern (not both)")
        for topic in names:
            _check_topic(topic)
        if listener is not None and not isinstance(listener, ConsumerRebalanceListener):
            raise ConfigurationError("listener must be a ConsumerRebalanceListener")
        self._listener = listener
        bridge = kp.ListenerBridge(self._kc, self._dispatch_rebalance, self._listener_timeout_ms)

        def after(_: None) -> None:
            self._set_prefetch(group_managed=True)
            if pattern is None:
                self._discard(lambda tp: tp[0] not in names)

        async with self._position_lock:
            with trio.CancelScope(shield=True):
                await self._run(kp.subscribe, self._kc, names, pattern, bridge, after=after,
                                operation="subscribing")

    async def unsubscribe(self) -> None:
        """Drop the subscription or assignment (and every buffered record)."""
        self._check_open()
        async with self._position_lock:
            with trio.CancelScope(shield=True):
                await self._run(kp.unsubscribe, self._kc, operation="unsubscribing",
                                after=lambda _: self._discard(lambda tp: True))

    async def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions (no group management, no rebalances).

        Replaces the previous assignment; offsets still come from the group's commits when a
        ``group_id`` is set.

        Raises:
            UnknownTopicError: a topic or partition does not exist.
        """
        self._check_open()
        wanted = frozenset(_as_tp(tp) for tp in partitions)
        async with self._position_lock:
            with trio.CancelScope(shield=True):
                await self._run(kp.assign, self._kc, wanted, operation="assigning partitions",
                                after=lambda _: self._assigned(wanted))

    async def assignment(self) -> frozenset[TopicPartition]:
        """The partitions currently assigned to this consumer."""
        self._check_open()
        return await self._run(kp.assignment, self._kc, operation="reading the assignment")

    async def subscription(self) -> frozenset[str] | None:
        """The subscribed topics (None when partitions are assigned manually)."""
        self._check_open()
        return await self._run(kp.subscription, self._kc, operation="reading the subscription")

    async def topics(self) -> set[str]:
        """Every topic in the cluster."""
        self._check_open()
        return await self._run(kp.topics, self._kc, operation="listing topics")

    async def partitions_for_topic(self, topic: str) -> set[int]:
        """The partition numbers of *topic* (empty if it does not exist; never creates it)."""
        self._check_open()
        return await self._run(kp.existing_partitions, self._kc, topic,
                               operation="reading topic metadata")

    # -- positions --------------------------------------------------------------------------------

    async def seek(self, partition: tuple[str, int], offset: int) -> None:
        """Read *partition* from *offset* next; buffered records of it are dropped.

        Raises:
            KafkaError: the partition is not assigned to this consumer.
        """
        self._check_open()
        tp = _as_tp(partition)
        offset = _check_offset(offset)

        def after(_: None) -> None:
            self._discard(lambda p: p == tp)
            self._delivered[tp] = offset

        await self._position_op(kp.seek, self._kc, tp, offset, after=after, operation="seeking")

    async def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        """Read the given partitions (all assigned ones by default) from their first record."""
        await self._seek_to("beginning", partitions)

    async def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        """Skip to the end of the given partitions (all assigned ones by default)."""
        await self._seek_to("end", partitions)

    async def _seek_to(self, where: str, partitions: Sequence[tuple[str, int]]) -> None:
        self._check_open()
        tps = frozenset(_as_tp(tp) for tp in partitions)

        def after(moved: frozenset[TopicPartition]) -> None:
            self._discard(lambda p: p in moved)
            for tp in moved:
                self._delivered.pop(tp, None)

        await self._position_op(kp.seek_to, self._kc, tps, where, after=after,
                                operation=f"seeking to the {where}")

    async def pause(self, *partitions: tuple[str, int]) -> None:
        """Stop reading the given partitions until :meth:`resume`.

        Their records already buffered are dropped and read again after :meth:`resume`.
        """
        self._check_open()
        tps = frozenset(_as_tp(tp) for tp in partitions)

        def after(_: None) -> None:
            for tp, first in self._discard(lambda p: p in tps).items():
                self._rewind[tp] = min(first, self._rewind.get(tp, first))

        await self._position_op(kp.pause, self._kc, tps, after=after, operation="pausing")

    async def resume(self, *partitions: tuple[str, int]) -> None:
        """Read the given paused partitions again."""
        self._check_open()
        tps = frozenset(_as_tp(tp) for tp in partitions)
        async with self._maybe_position_lock():
            rewind = {tp: self._rewind.pop(tp) for tp in tps if tp in self._rewind}
            with trio.CancelScope(shield=True):
                await self._run(kp.resume, self._kc, tps, rewind, operation="resuming")

    async def paused(self) -> frozenset[TopicPartition]:
        """The partitions paused with :meth:`pause`."""
        self._check_open()
        return await self._run(kp.paused, self._kc, operation="reading paused partitions")

    async def _position_op(self, fn: Callable[..., T], *args: Any, operation: str,
                           after: Callable[[T], object]) -> T:
        async with self._maybe_position_lock():
            with trio.CancelScope(shield=True):  # quick, local; keeps the bookkeeping in step
                result = await self._run(fn, *args, after=after, operation=operation)
        return result

    @asynccontextmanager
    async def _maybe_position_lock(self) -> AsyncIterator[None]:
        # In a rebalance listener the lock may be held by a task whose call is queued behind the
        # very poll() that waits for the listener: do not wait for it there.
        if self._in_listener():
            await trio.lowlevel.checkpoint()
            yield
        else:
            async with self._position_lock:
                yield

    def _assigned(self, wanted: frozenset[TopicPartition]) -> None:
        self._set_prefetch(group_managed=False)
        self._discard(lambda tp: tp not in wanted)

    def _discard(self, match: Callable[[TopicPartition], bool]) -> dict[TopicPartition, int]:
        """Drop buffered records of the matching partitions; the first dropped offset of each."""
        first: dict[TopicPartition, int] = {}
        if not self._buffer:
            return first
        kept: list[KafkaRecord | _Undecodable] = []
        for item in self._buffer:
            record = item.record if type(item) is _Undecodable else item
            assert isinstance(record, KafkaRecord)
            tp = TopicPartition(record.topic, record.partition)
            if match(tp):
                first.setdefault(tp, record.offset)
            else:
                kept.append(item)
        # In place: readers hold on to the deque across their awaits.
        self._buffer.clear()
        self._buffer.extend(kept)
        return first

    # -- rebalances -------------------------------------------------------------------------------

    def _dispatch_rebalance(self, kind: str, partitions: frozenset[TopicPartition],
                            done: Callable[[BaseException | None], None]) -> bool:
        # kafka-python's I/O thread, inside poll() or close() on the consumer's thread.
        if self._aborting or self._portal is None or (kind != "assigned" and not partitions):
            return False  # (kafka-python revokes an empty set before the first join)
        # Records polled before this rebalance and still waiting on the consumer's thread (it
        # is blocked in poll() meanwhile) must reach the buffer before the listener runs, so
        # that forgetting revoked partitions (or a seek in the listener) covers them too.
        with self._pending_lock:
            early = self._pending
            if early:
                self._pending = []
                self._handed += len(early)
        if early:
            self._portal.call_soon(self._poll_finished, outcome.Value((early, False)), True,
                                   False)
        return self._portal.call_soon(self._start_listener, kind, partitions, done)

    def _start_listener(self, kind: str, partitions: frozenset[TopicPartition],
                        done: Callable[[BaseException | None], None]) -> None:
        if self._nursery is None or self._aborting:
            done(None)
            return
        try:
            self._nursery.start_soon(self._run_listener, kind, partitions, done)
        except RuntimeError:  # the nursery is closed
            done(None)

    async def _run_listener(self, kind: str, partitions: frozenset[TopicPartition],
                            done: Callable[[BaseException | None], None]) -> None:
        error: BaseException | None = None
        _IN_LISTENER.set(self)  # this task's context only (and its children's)
        try:
            listener = self._listener
            if listener is not None:
                if kind == "assigned":
                    await listener.on_partitions_assigned(partitions)
                elif kind == "lost":
                    await listener.on_partitions_lost(partitions)
                else:
                    await listener.on_partitions_revoked(partitions)
        except Exception as exc:
            error = exc
        finally:
            if kind != "assigned":
                self._forget(partitions)
            done(error)

    def _forget(self, partitions: frozenset[TopicPartition]) -> None:
        self._discard(lambda tp: tp in partitions)
        self._revocations += 1
        for tp in partitions:
            self._revoked_at[tp] = self._revocations
            self._delivered.pop(tp, None)
            self._rewind.pop(tp, None)


def _as_tp(value: tuple[str, int]) -> TopicPartition:
    try:
        topic, partition = value
    except (TypeError, ValueError):
        raise ConfigurationError(f"expected a (topic, partition) pair, not {value!r}") from None
    if not isinstance(topic, str) or not topic:
        raise ConfigurationError(f"topic must be a non-empty string, not {topic!r}")
    if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
        raise ConfigurationError(f"partition must be an int >= 0, not {partition!r}")
    return TopicPartition(topic, partition)


def _check_offset(offset: object) -> int:
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ConfigurationError(f"offset must be an int >= 0, not {offset!r}")
    return offset


def _check_topic(topic: object) -> None:
    if not isinstance(topic, str) or not topic:
        raise ConfigurationError(f"topic must be a non-empty string, not {topic!r}")

