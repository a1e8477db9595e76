"""Everything trionet knows about kafka-python 3.0: the only module that imports it.

Nothing here touches trio. The functions are plain, blocking calls that :mod:`._producer`,
:mod:`._consumer` and :mod:`._admin` run on the right thread through :mod:`trionet._threads`;
the few callbacks that cross back into trio arrive as plain callables (a
:class:`~trionet._threads.TrioPortal`'s ``call_soon``).

Where kafka-python's public API falls short, this module reaches into its internals, always in a
function of its own with a comment saying why. kafka-python is pinned to ``>=3.0,<3.1``:

* :class:`ClientTrap` is passed as kafka-python's documented ``kafka_client`` factory, so that a
  constructor that fails (or is cancelled) during bootstrap can be cleaned up: kafka-python 3.0
  starts a consumer's or admin client's I/O thread before bootstrapping and leaves it running when
  the bootstrap fails.
* :func:`records_ready` reads the fetcher's queue, and :func:`drain_fetched` decodes what it
  holds (the fetcher's ``fetched_records``, the decoding half of ``poll()``), so that the trio
  thread can decode records already fetched while the consumer's thread is idle.
* :func:`brokers_unreachable` reads the connection manager, to turn "every broker has stopped
  answering" into an error instead of polling an empty topic forever.
* :func:`commit_on_io_loop` and :func:`call_on_io_loop` run consumer work on kafka-python's I/O
  loop while the consumer's own thread is blocked inside ``poll()`` or ``close()`` waiting for a
  rebalance listener (calling back into the consumer's thread then would deadlock).
* :func:`close_producer` forces a producer's sender thread down when a flush cannot finish
  (kafka-python's ``close()`` raises and leaves the thread running in that case).
* :func:`watch_delivery` registers both callbacks of a record future under one lock, and
  :func:`record_partition` reads a record future's partition (for its failure's message).
* :func:`metadata_cached` and :func:`known_partitions` read the producer's metadata cache, so
  that trionet calls kafka-python's ``send`` on the trio thread only when it cannot block.
* :func:`rejoin_group` runs the group coordinator's half of ``poll()`` (a rejoin without any
  fetching), for a commit that must wait for the consumer to rejoin its group.
* :func:`group_joining` reads the group coordinator's state, so that the consumer's thread keeps
  polling while a rebalance is in progress (see its docstring for the kafka-python quirk).
* :class:`_JoinCompletion` makes a consumer finish a group join that outlived the ``poll()``
  that started it: kafka-python 3.0.12 could forget it (the new assignment never applied, seen
  with pattern subscriptions growing) or throw its result away and rebalance again.
* :func:`_drop_parked_records` works around a stall after ``resume()``: kafka-python 3.0.12 may
  never hand back the records it parked for a paused partition, nor fetch that partition again.
* :class:`_SessionRecovery` lets an idempotent producer survive a broker that lost its producer
  state (a crash and restart): kafka-python 3.0.12 fails every batch in flight when the broker
  answers ``OutOfOrderSequenceNumber`` (or ``UnknownProducerId``, ``InvalidProducerEpoch``) and
  bumps the producer epoch; with the recovery those batches are re-stamped with the new producer
  id/epoch and sent again, in order, until their delivery budget runs out. It also makes a batch
  put back for a retry keep its place (kafka-python puts it at the head of its partition's queue,
  ahead of older ones, which the broker then refuses as out of order).
* :func:`_close_failed_connects` fixes a socket leak: kafka-python 3.0 does not close the socket
  of a failed connection attempt (refused, timed out), so every retry against a dead broker
  leaks a file descriptor until the garbage collector finds it (with a ``ResourceWarning``).
  It also closes the TLS socket of a connection whose handshake failed (an untrusted
  certificate, a refused client certificate), which kafka-python leaks the same way, and keeps
  the client's last TLS error, so that a failed bootstrap names its cause.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import ssl
import struct
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Final

try:
    import kafka
    import kafka.errors as kerrors
    from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
    from kafka.future import Future as KFuture
    from kafka.net.compat import KafkaNetClient
    from kafka.net.inet import KafkaNetSocket
    from kafka.net.transport import KafkaSSLTransport
    from kafka.record.default_records import DefaultRecordBase
    from kafka.record.util import calc_crc32c
    from kafka.structs import MemberState, OffsetAndMetadata
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "trionet.kafka needs kafka-python 3.0 (pip install 'trionet[kafka]' or "
        f"'kafka-python>=3.0,<3.1'): {exc}"
    ) from exc

from .._threads import Guarded
from ..errors import ConfigurationError, KafkaError, TrionetError
from ._engine import RebalanceKind
from ._errors import (
    KafkaCommitError,
    KafkaConnectionError,
    KafkaDeliveryError,
    KafkaTimeout,
    UnknownTopicError,
)
from ._options import check_credentials
from ._records import RecordMetadata, TopicPartition

__all__ = [
    "ADMIN_OPTIONS",
    "CONSUMER_OPTIONS",
    "KAFKA_PYTHON_VERSION",
    "PRODUCER_OPTIONS",
    "ClientTrap",
    "ListenerBridge",
    "abort_transaction",
    "assign",
    "assignment",
    "begin_transaction",
    "brokers_unreachable",
    "build_admin",
    "build_consumer",
    "build_producer",
    "call_on_io_loop",
    "check_options",
    "close_admin",
    "close_consumer",
    "close_producer",
    "commit",
    "commit_on_io_loop",
    "commit_transaction",
    "committed",
    "create_topics",
    "delete_groups",
    "delete_topics",
    "delivery_error",
    "describe_topics",
    "drain_fetched",
    "edge_offsets",
    "existing_partitions",
    "group_joining",
    "group_metadata",
    "init_transactions",
    "is_membership_error",
    "is_transaction_abort",
    "known_partitions",
    "list_group_offsets",
    "list_groups",
    "list_topics",
    "metadata_cached",
    "offsets_to_commit",
    "partitions_for",
    "pause",
    "paused",
    "poll",
    "position",
    "record_metadata",
    "record_partition",
    "records_ready",
    "rejoin_group",
    "resume",
    "seek",
    "seek_to",
    "send",
    "send_offsets_to_transaction",
    "serialized_size",
    "subscribe",
    "subscription",
    "topics",
    "translate",
    "translated",
    "unsubscribe",
    "watch_delivery",
]

KAFKA_PYTHON_VERSION: Final[str] = kafka.__version__

CONSUMER_OPTIONS: Final = frozenset(kafka.KafkaConsumer.DEFAULT_CONFIG)
PRODUCER_OPTIONS: Final = frozenset(kafka.KafkaProducer.DEFAULT_CONFIG)
ADMIN_OPTIONS: Final = frozenset(kafka.KafkaAdminClient.DEFAULT_CONFIG)

_COMMIT_ERRORS: Final = (
    kerrors.CommitFailedError,
    kerrors.RebalanceInProgressError,
    kerrors.IllegalGenerationError,
    kerrors.UnknownMemberIdError,
    kerrors.FencedInstanceIdError,
)


def _close_failed_connects() -> None:
    """Make kafka-python close the socket of a connection attempt that failed.

    ``KafkaNetSocket.sock_connect`` raises on ECONNREFUSED or a timeout without closing the
    socket it was given. The wrapper closes it and re-raises; success is untouched. Applied once,
    at import; a no-op if kafka-python already behaves (or was patched before).
    """
    original = KafkaNetSocket.sock_connect
    if getattr(original, "_trionet_closes_failed_sockets", False):
        return

    async def sock_connect(self: Any, net: Any, sock: Any, sockaddr: Any,
                           timeout_at: Any = None) -> Any:
        try:
            return await original(self, net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:
            sock.close()
            raise

    sock_connect._trionet_closes_failed_sockets = True  # type: ignore[attr-defined]
    KafkaNetSocket.sock_connect = sock_connect

    # KafkaNetManager._build_transport raises on a failed TLS handshake without closing the
    # transport it built (its caller only closes transports it was handed)
    original_handshake = KafkaSSLTransport.handshake
    if getattr(original_handshake, "_trionet_closes_failed_sockets", False):
        return

    async def handshake(self: Any) -> Any:
        try:
            return await original_handshake(self)
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):  # ssl.SSLError included
                # kept on the client's network loop: a failed bootstrap then names the cause
                with contextlib.suppress(AttributeError):
                    self._net.trionet_tls_failure = f"{self.host}: {_describe(exc)}"
            raise

    handshake._trionet_closes_failed_sockets = True  # type: ignore[attr-defined]
    KafkaSSLTransport.handshake = handshake

    # With TLS 1.3 a server that refuses the client's certificate says so after the client's
    # side of the handshake is over: the alert comes with the first read
    original_recv = KafkaSSLTransport._sock_recv

    def sock_recv(self: Any) -> Any:
        data, err = original_recv(self)
        cause = err.args[0] if err is not None and err.args else None
        if isinstance(cause, ssl.SSLError):
            with contextlib.suppress(AttributeError):
                self._net.trionet_tls_failure = f"{self.host}: {_describe(cause)}"
        return data, err

    KafkaSSLTransport._sock_recv = sock_recv


_close_failed_connects()


def check_options(kind: str, options: Mapping[str, Any], known: Collection[str],
                  handled: Collection[str] = ()) -> None:
    """Reject option names kafka-python does not know, before any thread or socket exists.

    Raises:
        ConfigurationError: naming the unknown options.
    """
    unknown = sorted(set(options) - set(known) - set(handled) - {"allow_insecure_auth"})
    if unknown:
        raise ConfigurationError(
            f"unknown {kind} option(s) {', '.join(unknown)}; trionet passes options through to "
            f"kafka-python {KAFKA_PYTHON_VERSION}, see its {kind} documentation"
        )
    check_credentials(options)


# -- errors -------------------------------------------------------------------------------------


def translate(exc: BaseException, *, servers: str, topic: str | None = None,
              operation: str = "") -> BaseException:
    """Map a kafka-python exception to the trionet exception to raise ``from`` it.

    Exceptions that are not kafka-python's (trionet's own, trio's, programming errors) are
    returned unchanged.
    """
    if isinstance(exc, TrionetError) or not isinstance(exc, kerrors.KafkaError):
        return exc
    where = f"{operation}: " if operation else ""
    text = _describe(exc)
    if isinstance(exc, kerrors.KafkaTimeoutError) and "bootstrap" in text.lower():
        return KafkaConnectionError(
            f"{where}cannot reach the Kafka bootstrap servers {servers} "
            f"(kafka-python: {text})",
            bootstrap_servers=servers,
        )
    if isinstance(exc, (kerrors.KafkaConnectionError, kerrors.NodeNotReadyError)):
        return KafkaConnectionError(
            f"{where}lost the connection to the Kafka brokers (bootstrap servers {servers}): "
            f"{text}",
            bootstrap_servers=servers,
        )
    if isinstance(exc, kerrors.UnknownTopicOrPartitionError):
        return UnknownTopicError(topic or "?", detail=text)
    if isinstance(exc, _COMMIT_ERRORS):
        return KafkaCommitError(f"{where}{text}", fault="remote")
    if isinstance(exc, kerrors.KafkaTimeoutError):
        return KafkaTimeout(f"{where}{text} (bootstrap servers {servers})", fault="remote")
    if isinstance(exc, kerrors.KafkaConfigurationError):
        return ConfigurationError(f"{where}{text}")
    if isinstance(exc, (kerrors.IllegalStateError, kerrors.IllegalArgumentError)):
        return KafkaError(f"{where}{text}", fault="local")
    return KafkaError(f"{where}{text}", fault="remote")


def translated(exc: BaseException, *, servers: str, topic: str | None = None,
               operation: str = "") -> BaseException:
    """:func:`translate`, ready to raise: a new exception gets *exc* as its cause; anything
    returned unchanged (a trio exception, ``Cancelled``, a trionet error) is *exc* itself, so
    ``raise translated(exc, ...)`` re-raises it rather than making it its own cause.
    """
    error = translate(exc, servers=servers, topic=topic, operation=operation)
    if error is not exc:
        error.__cause__ = exc
        error.__suppress_context__ = True
    return error


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


# -- construction and clean-up ------------------------------------------------------------------


class ClientTrap:
    """A ``kafka_client`` factory that remembers the network client kafka-python builds.

    kafka-python 3.0 consumers and admin clients start their I/O thread *before* bootstrapping
    and do not stop it when the bootstrap fails; and no constructor can be interrupted. With the
    client in hand, :meth:`abort` ends a bootstrap in progress (from any thread) and
    :meth:`close` stops the client's thread and sockets after a failed construction.
    """

    def __init__(self, factory: Callable[..., Any] = KafkaNetClient) -> None:
        self._factory = factory
        #: (the client built, whether abort() was called): set by different threads.
        self._state: Guarded[tuple[Any, bool]] = Guarded((None, False))

    def __call__(self, **configs: Any) -> Any:
        client = self._factory(**configs)
        aborted = self._state.update(lambda state: ((client, state[1]), state[1]))
        if aborted:
            _abort_client(client)
        return client

    @property
    def tls_failure(self) -> str:
        """The client's last TLS error (``"host: reason"``), or ``""``."""
        client = self._state.value[0]
        failure = getattr(getattr(client, "_net", None), "trionet_tls_failure", "")
        return failure if isinstance(failure, str) else ""

    @property
    def aborted(self) -> bool:
        """Whether :meth:`abort` was called."""
        aborted: bool = self._state.value[1]
        return aborted

    def abort(self) -> None:
        """Make a constructor that is bootstrapping give up soon. Safe from any thread."""
        client = self._state.update(lambda state: ((state[0], True), state[0]))
        if client is not None:
            _abort_client(client)

    def close(self) -> None:
        """Close the captured client (joins its I/O thread). Idempotent; call after a failure."""
        client = self._state.update(lambda state: ((None, state[1]), state[0]))
        if client is not None:
            client.close()


