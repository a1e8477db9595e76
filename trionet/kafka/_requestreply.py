"""Request/reply over Kafka: correlation ids and reply-to in headers, one reply consumer.

A :class:`KafkaRequester` owns a producer and one long-lived reply consumer. The consumer reads
the reply topic's partitions by manual assignment (no group, so no rebalance ever pauses it), and
its position is fixed at the end of those partitions *before* the first request goes out, so no
reply can slip past it. Each request carries headers::

    correlation-id   a fresh random id (hex)
    reply-to         the reply topic
    reply-partition  the partition to answer on (when the requester reads only one)
    deadline-ms      when the caller stops waiting (Unix time in ms), if it has a deadline

A responder (:func:`serve_requests`, or :func:`reply` in your own loop) answers on ``reply-to``
with the same ``correlation-id``, and an ``error`` header when its handler failed. The requester
registers its waiter before sending, waits under the caller's own deadline
(``with trio.fail_after(...)``), and drops (and counts) replies that arrive for requests nobody
waits for any more. Responders skip requests whose deadline has passed and run handlers under
the remaining time.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Self

import trio

from .._util import EnterOnce, OneShot
from ..errors import ConfigurationError
from ._admin import KafkaAdmin, NewTopic
from ._consumer import KafkaConsumer
from ._engine import load_engine
from ._errors import KafkaPartitionsRevokedError, KafkaRemoteError, RecordDecodeError
from ._producer import KafkaProducer
from ._records import (
    Deserializer,
    HeadersInput,
    KafkaRecord,
    RecordMetadata,
    Serializer,
    TopicPartition,
    normalize_headers,
)
from ._util import check_servers, hidden_nursery

__all__ = [
    "CORRELATION_ID_HEADER",
    "DEADLINE_HEADER",
    "ERROR_HEADER",
    "REPLY_PARTITION_HEADER",
    "REPLY_TO_HEADER",
    "KafkaRequester",
    "RequesterStatistics",
    "reply",
    "serve_requests",
]

#: Header carrying the request's correlation id (ASCII hex), echoed in the reply.
CORRELATION_ID_HEADER: Final = "correlation-id"
#: Header naming the topic replies go to.
REPLY_TO_HEADER: Final = "reply-to"
#: Header naming the reply partition (ASCII decimal), when the requester reads only one.
REPLY_PARTITION_HEADER: Final = "reply-partition"
#: Header with the time the requester gives up, in milliseconds since the Unix epoch (ASCII).
DEADLINE_HEADER: Final = "deadline-ms"
#: Reply header saying the responder's handler failed: ``"TypeName: message"`` (UTF-8).
ERROR_HEADER: Final = "error"

_RESERVED: Final = frozenset({CORRELATION_ID_HEADER, REPLY_TO_HEADER, REPLY_PARTITION_HEADER,
                              DEADLINE_HEADER, ERROR_HEADER})


@dataclass(frozen=True)
class RequesterStatistics:
    """A snapshot of a requester's counters (see :meth:`KafkaRequester.statistics`)."""

    pending: int
    """Requests waiting for their reply."""
    replies: int
    """Replies handed to a waiting request."""
    late_replies: int
    """Replies dropped because nobody waited for them any more (deadline passed, cancelled)."""


