"""The socket interface (spa_dat's ``SpaSocket``), socket providers and their factory.

A :class:`BusSocket` is one connection to a broker: ``publish``, ``subscribe``,
``unsubscribe``, ``request`` and ``reply``, and the messages of its subscriptions through
``receive()`` / ``async for``. Providers implement five small hooks (connect, disconnect, send,
subscribe, unsubscribe, plus opening the reply route); everything else, envelopes, topic checks,
request/response correlation and malformed-message handling, lives here once for all brokers.

Request/response: each socket has one reply topic base, ``_trionet/reply/<client id>``, and
one long-lived subscription to ``<base>/+`` opened at its first request. A request goes out
with a fresh correlation id and ``response_topic = <base>/<correlation id>``, so a responder
that only copies ``response_topic`` (as spa_dat's examples do) still gets its reply matched. A
reply that arrives after its request gave up is dropped and counted.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import hashlib
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Self, TypeAlias, TypeVar

import trio

from .. import metrics as _metrics, tracing as _tracing
from .._util import EnterOnce, OneShot, reraise_single
from ..errors import ConfigurationError
from ..observability import CORRELATION_HEADER, current_correlation_id
from ._config import BusConfig, Topics
from ._errors import BusClosed, BusError, EnvelopeError, RequestTimeout
from ._message import (
    BusMessage,
    EnvelopeCodec,
    PayloadInput,
    _encode_envelope,
    _timeout_ms,
    decode_envelope,
)
from ._payload import as_message
from ._topics import check_topic, normalize_topics

__all__ = [
    "REPLY_PREFIX",
    "BusSocket",
    "Delivery",
    "SocketProvider",
    "SocketStatistics",
    "SpaSocket",
]

logger = logging.getLogger("trionet.bus")

#: Topics under this prefix carry replies; the bus routes them to the requesting socket.
REPLY_PREFIX: Final = "_trionet/reply"
_RESERVED: Final = "_trionet/"
#: How long closing a socket may take (flushing, DISCONNECT, committing offsets), in seconds.
CLOSE_TIMEOUT: Final = 5.0

AckFn: TypeAlias = Callable[[], Awaitable[None]]
#: What a transport hands the socket: (transport topic, envelope bytes or message, ack or None,
#: when it arrived). The arrival time (:func:`trio.current_time`) is where a deadline that
#: travelled in envelope bytes starts counting, so that time spent in the socket's queue counts
#: (a message object carries its own deadline; transports that hand those over pass 0.0).
Inbound: TypeAlias = tuple[str, "bytes | BusMessage", "AckFn | None", float]

#: Put into a socket's queue to wake its reader (skipped by everyone).
WAKEUP: Final[Inbound] = ("", b"", None, 0.0)

ProviderT = TypeVar("ProviderT", bound="SocketProvider")


def arrival_time(data: bytes | BusMessage) -> float:
    """The last element of an :data:`Inbound` item handing over *data* now: the current
    :func:`trio.current_time` for envelope bytes (their deadline counts from it), 0.0 for
    message objects (they carry their own deadline)."""
    return 0.0 if isinstance(data, BusMessage) else trio.current_time()


class _Unset(enum.Enum):
    token = 0


_UNSET: Final = _Unset.token


class Delivery:
    """A received message and the means to acknowledge it (used by the application runner).

    Attributes:
        message: the decoded message.
    """

    __slots__ = ("_ack", "message")

    def __init__(self, message: BusMessage, ack: AckFn | None) -> None:
        self.message = message
        self._ack = ack

    async def ack(self) -> None:
        """Acknowledge the message to the broker (once; later calls do nothing)."""
        ack, self._ack = self._ack, None
        if ack is not None:
            await ack()


@dataclass(slots=True)
class SocketStatistics:
    """Counters of one socket.

    Attributes:
        published: messages published (requests and replies included).
        received: messages received from subscriptions and handed out.
        malformed: received payloads that were not bus envelopes (logged and skipped).
        replies: replies matched to a waiting request.
        late_replies: replies for no waiting request (timed out, cancelled, or duplicates).
        pending_requests: requests waiting for their reply right now.
    """

    published: int = 0
    received: int = 0
    malformed: int = 0
    replies: int = 0
    late_replies: int = 0
    pending_requests: int = 0



def _safe_level(text: str) -> str:
    return text.replace("/", "_").replace("+", "_").replace("#", "_") or "_"


# -- client ids ----------------------------------------------------------------------------------
#
# A socket's client id is derived from the configured base (``client_id=`` in the URL) and the
# socket's name (the application's name), so that it is stable across restarts (a persistent
# MQTT session resumes, a Kafka reply topic is reused), and it is unique:
#
# * distinct names give distinct ids: a name made only of ``[A-Za-z0-9._-]`` (and not ending like
#   a hash suffix) is used as it is; any other name is written with the unsafe characters
#   replaced and ``--`` and a hash of the exact name appended (``a/b`` -> ``a_b--3kTz0qYp``), so
#   that ``a/b`` and ``a_b`` no longer meet (a safe name ending like that is hashed too);
# * sockets open at the same time in one process never share an id: a second socket with the
#   same base and name (to the same broker) gets the ordinal ``-2`` (``-3``, ...), claimed when
#   it opens and released when it closes, so the first one keeps the stable id;
# * ``compact`` ids (MQTT 3.1.1, whose brokers need only accept 1-23 characters of
#   ``[0-9a-zA-Z]``) are at most 23 alphanumerics: up to 15 characters of the base and name,
#   then 8 characters of a hash of the exact (base, name, ordinal).

_LABEL_SAFE: Final = re.compile(r"[A-Za-z0-9._-]+")
_LOOKS_HASHED: Final = re.compile(r".*--[0-9A-Za-z]{8}")
_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: The longest client id MQTT 3.1.1 obliges a broker to accept (all alphanumerics).
COMPACT_ID_LENGTH: Final = 23


def _hash62(text: str, size: int = 8) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    number = int.from_bytes(digest[:8], "big")
    digits = []
    for _ in range(size):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(digits)


def client_label(name: str) -> str:
    """*name* as it appears in client ids, consumer groups and reply topics: itself when made
    of ``[A-Za-z0-9._-]``, else cleaned and suffixed with a hash of the exact name (distinct
    names never share a label)."""
    if _LABEL_SAFE.fullmatch(name) and not _LOOKS_HASHED.fullmatch(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64]
    return f"{cleaned}--{_hash62(name)}"


def new_client_id(base: str | None, name: str | None, *, ordinal: int = 1,
                  compact: bool = False) -> str:
    """The client id of a socket named *name* (default ``"socket"``).

    With a *base*: ``{base}-{label}`` (``-{ordinal}`` appended from the second concurrent
    socket on), stable across runs; without: a random id. *compact* ids are at most
    :data:`COMPACT_ID_LENGTH` alphanumerics (MQTT 3.1.1).
    """
    name = name or "socket"
    if compact:
        if not base:
            return ("trionet" + uuid.uuid4().hex)[:COMPACT_ID_LENGTH]
        readable = re.sub(r"[^A-Za-z0-9]", "", base + name)[:COMPACT_ID_LENGTH - 8]
        return readable + _hash62(f"{base}\x00{name}\x00{ordinal}")
    if not base:
        return f"trionet-{client_label(name)}-{uuid.uuid4().hex[:12]}"
    stem = f"{client_label(base)}-{client_label(name)}"
    return stem if ordinal == 1 else f"{stem}-{ordinal}"


#: Client ids of the sockets open in this process, by broker.
_claimed: set[tuple[str, str]] = set()


def _claim_client_id(endpoint: str, base: str | None, name: str | None, compact: bool) -> str:
    ordinal = 1
    while True:
        client_id = new_client_id(base, name, ordinal=ordinal, compact=compact)
        if (endpoint, client_id) not in _claimed:
            _claimed.add((endpoint, client_id))
            return client_id
        ordinal += 1


_NEW, _OPENING, _OPEN, _CLOSED = "new", "opening", "open", "closed"


class BusSocket(EnterOnce, abc.ABC):
    """One connection to a message broker (spa_dat's ``SpaSocket``).

    Made by a provider (:meth:`SocketProvider.create_socket`) and used as an async context
    manager, which connects, subscribes to the initial topics, and on exit closes the
    connection (within :data:`CLOSE_TIMEOUT` seconds, even when cancelled)::

        async with provider.create_socket(["sensors/+/temp"]) as socket:
            await socket.publish(BusMessage(b"21.5", "sensors/kitchen/temp"))
            message = await socket.receive()

    Inside a :class:`~trionet.bus.DistributedApplication` the application makes, enters and
    closes the sockets; handlers get theirs as the ``socket`` argument.

    Attributes:
        name: the application (or caller) the socket belongs to.
        client_id: the socket's unique id on the broker.
        statistics: the socket's :class:`SocketStatistics`.
    """

    _entered_twice = BusError

    def __init__(
        self,
        config: BusConfig,
        *,
        topics: Sequence[str] = (),
        name: str | None = None,
        client_id_base: str | None = None,
        compact_client_id: bool = False,
        endpoint: str = "",
        default_codec: EnvelopeCodec | None = "msgpack",
    ) -> None:
        self.config = config
        self.name = name or "socket"
        self._id_base = client_id_base
        self._compact_id = compact_client_id
        self._endpoint = endpoint
        self._claimed_id: tuple[str, str] | None = None
        # Provisional (what the socket will most likely be): the id is claimed on entry.
        self.client_id = new_client_id(client_id_base, name, compact=compact_client_id)
        self.statistics = SocketStatistics()
        self._codec: EnvelopeCodec | None = config.codec or default_codec
        self._client_name = config.client_name
        self._request_timeout = config.request_timeout
        self._initial_topics = normalize_topics(topics)
        self._subscriptions: dict[str, None] = {}
        self._pending: dict[str, OneShot[BusMessage]] = {}
        self._reply_base = ""
        self._set_client_id(self.client_id)
        self._reply_open = False
        self._reply_lock = trio.Lock()
        self._correlation_prefix = uuid.uuid4().hex[:16]
        self._request_count = 0
        self._publish_count = 0
        self._checked_topics: set[str] = set()
        self._state = _NEW
        send, receive = trio.open_memory_channel[Inbound](config.max_queue)
        self._inbound_send: trio.MemorySendChannel[Inbound] = send
        self._inbound_receive: trio.MemoryReceiveChannel[Inbound] = receive

    # -- provider hooks -------------------------------------------------------------------------

    @abc.abstractmethod
    def _connection(self, nursery: trio.Nursery) -> AbstractAsyncContextManager[None]:
        """Connect on entry, close on exit (cleanup must be shielded and bounded in time).

        Background readers may run in *nursery*; they put subscription messages into
        ``self._inbound_send`` (waiting when it is full) and hand replies (transport topics
        under :data:`REPLY_PREFIX`) to :meth:`_route_reply`. They must be stopped before the
        context manager exits.
        """

    @abc.abstractmethod
    async def _send(self, topic: str, data: bytes | BusMessage) -> None:
        """Publish envelope bytes (or, for codec ``None``, a private message copy)."""

    async def _send_with_key(self, topic: str, data: bytes | BusMessage, key: str | None
                             ) -> None:
        """Publish a message that has an ordering key (Kafka makes it the record key)."""
        await self._send(topic, data)

    @abc.abstractmethod
    async def _subscribe(self, filters: Sequence[str]) -> None:
        """Subscribe to new filters (already checked and not yet subscribed)."""

    @abc.abstractmethod
    async def _unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe from filters that are subscribed."""

    async def _open_reply_route(self) -> None:
        """Start receiving replies sent to ``<reply base>/<correlation id>``."""
        await self._subscribe([f"{self._reply_base}/+"])

    def _set_client_id(self, client_id: str) -> None:
        """Take *client_id* (and what derives from it, such as the reply topic)."""
        self.client_id = client_id
        self._reply_base = f"{REPLY_PREFIX}/{_safe_level(client_id)}"

    def _claim_id(self) -> None:
        if self._id_base:
            client_id = _claim_client_id(self._endpoint, self._id_base, self.name,
                                         self._compact_id)
            self._claimed_id = (self._endpoint, client_id)
            if client_id != self.client_id:
                self._set_client_id(client_id)

    def _release_id(self) -> None:
        claimed, self._claimed_id = self._claimed_id, None
        if claimed is not None:
            _claimed.discard(claimed)

    # -- lifecycle ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        self._state = _OPENING
        try:
            self._claim_id()
            async with trio.open_nursery() as nursery:
                try:
                    async with self._connection(nursery):
                        self._state = _OPEN
                        try:
                            if self._initial_topics:
                                await self.subscribe(self._initial_topics)
                            yield self
                        finally:
                            self._state = _CLOSED
                finally:
                    self._state = _CLOSED
                    self._inbound_receive.close()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            reraise_single(group)
        finally:
            self._state = _CLOSED
            self._release_id()

    @property
    def closed(self) -> bool:
        """Whether the socket has been closed (or failed to open)."""
        return self._state == _CLOSED

    def _check_open(self) -> None:
        if self._state != _OPEN:
            what = "not open yet" if self._state in (_NEW, _OPENING) else "closed"
            raise BusClosed(f"the socket {self.client_id!r} is {what}")

    # -- publishing -----------------------------------------------------------------------------

    def _check_publish_topic(self, topic: str) -> None:
        if topic not in self._checked_topics:
            check_topic(topic)
            if len(self._checked_topics) > 4096:
                self._checked_topics.clear()
            self._checked_topics.add(topic)

    async def publish(
        self,
        message: BusMessage | Any,
        topic: str | None = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Publish *message* to ``message.topic``, or any object to *topic*.

        A :class:`BusMessage` goes as it is (to *topic* instead when one is given). Any other
        object is the payload of a new message to *topic*: ``bytes`` as they are, ``str`` as
        UTF-8, typed objects (dataclasses, msgspec ``Struct``, dicts, pydantic models, ...)
        encoded by msgspec as JSON, or MessagePack when *content_type* is
        ``application/msgpack``; *headers* and *correlation_id* go with it.

        The message is encoded when it is published, so changing it afterwards changes
        nothing that was sent. A message without a ``message_id`` is sent with a fresh one
        (unique per socket and run; *message* itself is not changed). In an application with
        middleware, its ``publish_scope`` runs around it.

        Raises:
            BusClosed: if the socket is not open.
            ConfigurationError: if the topic is not valid for publishing (a wildcard, empty).
            EnvelopeError: if the message cannot be encoded (a header that is not text).
            TypeError: for an object without a *topic*, or one msgspec cannot encode.
        """
        if type(message) is not BusMessage or topic is not None:
            message = as_message(message, topic, content_type=content_type, headers=headers,
                                 correlation_id=correlation_id)
        if self._state != _OPEN:
            self._check_open()
        topic = message.topic
        if topic not in self._checked_topics:
            self._check_publish_topic(topic)
        if self._client_name is not None and message.client_name is None:
            message = message.copy(client_name=self._client_name)
        work_id = current_correlation_id()
        if work_id is not None and CORRELATION_HEADER not in message.headers:
            # Published while handling an HTTP request, a session or another message: the
            # receiver's logs get the same correlation id (trionet.observability).
            message = message.copy(headers={**message.headers, CORRELATION_HEADER: work_id})
        if _tracing.enabled() and (traced := _tracing.trace_headers(message.headers)):
            message = message.copy(headers=traced)  # W3C trace context (trionet.tracing)
        message_id = message.message_id
        if message_id is None:
            self._publish_count += 1
            message_id = f"{self._correlation_prefix}-{self._publish_count:x}"
        codec = self._codec
        data: bytes | BusMessage
        if codec is None:
            data = message._clone()
            data.message_id = message_id
        else:
            timeout_ms = (None if message.deadline is None
                          else _timeout_ms(message, trio.current_time()))
            data = _encode_envelope(message, codec, message_id, timeout_ms)
        if message.key is None:
            await self._send(topic, data)
        else:
            await self._send_with_key(topic, data, message.key)
        self.statistics.published += 1
        if _metrics.sinks:
            _metrics.message("bus", "out")

    async def publish_raw(self, topic: str, data: bytes) -> None:
        """Publish bytes as they are, with no envelope (for consumers that are not trionet).

        Raises:
            BusClosed: if the socket is not open.
            ConfigurationError: if the topic is not valid for publishing.
        """
        self._check_open()
        self._check_publish_topic(topic)
        await self._send(topic, bytes(data))
        self.statistics.published += 1
        if _metrics.sinks:
            _metrics.message("bus", "out")

    async def reply(
        self,
        request: BusMessage,
        payload: PayloadInput,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer *request*: publish *payload* to its ``response_topic``.

        Raises:
            NoResponseTopic: if the request names no ``response_topic``.
        """
        await self.publish(
            request.make_reply(payload, content_type=content_type, headers=headers)
        )

    # -- subscriptions --------------------------------------------------------------------------

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The topic filters this socket is subscribed to."""
        return tuple(self._subscriptions)

    async def subscribe(self, topic: str | Sequence[str]) -> None:
        """Subscribe to one filter or several (``+`` and ``#`` wildcards allowed).

        Raises:
            BusClosed: if the socket is not open.
            ConfigurationError: for an invalid filter.
        """
        self._check_open()
        filters = [f for f in normalize_topics(topic) if f not in self._subscriptions]
        for topic_filter in filters:
            if topic_filter.startswith(_RESERVED):
                raise ConfigurationError(f"topics under {_RESERVED!r} are reserved for the bus")
        if filters:
            await self._subscribe(filters)
            for topic_filter in filters:
                self._subscriptions[topic_filter] = None
            logger.debug("%s subscribed to %s", self.client_id, ", ".join(filters))

    async def unsubscribe(self, topic: str | Sequence[str]) -> None:
        """Unsubscribe from one filter or several (unknown ones are ignored).

        Raises:
            BusClosed: if the socket is not open.
        """
        self._check_open()
        filters = [f for f in normalize_topics(topic) if f in self._subscriptions]
        if filters:
            await self._unsubscribe(filters)
            for topic_filter in filters:
                del self._subscriptions[topic_filter]
            logger.debug("%s unsubscribed from %s", self.client_id, ", ".join(filters))

    # -- receiving ------------------------------------------------------------------------------

    def _wake_receiver(self) -> None:
        """Wake a task waiting in :meth:`_receive_inbound` (it gets :data:`WAKEUP`)."""
        # full (so nobody waits), or closed: nothing to wake
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError,
                                 trio.ClosedResourceError):
            self._inbound_send.send_nowait(WAKEUP)

    def _receive_nowait(self) -> Inbound | None:
        try:
            return self._inbound_receive.receive_nowait()
        except trio.WouldBlock:
            return None
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise BusClosed(f"the socket {self.client_id!r} is closed") from None

    async def _receive_inbound(self) -> Inbound:
        try:
            return await self._inbound_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise BusClosed(f"the socket {self.client_id!r} is closed") from None

    async def _accept(self, item: Inbound) -> Delivery | None:
        """Decode one inbound item; ``None`` for replies and malformed data (acked, skipped)."""
        if item is WAKEUP:
            return None
        topic, data, ack, arrived = item
        if topic.startswith(_RESERVED):
            if topic.startswith(self._reply_base):
                self._route_reply(topic, data)
            if ack is not None:
                await ack()
            return None
        if isinstance(data, BusMessage):
            message = data
        else:
            try:
                # A deadline that travelled as the time left counts from the arrival.
                message = decode_envelope(data, now=arrived)
            except EnvelopeError as exc:
                self.statistics.malformed += 1
                logger.warning(
                    "%s: skipped a malformed message on %r (%d bytes): %s",
                    self.client_id, topic, len(data), exc,
                )
                if ack is not None:
                    await ack()
                return None
        self.statistics.received += 1
        return Delivery(message, ack)

    async def receive(self) -> BusMessage:
        """The next message of this socket's subscriptions (acknowledged at once).

        Malformed messages are logged and skipped.

        Raises:
            BusClosed: if the socket is or gets closed.
        """
        while True:
            if self._state == _NEW:
                self._check_open()
            delivery = await self._accept(await self._receive_inbound())
            if delivery is not None:
                await delivery.ack()
                return delivery.message

    def __aiter__(self) -> BusSocket:
        return self

    async def __anext__(self) -> BusMessage:
        try:
            return await self.receive()
        except BusClosed:
            raise StopAsyncIteration from None

    # -- request / response ---------------------------------------------------------------------

    def _route_reply(self, topic: str, data: bytes | BusMessage) -> None:
        """Hand a reply to its waiting request (called by transports; never blocks)."""
        if isinstance(data, BusMessage):
            message = data
        else:
            try:
                message = decode_envelope(data)
            except EnvelopeError as exc:
                self.statistics.malformed += 1
                logger.warning("%s: skipped a malformed reply on %r: %s", self.client_id,
                               topic, exc)
                return
        correlation_id = message.correlation_id
        if correlation_id is None:
            reply_topic = message.topic if message.topic.startswith(_RESERVED) else topic
            correlation_id = reply_topic.rpartition("/")[2]
        waiter = self._pending.get(correlation_id)
        if waiter is None or not waiter.set(message):
            self.statistics.late_replies += 1
            logger.debug("%s: dropped a late reply (correlation id %s)", self.client_id,
                         correlation_id)
            return
        self.statistics.replies += 1

    async def _ensure_reply_route(self) -> None:
        if self._reply_open:
            return
        async with self._reply_lock:
            if not self._reply_open:
                await self._open_reply_route()
                self._reply_open = True

    async def request(
        self,
        message: BusMessage | Any,
        topic: str | None = None,
        *,
        timeout: float | _Unset | None = _UNSET,  # noqa: ASYNC109 - spa_dat's request has one
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> BusMessage:
        """Publish *message* as a request and return the reply.

        Like :meth:`publish`, it takes any object and a *topic* instead of a message (typed
        objects are encoded as JSON, or MessagePack when *content_type* says so);
        :func:`~trionet.bus.decode_payload` reads a typed reply.

        The request gets a correlation id (a fresh one unless the message has one) and a
        ``response_topic`` on this socket's reply route; *message* itself is not changed.
        Its ``deadline`` is when this call stops waiting (*timeout*, or the caller's own
        deadline if that comes first): it travels with the request, and a responding
        application's handler is cancelled when it passes (see "Deadlines" in the bus guide).

        Args:
            message: the request.
            timeout: seconds to wait for the reply; by default the provider's
                ``request_timeout`` (30 s), ``None`` to wait forever. A caller's own
                :func:`trio.fail_after` works too (it raises :class:`trio.TooSlowError`).

        Raises:
            RequestTimeout: (a :class:`trio.TooSlowError`) if no reply came in time. A reply
                that arrives later is dropped.
            BusClosed: if the socket is not open.
            TypeError: for an object without a *topic*, or one msgspec cannot encode.
        """
        if type(message) is not BusMessage or topic is not None:
            message = as_message(message, topic, content_type=content_type, headers=headers)
        self._check_open()
        limit = self._request_timeout if timeout is _UNSET else timeout
        if limit is not None and limit <= 0:
            raise ConfigurationError("a request timeout must be positive (or None)")
        correlation_id = message.correlation_id
        if correlation_id is None:
            self._request_count += 1
            correlation_id = f"{self._correlation_prefix}{self._request_count:x}"
        elif correlation_id in self._pending:
            raise BusError(f"a request with correlation id {correlation_id!r} is pending")
        if not self._reply_open:
            await self._ensure_reply_route()
        outgoing = message._clone()
        outgoing.response_topic = f"{self._reply_base}/{_safe_level(correlation_id)}"
        outgoing.correlation_id = correlation_id
        waiter: OneShot[BusMessage] = OneShot()
        self._pending[correlation_id] = waiter
        self.statistics.pending_requests += 1
        try:
            with trio.move_on_after(float("inf") if limit is None else limit):
                # The responder gets the time the requester waits (its own deadline, or an
                # earlier one of the caller's), as the message's deadline.
                deadline = trio.current_effective_deadline()
                if outgoing.deadline is not None:
                    deadline = min(deadline, outgoing.deadline)
                outgoing.deadline = None if math.isinf(deadline) else deadline
                await self.publish(outgoing)
                await waiter.wait()
        finally:
            del self._pending[correlation_id]
            self.statistics.pending_requests -= 1
        if not waiter.done:
            assert limit is not None
            raise RequestTimeout(message.topic, limit, correlation_id)
        return waiter.result()


#: spa_dat's name for the socket interface.
SpaSocket = BusSocket


class SocketProvider(abc.ABC):
    """Makes sockets for one broker configuration (spa_dat's ``SocketProvider``).

    Providers are immutable: :meth:`rebuild` returns a changed copy, and the application
    decorators keep each application's topics to themselves (spa_dat's ``overwrite_config``
    changed the shared provider, so the last decorator's topics won for every application).

    Attributes:
        config: the broker configuration.
    """

    def __init__(self, config: BusConfig) -> None:
        self.config = config

    @property
    def url(self) -> str:
        """The provider's URL (password hidden)."""
        return self.config.to_url()

    @abc.abstractmethod
    def create_socket(self, topics: Topics = None, *, name: str | None = None) -> BusSocket:
        """A new, unopened socket subscribing to *topics* (default: the configuration's).

        Args:
            topics: filters to subscribe to when the socket is entered.
            name: the application's name, used in client ids and logs.
        """

    def _topics(self, topics: Topics) -> tuple[str, ...]:
        return normalize_topics(topics) if topics is not None else self.config.topics

    def rebuild(self: ProviderT, topics: Topics = None, **changes: object) -> ProviderT:
        """A provider like this one, with other default topics or configuration fields."""
        if topics is not None:
            changes["default_subscription_topics"] = normalize_topics(topics)
        return self._with_config(self.config.replace(**changes))

    def _with_config(self: ProviderT, config: BusConfig) -> ProviderT:
        return type(self)(config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


ProviderSpec: TypeAlias = SocketProvider | BusConfig | str