def _abort_client(client: Any) -> None:
    # Closing the connection manager on its own loop makes _do_bootstrap's loop condition false,
    # so the blocked constructor raises "Unable to bootstrap" at once. The loop is either the
    # client's I/O thread (consumer, admin) or the constructing thread itself (producer);
    # call_soon_threadsafe wakes either.
    with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is already closed
        client._net.call_soon_threadsafe(client._manager.close)


def _build(cls: Any, trap: ClientTrap, config: Mapping[str, Any], *, servers: str,
           what: str) -> Any:
    options = dict(config)
    options.pop("allow_insecure_auth", None)  # trionet's, checked by check_options
    trap._factory = options.pop("kafka_client", KafkaNetClient)
    options["kafka_client"] = trap
    try:
        return cls(**options)
    except BaseException as exc:
        tls_failure = trap.tls_failure
        trap.close()
        if trap.aborted:
            raise
        error = translated(exc, servers=servers, operation=f"starting the Kafka {what}")
        if isinstance(error, KafkaConnectionError) and tls_failure:
            error = KafkaConnectionError(f"{error}; the last TLS error: {tls_failure}",
                                         bootstrap_servers=servers)
            error.__cause__ = exc
        raise error  # noqa: B904


def build_producer(config: Mapping[str, Any], trap: ClientTrap, *, servers: str) -> Any:
    """Construct a ``kafka.KafkaProducer`` (blocks for the bootstrap); translate failures.

    An idempotent (not transactional) producer gets the :class:`_SessionRecovery` hooks before
    any record is handed to it.
    """
    producer = _build(kafka.KafkaProducer, trap, config, servers=servers, what="producer")
    _SessionRecovery.install(producer)
    return producer


