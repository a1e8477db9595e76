"""The confluent-kafka engine (``backend="confluent"``): librdkafka behind trionet's Kafka API.

confluent-kafka wraps librdkafka, whose own threads do all network I/O, batching, compression
and record decoding in C. The Python objects are thread-safe. What they need from the
application is a thread that calls into them to serve their queues:

* the producer: ``produce()`` only appends to librdkafka's queue and never blocks (a full queue
  raises ``BufferError``), so the trio thread calls it directly. Delivery reports are served by
  ``poll()``, which runs the per-record delivery callback: each record's
  :class:`ConfluentDelivery` is that callback, so a report finishes its handle with plain
  attribute writes on the polling thread (no crossing per record); only a handle someone
  :meth:`~ConfluentProducer.watch` es wakes trio. A batch (``send_batch``) shares one
  :class:`ConfluentBatch` report queue, whose C ``put`` is each record's callback (no Python
  frame per report); the polling thread wakes trio for a watched batch once it is complete.
  One :class:`~trionet._threads.RepeatingThread`
  per producer runs ``poll(0.1)`` from ``start()`` until ``close()``, which flushes under the
  caller's deadline and joins it.
* the consumer: one :class:`~trionet._threads.ThreadWorker` per consumer runs every call on
  the library in submission order: ``consume(max_records, poll_interval)`` hands a whole batch
  to trio in one :meth:`~trionet._threads.TrioPortal.call_soon` (converted to
  :class:`~trionet.kafka.KafkaRecord` on that thread), and the ``after`` bookkeeping of a
  ``seek``/``pause``/``assign`` runs in trio in order with the batches (the engine seam's
  ordering contract). Rebalance callbacks run inside ``consume()`` on that thread: the
  callback hands the step to the trio-side listener and keeps the thread (a
  :class:`~trionet._threads.ServingWait`) until the listener is done, so that a commit in
  ``on_partitions_revoked`` happens before librdkafka gives the partitions up. The calls the
  listener makes on the consumer run on that waiting thread, inside the callback, where
  librdkafka expects them (from another thread, ``assignment()`` was seen to block until the
  callback returned).

Why a thread rather than librdkafka's queue wake-up file descriptor
(``rd_kafka_queue_io_event_enable``): confluent-kafka 2.16 does not expose it, reaching it
through ``ctypes`` means reading a private C struct of the binding, and a consumer served from
the trio thread would run its rebalance callbacks there, where the async listener cannot be
awaited before librdkafka completes the rebalance. Measured (docs/kafka.rst, engines): the
thread hop costs nothing measurable in throughput (one hop per batch of up to
``max_poll_records`` records) and about 0.2 ms of end-to-end latency at p50.

Options: the kafka-python names trionet documents (``acks``, ``linger_ms``,
``session_timeout_ms``...) are mapped to librdkafka's (:data:`OPTION_NAMES`); any name with a
dot is librdkafka's own and is passed through unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import confluent_kafka as ck
import outcome
import trio
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic as CKNewTopic

from .._threads import RepeatingThread, ServingWait, ThreadWorker, TrioPortal, run_blocking
from ..errors import ConfigurationError, KafkaError
from ._engine import ConsumerHooks, Engine, EngineConfig, Kind, RebalanceKind
from ._errors import (
    KafkaCommitError,
    KafkaConnectionError,
    KafkaDeliveryError,
    KafkaTimeout,
    RecordDecodeError,
    UnknownTopicError,
)
from ._fetch import Item, Undecodable
from ._options import ConsumerOptions, check_credentials
from ._records import KafkaRecord, RecordMetadata, TopicPartition
from ._util import DEFAULT_BOOTSTRAP_TIMEOUT_MS, servers_text

__all__ = ["ENGINE", "OPTION_NAMES", "ConfluentEngine"]

T = TypeVar("T")

_new_tuple = tuple.__new__
_E = ck.KafkaError

#: trionet's (kafka-python's) option names -> librdkafka's, per client kind.
_COMMON: Final = {
    "client_id": "client.id",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "metadata_max_age_ms": "topic.metadata.refresh.interval.ms",
    "reconnect_backoff_ms": "reconnect.backoff.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "connections_max_idle_ms": "connections.max.idle.ms",
    "receive_buffer_bytes": "socket.receive.buffer.bytes",
    "send_buffer_bytes": "socket.send.buffer.bytes",
}
OPTION_NAMES: Final[Mapping[Kind, Mapping[str, str]]] = {
    "producer": {
        **_COMMON,
        "acks": "acks",
        "linger_ms": "linger.ms",
        "batch_size": "batch.size",
        "compression_type": "compression.type",
        "enable_idempotence": "enable.idempotence",
        "transactional_id": "transactional.id",
        "transaction_timeout_ms": "transaction.timeout.ms",
        "retries": "retries",
        "retry_backoff_ms": "retry.backoff.ms",
        "delivery_timeout_ms": "delivery.timeout.ms",
        "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
        "max_request_size": "message.max.bytes",
        "request_timeout_ms": "request.timeout.ms",
    },
    "consumer": {
        **_COMMON,
        "session_timeout_ms": "session.timeout.ms",
        "heartbeat_interval_ms": "heartbeat.interval.ms",
        "max_poll_interval_ms": "max.poll.interval.ms",
        "auto_offset_reset": "auto.offset.reset",
        "enable_auto_commit": "enable.auto.commit",
        "auto_commit_interval_ms": "auto.commit.interval.ms",
        "fetch_max_wait_ms": "fetch.wait.max.ms",
        "fetch_min_bytes": "fetch.min.bytes",
        "fetch_max_bytes": "fetch.max.bytes",
        "max_partition_fetch_bytes": "max.partition.fetch.bytes",
        "isolation_level": "isolation.level",
        "check_crcs": "check.crcs",
        "group_instance_id": "group.instance.id",
    },
    "admin": dict(_COMMON),
}
#: Options trionet itself reads (not passed to librdkafka).
_TRIONET_OPTIONS: Final = {
    "producer": frozenset({"bootstrap_timeout_ms", "max_block_ms"}),
    "consumer": frozenset({"bootstrap_timeout_ms", "max_poll_records", "request_timeout_ms"}),
    "admin": frozenset({"bootstrap_timeout_ms", "request_timeout_ms"}),
}
#: Options of every kind that trionet reads itself (checked by check_credentials).
_ALWAYS_TRIONET: Final = frozenset({"allow_insecure_auth"})
_DEFAULT_MAX_BLOCK_MS: Final = 10_000
#: ``prefetch`` for manually assigned partitions with ``decode_in_trio=False`` when not given
#: (as for kafka-python).
_DEFAULT_PREFETCH: Final = 8
#: A read-ahead poll (the application still has records) waits at most this long (s).
_READ_AHEAD_SECONDS: Final = 0.01
_DEFAULT_REQUEST_TIMEOUT_MS: Final = 30_000
#: librdkafka's ``fetch.queue.backoff.ms`` unless given: how long a partition whose local queue
#: is full waits before fetching again. librdkafka's 1000 ms default is also the wait after a
#: seek or a resume that found the queue full (the seek empties the queue, not the wait):
#: measured, the first record after ``seek_to_beginning()`` of a consumer that had read ahead
#: came 1.05 s later; with 20 ms, 57 ms later. Re-checking a full queue fetches nothing.
_FETCH_QUEUE_BACKOFF_MS: Final = 20
#: A producer's polling thread serves delivery reports in calls of at most this long (s): it is
#: what bounds ``close()`` once the flush is done.
_POLL_SECONDS: Final = 0.1

_CONNECTION_CODES: Final = frozenset({
    _E._TRANSPORT, _E._ALL_BROKERS_DOWN, _E._RESOLVE, _E.NETWORK_EXCEPTION, _E._DESTROY,
})
_UNKNOWN_CODES: Final = frozenset({
    _E.UNKNOWN_TOPIC_OR_PART, _E._UNKNOWN_TOPIC, _E._UNKNOWN_PARTITION,
})
_MEMBERSHIP_CODES: Final = frozenset({
    _E.ILLEGAL_GENERATION, _E.UNKNOWN_MEMBER_ID, _E.REBALANCE_IN_PROGRESS,
    _E._ASSIGNMENT_LOST, _E.FENCED_INSTANCE_ID, _E._STATE, _E._NO_OFFSET,
})


def _code(exc: BaseException | None) -> int | None:
    """librdkafka's error code of *exc* (a ``KafkaException`` or ``KafkaError``), if any."""
    error = exc.args[0] if isinstance(exc, ck.KafkaException) and exc.args else exc
    return error.code() if isinstance(error, ck.KafkaError) else None


