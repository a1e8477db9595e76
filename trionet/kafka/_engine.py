"""The engine seam: what a Kafka client library provides to trionet's Kafka clients.

:class:`~trionet.kafka.KafkaProducer`, :class:`~trionet.kafka.KafkaConsumer` and
:class:`~trionet.kafka.KafkaAdmin` are trio drivers around an *engine*: one client library
(kafka-python by default, ``backend="kafka-python"``) wrapped in three objects that follow the
protocols below. Everything that does not depend on the library lives once, on the trio side:
the record model (:mod:`._records`), the fetch buffer and commit bookkeeping (:mod:`._fetch`:
commit-after-processing, the offset after the last record handed out, revocations), request/
reply correlation (:mod:`._requestreply`), URL parsing (:mod:`._url`) and option checking
(:mod:`._options`).

An engine is registered under a name with :func:`register_engine` (a module path, imported on
first use) and chosen with ``backend=`` or ``kafka://...?backend=``; :func:`load_engine` raises
:class:`~trionet.errors.ConfigurationError` for an unknown name or a library that is not
installed.

Rules every engine follows:

* Its blocking work runs on threads it owns through :mod:`trionet._threads` (the only module that
  crosses threads); every such thread ends before the client's ``async with`` exits.
* Hand-offs between its threads and trio are batched: records cross into trio a batch at a time
  (into the :class:`~._fetch.FetchBuffer`), and delivery results are read from
  :class:`DeliveryHandle` objects, with at most one wake-up per :meth:`ProducerEngine.watch`.
* Its own exceptions never reach the user: :meth:`Engine.translate` maps them into trionet's
  error tree (:mod:`trionet.kafka._errors`) and the drivers raise what it returns.
* Blocking calls honour trio cancellation within about a second (short polls, or an abort
  callback through :func:`trionet._threads.run_blocking`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

import trio

from ..errors import ConfigurationError, KafkaError
from ._records import RecordMetadata, TopicPartition

if TYPE_CHECKING:
    from ._fetch import FetchBuffer
    from ._options import ConsumerOptions

__all__ = [
    "DEFAULT_BACKEND",
    "AdminEngine",
    "BatchHandle",
    "ConsumerEngine",
    "ConsumerHooks",
    "DeliveryHandle",
    "Engine",
    "EngineConfig",
    "Kind",
    "ProducerEngine",
    "backends",
    "load_engine",
    "register_engine",
]

T = TypeVar("T")

#: The engine used when none is named (the design card's kafka-python).
DEFAULT_BACKEND: Final = "kafka-python"

Kind = Literal["producer", "consumer", "admin"]
#: What a rebalance step does to a consumer's partitions.
RebalanceKind = Literal["assigned", "revoked", "lost"]
#: Called (from any thread) when the trio side has finished with a rebalance step.
RebalanceDone = Callable[[BaseException | None], None]


@dataclass(frozen=True)
class EngineConfig:
    """An engine's reading of a client's options (:meth:`Engine.configure`).

    ``options`` go back to the engine unchanged when the client is built; the other fields are
    the few settings the trio driver itself needs, in the engine's own option names' meaning.
    """

    options: Mapping[str, Any]
    """The engine's options: the user's, with trionet's defaults and ``bootstrap_servers``."""
    servers: str
    """``"host:port,host:port"`` for messages."""
    max_records: int = 500
    """Consumer: at most this many records per fetch (kafka-python's ``max_poll_records``)."""
    auto_commit: bool = False
    """Consumer: the library commits its own positions (``enable_auto_commit``)."""
    request_timeout_ms: int = 30_000
    """How long one broker request may take (bounds a commit without a deadline)."""
    rebalance_timeout_ms: int = 300_000
    """Consumer: how long a rebalance listener may run (``max_poll_interval_ms``)."""
    transactional: bool = False
    """Producer: a ``transactional_id`` is set."""
    max_block_ms: int = 10_000
    """Producer: how long a metadata lookup may block."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Engine-specific settings the engine wants to keep alongside."""


class DeliveryHandle(Protocol):
    """One record handed to :meth:`ProducerEngine.send`.

    Read on the trio thread; the engine finishes it on its own thread (a plain attribute write,
    no crossing per record). kafka-python's ``FutureRecordMetadata`` is one as it is.
    """

    @property
    def is_done(self) -> bool:
        """Whether the broker acknowledged the record or it failed."""

    @property
    def exception(self) -> BaseException | None:
        """The engine's error for a failed record (None while pending or once acknowledged)."""