def build_consumer(config: Mapping[str, Any], trap: ClientTrap, *, servers: str) -> Any:
    """Construct a ``kafka.KafkaConsumer`` (blocks for the bootstrap); translate failures.

    A consumer with a group gets the :class:`_JoinCompletion` hooks.
    """
    consumer = _build(kafka.KafkaConsumer, trap, config, servers=servers, what="consumer")
    if config.get("group_id") is not None:
        _JoinCompletion.install(consumer)
    return consumer


class _JoinCompletion:
    """Finish a group join that outlived the ``poll()`` that started it.

    kafka-python 3.0.12 runs each JoinGroup + SyncGroup attempt as a task on its I/O loop, which
    a ``poll()`` awaits for at most its own timeout; the task goes on after the poll returns,
    for the next poll to pick up. Two things go wrong then:

    * The next poll looks at ``need_rejoin()`` first, and that does not count a join under way.
      When the rejoin was started by a metadata change (a pattern subscription's new topic: the
      coordinator's rejoin flag is not set for it) and this member leads the group, the attempt
      itself records the new metadata as assigned, so ``need_rejoin()`` turns False: no poll
      ever awaits the attempt again. Its SyncGroup answer is never applied (no new partitions,
      no rebalance listener) and heartbeats stay off. Seen in about 1 of 6 runs of the bus's
      wildcard test, and in every run with 1 ms polls.
    * A poll that finds the attempt already finished (it ended between two polls) throws its
      result away and sends a new JoinGroup: one more rebalance of the whole group, which with
      polls shorter than a round trip never ends.

    Java's consumer counts a pending join as a reason to poll the join (``rejoinNeededOrPending``,
    and KAFKA-9815 for metadata-triggered rejoins). These hooks, set as attributes of the
    consumer's coordinator (they shadow its methods for this consumer only), do the same: a join
    under way keeps ``need_rejoin()`` True, and an attempt that succeeded while no poll waited is
    completed as kafka-python completes an awaited one (state, heartbeats, the assignment and
    the rebalance listener), unless the member has since fallen out of the group (then it
    joins again, as before).
    """

    def __init__(self, coordinator: Any) -> None:
        self._coordinator = coordinator
        self._need_rejoin = coordinator.need_rejoin
        self._join_group_async = coordinator.join_group_async

    @classmethod
    def install(cls, consumer: Any) -> None:
        coordinator = consumer._coordinator
        hooks = cls(coordinator)
        coordinator.need_rejoin = hooks.need_rejoin
        coordinator.join_group_async = hooks.join_group_async

    def need_rejoin(self) -> bool:
        """``ConsumerCoordinator.need_rejoin``, also True while a join is under way."""
        if self._need_rejoin():
            return True
        coordinator = self._coordinator
        return bool(coordinator._subscription.partitions_auto_assigned()
                    and (coordinator.rejoining or coordinator._join_task is not None))

    async def join_group_async(self, timeout_ms: Any = None) -> bool:
        """``BaseCoordinator.join_group_async`` (I/O loop), completing a finished attempt."""
        coordinator = self._coordinator
        task = coordinator._join_task
        if (task is None or not task.succeeded()
                or coordinator.state is not MemberState.REBALANCING):
            return bool(await self._join_group_async(timeout_ms))
        coordinator._join_task = None
        with coordinator._lock:
            coordinator.rejoining = False
            coordinator.rejoin_needed = False
            coordinator.state = MemberState.STABLE
            coordinator._enable_heartbeat()
        generation = coordinator._generation
        await coordinator._on_join_complete_async(
            generation.generation_id, generation.member_id, generation.protocol, task.value)
        return True


