"""The kafka-python engine (``backend="kafka-python"``, the default): producer and admin engines,
and the :data:`ENGINE` object that builds them (the consumer engine is
:mod:`._kafka_python_consumer`).

kafka-python's producer is thread-safe and does its network I/O on its own sender thread, so
the trio side calls ``send`` directly: appending a record to kafka-python's buffer does not block
once the topic's metadata is known. A record's ``FutureRecordMetadata`` is its
:class:`~._engine.DeliveryHandle` as it is: the sender thread finishes it without any crossing
into trio, and a :meth:`KafkaPythonProducer.watch` asks it for one wake-up. Blocking steps (the
bootstrap, a metadata lookup, transactions, the final flush and close) and every admin call run
on worker threads through :func:`trionet._threads.run_blocking`; kafka-python's admin client is
thread-safe (it runs its own I/O thread and each call blocks on an event).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

import trio

from .._threads import TrioPortal, run_blocking
from ..errors import ConfigurationError, KafkaError
from . import _kafka_python as kp
from ._engine import ConsumerHooks, EngineConfig, Kind
from ._errors import UnknownTopicError
from ._kafka_python_consumer import KafkaPythonConsumer
from ._options import ConsumerOptions
from ._records import RecordMetadata, TopicPartition
from ._util import DEFAULT_BOOTSTRAP_TIMEOUT_MS, servers_text, with_defaults

__all__ = ["ENGINE", "KafkaPythonAdmin", "KafkaPythonEngine", "KafkaPythonProducer"]

_DEFAULT_MAX_BLOCK_MS: Final = 10_000
_DEFAULT_ADMIN_REQUEST_TIMEOUT_MS: Final = 10_000


class KafkaPythonEngine:
    """kafka-python 3.0 behind trionet's Kafka API."""

    name = "kafka-python"
    version: str = kp.KAFKA_PYTHON_VERSION

    _OPTIONS: Final = {
        "producer": kp.PRODUCER_OPTIONS,
        "consumer": kp.CONSUMER_OPTIONS,
        "admin": kp.ADMIN_OPTIONS,
    }

    def option_names(self, kind: Kind) -> frozenset[str]:
        return self._OPTIONS[kind]

    def configure(self, kind: Kind, config: Mapping[str, Any], *, servers: str | list[str],
                  group_id: str | None = None, handled: Collection[str] = ()) -> EngineConfig:
        kp.check_options(kind, config, self._OPTIONS[kind], handled)
        if kind == "consumer":
            settings = with_defaults(config, enable_auto_commit=False,
                                     bootstrap_timeout_ms=DEFAULT_BOOTSTRAP_TIMEOUT_MS)
            settings["group_id"] = group_id
        elif kind == "producer":
            settings = with_defaults(config, bootstrap_timeout_ms=DEFAULT_BOOTSTRAP_TIMEOUT_MS,
                                     max_block_ms=_DEFAULT_MAX_BLOCK_MS)
            if (settings.get("acks", "all") not in ("all", -1)
                    and "enable_idempotence" not in config):
                settings["enable_idempotence"] = False
        else:
            settings = with_defaults(config, bootstrap_timeout_ms=DEFAULT_BOOTSTRAP_TIMEOUT_MS,
                                     request_timeout_ms=_DEFAULT_ADMIN_REQUEST_TIMEOUT_MS)
        settings["bootstrap_servers"] = servers
        return EngineConfig(
            options=settings,
            servers=servers_text(servers),
            max_records=int(settings.get("max_poll_records", 500)),
            auto_commit=bool(settings.get("enable_auto_commit")),
            request_timeout_ms=int(settings.get("request_timeout_ms", 30_000)),
            rebalance_timeout_ms=int(settings.get("max_poll_interval_ms", 300_000)),
            transactional=bool(settings.get("transactional_id")),
            max_block_ms=int(settings.get("max_block_ms", _DEFAULT_MAX_BLOCK_MS)),
        )

    def translate(self, exc: BaseException, *, servers: str, topic: str | None = None,
                  operation: str = "") -> BaseException:
        return kp.translated(exc, servers=servers, topic=topic, operation=operation)

    def producer(self, config: EngineConfig) -> KafkaPythonProducer:
        return KafkaPythonProducer(config)

    def consumer(self, config: EngineConfig, options: ConsumerOptions,
                 hooks: ConsumerHooks) -> KafkaPythonConsumer:
        return KafkaPythonConsumer(config, options, hooks)

    def admin(self, config: EngineConfig) -> KafkaPythonAdmin:
        return KafkaPythonAdmin(config)


#: The engine registered as ``"kafka-python"``.
ENGINE: Final = KafkaPythonEngine()