class BatchHandle(Protocol):
    """The records of one :meth:`ProducerEngine.send_batch`, finished together.

    Read on the trio thread, like a :class:`DeliveryHandle`; there is no per-record handle, and
    the engine reports the batch's outcome without a Python call per record where it can.
    """

    @property
    def count(self) -> int:
        """How many records the batch holds."""

    @property
    def is_done(self) -> bool:
        """Whether every record of the batch was acknowledged or failed."""

    @property
    def exception(self) -> BaseException | None:
        """The engine's error of the batch's first failed record (None while pending or if
        none failed); :meth:`ProducerEngine.failure` translates it."""

    @property
    def failed(self) -> int:
        """How many of its records failed (once done)."""


class ProducerEngine(Protocol):
    """A producer library, driven by :class:`~trionet.kafka.KafkaProducer` on the trio thread."""

    async def start(self) -> None:
        """Connect (bootstrap) and, for a transactional producer, initialize transactions.

        Cancellation makes it give up promptly; failures are translated.
        """

    async def close(self, flush_seconds: float) -> bool:
        """Flush for up to *flush_seconds*, fail what is left, close, and wait for every
        thread of the library. Called once, shielded; returns whether everything was flushed.
        Every handle is done afterwards."""

    def ready(self, topic: str) -> bool:
        """Whether :meth:`send` to *topic* would go ahead without blocking (metadata known)."""

    def send(self, topic: str, value: Any, key: Any, headers: list[tuple[str, bytes]],
             partition: int | None, timestamp_ms: int | None) -> DeliveryHandle:
        """Buffer one record (only when :meth:`ready`); never blocks. Raises the engine's
        error for a record that cannot be buffered (see :meth:`send_error`)."""

    def send_batch(self, topic: str, values: Sequence[Any], key: Any,
                   headers: list[tuple[str, bytes]], partition: int | None
                   ) -> tuple[BatchHandle, Exception | None]:
        """Buffer *values* as records to *topic* (only when :meth:`ready`); never blocks.

        Returns the handle of the records buffered, and the exception that stopped the
        batch early (None if all were buffered): the record at index ``handle.count`` could
        not be buffered (see :meth:`send_error`; a full local queue is one, for which the
        caller waits for room and goes on).
        """

    def is_queue_full(self, exc: Exception) -> bool:
        """Whether *exc* from :meth:`send_batch` only says the engine's local queue is full."""

    def send_error(self, exc: Exception, topic: str, partition: int | None) -> BaseException:
        """The trionet error for an exception :meth:`send` raised (cause set)."""

    def known_partitions(self, topic: str) -> set[int] | None:
        """The partitions of *topic* known without any I/O (None if unknown)."""

    async def partitions_for(self, topic: str) -> set[int]:
        """The partitions of *topic*, fetching its metadata if needed.

        Raises:
            UnknownTopicError: no metadata within ``max_block_ms``.
        """

    def watch(self, handle: DeliveryHandle | BatchHandle, wake: Callable[[], object]) -> None:
        """Call ``wake()`` on the trio thread once *handle* is done (soon, if it is already).
        For a :class:`BatchHandle`, ``wake()`` may also come earlier (some records done): the
        caller checks and watches again."""

    def metadata(self, handle: DeliveryHandle) -> RecordMetadata:
        """Where an acknowledged record was written."""

    def failure(self, handle: DeliveryHandle | BatchHandle, topic: str | None = None,
                partition: int | None = None) -> KafkaError:
        """The trionet error of a failed record (topic and partition from the handle if not
        given); its ``__cause__`` is the engine's error."""

    def is_transaction_abort(self, error: BaseException | None) -> bool:
        """Whether an engine error only says the record's transaction was aborted."""

    async def begin_transaction(self) -> None:
        """Begin a transaction (quick, local)."""

    async def commit_transaction(self) -> None:
        """Commit the open transaction (all records are flushed already)."""

    async def abort_transaction(self) -> None:
        """Abort the open transaction."""

    async def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int],
                                          group_metadata: Any) -> None:
        """Add a consumer group's offsets to the open transaction."""


class ConsumerHooks(Protocol):
    """What :class:`~trionet.kafka.KafkaConsumer` gives its engine."""

    @property
    def buffer(self) -> FetchBuffer:
        """Where fetched records go (trio thread only), and the commit bookkeeping."""

    @property
    def open(self) -> bool:
        """Whether the consumer is open for reading (False once it starts closing); read from
        any thread."""

    @property
    def decode_key(self) -> Callable[[bytes], Any] | None:
        """The key deserializer (None: keys stay bytes)."""

    @property
    def decode_value(self) -> Callable[[bytes], Any] | None:
        """The value deserializer (None: values stay bytes)."""

    def in_listener(self) -> bool:
        """Whether the calling task is running this consumer's rebalance listener."""

    def rebalance(self, kind: RebalanceKind, partitions: frozenset[TopicPartition],
                  done: RebalanceDone) -> None:
        """Run the rebalance listener for one step (trio thread); ``done(error)`` follows."""