def build_admin(config: Mapping[str, Any], trap: ClientTrap, *, servers: str) -> Any:
    """Construct a ``kafka.KafkaAdminClient`` (blocks for the bootstrap); translate failures."""
    return _build(kafka.KafkaAdminClient, trap, config, servers=servers, what="admin client")


def close_consumer(consumer: Any, *, timeout_ms: int) -> None:
    """Leave the group and close the consumer, joining its I/O thread. Never commits."""
    consumer.close(autocommit=False, timeout_ms=timeout_ms)


def close_admin(admin: Any) -> None:
    """Close the admin client, joining its I/O thread."""
    admin.close()


def close_producer(producer: Any, *, timeout: float) -> bool:
    """Flush for up to *timeout* seconds, then close, joining the sender thread.

    Records that could not be delivered in time are failed (their futures get an error) and the
    sender thread is stopped anyway. kafka-python's ``close()`` would raise instead and leave the
    thread running, so when the flush times out this forces the sender down first.

    Returns:
        True if every record was flushed.
    """
    deadline = time.monotonic() + timeout
    flushed = True
    try:
        producer.flush(timeout)
    except kerrors.KafkaTimeoutError:
        flushed = False
        producer._sender.force_close()  # fail the incomplete batches, stop the sender loop
    remaining = max(0.0, deadline - time.monotonic())
    try:
        producer.close(timeout=max(remaining, 1.0))
    except kerrors.KafkaTimeoutError:
        producer._sender.force_close()
    producer._sender.join(max(remaining, 1.0))
    return flushed


# -- producer -----------------------------------------------------------------------------------

_log = logging.getLogger("trionet.kafka")

#: Broker answers meaning "this producer session's sequence numbers no longer line up": the
#: broker lost records or producer state (a crash, a restart from an older snapshot) or
#: forgot the producer id.
_SESSION_ERRORS: Final = (
    kerrors.OutOfOrderSequenceNumberError,
    kerrors.UnknownProducerIdError,
    kerrors.InvalidProducerEpochError,
)
# A v2 record batch header holds the producer id (int64), epoch (int16) and base sequence
# (int32) right after BaseOffset, Length, PartitionLeaderEpoch, Magic, CRC, Attributes,
# LastOffsetDelta, FirstTimestamp and MaxTimestamp; the CRC-32C covers everything from the
# attributes on.
_PRODUCER_STATE: Final = struct.Struct(">qhi")
_PRODUCER_STATE_OFFSET: Final = struct.calcsize(">qiibIhiqq")
_CRC: Final = struct.Struct(">I")


def _restamp(batch: Any, producer_id: int, epoch: int, sequence: int) -> None:
    """Give a built (closed) v2 batch a new producer id, epoch and base sequence, and a new CRC.

    kafka-python stamps a batch once, when it first drains it, and refuses to stamp a closed one
    again (``set_producer_state`` raises). The Java client rewrites the header in place in this
    case (``resetProducerState``); so does this.
    """
    records = batch.records
    buffer = records._buffer
    _PRODUCER_STATE.pack_into(buffer, _PRODUCER_STATE_OFFSET, producer_id, epoch, sequence)
    crc = calc_crc32c(memoryview(buffer)[DefaultRecordBase.ATTRIBUTES_OFFSET:])
    _CRC.pack_into(buffer, DefaultRecordBase.CRC_OFFSET, crc)
    records._producer_id = producer_id
    records._producer_epoch = epoch
    records._base_sequence = sequence