class FutureBatch:
    """A :class:`~._engine.BatchHandle` over the ``FutureRecordMetadata`` of each record (the
    sender thread finishes them, as for single records); checked from the first future not
    known to be done, so each future is looked at about once."""

    __slots__ = ("_first", "_futures", "_next")

    def __init__(self, futures: list[Any]) -> None:
        self._futures = futures
        self._next = 0  # every future before this one is done
        self._first: Any = None  # the first failed future (once done)

    @property
    def count(self) -> int:
        return len(self._futures)

    def pending(self) -> Any:
        """The first future not done yet (None: all are)."""
        futures, n = self._futures, self._next
        while n < len(futures) and futures[n].is_done:
            n += 1
        self._next = n
        return futures[n] if n < len(futures) else None

    def last(self) -> Any:
        """The batch's last future."""
        return self._futures[-1]

    @property
    def is_done(self) -> bool:
        return self.pending() is None

    @property
    def exception(self) -> BaseException | None:
        if self._first is None:
            if not self.is_done:
                return None
            self._first = next((f for f in self._futures if f.exception is not None), False)
        return self._first.exception if self._first else None

    @property
    def failed(self) -> int:
        return sum(1 for f in self._futures if f.exception is not None)


class KafkaPythonProducer:
    """A :class:`~._engine.ProducerEngine` on ``kafka.KafkaProducer`` (see the module)."""

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._servers = config.servers
        self._kp: Any = None
        self._portal: TrioPortal | None = None

    async def start(self) -> None:
        self._portal = TrioPortal()
        trap = kp.ClientTrap()
        # (a producer built although the start was cancelled is closed, not left running)
        self._kp = await run_blocking(self._build, trap, on_cancel=trap.abort,
                                      on_discard=functools.partial(kp.close_producer, timeout=0))
        # kafka-python's send and the metadata check, called directly (no frame of ours per
        # record): send does not block once ready() holds.
        self.send = self._kp.send  # type: ignore[method-assign]
        self.ready = functools.partial(kp.metadata_cached, self._kp)  # type: ignore[method-assign]

    def _build(self, trap: kp.ClientTrap) -> Any:  # worker thread
        producer = kp.build_producer(self._config.options, trap, servers=self._servers)
        if self._config.transactional:
            try:
                kp.init_transactions(producer)
            except BaseException as exc:
                kp.close_producer(producer, timeout=0)
                raise kp.translated(exc, servers=self._servers,  # noqa: B904
                                    operation="initializing transactions")
        return producer

    async def close(self, flush_seconds: float) -> bool:
        producer = self._kp
        if producer is None:
            await trio.lowlevel.checkpoint()
            return True
        flushed = await run_blocking(self._close, producer, flush_seconds)
        self._kp = None
        return flushed

    @staticmethod
    def _close(producer: Any, timeout: float) -> bool:  # worker thread
        return kp.close_producer(producer, timeout=timeout)

    def ready(self, topic: str) -> bool:
        return kp.metadata_cached(self._kp, topic)

    def send(self, topic: str, value: Any, key: Any, headers: list[tuple[str, bytes]],
             partition: int | None, timestamp_ms: int | None) -> Any:
        raise trio.ClosedResourceError("the Kafka producer is not open")  # replaced by start()

    def send_batch(self, topic: str, values: Sequence[Any], key: Any,
                   headers: list[tuple[str, bytes]], partition: int | None
                   ) -> tuple[FutureBatch, Exception | None]:
        send = self._kp.send
        futures: list[Any] = []
        add = futures.append
        try:
            for value in values:
                add(send(topic, value, key, headers, partition, None))
        except Exception as exc:
            return FutureBatch(futures), exc
        return FutureBatch(futures), None

    def is_queue_full(self, exc: Exception) -> bool:
        return False  # kafka-python's send waits for buffer memory itself (max_block_ms)

    def send_error(self, exc: Exception, topic: str, partition: int | None) -> BaseException:
        error: BaseException
        if isinstance(exc, ValueError) and "partition" in str(exc).lower():
            error = UnknownTopicError(topic, partition, detail=str(exc))
        elif isinstance(exc, (TypeError, ValueError)):
            error = ConfigurationError(f"cannot send to {topic!r}: {exc}")
        else:
            error = kp.delivery_error(exc, topic=topic, partition=partition,
                                      servers=self._servers)
        if error is not exc:
            error.__cause__ = exc
            error.__suppress_context__ = True
        return error

    def known_partitions(self, topic: str) -> set[int] | None:
        return kp.known_partitions(self._kp, topic)

    async def partitions_for(self, topic: str) -> set[int]:
        return await run_blocking(self._lookup_partitions, topic)

    def _lookup_partitions(self, topic: str) -> set[int]:  # worker thread
        try:
            return kp.partitions_for(self._kp, topic)
        except BaseException as exc:
            error = kp.translated(exc, servers=self._servers, topic=topic,
                                  operation=f"looking up topic {topic!r}")
            if isinstance(error, trio.TooSlowError):
                raise UnknownTopicError(
                    topic,
                    detail=f"no metadata within max_block_ms={self._config.max_block_ms} "
                    "(does it exist? is auto-creation disabled?)",
                ) from exc
            raise error  # noqa: B904 (translated() set the cause)

    def watch(self, handle: Any, wake: Callable[[], object]) -> None:
        portal = self._portal
        assert portal is not None

        def woken(_: object) -> None:  # sender thread, or at once if the future is done
            portal.call_soon(wake)

        if type(handle) is FutureBatch:
            # One wake-up when its last record is done (as a flush does: the others are then
            # done, or nearly), else when its first pending one is; the caller checks again.
            first = handle.pending()
            if first is None:
                portal.call_soon(wake)
                return
            last = handle.last()
            handle = first if last.is_done else last
        kp.watch_delivery(handle, woken, woken)

    def metadata(self, handle: Any) -> RecordMetadata:
        return kp.record_metadata(handle.value)

    def failure(self, handle: Any, topic: str | None = None,
                partition: int | None = None) -> KafkaError:
        if topic is None:
            topic, partition = kp.record_partition(handle)
        return kp.delivery_error(handle.exception, topic=topic, partition=partition,
                                 servers=self._servers)

    def is_transaction_abort(self, error: BaseException | None) -> bool:
        return kp.is_transaction_abort(error)

    async def begin_transaction(self) -> None:
        try:
            kp.begin_transaction(self._kp)
        except BaseException as exc:
            raise kp.translated(exc, servers=self._servers,  # noqa: B904
                                operation="beginning a transaction")

    async def commit_transaction(self) -> None:
        await run_blocking(self._transaction_call, kp.commit_transaction,
                           "committing the transaction")

    async def abort_transaction(self) -> None:
        await run_blocking(self._transaction_call, kp.abort_transaction,
                           "aborting the transaction")

    async def send_offsets_to_transaction(self, offsets: Mapping[TopicPartition, int],
                                          group_metadata: Any) -> None:
        await run_blocking(self._transaction_call, kp.send_offsets_to_transaction,
                           "sending offsets to the transaction", offsets, group_metadata)

    def _transaction_call(self, fn: Callable[..., None], what: str, *args: Any) -> None:
        try:
            fn(self._kp, *args)
        except BaseException as exc:
            raise kp.translated(exc, servers=self._servers, operation=what)  # noqa: B904