class ConsumerEngine(Protocol):
    """A consumer library, driven by :class:`~trionet.kafka.KafkaConsumer`.

    Ordering contract: an operation's *after* callback runs on the trio thread once the
    operation took effect, after every batch fetched before it is in the buffer and before any
    batch fetched after it (even if the caller was cancelled meanwhile). That is what lets the
    driver drop buffered records of a partition that was sought, paused or revoked.

    Rebalance steps (assigned, revoked, lost) are handed to ``hooks.rebalance`` on the trio
    thread; records fetched before a step reach the buffer before it.
    """

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Own the engine's threads, in the consumer's nursery, until :meth:`stop`."""

    def stop(self) -> None:
        """After the calls already queued: close the library and let :meth:`run` end."""

    async def start(self) -> None:
        """Connect (bootstrap); a cancelled start gives up promptly."""

    async def close(self, *, timeout_ms: int) -> None:
        """Leave the group (revoking: the listener runs) and close. Never commits."""

    async def fetch(self) -> None:
        """Make records (or an error) arrive in the buffer: returns once the buffer holds
        records, or :attr:`FetchBuffer.error` is set, or a fetch ended empty."""

    def taken(self) -> None:
        """A reader took records from the buffer (read-ahead may go on)."""

    @property
    def buffered_max(self) -> int:
        """At most this many records are buffered (for the docs of ``buffered``)."""

    async def subscribe(self, topics: Sequence[str], pattern: str | None, *,
                        after: Callable[[None], object]) -> None:
        """Subscribe (replacing what was there); rebalances go to ``hooks.rebalance``."""

    async def unsubscribe(self, *, after: Callable[[None], object]) -> None:
        """Drop the subscription or assignment."""

    async def assign(self, partitions: frozenset[TopicPartition], *,
                     after: Callable[[None], object]) -> None:
        """Read exactly *partitions*. Raises UnknownTopicError for a missing one."""

    async def assignment(self) -> frozenset[TopicPartition]:
        """The partitions assigned now."""

    async def subscription(self) -> frozenset[str] | None:
        """The subscribed topics (None when assigned manually)."""

    async def topics(self) -> set[str]:
        """Every topic in the cluster."""

    async def partitions_for_topic(self, topic: str) -> set[int]:
        """The partitions of *topic* (empty if it does not exist; never creates it)."""

    async def seek(self, tp: TopicPartition, offset: int, *,
                   after: Callable[[None], object]) -> None:
        """Read *tp* from *offset* next (KafkaError if not assigned)."""

    async def seek_to(self, partitions: frozenset[TopicPartition], where: str, *,
                      after: Callable[[frozenset[TopicPartition]], object]) -> None:
        """Seek to the ``"beginning"`` or ``"end"`` (all assigned when empty); *after* gets
        the partitions moved."""

    async def pause(self, partitions: frozenset[TopicPartition], *,
                    after: Callable[[None], object]) -> None:
        """Stop fetching *partitions*."""

    async def resume(self, partitions: frozenset[TopicPartition],
                     rewind: Mapping[TopicPartition, int]) -> None:
        """Seek the partitions in *rewind* back, then fetch *partitions* again."""

    async def paused(self) -> frozenset[TopicPartition]:
        """The paused partitions."""

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record the library will fetch for *tp*."""

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for *tp*."""

    async def edge_offsets(self, partitions: Sequence[TopicPartition], where: str
                           ) -> dict[TopicPartition, int]:
        """The ``"beginning"`` or ``"end"`` offsets of *partitions*."""

    async def commit(self, select: Callable[[], Mapping[TopicPartition, int]], *,
                     only_assigned: bool, timeout_ms: int | None) -> dict[TopicPartition, int]:
        """Commit ``select()`` (called where the commit is made, just before it: it leaves out
        partitions revoked meanwhile), synchronously; with *only_assigned* only the partitions
        still assigned. Returns what was committed. Works inside a rebalance listener too.

        Raises:
            KafkaCommitError: refused (see :meth:`is_membership_error`).
        """

    def is_membership_error(self, error: BaseException | None) -> bool:
        """Whether a commit failed (engine error: the ``__cause__``) because the member must
        rejoin its group first."""

    async def rejoin(self, timeout_ms: int) -> bool:
        """Drive the group rejoin for up to *timeout_ms*; True once a stable member again."""

    async def group_metadata(self) -> Any:
        """The group membership snapshot a transactional producer of the same engine needs."""


class AdminEngine(Protocol):
    """An admin library, driven by :class:`~trionet.kafka.KafkaAdmin`. Every call may block
    up to the request timeout; failures are translated."""

    async def start(self) -> None:
        """Connect (bootstrap); a cancelled start gives up promptly."""

    async def close(self) -> None:
        """Close, waiting for the library's threads (called shielded)."""

    async def create_topics(self, specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Create topics (``num_partitions``, ``replication_factor``, ``configs`` each);
        existing ones are skipped. Returns the names created; returns once they have leaders."""

    async def delete_topics(self, names: Collection[str], *, missing_ok: bool) -> list[str]:
        """Delete topics; returns the names deleted."""

    async def list_topics(self) -> list[str]:
        """Every topic name."""

    async def describe_topics(self, names: Collection[str] | None) -> list[dict[str, Any]]:
        """Topic metadata: ``name``, ``is_internal``, ``partitions`` (each with
        ``partition_index``, ``leader_id``, ``replica_nodes``, ``isr_nodes``)."""

    async def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """A group's committed offsets (empty for an unknown group)."""

    async def list_groups(self) -> list[str]:
        """The consumer group ids, sorted."""

    async def delete_groups(self, group_ids: Collection[str]) -> dict[str, str]:
        """Delete groups; per group ``"OK"``-like text or the error."""


class Engine(Protocol):
    """One client library behind trionet's Kafka API (a module-level object)."""

    name: str
    """The ``backend=`` name."""
    version: str
    """The library's version, for messages."""

    def option_names(self, kind: Kind) -> frozenset[str]:
        """The option names the library accepts for a client of *kind*."""

    def configure(self, kind: Kind, config: Mapping[str, Any], *, servers: str | list[str],
                  group_id: str | None = None, handled: Collection[str] = ()) -> EngineConfig:
        """Check *config* (unknown names, credentials sent in clear) and apply trionet's
        defaults (a consumer: no auto-commit; every client: a 10 s bootstrap timeout).
        *handled* are names the driver consumes itself; *group_id* is a consumer's group.

        Raises:
            ConfigurationError: an unknown option or an invalid value.
        """

    def translate(self, exc: BaseException, *, servers: str, topic: str | None = None,
                  operation: str = "") -> BaseException:
        """The exception to raise for *exc*: a trionet error with *exc* as its cause, or *exc*
        itself when it is not the library's (trio's, trionet's, a programming error)."""

    def producer(self, config: EngineConfig) -> ProducerEngine:
        """A producer engine (not started)."""

    def consumer(self, config: EngineConfig, options: ConsumerOptions,
                 hooks: ConsumerHooks) -> ConsumerEngine:
        """A consumer engine (not started)."""

    def admin(self, config: EngineConfig) -> AdminEngine:
        """An admin engine (not started)."""


# -- the registry ---------------------------------------------------------------------------------

#: name -> (module that defines ``ENGINE``, the extra that installs its library).
_REGISTRY: dict[str, tuple[str, str]] = {
    DEFAULT_BACKEND: ("trionet.kafka._kafka_python_engine", "kafka"),
    "confluent": ("trionet.kafka._confluent", "confluent"),
}
_LOADED: dict[str, Engine] = {}


def register_engine(name: str, module: str, *, extra: str) -> None:
    """Make ``backend=name`` load ``module.ENGINE`` on first use (*extra*: the ``pip install
    trionet[extra]`` that installs its library, for the error message)."""
    _REGISTRY[name] = (module, extra)
    _LOADED.pop(name, None)


def backends() -> list[str]:
    """The registered engine names."""
    return sorted(_REGISTRY)


def load_engine(name: object = None) -> Engine:
    """The engine called *name* (the default one for None).

    Raises:
        ConfigurationError: no engine has that name, or its library is not installed.
    """
    if name is None:
        name = DEFAULT_BACKEND
    if not isinstance(name, str):
        raise ConfigurationError(f"backend must be an engine name, not {name!r}")
    engine = _LOADED.get(name)
    if engine is not None:
        return engine
    try:
        module_name, extra = _REGISTRY[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown Kafka backend {name!r}: choose one of {', '.join(backends())}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"the Kafka backend {name!r} is not installed ({exc}): "
            f"pip install 'trionet[{extra}]'"
        ) from exc
    engine = module.ENGINE
    _LOADED[name] = engine
    return engine  # type: ignore[no-any-return]