def translated(exc: BaseException, *, servers: str, topic: str | None = None,
               operation: str = "") -> BaseException:
    """The trionet error for a confluent-kafka exception (cause set); other exceptions as
    they are."""
    if isinstance(exc, KafkaError) or not isinstance(exc, (ck.KafkaException, ck.KafkaError,
                                                            BufferError)):
        return exc
    code = _code(exc)
    text = str(exc.args[0] if isinstance(exc, ck.KafkaException) and exc.args else exc)
    where = f" ({operation})" if operation else ""
    error: KafkaError
    if isinstance(exc, BufferError):
        error = KafkaError(f"librdkafka's local queue is full{where}: {exc}", fault="local")
    elif code in _CONNECTION_CODES:
        error = KafkaConnectionError(f"cannot reach the Kafka brokers {servers}{where}: {text}",
                                     bootstrap_servers=servers)
    elif code in _UNKNOWN_CODES:
        error = UnknownTopicError(topic or "?", detail=text)
    elif code in (_E._TIMED_OUT, _E.REQUEST_TIMED_OUT, _E._MSG_TIMED_OUT):
        error = KafkaTimeout(f"timed out{where}: {text}", fault="remote")
    elif code in _MEMBERSHIP_CODES or operation.startswith("commit"):
        error = KafkaCommitError(f"{operation or 'committing'} failed: {text}", fault="remote")
    else:
        error = KafkaError(f"Kafka error{where}: {text}", fault="remote")
    error.__cause__ = exc
    error.__suppress_context__ = True
    return error


def _settings(kind: Kind, config: Mapping[str, Any], servers: str) -> dict[str, Any]:
    """librdkafka's configuration for *config* (trionet's own options left out)."""
    names = OPTION_NAMES[kind]
    out: dict[str, Any] = {"bootstrap.servers": servers}
    for name, value in config.items():
        if name in _TRIONET_OPTIONS[kind] or name in _ALWAYS_TRIONET or value is None:
            continue
        if "." in name:
            out[name] = value
        elif name in names:
            out[names[name]] = value
        elif name == "ssl_context":
            raise ConfigurationError(
                "librdkafka (the confluent engine) cannot use an ssl.SSLContext: give "
                "tls=trionet.tls.TLSOptions(ca_file=..., cert_file=..., key_file=...) or "
                "tls=True instead")
        else:
            raise ConfigurationError(
                f"unknown {kind} option {name!r} for the confluent engine: use one of "
                f"{', '.join(sorted(names))}, or a librdkafka option name (with dots)")
    return out


class ConfluentEngine:
    """confluent-kafka (librdkafka) behind trionet's Kafka API (see the module)."""

    name = "confluent"
    version: str = ck.version()[0]

    def option_names(self, kind: Kind) -> frozenset[str]:
        return frozenset(OPTION_NAMES[kind]) | _TRIONET_OPTIONS[kind] | _ALWAYS_TRIONET

    def configure(self, kind: Kind, config: Mapping[str, Any], *, servers: str | list[str],
                  group_id: str | None = None, handled: Collection[str] = ()) -> EngineConfig:
        text = servers_text(servers)
        given = {k: v for k, v in config.items() if k not in handled}
        options = _settings(kind, given, text)  # checks the names
        check_credentials(given)
        extra: dict[str, Any] = {
            "bootstrap_timeout_ms": int(given.get("bootstrap_timeout_ms",
                                                  DEFAULT_BOOTSTRAP_TIMEOUT_MS)),
        }
        if kind == "consumer":
            options.setdefault("enable.auto.commit", False)
            options.setdefault("auto.offset.reset", "latest")
            options.setdefault("fetch.queue.backoff.ms", _FETCH_QUEUE_BACKOFF_MS)
            options["group.id"] = group_id if group_id is not None else "trionet-no-group"
            extra["group"] = group_id is not None
        elif kind == "producer":
            acks = options.get("acks", "all")
            if acks not in ("all", -1, "-1") and "enable_idempotence" not in config \
                    and "enable.idempotence" not in config:
                options["enable.idempotence"] = False
        return EngineConfig(
            options=options,
            servers=text,
            max_records=int(given.get("max_poll_records", 500)),
            auto_commit=bool(options.get("enable.auto.commit", False)),
            request_timeout_ms=int(given.get("request_timeout_ms", _DEFAULT_REQUEST_TIMEOUT_MS)),
            rebalance_timeout_ms=int(options.get("max.poll.interval.ms", 300_000)),
            transactional=bool(options.get("transactional.id")),
            max_block_ms=int(given.get("max_block_ms", _DEFAULT_MAX_BLOCK_MS)),
            extra=extra,
        )

    def translate(self, exc: BaseException, *, servers: str, topic: str | None = None,
                  operation: str = "") -> BaseException:
        return translated(exc, servers=servers, topic=topic, operation=operation)

    def producer(self, config: EngineConfig) -> ConfluentProducer:
        return ConfluentProducer(config)

    def consumer(self, config: EngineConfig, options: ConsumerOptions,
                 hooks: ConsumerHooks) -> ConfluentConsumer:
        return ConfluentConsumer(config, options, hooks)

    def admin(self, config: EngineConfig) -> ConfluentAdmin:
        return ConfluentAdmin(config)


#: The engine registered as ``"confluent"``.
ENGINE: Final = ConfluentEngine()
if TYPE_CHECKING:  # the engine follows the seam's protocols
    _ENGINE: Engine = ENGINE


class _Abort:
    """Set from trio when a bootstrap is cancelled; the bootstrap's thread checks it."""

    __slots__ = ("aborted",)

    def __init__(self) -> None:
        self.aborted = False

    def set(self) -> None:
        self.aborted = True