class _SessionRecovery:
    """Resend an idempotent producer's refused batches under a new producer session.

    When a broker crashes and restarts from older state, it refuses the producer's next batch
    on each partition as out of order (it lost the records, or the producer state, that came
    before). kafka-python 3.0.12 then starts a new producer session (it bumps the epoch, or asks
    for a new producer id) but fails the refused batches: every record in flight at the crash
    is reported as lost although none was written.

    These hooks, called by kafka-python's sender thread in place of two ``Sender`` methods,
    make such a batch wait in its partition's queue instead, at its place (kafka-python sends
    one batch per partition at a time for an idempotent producer, so it is the oldest). Once
    the new session is in place the waiting batches are re-stamped with its producer id and
    epoch and with fresh sequence numbers, in order, and sent again. A batch sent under the old
    session that then fails for a retriable reason is treated the same way (kafka-python would
    drop it). Nothing changes for a batch that is out of its delivery budget
    (``delivery_timeout_ms`` since it was created, or ``retries`` attempts): it fails, as
    before. A record that the broker had in fact written but not acknowledged is written again
    (at-least-once: a duplicate, never a loss).

    Transactional producers are left alone (a refused batch aborts the transaction), as are
    producers without idempotence (no sequence numbers, plain retries).
    """

    def __init__(self, producer: Any) -> None:
        self._sender = producer._sender
        self._accumulator = producer._accumulator
        self._manager = producer._transaction_manager
        self._dispatch_error = self._sender._dispatch_error
        self._send_producer_data = self._sender._send_producer_data
        self._session = (-1, -1)
        self._recovering = False

    @classmethod
    def install(cls, producer: Any) -> None:
        """Hook into *producer*'s sender if it is idempotent and not transactional. Must be
        called before any record is sent."""
        manager = getattr(producer, "_transaction_manager", None)
        if manager is None or manager.is_transactional():
            return
        sender = producer._sender
        if not sender.config.get("guarantee_message_order"):  # pragma: no cover - kafka-python
            return  # forces it with idempotence; without it, batches could be reordered here
        recovery = cls(producer)
        # Instance attributes shadow the methods: only this producer's sender is affected.
        sender._dispatch_error = recovery.dispatch_error
        sender._send_producer_data = recovery.send_producer_data

    def dispatch_error(self, batch: Any, exception: BaseException, partition_response: Any
                       ) -> None:
        """``Sender._dispatch_error``: a batch failed (broker answer or client-side error)."""
        error_cls = type(exception)
        manager = self._manager
        current = manager.producer_id_and_epoch.match(batch)
        refused = issubclass(error_cls, _SESSION_ERRORS)
        if not (refused or (not current and batch.has_sequence
                            and issubclass(error_cls, kerrors.RetriableError))):
            self._dispatch_error(batch, exception, partition_response)
            return
        sender = self._sender
        log_start = -1 if partition_response is None else partition_response.log_start_offset
        if (batch.final_state is not None
                or batch.has_reached_delivery_timeout(self._accumulator.delivery_timeout_ms)
                or batch.attempts >= sender.config["retries"]
                or manager.has_fatal_error()
                or sender._is_retention_based_unknown_producer_id(batch, error_cls, log_start)):
            # Out of budget (or kafka-python's own retention case): kafka-python fails it
            # (and, for a refusal, still starts the new session).
            self._dispatch_error(batch, exception, partition_response)
            return
        if refused and current:
            kind = manager.classify_batch_error(exception, batch, log_start_offset=log_start)
            if kind == manager.ERROR_CLASS_NEEDS_EPOCH_BUMP:
                manager.bump_producer_id_and_epoch()
            elif kind == manager.ERROR_CLASS_NEEDS_PRODUCER_ID_RESET:
                manager.reset_producer_id()
            else:  # pragma: no cover - kafka-python classifies these errors as above
                self._dispatch_error(batch, exception, partition_response)
                return
            _log.warning(
                "the Kafka broker refused the producer's records for %s (%s): starting a new "
                "producer session and sending them again", batch.topic_partition,
                error_cls.__name__)
        self._recovering = True
        sender._maybe_remove_from_inflight_batches(batch)
        self._accumulator.reenqueue(batch)  # at the head of its partition: it is the oldest
        sender._record_retries(batch)
        self._accumulator.muted.discard(batch.topic_partition)

    def send_producer_data(self, now: float | None = None) -> Any:
        """``Sender._send_producer_data``: kafka-python calls it only once the producer has a
        valid session (not while a new producer id or epoch is being obtained)."""
        session = self._manager.producer_id_and_epoch
        key = (session.producer_id, session.epoch)
        if key != self._session:
            self._session = key
            self._recovering = True
        if self._recovering:
            self._recovering = False
            self._restamp_waiting(session)
        return self._send_producer_data(now)

    def _restamp_waiting(self, session: Any) -> None:
        """Give every batch waiting for a retry under an older session the current one."""
        accumulator = self._accumulator
        manager = self._manager
        for tp in list(accumulator._batches):
            with accumulator._tp_lock(tp):
                for batch in accumulator._batches[tp]:
                    if not batch.in_retry():
                        break  # the rest were never sent: kafka-python stamps them on draining
                    if batch.has_sequence and not session.match(batch):
                        _restamp(batch, session.producer_id, session.epoch,
                                 manager.sequence_number(tp))
                        manager.increment_sequence_number(tp, batch.record_count)


def watch_delivery(future: Any, on_success: Callable[[Any], object],
                   on_failure: Callable[[BaseException], object]) -> None:
    """Register both callbacks of a ``FutureRecordMetadata``.

    They run on the producer's sender thread (or at once, if the future is already done).
    ``_add_cb_eb`` takes the future's lock once instead of twice.
    """
    future._add_cb_eb(on_success, on_failure)


if not hasattr(KFuture, "_add_cb_eb"):  # pragma: no cover - other kafka-python versions

    def watch_delivery(future: Any, on_success: Callable[[Any], object],
                       on_failure: Callable[[BaseException], object]) -> None:
        future.add_callback(on_success)
        future.add_errback(on_failure)


def record_partition(future: Any) -> tuple[str, int | None]:
    """The topic and partition (None if none was chosen) of a ``FutureRecordMetadata``."""
    try:
        topic, partition = future._produce_future.topic_partition
    except AttributeError:  # pragma: no cover - another kafka-python
        return "?", None
    return topic, partition


def record_metadata(md: Any) -> RecordMetadata:
    """kafka-python's ``RecordMetadata`` as trionet's."""
    return RecordMetadata(md.topic, md.partition, md.offset, md.timestamp)


def delivery_error(exc: BaseException, *, topic: str, partition: int | None,
                   servers: str) -> KafkaError:
    """The error a failed delivery of a record to *topic* reports."""
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, kerrors.UnknownTopicOrPartitionError):
        error: KafkaError = UnknownTopicError(topic, partition, detail=_describe(exc))
    elif isinstance(exc, kerrors.KafkaTimeoutError):
        error = KafkaDeliveryError(
            f"a record for {topic!r} was not acknowledged in time ({_describe(exc)}; "
            f"bootstrap servers {servers})", topic=topic, partition=partition)
    else:
        error = KafkaDeliveryError(f"a record for {topic!r} was not delivered: {_describe(exc)}",
                                   topic=topic, partition=partition)
    error.__cause__ = exc
    return error


def partitions_for(producer: Any, topic: str) -> set[int]:
    """The partitions of *topic*, fetching metadata if needed (blocks up to ``max_block_ms``)."""
    return set(producer.partitions_for(topic))


def known_partitions(producer: Any, topic: str) -> set[int] | None:
    """The partitions of *topic* the producer already knows, without any I/O (None if unknown).

    Used so that ``send_nowait`` never blocks the trio thread: kafka-python's ``send`` waits for
    metadata when the topic is new.
    """
    partitions = producer._metadata.partitions_for_topic(topic)
    return None if partitions is None else set(partitions)


def metadata_cached(producer: Any, topic: str) -> bool:
    """Whether ``producer.send(topic, ...)`` would go ahead without waiting for metadata.

    kafka-python's ``send`` blocks (up to ``max_block_ms``) when the topic's partitions are not in
    its metadata cache; a topic can also drop out of the cache (deleted, metadata expired). This
    is the same check, without building the partition set.
    """
    return topic in producer._metadata._partitions


def send(producer: Any, topic: str, value: Any, key: Any, headers: list[tuple[str, bytes]],
         partition: int | None, timestamp_ms: int | None) -> Any:
    """``producer.send`` (non-blocking once the topic's metadata is known)."""
    return producer.send(topic, value=value, key=key, headers=headers, partition=partition,
                         timestamp_ms=timestamp_ms)