class KafkaRequester(EnterOnce):
    """Send requests over Kafka and wait for their replies.

    Example::

        async with KafkaRequester("127.0.0.1:9092") as requester:
            with trio.fail_after(5):
                answer = await requester.request("rpc.prices", b"AAPL")
            print(answer.value)

    Args:
        bootstrap_servers: ``"host:port"`` or a list of them.
        reply_topic: where replies come back. By default a private topic
            ``trionet-replies-<random>`` (one partition) is created on entry and deleted on exit.
            A named topic is created if missing (one partition) and never deleted.
        reply_partition: read (and ask responders to answer on) only this partition of the
            reply topic, to share one reply topic between requesters; default: all partitions.
        delete_reply_topic: whether to delete the reply topic on exit (default: only the
            private one).
        key_serializer, value_serializer: for request keys and values (see
            :class:`KafkaProducer`).
        key_deserializer, value_deserializer: for reply keys and values (see
            :class:`KafkaConsumer`).
        producer_config: extra producer options (the engine's).
        consumer_config: extra consumer options for the reply consumer (with kafka-python, by
            default ``fetch_max_wait_ms=100``, which bounds reply latency on brokers that hold
            fetches).
        backend: the engine of the three clients (``"kafka-python"`` by default).
        **config: the engine's options, each given to the clients that know it
            (``security_protocol``, ``sasl_*``, ``ssl_*``, ``client_id``, ``acks``...).
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        *,
        reply_topic: str | None = None,
        reply_partition: int | None = None,
        delete_reply_topic: bool | None = None,
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
        producer_config: dict[str, Any] | None = None,
        consumer_config: dict[str, Any] | None = None,
        backend: str | None = None,
        **config: Any,
    ) -> None:
        engine = load_engine(backend)
        admin_names = engine.option_names("admin")
        producer_names = engine.option_names("producer")
        consumer_names = engine.option_names("consumer")
        if reply_topic is not None and (not isinstance(reply_topic, str) or not reply_topic):
            raise ConfigurationError(f"reply_topic must be a non-empty string, not {reply_topic!r}")
        if reply_partition is not None and (
            not isinstance(reply_partition, int) or reply_partition < 0
        ):
            raise ConfigurationError(
                f"reply_partition must be an int >= 0, not {reply_partition!r}")
        self._servers = check_servers(bootstrap_servers)
        self._private = reply_topic is None
        self._reply_topic = reply_topic or f"trionet-replies-{uuid.uuid4().hex}"
        self._reply_partition = reply_partition
        self._delete_reply_topic = self._private if delete_reply_topic is None \
            else delete_reply_topic
        unknown = sorted(set(config) - admin_names - producer_names - consumer_names)
        if unknown:
            raise ConfigurationError(
                f"unknown {engine.name} option(s) {', '.join(unknown)}")
        self._admin = KafkaAdmin(self._servers, backend=backend, **_only(config, admin_names))
        self._producer = KafkaProducer(
            self._servers, key_serializer=key_serializer, value_serializer=value_serializer,
            backend=backend, **{**_only(config, producer_names), **(producer_config or {})},
        )
        consumer_options = {**_only(config, consumer_names), **(consumer_config or {})}
        if "fetch_max_wait_ms" in consumer_names:
            consumer_options.setdefault("fetch_max_wait_ms", 100)
        self._consumer = KafkaConsumer(
            bootstrap_servers=self._servers, key_deserializer=key_deserializer,
            value_deserializer=value_deserializer, backend=backend, **consumer_options,
        )
        self._pending: dict[bytes, OneShot[KafkaRecord]] = {}
        self._replies = 0
        self._late = 0
        self._reply_headers: list[tuple[str, bytes]] = []
        self._open = False

    @property
    def reply_topic(self) -> str:
        """The topic replies come back on."""
        return self._reply_topic

    def statistics(self) -> RequesterStatistics:
        """The requester's counters."""
        return RequesterStatistics(len(self._pending), self._replies, self._late)

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        async with self._admin as admin:
            await admin.create_topics([NewTopic(self._reply_topic)])
            try:
                partitions = await self._reply_partitions(admin)
                async with self._producer, self._consumer as consumer, \
                        hidden_nursery() as nursery:
                    await consumer.assign(partitions)
                    # Fix the position at the current end before any request is sent, so that
                    # no reply can arrive before the consumer knows where it starts.
                    await consumer.seek_to_end(*partitions)
                    for tp in partitions:
                        await consumer.position(tp)
                    self._reply_headers = [(REPLY_TO_HEADER, self._reply_topic.encode())]
                    if self._reply_partition is not None:
                        self._reply_headers.append(
                            (REPLY_PARTITION_HEADER, str(self._reply_partition).encode()))
                    nursery.start_soon(self._read_replies, consumer)
                    self._open = True
                    try:
                        yield self
                    finally:
                        self._open = False
                        nursery.cancel_scope.cancel()
            finally:
                if self._delete_reply_topic:
                    with trio.CancelScope(shield=True):
                        await admin.delete_topics([self._reply_topic], missing_ok=True)

    async def _reply_partitions(self, admin: KafkaAdmin) -> list[TopicPartition]:
        description = await admin.describe_topic(self._reply_topic)
        numbers = [p.partition for p in description.partitions]
        if self._reply_partition is not None:
            if self._reply_partition not in numbers:
                raise ConfigurationError(
                    f"reply topic {self._reply_topic!r} has no partition {self._reply_partition}"
                    f" (it has {numbers})")
            numbers = [self._reply_partition]
        return [TopicPartition(self._reply_topic, number) for number in numbers]

    async def _read_replies(self, consumer: KafkaConsumer) -> None:
        while True:
            try:
                records = await consumer.getmany()
            except RecordDecodeError as exc:
                # Error replies, and replies to handlers that returned None, carry an empty
                # value that the deserializer may refuse; anything else undecodable is reported
                # to its requester.
                record = exc.record
                if record.value == b"" and record.key is None:
                    self._dispatch(record._replace(value=None), None)
                else:
                    self._dispatch(record, exc)
                continue
            for record in records:
                self._dispatch(record, None)

    def _dispatch(self, record: KafkaRecord, error: RecordDecodeError | None) -> None:
        correlation_id = record.header(CORRELATION_ID_HEADER)
        waiter = None if correlation_id is None else self._pending.pop(correlation_id, None)
        if waiter is None:
            self._late += 1
            return
        self._replies += 1
        if error is not None and record.header(ERROR_HEADER) is None:
            waiter.fail(error)  # the responder's error, if any, explains more than ours
        else:
            waiter.set(record)

    async def request(
        self,
        topic: str,
        value: Any = None,
        *,
        key: Any = None,
        headers: HeadersInput | None = None,
        partition: int | None = None,
    ) -> KafkaRecord:
        """Send a request to *topic* and return the reply record.

        There is no built-in timeout: wrap the call in ``trio.fail_after`` (or any cancel
        scope). The deadline travels in the ``deadline-ms`` header so that responders can skip
        requests nobody waits for; a reply arriving after the caller gave up is dropped.

        Raises:
            KafkaRemoteError: the responder's handler failed.
            KafkaDeliveryError: the request could not be sent.
            trio.ClosedResourceError: the requester is not open.
        """
        if not self._open:
            raise trio.ClosedResourceError("the KafkaRequester is not open")
        extra = normalize_headers(headers)
        for name, _ in extra:
            if name in _RESERVED:
                raise ConfigurationError(f"header {name!r} is reserved for request/reply")
        correlation_id = uuid.uuid4().hex.encode()
        all_headers = [*extra, (CORRELATION_ID_HEADER, correlation_id), *self._reply_headers]
        deadline = trio.current_effective_deadline()
        if deadline != float("inf"):
            remaining = max(0.0, deadline - trio.current_time())
            all_headers.append(
                (DEADLINE_HEADER, str(int((time.time() + remaining) * 1000)).encode()))
        waiter: OneShot[KafkaRecord] = OneShot()
        self._pending[correlation_id] = waiter  # before sending: the reply may be quick
        try:
            await self._producer.send(topic, value, key=key, headers=all_headers,
                                      partition=partition)
            record = await waiter.wait()  # raises the reply's decoding error
        finally:
            self._pending.pop(correlation_id, None)
        error = record.header(ERROR_HEADER)
        if error is not None:
            remote_type, _, message = error.decode("utf-8", "replace").partition(": ")
            raise KafkaRemoteError(message, remote_type=remote_type, topic=topic)
        return record