#: A bootstrap asks for metadata in calls of at most this long (s), checking for a cancel.
_BOOTSTRAP_SLICE: Final = 0.2


class _LastError:
    """A librdkafka ``error_cb`` that remembers the last TLS or authentication failure (for
    the message of a failed bootstrap), then calls the ``error_cb`` the options had, if any.

    librdkafka calls it from ``poll()`` (or ``consume()``) on the thread that polls.
    """

    __slots__ = ("_chained", "text")

    def __init__(self, options: dict[str, Any]) -> None:
        self.text = ""
        self._chained = options.get("error_cb")
        options["error_cb"] = self

    def __call__(self, error: Any) -> None:
        text = str(error.str())
        # a TLS alert after the handshake (a refused client certificate) is a transport error
        if error.code() in (_E._SSL, _E._AUTHENTICATION) or (
                error.code() == _E._TRANSPORT and "SSL" in text):
            self.text = text
        if self._chained is not None:
            self._chained(error)


def _check_reachable(client: Any, servers: str, timeout_ms: int, abort: _Abort,
                     errors: _LastError | None = None) -> None:
    """Block until a broker answered a metadata request, or raise KafkaConnectionError (or
    return early once *abort* is set). The error names the last TLS or authentication
    failure that *errors* (the client's ``error_cb``) saw."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not abort.aborted:
        try:
            client.list_topics(timeout=max(0.01, min(_BOOTSTRAP_SLICE,
                                                     deadline - time.monotonic())))
            return
        except ck.KafkaException as exc:
            if time.monotonic() >= deadline:
                cause = ""
                if errors is not None:
                    client.poll(0)  # serves the error callback
                    cause = f": {errors.text}" if errors.text else ""
                raise KafkaConnectionError(
                    f"no Kafka broker at {servers} answered within {timeout_ms} ms{cause}",
                    bootstrap_servers=servers) from exc


def _release(holder: list[Any]) -> None:
    """Drop the last reference to a librdkafka client (on a worker thread: freeing it waits for
    librdkafka's threads to end)."""
    holder.clear()


# -- producer -------------------------------------------------------------------------------------


class ConfluentDelivery:
    """One record's :class:`~._engine.DeliveryHandle`, and its librdkafka delivery callback.

    The producer's polling thread calls it once with the report; trio reads the attributes.
    """

    __slots__ = ("exception", "is_done", "offset", "partition", "timestamp", "topic", "wakes")

    def __init__(self, topic: str, partition: int | None) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = -1
        self.timestamp = -1
        self.exception: BaseException | None = None
        self.is_done = False
        #: Called (on the polling thread) once the report is in; set by watch().
        self.wakes: list[Callable[[], object]] | None = None

    def __call__(self, error: Any, message: Any) -> None:  # the polling thread
        if error is not None:
            self.exception = ck.KafkaException(error)
        else:
            self.partition = message.partition()
            self.offset = message.offset()
            self.timestamp = message.timestamp()[1]
        self.is_done = True
        wakes = self.wakes
        if wakes is not None:
            for wake in wakes:
                wake()


class ConfluentBatch:
    """A :class:`~._engine.BatchHandle`: the delivery callback of each of its records is the
    bound ``put`` of one :class:`queue.SimpleQueue`, a C function, so a report costs no Python
    frame on the polling thread. confluent-kafka calls it as ``callback(error, message)``:
    ``put`` queues the error (None for a delivered record) and ignores the message (its
    ``block`` argument, which ``SimpleQueue.put`` documents as ignored). Done once the queue
    holds a report per record; trio then reads the reports once."""

    __slots__ = ("_failed", "_first", "count", "reports")

    def __init__(self) -> None:
        self.reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.count = 0
        self._failed = -1  # not read yet
        self._first: Any = None

    @property
    def is_done(self) -> bool:
        return self._failed >= 0 or self.reports.qsize() >= self.count

    def _read(self) -> bool:
        """Read the reports once all are in (trio thread); whether they are."""
        if self._failed < 0:
            if self.reports.qsize() < self.count:
                return False
            failed, get = 0, self.reports.get_nowait
            for _ in range(self.count):
                error = get()
                if error is not None:
                    failed += 1
                    if self._first is None:
                        self._first = ck.KafkaException(error)
            self._failed = failed
        return True

    @property
    def exception(self) -> BaseException | None:
        return self._first if self._read() else None

    @property
    def failed(self) -> int:
        return self._failed if self._read() else 0


class ConfluentProducer:
    """A :class:`~._engine.ProducerEngine` on ``confluent_kafka.Producer`` (see the module)."""

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._servers = config.servers
        self._producer: Any = None
        self._poller: RepeatingThread | None = None
        self._portal: TrioPortal | None = None
        self._known: dict[str, set[int]] = {}
        #: Batches someone waits for, with the wake-up to call once done: the polling thread
        #: checks them after each poll. Keyed by id(): a dict's item assignment, deletion and
        #: copy are atomic, so the two threads need no lock.
        self._watched: dict[int, tuple[ConfluentBatch, Callable[[], object]]] = {}

    async def start(self) -> None:
        self._portal = TrioPortal()
        options = dict(self._config.options)
        errors = _LastError(options)
        holder = [ck.Producer(options)]
        producer = holder[0]
        timeout_ms = int(self._config.extra["bootstrap_timeout_ms"])
        abort = _Abort()
        try:
            await run_blocking(_check_reachable, producer, self._servers, timeout_ms, abort,
                               errors, on_cancel=abort.set)
            if self._config.transactional:
                await run_blocking(self._init_transactions, producer)
        except BaseException:
            del producer
            with trio.CancelScope(shield=True):
                await run_blocking(_release, holder)
            raise
        self._producer = producer
        self._poller = RepeatingThread(f"trionet-kafka-producer-{id(self):x}",
                                       functools.partial(self._serve, producer))
        self._poller.start()

    def _serve(self, producer: Any) -> None:  # the polling thread
        """Serve delivery reports for up to :data:`_POLL_SECONDS` (``poll()`` returns once it
        served any), then wake trio for the watched batches that are done now."""
        producer.poll(_POLL_SECONDS)
        watched = self._watched
        if watched:
            for key, (batch, woken) in list(watched.items()):
                if batch.reports.qsize() >= batch.count:
                    watched.pop(key, None)
                    woken()

    def _init_transactions(self, producer: Any) -> None:  # worker thread
        try:
            producer.init_transactions(self._config.max_block_ms / 1000)
        except BaseException as exc:
            raise translated(exc, servers=self._servers,  # noqa: B904
                             operation="initializing transactions")

    async def close(self, flush_seconds: float) -> bool:
        producer, poller = self._producer, self._poller
        if producer is None or poller is None:
            await trio.lowlevel.checkpoint()
            return True
        left = await run_blocking(producer.flush, max(0.0, flush_seconds))
        if left:
            # What could not be sent fails now (its handles are finished by the purge's reports).
            await run_blocking(self._purge, producer)
        await poller.join()
        # Reports the poller did not get to; then librdkafka's threads end.
        await run_blocking(producer.poll, 0)
        self._producer = self._poller = None
        holder = [producer]
        del producer, poller
        await run_blocking(_release, holder)
        return not left

    @staticmethod
    def _purge(producer: Any) -> None:  # worker thread
        producer.purge(True, True, False)
        producer.flush(1.0)

    def ready(self, topic: str) -> bool:
        return self._producer is not None

    def send(self, topic: str, value: Any, key: Any, headers: list[tuple[str, bytes]],
             partition: int | None, timestamp_ms: int | None) -> ConfluentDelivery:
        handle = ConfluentDelivery(topic, partition)
        producer = self._producer
        if producer is None:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        if partition is None:
            partition = -1
        if headers or timestamp_ms:
            producer.produce(topic, value, key, partition, on_delivery=handle,
                             timestamp=timestamp_ms or 0, headers=headers or None)
        else:  # positionally (the 5th is the delivery callback): the hot path
            producer.produce(topic, value, key, partition, handle)
        return handle

    def send_batch(self, topic: str, values: Sequence[Any], key: Any,
                   headers: list[tuple[str, bytes]], partition: int | None
                   ) -> tuple[ConfluentBatch, Exception | None]:
        batch = ConfluentBatch()
        producer = self._producer
        if producer is None:
            raise trio.ClosedResourceError("the Kafka producer is not open")
        produce, report = producer.produce, batch.reports.put
        if partition is None:
            partition = -1
        error: Exception | None = None
        n = 0
        try:
            if headers:
                for n, value in enumerate(values):  # noqa: B007 (n counts what was queued)
                    produce(topic, value, key, partition, on_delivery=report, headers=headers)
            else:  # positionally (the 5th is the delivery callback): the hot path
                for n, value in enumerate(values):  # noqa: B007
                    produce(topic, value, key, partition, report)
            n = len(values)
        except Exception as exc:
            error = exc
        batch.count = n
        return batch, error

    def is_queue_full(self, exc: Exception) -> bool:
        return isinstance(exc, BufferError)

    def send_error(self, exc: Exception, topic: str, partition: int | None) -> BaseException:
        error: BaseException
        code = _code(exc)
        if code in _UNKNOWN_CODES:
            error = UnknownTopicError(topic, partition if code == _E._UNKNOWN_PARTITION else None,
                                      detail=str(exc))
        elif isinstance(exc, BufferError):
            error = KafkaDeliveryError(
                f"librdkafka's queue is full (queue.buffering.max.messages): {exc}",
                topic=topic, partition=partition, fault="local")
        elif isinstance(exc, (TypeError, ValueError)):
            error = ConfigurationError(f"cannot send to {topic!r}: {exc}")
        elif code == _E.MSG_SIZE_TOO_LARGE:
            error = KafkaDeliveryError(f"record too large for {topic!r}: {exc}", topic=topic,
                                       partition=partition, fault="local")
        else:
            error = translated(exc, servers=self._servers, topic=topic, operation="sending")
        if error is not exc:
            error.__cause__ = exc
            error.__suppress_context__ = True
        return error

    def known_partitions(self, topic: str) -> set[int] | None:
        return self._known.get(topic)

    async def partitions_for(self, topic: str) -> set[int]:
        found = await run_blocking(self._lookup_partitions, topic)
        self._known[topic] = found
        return found

    def _lookup_partitions(self, topic: str) -> set[int]:  # worker thread
        deadline = time.monotonic() + self._config.max_block_ms / 1000
        while True:
            try:
                metadata = self._producer.list_topics(
                    topic, timeout=max(0.1, deadline - time.monotonic()))
            except ck.KafkaException as exc:
                raise UnknownTopicError(topic, detail=str(exc)) from exc
            found = metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return set(found.partitions)
            if time.monotonic() >= deadline:
                raise UnknownTopicError(
                    topic, detail=f"no metadata within max_block_ms={self._config.max_block_ms} "
                    "(does it exist? is auto-creation disabled?)")
            time.sleep(0.05)

    def watch(self, handle: Any, wake: Callable[[], object]) -> None:
        portal = self._portal
        assert portal is not None
        if type(handle) is ConfluentBatch:
            self._watch_batch(handle, wake)
            return

        fired = False

        def fire() -> None:  # trio thread: once (the report and the check below may both
            nonlocal fired    # have seen the record done)
            if not fired:
                fired = True
                wake()

        def woken() -> None:  # the polling thread, or trio
            portal.call_soon(fire)

        if handle.wakes is None:
            handle.wakes = [woken]
        else:
            handle.wakes.append(woken)  # (a list append is atomic: no lock needed)
        if handle.is_done:  # finished before the wake-up was in place
            woken()

    def _watch_batch(self, batch: ConfluentBatch, wake: Callable[[], object]) -> None:
        portal = self._portal
        assert portal is not None
        fired = False

        def fire() -> None:  # trio thread: once (the polling thread and the check below may
            nonlocal fired    # both have seen the batch done)
            if not fired:
                fired = True
                wake()

        def woken() -> None:  # the polling thread, or trio
            portal.call_soon(fire)

        self._watched[id(woken)] = (batch, woken)
        if batch.is_done:  # finished before the wake-up was in place
            self._watched.pop(id(woken), None)
            woken()

    def metadata(self, handle: Any) -> RecordMetadata:
        return RecordMetadata(handle.topic, handle.partition if handle.partition is not None
                              else -1, handle.offset, handle.timestamp)

    def failure(self, handle: Any, topic: str | None = None,
                partition: int | None = None) -> KafkaError:
        if topic is None:  # (a batch's caller always gives them)
            topic, partition = handle.topic, handle.partition
        exc = handle.exception
        code = _code(exc)
        if code in _UNKNOWN_CODES:
            error: KafkaError = UnknownTopicError(topic, partition, detail=str(exc))
        else:
            error = KafkaDeliveryError(
                f"record to {topic!r} not delivered: {exc}", topic=topic, partition=partition,
                fault="local" if code in (_E._PURGE_QUEUE, _E._PURGE_INFLIGHT) else "remote")
        error.__cause__ = exc
        error.__suppress_context__ = True
        return error

    def is_transaction_abort(self, error: BaseException | None) -> bool:
        return _code(error) in (_E._PURGE_QUEUE, _E._PURGE_INFLIGHT)

    async def begin_transaction(self) -> None:
        try:
            self._producer.begin_transaction()
        except BaseException as exc:
            raise translated(exc, servers=self._servers,  # noqa: B904
                             operation="beginning a transaction")
        await trio.lowlevel.checkpoint()

    async def commit_transaction(self) -> None:
        await run_blocking(self._transaction_call, "commit_transaction",
                           "committing the transaction")

    async def abort_transaction(self) -> None:
        await run_blocking(self._transaction_call, "abort_transaction",
                           "aborting the transaction")

    async def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int],
                                          group_metadata: Any) -> None:
        parts = [ck.TopicPartition(tp.topic, tp.partition, offset)
                 for tp, offset in offsets.items()]
        await run_blocking(self._transaction_call, "send_offsets_to_transaction",
                           "sending offsets to the transaction", parts, group_metadata)

    def _transaction_call(self, method: str, what: str, *args: Any) -> None:  # worker thread
        try:
            getattr(self._producer, method)(*args, self._config.request_timeout_ms / 1000)
        except BaseException as exc:
            raise translated(exc, servers=self._servers, operation=what)  # noqa: B904