# -- consumer -----------------------------------------------------------------------------------


def poll(consumer: Any, timeout_ms: int, max_records: int) -> list[Any]:
    """One ``poll``; kafka-python's ``ConsumerRecord`` tuples, partition by partition."""
    return _flatten(consumer.poll(timeout_ms=timeout_ms, max_records=max_records))


def drain_fetched(consumer: Any, max_records: int) -> list[Any]:
    """Up to *max_records* of the records kafka-python has already fetched, decoded now.

    This is the decoding half of ``poll()`` alone (the fetcher's ``fetched_records``, which
    also advances the positions, as ``poll()`` does): no group coordination (heartbeat
    bookkeeping, joins, rebalances), no offset resets and no new fetch requests, so it never
    waits for kafka-python's I/O thread or for the network. Those stay with ``poll()``, on the
    consumer's thread. Raises what ``poll()`` would for the same records (a corrupt batch, an
    offset out of range).
    """
    batches, _partial = consumer._fetcher.fetched_records(max_records, update_offsets=True)
    return _flatten(batches)


def _flatten(batches: Mapping[Any, list[Any]]) -> list[Any]:
    if not batches:
        return []
    if len(batches) == 1:
        (records,) = batches.values()
        return list(records)
    out: list[Any] = []
    for records in batches.values():
        out.extend(records)
    return out


_KEY_SIZE: Final = operator.attrgetter("serialized_key_size")
_VALUE_SIZE: Final = operator.attrgetter("serialized_value_size")


def serialized_size(records: list[Any]) -> int:
    """The serialized size of the keys and values of kafka-python ``ConsumerRecord`` objects
    (a missing key or value counts as -1), in bytes."""
    total: int = sum(map(_KEY_SIZE, records)) + sum(map(_VALUE_SIZE, records))
    return max(0, total)


def records_ready(consumer: Any) -> bool:
    """Whether kafka-python holds fetched records that ``drain_fetched`` would decode (a hint).

    It reads the fetcher's queue of fetch responses, which kafka-python's I/O thread fills, with
    no lock: the answer may be stale by the time it is used, which costs one empty poll or one
    poll on the consumer's thread, never a record. Responses without record data (an idle
    partition's fetch comes back empty every ``fetch_max_wait_ms``) do not count.
    """
    try:
        fetcher = consumer._fetcher
        if fetcher._next_partition_records:
            return True
        pending = tuple(fetcher._completed_fetches)  # copied in C, under the GIL
        return any(completed.partition_data.records for completed in pending)
    except (AttributeError, RuntimeError):  # pragma: no cover - another kafka-python, or
        return False  # the queue changed while copied: poll on the consumer's thread then


def brokers_unreachable(consumer: Any) -> bool:
    """True when the consumer has no live broker connection and its last attempt failed.

    kafka-python retries a lost broker forever while ``poll()`` returns nothing, so an
    application reading a quiet topic cannot tell a dead cluster from an idle one. The
    connection manager knows: every broker in the metadata is in reconnect back-off (a failure
    since the last success) and no connection is up.
    """
    manager = consumer._client._manager
    brokers = manager.cluster.brokers()
    if not brokers:
        return False
    if any(conn.connected for conn in list(manager._conns.values())):
        return False
    backoff = manager._backoff
    return all(broker.node_id in backoff for broker in brokers)


def group_joining(consumer: Any) -> bool:
    """Whether the consumer is (re)joining its group: a join started and has not completed.

    kafka-python 3.0.12 drives a join only while a ``poll()`` waits for it (a step that finishes
    while no ``poll()`` waits is completed by the next one, see :class:`_JoinCompletion`). The
    consumer's thread therefore keeps polling, with the full timeout, until this is False.
    """
    coordinator = consumer._coordinator
    return bool(getattr(coordinator, "rejoining", False)
                or getattr(coordinator, "_join_task", None) is not None)


#: A commit refused because the member is not (or no longer) in the group's current generation.
_MEMBERSHIP_ERRORS: Final = (
    kerrors.CommitFailedError,
    kerrors.RebalanceInProgressError,
    kerrors.IllegalGenerationError,
    kerrors.UnknownMemberIdError,
)


def is_membership_error(exc: BaseException | None) -> bool:
    """Whether a failed commit was refused for want of a current group generation (the member
    must rejoin first), as opposed to a failure that a rejoin would not cure."""
    return isinstance(exc, _MEMBERSHIP_ERRORS)


def rejoin_group(consumer: Any, timeout_ms: int) -> bool:
    """Drive the consumer's group (re)join for up to *timeout_ms*, without fetching records.

    kafka-python rejoins only inside ``poll()``; this is the group coordinator's half of it
    (find the coordinator, JoinGroup/SyncGroup, the rebalance listener, heartbeats), so no
    records are fetched and no positions move.

    Returns:
        True once the consumer is a stable member of the group again.
    """
    coordinator = consumer._coordinator
    coordinator.poll(timeout_ms=timeout_ms)
    return coordinator.generation_if_stable() is not None and not group_joining(consumer)


def offsets_to_commit(offsets: Mapping[TopicPartition, int]) -> dict[Any, Any]:
    return {
        kafka.TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "", -1)
        for tp, offset in offsets.items()
    }


def commit(consumer: Any, offsets: Mapping[TopicPartition, int], *, only_assigned: bool,
           timeout_ms: int | None) -> dict[TopicPartition, int]:
    """Commit *offsets* (next offset to read, per partition) synchronously.

    With *only_assigned*, partitions the consumer no longer owns are left out: after a rebalance
    their new owner's commits must not be overwritten with older offsets.

    Returns:
        What was committed.
    """
    if only_assigned:
        assigned = consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
    if offsets:
        consumer.commit(offsets_to_commit(offsets), timeout_ms=timeout_ms)
    return dict(offsets)


def commit_on_io_loop(consumer: Any, offsets: Mapping[TopicPartition, int], timeout_ms: int,
                      done: Callable[[BaseException | None], object]) -> None:
    """Commit from kafka-python's I/O loop; *done(error)* is called on the I/O thread.

    Only for rebalance listeners: the consumer's thread is then blocked inside ``poll()`` or
    ``close()`` until the listener returns, so a commit queued for it would deadlock. This is
    the coroutine kafka-python itself runs for a synchronous commit.
    """
    manager = consumer._client._manager
    kafka_offsets = offsets_to_commit(offsets)
    coordinator = consumer._coordinator
    future = manager.call_soon(coordinator._commit_offsets_sync_async, kafka_offsets, timeout_ms)
    future.add_both(lambda _: done(future.exception))