def _only(config: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key in known}


def _request_deadline(record: KafkaRecord) -> float | None:
    """The request's deadline as a trio clock value, or None."""
    raw = record.header(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        deadline_ms = int(raw)
        remaining = deadline_ms / 1000 - time.time()
    except (ValueError, OverflowError):  # not a number, or too large for a float
        return None
    return trio.current_time() + remaining


async def reply(producer: KafkaProducer, request: KafkaRecord, value: Any = None, *,
                key: Any = None, headers: HeadersInput | None = None,
                error: BaseException | None = None) -> RecordMetadata | None:
    """Answer *request* on its ``reply-to`` topic, with its correlation id.

    Args:
        producer: the producer to send with (its serializers apply to *value* and *key*).
        request: the request record.
        value: the reply's value.
        key: the reply's key.
        headers: extra headers.
        error: report this failure instead of a value (the requester raises
            :class:`~trionet.kafka.KafkaRemoteError`).

    Returns:
        Where the reply was written, or None if *request* is not a request (no ``reply-to`` or
        ``correlation-id`` header).
    """
    reply_to = request.header(REPLY_TO_HEADER)
    correlation_id = request.header(CORRELATION_ID_HEADER)
    if reply_to is None or correlation_id is None:
        await trio.lowlevel.checkpoint()
        return None
    partition_raw = request.header(REPLY_PARTITION_HEADER)
    partition = int(partition_raw) if partition_raw and partition_raw.isdigit() else None
    out = normalize_headers(headers)
    out.append((CORRELATION_ID_HEADER, correlation_id))
    topic = reply_to.decode("utf-8", "replace")
    if error is not None:
        out.append((ERROR_HEADER, f"{type(error).__name__}: {error}".encode()))
        return await producer._send_bytes(topic, b"", None, out, partition)
    if value is None and key is None:
        # A record needs a key or a value: an empty value, past the serializers.
        return await producer._send_bytes(topic, b"", None, out, partition)
    return await producer.send(topic, value, key=key, headers=out, partition=partition)


async def serve_requests(
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    handler: Callable[[KafkaRecord], Awaitable[Any]],
    *,
    commit: bool = True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer every request *consumer* reads with ``await handler(record)``, for ever.

    Use with ``nursery.start`` (it reports started at once) or await it. Requests are handled
    one at a time, in order. The handler's return value is the reply's value (serialized by
    *producer*); ``None`` sends an empty value, which a requester with a value deserializer
    receives as ``None``. A handler exception is sent back as an ``error`` header (the
    requester raises :class:`~trionet.kafka.KafkaRemoteError`); a request whose deadline has
    passed is skipped, and a handler is cancelled when the requester's deadline passes (no reply
    is sent then). Records without request headers are skipped. With *commit* (and a consumer
    group), the offset is committed after each answered or skipped request; after a rebalance
    that took partitions away, the requests handed out before it are read (and answered) again by
    their new owner.

    Args:
        consumer: subscribed to the request topic(s).
        producer: sends the replies.
        handler: returns the reply value for a request record.
        commit: commit after each request.
        task_status: for ``nursery.start``.
    """
    task_status.started()
    commit = commit and consumer.group_id is not None
    async for record in consumer:
        if record.header(REPLY_TO_HEADER) is not None and \
                record.header(CORRELATION_ID_HEADER) is not None:
            await _answer(producer, record, handler)
        if commit:
            # After a rebalance (a broker restart...), those requests come again to their owner.
            with contextlib.suppress(KafkaPartitionsRevokedError):
                await consumer.commit()


async def _answer(producer: KafkaProducer, record: KafkaRecord,
                  handler: Callable[[KafkaRecord], Awaitable[Any]]) -> None:
    deadline = _request_deadline(record)
    if deadline is not None and deadline <= trio.current_time():
        return  # nobody waits for this one any more
    with trio.CancelScope(deadline=deadline if deadline is not None else float("inf")) as scope:
        try:
            value = await handler(record)
        except Exception as exc:
            await reply(producer, record, error=exc)
            return
    if scope.cancelled_caught:
        return
    await reply(producer, record, value)