# -- consumer -------------------------------------------------------------------------------------


def _tps(parts: Sequence[Any]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(p.topic, p.partition) for p in parts)


def _ck(partitions: Collection[TopicPartition], offset: int | None = None) -> list[Any]:
    if offset is None:
        return [ck.TopicPartition(tp.topic, tp.partition) for tp in partitions]
    return [ck.TopicPartition(tp.topic, tp.partition, offset) for tp in partitions]


class ConfluentConsumer:
    """A :class:`~._engine.ConsumerEngine` on ``confluent_kafka.Consumer`` (see the module)."""

    def __init__(self, config: EngineConfig, options: ConsumerOptions,
                 hooks: ConsumerHooks) -> None:
        self._config = config
        self._options = options
        self._hooks = hooks
        self._buffer = hooks.buffer
        self._servers = config.servers
        self._max_records = max(1, config.max_records)
        self._poll_seconds = options.poll_ms / 1000
        self._decode_key = hooks.decode_key
        self._decode_value = hooks.decode_value
        self._consumer: Any = None
        self._worker = ThreadWorker(f"trionet-kafka-consumer-{id(hooks):x}",
                                    on_exit=self._close_on_thread)
        self._portal: TrioPortal | None = None
        self._polling = False
        self._arrived: trio.Event | None = None
        self._set_prefetch(group_managed=options.partitions is None)
        #: Average size (bytes) of the records of the last poll, for ``prefetch_bytes``.
        self._record_size = 0
        #: Partitions sought since their last record was fetched, and where to: librdkafka's
        #: position() does not know a seek until a record of the partition arrives.
        self._sought: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._subscribed: frozenset[str] | None = None
        self._closed = False
        self._aborting = False
        #: Set by librdkafka's error callback (on the consumer's thread, inside consume())
        #: when no broker can be reached; cleared by a fetch with records or a metadata answer.
        self._unreachable = False
        #: While a rebalance callback waits for the listener: the consumer's thread serves the
        #: listener's calls through it.
        self._serving: ServingWait | None = None

    # -- lifetime -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self._portal = TrioPortal()
        with trio.CancelScope(shield=True):  # stopped explicitly by the driver (see stop())
            await self._worker.run(task_status=task_status)

    def stop(self) -> None:
        self._aborting = True
        self._worker.stop()

    async def start(self) -> None:
        abort = _Abort()
        await self._run(self._build, abort, operation="starting the Kafka consumer",
                        on_cancel=abort.set)

    def _on_error(self, error: Any) -> None:  # consumer thread, inside consume()
        if error.code() in (_E._ALL_BROKERS_DOWN, _E._TRANSPORT, _E._RESOLVE):
            self._unreachable = True

    def _build(self, abort: _Abort) -> None:  # consumer thread
        options = {**self._config.options, "error_cb": self._on_error}
        errors = _LastError(options)
        consumer = ck.Consumer(options)
        try:
            _check_reachable(consumer, self._servers,
                             int(self._config.extra["bootstrap_timeout_ms"]), abort, errors)
        except BaseException:
            consumer.close()
            raise
        if abort.aborted:
            consumer.close()
        else:
            self._consumer = consumer

    async def close(self, *, timeout_ms: int) -> None:
        if self._consumer is None:
            await trio.lowlevel.checkpoint()
            return
        await self._run(self._close_now, operation="closing the consumer")

    def _close_now(self) -> None:  # consumer thread: revokes (the listener runs), leaves
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not self._closed:
            self._closed = True
            consumer.close()

    def _close_on_thread(self) -> None:  # consumer thread, as it exits
        self._aborting = True
        with contextlib.suppress(Exception):
            self._close_now()

    # -- calls on the consumer's thread ---------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, operation: str,
                   after: Callable[[T], object] | None = None,
                   on_cancel: Callable[[], object] | None = None) -> T:
        """``fn(*args)`` on the consumer's thread (inside a rebalance listener, whose step
        blocks that thread: on a worker thread); *after(result)* runs in trio, in order with
        the fetched batches, even if the caller was cancelled. A cancelled caller waits for
        ``fn`` to return (after calling *on_cancel*, if given, to make it return early)."""
        portal = self._portal
        assert portal is not None
        serving = self._serving
        in_listener = serving is not None and self._hooks.in_listener()
        done = trio.Event()
        box: list[outcome.Outcome[T]] = []
        worker = self._worker

        def finish(result: outcome.Outcome[T]) -> None:  # trio thread
            if after is not None and isinstance(result, outcome.Value):
                try:
                    after(result.value)
                except Exception as exc:
                    result = outcome.Error(exc)
            box.append(result)
            done.set()

        def job() -> None:  # consumer thread (or trio, if the thread has stopped)
            if worker.in_worker_thread():
                result = outcome.capture(fn, *args)
            else:
                result = outcome.Error(
                    trio.ClosedResourceError("the Kafka consumer's thread has stopped"))
            portal.call_soon(finish, result)

        if in_listener:
            assert serving is not None
            # The consumer's thread waits in the rebalance callback for this listener: it runs
            # the call there, as librdkafka expects.
            serving.submit(job)
        else:
            worker.submit(job)
        try:
            await done.wait()
        except trio.Cancelled:
            if on_cancel is not None:
                on_cancel()
            with trio.CancelScope(shield=True):  # the bookkeeping must match what fn did
                await done.wait()
            raise
        result = box[0]
        if isinstance(result, outcome.Error):
            error = translated(result.error, servers=self._servers, operation=operation)
            if error is not result.error:
                raise error
        return result.unwrap()

    def _client(self) -> Any:
        consumer = self._consumer
        if consumer is None:
            raise trio.ClosedResourceError("the Kafka consumer is closed")
        return consumer

    # -- fetching -------------------------------------------------------------------------------

    def _set_prefetch(self, *, group_managed: bool) -> None:
        """Apply ``prefetch`` with the same defaults as the kafka-python engine: read-ahead
        only when asked for, or for assigned partitions with ``decode_in_trio=False``."""
        setting = self._options.prefetch
        if self._config.auto_commit:
            prefetch = 0
        elif setting is not None:
            prefetch = setting
        elif group_managed or self._options.decode_in_trio:
            prefetch = 0
        else:
            prefetch = _DEFAULT_PREFETCH
        self._prefetch = prefetch
        #: At most this many records are buffered or on their way to trio.
        self._bound = max(1, prefetch) * self._max_records

    @property
    def buffered_max(self) -> int:
        return self._bound

    async def fetch(self) -> None:
        if not self._polling:
            self._start_polling(self._poll_seconds)
        if self._arrived is None:
            self._arrived = trio.Event()
        await self._arrived.wait()

    def taken(self) -> None:
        self._read_ahead()

    def _start_polling(self, wait: float) -> None:  # trio thread
        self._polling = True
        self._worker.submit(self._poll, wait)

    def _read_ahead(self) -> None:  # trio thread
        """With ``prefetch`` >= 2: poll again while a whole poll still fits under the bound
        (a short one: calls queued behind it must not wait for ``poll_interval``)."""
        size = self._record_size
        bound = self._bound if not size else min(
            self._bound, max(self._max_records, self._options.prefetch_bytes // size))
        if (self._prefetch >= 2 and not self._polling and not self._aborting
                and self._buffer.error is None
                and len(self._buffer) + self._max_records <= bound):
            self._start_polling(min(self._poll_seconds, _READ_AHEAD_SECONDS))

    def _poll(self, wait: float) -> None:  # consumer thread
        portal = self._portal
        assert portal is not None
        result: outcome.Outcome[list[Item]]
        consumer = self._consumer
        unreachable = False
        if consumer is None:
            result = outcome.Error(trio.ClosedResourceError("the Kafka consumer is closed"))
        else:
            result = outcome.capture(self._consume, consumer, wait)
            if isinstance(result, outcome.Value) and result.value:
                self._unreachable = False
            elif self._unreachable:
                try:  # is a broker back?
                    consumer.list_topics(timeout=min(_BOOTSTRAP_SLICE, self._poll_seconds))
                    self._unreachable = False
                except ck.KafkaException:
                    unreachable = True
        portal.call_soon(self._poll_finished, result, unreachable)

    def _consume(self, consumer: Any, wait: float) -> list[Item]:  # consumer thread
        # Up to *wait* for the first message, then what librdkafka holds already (up to
        # max_poll_records): consume(n, wait) alone would wait until n messages have arrived.
        first = consumer.poll(wait)
        if first is None:
            return []
        messages = [first]
        if self._max_records > 1:
            messages += consumer.consume(self._max_records - 1, 0)
        decode_key, decode_value = self._decode_key, self._decode_value
        out: list[Item] = []
        append = out.append
        new = _new_tuple
        # timestamp()'s type is 0 (none), 1 (create time) or 2 (log-append time): ``>> 1``
        # makes it KafkaRecord's 0 (create time) or 1 (log-append time).
        if decode_key is None and decode_value is None:
            # The per-record path without deserializers: nothing but the fields.
            for m in messages:
                if m.error() is not None:
                    if self._skip_error(m, out):
                        continue
                    break
                stamp_type, stamp = m.timestamp()
                append(new(KafkaRecord, (m.topic(), m.partition(), m.offset(), m.key(),
                                         m.value(), m.headers() or (), stamp, stamp_type >> 1)))
        else:
            for m in messages:
                if m.error() is not None:
                    if self._skip_error(m, out):
                        continue
                    break
                stamp_type, stamp = m.timestamp()
                key, value = m.key(), m.value()
                raw = new(KafkaRecord, (m.topic(), m.partition(), m.offset(), key, value,
                                        m.headers() or (), stamp, stamp_type >> 1))
                try:
                    if decode_key is not None and key is not None:
                        key = decode_key(key)
                    if decode_value is not None and value is not None:
                        value = decode_value(value)
                except Exception as exc:
                    error = RecordDecodeError(
                        f"cannot deserialize the record at offset {raw.offset} of "
                        f"{raw.topic}[{raw.partition}]: {exc}", record=raw)
                    error.__cause__ = exc
                    append(Undecodable(raw, error))
                    continue
                append(new(KafkaRecord, (raw[0], raw[1], raw[2], key, value, raw[5], raw[6],
                                         raw[7])))
        if messages and self._prefetch >= 2:  # the size of what is read ahead
            first, last = messages[0].value() or b"", messages[-1].value() or b""
            self._record_size = max(1, (len(first) + len(last)) // 2)
        if self._sought and out:
            for tp in {(r.topic, r.partition) for r in out if type(r) is KafkaRecord}:
                self._sought.pop(TopicPartition(*tp), None)
        return out

    @staticmethod
    def _skip_error(message: Any, out: list[Item]) -> bool:  # consumer thread
        """Whether the error *message* is skipped (the end of a partition); False: end the
        batch before it (its records first; the error comes with the next poll).

        Raises:
            confluent_kafka.KafkaException: the error, when no record comes before it.
        """
        if message.error().code() == _E._PARTITION_EOF:
            return True
        if out:
            return False
        raise ck.KafkaException(message.error())

    def _poll_finished(self, result: outcome.Outcome[list[Item]], unreachable: bool
                       ) -> None:  # trio thread
        self._polling = False
        try:
            if isinstance(result, outcome.Error):
                self._buffer.error = translated(result.error, servers=self._servers,
                                                operation="polling")
                return
            records = result.unwrap()
            self._buffer.fetched(records, unreachable=unreachable, now=trio.current_time())
            if records:
                self._read_ahead()
        finally:
            arrived, self._arrived = self._arrived, None
            if arrived is not None:
                arrived.set()

    # -- rebalances (inside consume() or close(), on the consumer's thread) ---------------------

    def _on_assign(self, consumer: Any, parts: list[Any]) -> None:
        consumer.assign(parts)  # now, so that the listener may seek
        self._dispatch("assigned", _tps(parts))

    def _on_revoke(self, consumer: Any, parts: list[Any]) -> None:
        self._dispatch("revoked", _tps(parts))
        self._paused.difference_update(_tps(parts))

    def _on_lost(self, consumer: Any, parts: list[Any]) -> None:
        self._dispatch("lost", _tps(parts))
        self._paused.difference_update(_tps(parts))

    def _dispatch(self, kind: RebalanceKind, partitions: frozenset[TopicPartition]) -> None:
        portal = self._portal
        if self._aborting or portal is None or (kind != "assigned" and not partitions):
            return
        serving = self._serving = ServingWait()
        failed: list[BaseException] = []

        def done(error: BaseException | None) -> None:  # any thread
            if error is not None:
                failed.append(error)
            serving.finish()

        try:
            if portal.call_soon(self._hooks.rebalance, kind, partitions, done):
                serving.serve(self._config.rebalance_timeout_ms / 1000)
        finally:
            self._serving = None
        if failed:  # out of consume(), to the reader
            raise KafkaError(f"the rebalance listener failed ({kind} {sorted(partitions)}): "
                             f"{failed[0]!r}", fault="local") from failed[0]

    # -- subscription, assignment, positions ----------------------------------------------------

    async def subscribe(self, topics: Sequence[str], pattern: str | None, *,
                        after: Callable[[None], object]) -> None:
        names = list(topics) if pattern is None else [
            pattern if pattern.startswith("^") else "^" + pattern]

        def subscribe() -> None:
            self._client().subscribe(names, on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_lost)

        def subscribed(_: None) -> None:
            self._subscribed = frozenset(topics) if pattern is None else frozenset()
            self._set_prefetch(group_managed=True)
            after(None)

        await self._run(subscribe, operation="subscribing", after=subscribed)

    async def unsubscribe(self, *, after: Callable[[None], object]) -> None:
        def unsubscribe() -> None:
            consumer = self._client()
            if self._subscribed is not None:
                consumer.unsubscribe()
                # The revocation comes through consume(): serve it now (the listener runs),
                # or it would undo an assign() made next. Its records are dropped.
                deadline = time.monotonic() + self._config.request_timeout_ms / 1000
                while consumer.assignment() and time.monotonic() < deadline:
                    consumer.consume(self._max_records, 0.05)
            else:
                consumer.unassign()
            self._paused.clear()
            self._sought.clear()

        def done(_: None) -> None:
            self._subscribed = None
            after(None)

        await self._run(unsubscribe, operation="unsubscribing", after=done)

    async def assign(self, partitions: frozenset[TopicPartition], *,
                     after: Callable[[None], object]) -> None:
        def assign() -> None:
            consumer = self._client()
            for topic in {tp.topic for tp in partitions}:
                metadata = consumer.list_topics(topic, timeout=self._config.request_timeout_ms
                                                / 1000).topics.get(topic)
                known = set() if metadata is None or metadata.error else set(metadata.partitions)
                for tp in partitions:
                    if tp.topic == topic and tp.partition not in known:
                        raise UnknownTopicError(topic, tp.partition if known else None)
            consumer.assign(_ck(partitions))
            self._paused.clear()

        def done(_: None) -> None:
            self._subscribed = None
            self._set_prefetch(group_managed=False)
            after(None)

        await self._run(assign, operation="assigning partitions", after=done)

    async def assignment(self) -> frozenset[TopicPartition]:
        return await self._run(lambda: _tps(self._client().assignment()),
                               operation="reading the assignment")

    async def subscription(self) -> frozenset[str] | None:
        if self._subscribed is None or self._subscribed:
            await trio.lowlevel.checkpoint()
            return self._subscribed
        # A pattern: the topics it matches now are those of the assignment.
        return await self._run(lambda: frozenset(p.topic for p in self._client().assignment()),
                               operation="reading the subscription")

    async def topics(self) -> set[str]:
        def topics() -> set[str]:
            metadata = self._client().list_topics(
                timeout=self._config.request_timeout_ms / 1000)
            return {name for name in metadata.topics if not name.startswith("__")}

        return await self._run(topics, operation="listing topics")

    async def partitions_for_topic(self, topic: str) -> set[int]:
        def partitions() -> set[int]:
            metadata = self._client().list_topics(
                topic, timeout=self._config.request_timeout_ms / 1000).topics.get(topic)
            if metadata is None or metadata.error is not None:
                return set()
            return set(metadata.partitions)

        return await self._run(partitions, operation="reading topic metadata")

    def _seek_now(self, tp: TopicPartition, offset: int) -> None:  # consumer thread
        """Seek *tp* (assigned) to *offset*; librdkafka refuses while the partition is still
        starting, and then the partition is assigned again at that offset."""
        consumer = self._client()
        assigned = consumer.assignment()
        if tp not in _tps(assigned):
            raise KafkaError(f"cannot seek {tp.topic}[{tp.partition}]: not assigned",
                             fault="local")
        try:
            consumer.seek(ck.TopicPartition(tp.topic, tp.partition, offset))
        except ck.KafkaException:
            # Not fetching yet: assign again, this partition at the offset, the others where
            # they are (their positions, or their committed offsets if they have none yet).
            parts = []
            for part in consumer.position(assigned):
                key = TopicPartition(part.topic, part.partition)
                if key == tp:
                    part = ck.TopicPartition(key.topic, key.partition, offset)
                elif part.offset < 0:
                    part = ck.TopicPartition(key.topic, key.partition,
                                             self._sought.get(key, ck.OFFSET_INVALID))
                parts.append(part)
            consumer.assign(parts)
            if self._paused:
                consumer.pause(_ck(self._paused))
        self._sought[tp] = offset

    async def seek(self, tp: TopicPartition, offset: int, *,
                   after: Callable[[None], object]) -> None:
        await self._run(self._seek_now, tp, offset, after=after, operation="seeking")

    async def seek_to(self, partitions: frozenset[TopicPartition], where: str, *,
                      after: Callable[[frozenset[TopicPartition]], object]) -> None:
        def seek_to() -> frozenset[TopicPartition]:
            consumer = self._client()
            moved = partitions or _tps(consumer.assignment())
            for tp in moved:  # to the offset (a logical one would leave position() unknown)
                low, high = consumer.get_watermark_offsets(
                    ck.TopicPartition(tp.topic, tp.partition),
                    timeout=self._config.request_timeout_ms / 1000)
                self._seek_now(tp, low if where == "beginning" else high)
            return moved

        await self._run(seek_to, after=after, operation=f"seeking to the {where}")

    async def pause(self, partitions: frozenset[TopicPartition], *,
                    after: Callable[[None], object]) -> None:
        def pause() -> None:
            self._client().pause(_ck(partitions))
            self._paused.update(partitions)

        await self._run(pause, after=after, operation="pausing")

    async def resume(self, partitions: frozenset[TopicPartition],
                     rewind: Mapping[TopicPartition, int]) -> None:
        def resume() -> None:
            consumer = self._client()
            for tp, offset in rewind.items():
                self._seek_now(tp, offset)
            consumer.resume(_ck(partitions))
            self._paused.difference_update(partitions)

        await self._run(resume, operation="resuming")

    async def paused(self) -> frozenset[TopicPartition]:
        await trio.lowlevel.checkpoint()
        return frozenset(self._paused)

    async def position(self, tp: TopicPartition) -> int:
        def position() -> int:
            consumer = self._client()
            if tp in self._sought:
                return self._sought[tp]
            found = consumer.position([ck.TopicPartition(tp.topic, tp.partition)])[0].offset
            if found >= 0:
                return int(found)
            committed = self._committed_now(tp)
            if committed is not None:
                return committed
            low, high = consumer.get_watermark_offsets(
                ck.TopicPartition(tp.topic, tp.partition),
                timeout=self._config.request_timeout_ms / 1000)
            reset = str(self._config.options.get("auto.offset.reset", "latest"))
            return int(low if reset in ("earliest", "smallest", "beginning") else high)

        return await self._run(position, operation="reading a position")

    def _committed_now(self, tp: TopicPartition) -> int | None:  # consumer thread
        if not self._config.extra.get("group"):
            return None
        found = self._client().committed([ck.TopicPartition(tp.topic, tp.partition)],
                                         timeout=self._config.request_timeout_ms / 1000)[0]
        return int(found.offset) if found.offset >= 0 else None

    async def committed(self, tp: TopicPartition) -> int | None:
        return await self._run(self._committed_now, tp, operation="reading a committed offset")

    async def edge_offsets(self, partitions: Sequence[TopicPartition], where: str
                           ) -> dict[TopicPartition, int]:
        def offsets() -> dict[TopicPartition, int]:
            consumer = self._client()
            out = {}
            for tp in partitions:
                low, high = consumer.get_watermark_offsets(
                    ck.TopicPartition(tp.topic, tp.partition),
                    timeout=self._config.request_timeout_ms / 1000)
                out[tp] = int(low if where == "beginning" else high)
            return out

        return await self._run(offsets, operation="listing offsets")

    async def group_metadata(self) -> Any:
        return await self._run(lambda: self._client().consumer_group_metadata(),
                               operation="reading group metadata")

    # -- commits --------------------------------------------------------------------------------

    async def commit(self, select: Callable[[], Mapping[TopicPartition, int]], *,
                     only_assigned: bool, timeout_ms: int | None) -> dict[TopicPartition, int]:
        def commit() -> dict[TopicPartition, int]:
            keep = dict(select())
            consumer = self._client()
            if only_assigned and keep:
                assigned = _tps(consumer.assignment())
                keep = {tp: offset for tp, offset in keep.items() if tp in assigned}
            if not keep:
                return {}
            results = consumer.commit(
                offsets=[ck.TopicPartition(tp.topic, tp.partition, offset)
                         for tp, offset in keep.items()], asynchronous=False)
            for part in results or ():
                if part.error is not None:
                    raise ck.KafkaException(part.error)
            return keep

        return await self._run(commit, operation="committing offsets")

    def is_membership_error(self, error: BaseException | None) -> bool:
        return _code(error) in _MEMBERSHIP_CODES

    async def rejoin(self, timeout_ms: int) -> bool:
        def rejoin() -> tuple[list[Item], bool]:  # rebalance callbacks run inside consume()
            consumer = self._client()
            deadline = time.monotonic() + timeout_ms / 1000
            records: list[Item] = []
            while True:
                records.extend(self._consume(consumer, self._poll_seconds))
                if consumer.assignment() or time.monotonic() >= deadline:
                    return records, bool(consumer.assignment())

        def handed(result: tuple[list[Item], bool]) -> None:
            self._buffer.fetched(result[0], unreachable=False, now=trio.current_time())

        _, joined = await self._run(rejoin, operation="rejoining the consumer group",
                                    after=handed)
        return joined


# -- admin ----------------------------------------------------------------------------------------


class ConfluentAdmin:
    """An :class:`~._engine.AdminEngine` on ``confluent_kafka.admin.AdminClient``; every call
    waits for its futures on a worker thread."""

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._servers = config.servers
        self._admin: Any = None
        self._timeout = config.request_timeout_ms / 1000

    async def start(self) -> None:
        options = dict(self._config.options)
        errors = _LastError(options)
        holder = [AdminClient(options)]
        abort = _Abort()
        try:
            await run_blocking(_check_reachable, holder[0], self._servers,
                               int(self._config.extra["bootstrap_timeout_ms"]), abort,
                               errors, on_cancel=abort.set)
        except BaseException:
            with trio.CancelScope(shield=True):
                await run_blocking(_release, holder)
            raise
        self._admin = holder[0]

    async def close(self) -> None:
        # confluent-kafka's admin client has no close(): librdkafka's threads end when the
        # client is freed, which happens here, on a worker thread.
        holder = [self._admin]
        self._admin = None
        await run_blocking(_release, holder)

    async def _call(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        admin = self._admin
        if admin is None:
            raise trio.ClosedResourceError("the Kafka admin client is not open")

        def call() -> T:
            try:
                return fn(admin, *args)
            except BaseException as exc:
                raise translated(exc, servers=self._servers,  # noqa: B904
                                 operation=operation)

        return await run_blocking(call)

    def _topics(self, admin: Any) -> dict[str, Any]:
        return dict(admin.list_topics(timeout=self._timeout).topics)

    async def create_topics(self, specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
        def create(admin: Any) -> list[str]:
            existing = self._topics(admin)
            wanted = [CKNewTopic(name, int(spec.get("num_partitions", 1)),
                                 int(spec.get("replication_factor", 1)),
                                 config=dict(spec.get("configs") or {}))
                      for name, spec in specs.items() if name not in existing]
            if not wanted:
                return []
            created = []
            for name, future in admin.create_topics(wanted,
                                                    operation_timeout=self._timeout).items():
                try:
                    future.result(self._timeout)
                    created.append(name)
                except ck.KafkaException as exc:
                    if _code(exc) != _E.TOPIC_ALREADY_EXISTS:
                        raise
            deadline = time.monotonic() + self._timeout
            while created and time.monotonic() < deadline:  # until every partition has a leader
                topics = self._topics(admin)
                if all(name in topics and topics[name].partitions
                       and all(p.leader >= 0 for p in topics[name].partitions.values())
                       for name in created):
                    break
                time.sleep(0.05)
            return created

        return await self._call("creating topics", create)

    async def delete_topics(self, names: Collection[str], *, missing_ok: bool) -> list[str]:
        def delete(admin: Any) -> list[str]:
            wanted = list(names)
            if missing_ok:
                existing = self._topics(admin)
                wanted = [name for name in wanted if name in existing]
            if not wanted:
                return []
            deleted = []
            for name, future in admin.delete_topics(wanted,
                                                    operation_timeout=self._timeout).items():
                try:
                    future.result(self._timeout)
                    deleted.append(name)
                except ck.KafkaException as exc:
                    if not (missing_ok and _code(exc) in _UNKNOWN_CODES):
                        raise translated(exc, servers=self._servers, topic=name,  # noqa: B904
                                         operation="deleting topics")
            return deleted

        return await self._call("deleting topics", delete)

    async def list_topics(self) -> list[str]:
        return await self._call("listing topics", lambda admin: sorted(
            name for name in self._topics(admin) if not name.startswith("__")))

    async def describe_topics(self, names: Collection[str] | None) -> list[dict[str, Any]]:
        def describe(admin: Any) -> list[dict[str, Any]]:
            topics = self._topics(admin)
            wanted = sorted(topics) if names is None else list(names)
            out = []
            for name in wanted:
                found = topics.get(name)
                if found is None or found.error is not None:
                    raise UnknownTopicError(name)
                out.append({
                    "name": name, "is_internal": name.startswith("__"),
                    "partitions": [{"partition_index": p.id, "leader_id": p.leader,
                                    "replica_nodes": list(p.replicas),
                                    "isr_nodes": list(p.isrs)}
                                   for p in sorted(found.partitions.values(),
                                                   key=lambda p: p.id)],
                })
            return out

        return await self._call("describing topics", describe)

    async def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        def offsets(admin: Any) -> dict[TopicPartition, int]:
            request = [ck.ConsumerGroupTopicPartitions(group_id)]
            future = admin.list_consumer_group_offsets(request)[group_id]
            try:
                result = future.result(self._timeout)
            except ck.KafkaException as exc:
                if _code(exc) in (_E.GROUP_ID_NOT_FOUND, _E.COORDINATOR_NOT_AVAILABLE):
                    return {}
                raise
            return {TopicPartition(p.topic, p.partition): int(p.offset)
                    for p in result.topic_partitions or () if p.offset >= 0}

        return await self._call("listing group offsets", offsets)

    async def list_groups(self) -> list[str]:
        def groups(admin: Any) -> list[str]:
            result = admin.list_consumer_groups(request_timeout=self._timeout).result(
                self._timeout)
            return sorted(g.group_id for g in result.valid)

        return await self._call("listing groups", groups)

    async def delete_groups(self, group_ids: Collection[str]) -> dict[str, str]:
        def delete(admin: Any) -> dict[str, str]:
            out = {}
            for group, future in admin.delete_consumer_groups(
                    list(group_ids), request_timeout=self._timeout).items():
                try:
                    future.result(self._timeout)
                    out[group] = "OK"
                except ck.KafkaException as exc:
                    out[group] = str(exc.args[0] if exc.args else exc)
            return out

        return await self._call("deleting groups", delete)