def call_on_io_loop(consumer: Any, fn: Callable[..., Any], args: Iterable[Any],
                    done: Callable[[BaseException | None, Any], object]) -> None:
    """Run ``fn(*args)`` on kafka-python's I/O loop; *done(error, value)* on the I/O thread.

    Only for rebalance listeners (see :func:`commit_on_io_loop`): calls that only change the
    consumer's local state (``seek``, ``pause``, ``assignment``...) are safe there while the
    consumer's own thread is blocked waiting for the listener. Calls that need a broker round
    trip fail with kafka-python's "Cannot block on net.run() from the IO thread".
    """
    manager = consumer._client._manager
    future = manager.call_soon(fn, *args)
    future.add_both(lambda _: done(future.exception, future.value))


class ListenerBridge(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """The rebalance listener kafka-python calls; forwards each event to trio and waits.

    kafka-python awaits it on its I/O loop (``AsyncConsumerRebalanceListener``), so heartbeats go
    on while trio runs the user's listener. *dispatch(kind, partitions, done)* is called on the
    I/O thread; it must hand the event to trio and return True (or False to skip it), and trio
    must eventually call ``done(error)``, from any thread. A listener that takes longer than
    *timeout_ms* fails the rebalance step with a timeout.
    """

    def __init__(self, consumer: Any,
                 dispatch: Callable[[RebalanceKind, frozenset[TopicPartition],
                                     Callable[[BaseException | None], None]], bool],
                 timeout_ms: int) -> None:
        self._consumer = consumer
        self._dispatch = dispatch
        self._timeout_ms = timeout_ms

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._forward("revoked", revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._forward("assigned", assigned)

    async def on_partitions_lost(self, lost: Any) -> None:
        await self._forward("lost", lost)

    async def _forward(self, kind: RebalanceKind, partitions: Any) -> None:
        net = self._consumer._client._net
        manager = self._consumer._client._manager
        future = KFuture()

        def finish(error: BaseException | None) -> None:
            if future.is_done:
                return
            if error is None:
                future.success(None)
            else:
                future.failure(error)

        def done(error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop stopped: nobody waits any more
                net.call_soon_threadsafe(lambda: finish(error))

        tps = frozenset(TopicPartition(tp.topic, tp.partition) for tp in partitions)
        if not self._dispatch(kind, tps, done):
            return
        await manager.wait_for(future, self._timeout_ms)


# -- consumer operations (run on the consumer's thread, or on its I/O loop in a listener) ------


def _ktp(tp: TopicPartition) -> Any:
    return kafka.TopicPartition(tp.topic, tp.partition)


def _tps(partitions: Iterable[Any]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(tp.topic, tp.partition) for tp in partitions)


def existing_partitions(consumer: Any, topic: str) -> set[int]:
    """The partitions of *topic* from the cluster metadata, without auto-creating it.

    ``partitions_for_topic`` asks for every topic's metadata when the topic is not cached, and
    such a request never creates topics.
    """
    return set(consumer.partitions_for_topic(topic))


def topics(consumer: Any) -> set[str]:
    """Every topic the cluster has (a metadata request)."""
    return set(consumer.topics())


def assign(consumer: Any, partitions: Collection[TopicPartition]) -> None:
    """Check that every partition exists, then assign them (an empty list unassigns).

    Raises:
        UnknownTopicError: a topic or partition does not exist.
    """
    by_topic: dict[str, set[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, set()).add(tp.partition)
    for topic, wanted in by_topic.items():
        existing = existing_partitions(consumer, topic)
        if not existing:
            raise UnknownTopicError(topic, detail="it is not in the cluster's metadata")
        missing = sorted(wanted - existing)
        if missing:
            raise UnknownTopicError(topic, missing[0],
                                    detail=f"the topic has partitions {sorted(existing)}")
    consumer.assign([_ktp(tp) for tp in partitions])


def subscribe(consumer: Any, topics: Collection[str], pattern: str | None,
              listener: Any) -> None:
    """Subscribe to *topics* or a regex *pattern*, with kafka-python's listener *listener*."""
    if pattern is not None:
        consumer.subscribe(pattern=pattern, listener=listener)
    else:
        consumer.subscribe(topics=list(topics), listener=listener)


def unsubscribe(consumer: Any) -> None:
    consumer.unsubscribe()


def assignment(consumer: Any) -> frozenset[TopicPartition]:
    return _tps(consumer.assignment())


def subscription(consumer: Any) -> frozenset[str] | None:
    found = consumer.subscription()
    return None if found is None else frozenset(found)


def _require_assigned(consumer: Any, partitions: Iterable[TopicPartition]) -> None:
    assigned = consumer.assignment()
    for tp in partitions:
        if _ktp(tp) not in assigned:
            raise KafkaError(
                f"partition {tp.partition} of {tp.topic!r} is not assigned to this consumer",
                fault="local")


def seek(consumer: Any, tp: TopicPartition, offset: int) -> None:
    _require_assigned(consumer, [tp])
    consumer.seek(_ktp(tp), offset)


def seek_to(consumer: Any, partitions: Collection[TopicPartition], where: str
            ) -> frozenset[TopicPartition]:
    """Seek to the beginning or end of *partitions* (all assigned ones when empty)."""
    _require_assigned(consumer, partitions)
    if not partitions and not consumer.assignment():
        raise KafkaError("no partitions are assigned to this consumer", fault="local")
    args = [_ktp(tp) for tp in partitions]
    if where == "beginning":
        consumer.seek_to_beginning(*args)
    else:
        consumer.seek_to_end(*args)
    return _tps(args) if args else assignment(consumer)


def pause(consumer: Any, partitions: Collection[TopicPartition]) -> None:
    _require_assigned(consumer, partitions)
    consumer.pause(*[_ktp(tp) for tp in partitions])


def resume(consumer: Any, partitions: Collection[TopicPartition],
           rewind: Mapping[TopicPartition, int]) -> None:
    """Seek the partitions in *rewind* back (records dropped at pause time), then resume all."""
    assigned = consumer.assignment()
    for tp, offset in rewind.items():
        ktp = _ktp(tp)
        if ktp in assigned:
            consumer.seek(ktp, offset)
    resumed = [_ktp(tp) for tp in partitions if _ktp(tp) in assigned]
    for ktp in resumed:
        _drop_parked_records(consumer, ktp)
    consumer.resume(*resumed)


def _drop_parked_records(consumer: Any, ktp: Any) -> None:
    """Forget the records kafka-python fetched for a paused partition and kept aside.

    kafka-python 3.0.12 parks a paused partition's fetched data and hands it back after
    ``resume()`` only when its "next partition records" slot is ``None``; but a drained slot keeps
    its (empty) object, so the parked records never come back, and the partition, which has parked
    data, is never fetched again: it stalls for good. Its position was not advanced past the
    parked records, so dropping them just makes the next fetch read them again.
    """
    fetcher = consumer._fetcher
    fetcher._paused_partition_records.pop(ktp, None)
    fetcher._paused_completed_fetches.pop(ktp, None)


def paused(consumer: Any) -> frozenset[TopicPartition]:
    return _tps(consumer.paused())


def position(consumer: Any, tp: TopicPartition) -> int:
    return int(consumer.position(_ktp(tp)))


def committed(consumer: Any, tp: TopicPartition) -> int | None:
    found = consumer.committed(_ktp(tp))
    return None if found is None else int(found)


def edge_offsets(consumer: Any, partitions: Collection[TopicPartition], where: str
                 ) -> dict[TopicPartition, int]:
    args = [_ktp(tp) for tp in partitions]
    found = (consumer.beginning_offsets(args) if where == "beginning"
             else consumer.end_offsets(args))
    return {TopicPartition(tp.topic, tp.partition): int(off) for tp, off in found.items()}


# -- admin ----------------------------------------------------------------------------------------

_TOPIC_ALREADY_EXISTS: Final = kerrors.TopicAlreadyExistsError.errno
_UNKNOWN_TOPIC: Final = kerrors.UnknownTopicOrPartitionError.errno


def _broker_error(code: int, message: str | None, *, topic: str) -> KafkaError:
    cls = kerrors.for_code(code)
    if code == _UNKNOWN_TOPIC:
        return UnknownTopicError(topic)
    detail = f" ({message})" if message else ""
    if issubclass(cls, kerrors.InvalidTopicError):
        return KafkaError(f"invalid topic {topic!r}: {cls.__name__}{detail}", fault="local")
    if issubclass(cls, (kerrors.InvalidPartitionsError, kerrors.InvalidReplicationFactorError,
                        kerrors.InvalidConfigurationError, kerrors.PolicyViolationError)):
        return KafkaError(f"topic {topic!r}: {cls.__name__}{detail}", fault="local")
    return KafkaError(f"topic {topic!r}: {cls.__name__}{detail}", fault="remote")


def create_topics(admin: Any, specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Create topics; those that exist already are skipped, not errors.

    *specs* maps each name to ``num_partitions``, ``replication_factor`` and ``configs``.

    Returns:
        The names that were created now.
    """
    result = admin.create_topics(dict(specs), raise_errors=False)
    created: list[str] = []
    errors: list[KafkaError] = []
    for topic in result["topics"]:
        code = topic.get("error_code", 0)
        if code == 0:
            created.append(topic["name"])
        elif code != _TOPIC_ALREADY_EXISTS:
            errors.append(_broker_error(code, topic.get("error_message"), topic=topic["name"]))
    if errors:
        raise errors[0]
    if created:
        admin.wait_for_topics(created)
    return created


def delete_topics(admin: Any, names: Collection[str], *, missing_ok: bool) -> list[str]:
    """Delete topics; returns the names deleted (unknown ones are skipped with *missing_ok*)."""
    result = admin.delete_topics(list(names), raise_errors=False)
    deleted: list[str] = []
    for topic in result["topics"]:
        code = topic.get("error_code", 0)
        if code == 0:
            deleted.append(topic["name"])
        elif not (code == _UNKNOWN_TOPIC and missing_ok):
            raise _broker_error(code, topic.get("error_message"), topic=topic["name"])
    return deleted


def describe_topics(admin: Any, names: Collection[str] | None) -> list[dict[str, Any]]:
    """Topic metadata dicts from kafka-python; an unknown name raises UnknownTopicError."""
    found = admin.describe_topics(None if names is None else list(names))
    for topic in found:
        code = topic.get("error_code", 0)
        if code:
            raise _broker_error(code, None, topic=topic.get("name") or "?")
    return list(found)


def list_topics(admin: Any) -> list[str]:
    return list(admin.list_topics())


def list_group_offsets(admin: Any, group_id: str) -> dict[TopicPartition, int]:
    """The committed offsets of *group_id* (empty for an unknown group)."""
    found = admin.list_group_offsets(group_id).get(group_id, {})
    return {TopicPartition(tp.topic, tp.partition): int(meta.offset)
            for tp, meta in found.items() if meta.offset >= 0}


def list_groups(admin: Any) -> list[str]:
    return sorted({group["group_id"] for group in admin.list_groups()})


def delete_groups(admin: Any, group_ids: Collection[str]) -> dict[str, str]:
    return {str(group): str(result)
            for group, result in admin.delete_groups(list(group_ids)).items()}


# -- transactions ---------------------------------------------------------------------------------


def init_transactions(producer: Any) -> None:
    """Fence earlier producers with the same ``transactional_id`` and get a producer id."""
    producer.init_transactions()


def begin_transaction(producer: Any) -> None:
    producer.begin_transaction()


def commit_transaction(producer: Any) -> None:
    producer.commit_transaction()


def abort_transaction(producer: Any) -> None:
    producer.abort_transaction()


def group_metadata(consumer: Any) -> Any:
    """The consumer's group membership snapshot, for ``send_offsets_to_transaction``."""
    return consumer.group_metadata()


def send_offsets_to_transaction(producer: Any, offsets: Mapping[TopicPartition, int],
                                metadata: Any) -> None:
    producer.send_offsets_to_transaction(offsets_to_commit(offsets), metadata)


def is_transaction_abort(exc: BaseException | None) -> bool:
    """Whether a record failed only because its transaction was aborted (on purpose)."""
    return isinstance(exc, kerrors.TransactionAbortedError)