class KafkaPythonAdmin:
    """An :class:`~._engine.AdminEngine` on ``kafka.KafkaAdminClient``."""

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._servers = config.servers
        self._admin: Any = None

    async def start(self) -> None:
        trap = kp.ClientTrap()
        self._admin = await run_blocking(self._build, trap, on_cancel=trap.abort,
                                         on_discard=kp.close_admin)

    def _build(self, trap: kp.ClientTrap) -> Any:  # worker thread
        return kp.build_admin(self._config.options, trap, servers=self._servers)

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await run_blocking(kp.close_admin, admin)

    async def _call(self, operation: str, fn: Callable[..., Any], *args: Any,
                    topic: str | None = None, **kwargs: Any) -> Any:
        admin = self._admin
        if admin is None:
            raise trio.ClosedResourceError("the Kafka admin client is not open")

        def call() -> Any:
            try:
                return fn(admin, *args, **kwargs)
            except BaseException as exc:
                raise kp.translated(  # noqa: B904 (translated() sets the cause)
                    exc, servers=self._servers, topic=topic, operation=operation
                )

        return await run_blocking(call)

    async def create_topics(self, specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
        created: list[str] = await self._call("creating topics", kp.create_topics, specs)
        return created

    async def delete_topics(self, names: Collection[str], *, missing_ok: bool) -> list[str]:
        deleted: list[str] = await self._call("deleting topics", kp.delete_topics, names,
                                              missing_ok=missing_ok)
        return deleted

    async def list_topics(self) -> list[str]:
        found: list[str] = await self._call("listing topics", kp.list_topics)
        return found

    async def describe_topics(self, names: Collection[str] | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._call("describing topics", kp.describe_topics,
                                                       names)
        return found

    async def list_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        offsets: dict[TopicPartition, int] = await self._call(
            "listing group offsets", kp.list_group_offsets, group_id)
        return offsets

    async def list_groups(self) -> list[str]:
        groups: list[str] = await self._call("listing groups", kp.list_groups)
        return groups

    async def delete_groups(self, group_ids: Collection[str]) -> dict[str, str]:
        results: dict[str, str] = await self._call("deleting groups", kp.delete_groups,
                                                   group_ids)
        return results
