"""The ``channel://`` transport: bus handlers answering :mod:`trionet.channel` clients.

A :class:`ChannelSocket` is not a connection to a broker: it listens for aiomas-style
request-reply connections, and each request becomes a message delivered to the socket's
reader (the application's handler), whose reply is sent back on the connection the request
came from. With :func:`~trionet.bridges.on_transports` one handler declaration answers on MQTT,
Kafka and the Channel.

The wire (documented in the bus guide, so that any Channel or aiomas client can call):
a request's content is a mapping ``{"topic": str, "payload": bytes | str, "headers":
{str: str}, "content_type": str | None}``; the result is ``{"payload": ..., "headers": ...,
"content_type": ...}``. With the ``"json"`` channel codec payloads travel as text (a binary
reply is refused with a clear failure); with ``"msgpack"`` as bytes. Everything a client sends
is checked and bounded: the topic (a valid topic matching one of the socket's subscriptions,
not a reserved one), at most :data:`MAX_HEADERS` text headers, requests in flight per
connection, connections, and the time a reply may take.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import trio

from .._util import OneShot
from ..channel import Channel, RemoteException, start_server
from ..codecs import JSON
from ..errors import ConfigurationError
from ..tls import ServerTLSArgument
from ._config import ChannelConfig, Topics
from ._errors import BusError, RequestTimeout
from ._message import BusMessage
from ._payload import as_message
from ._socket import _RESERVED, BusSocket, SocketProvider
from ._topics import TopicFilter, check_topic

__all__ = [
    "MAX_HEADERS",
    "ChannelRequestError",
    "ChannelSocket",
    "ChannelSocketProvider",
    "channel_request",
]

logger = logging.getLogger("trionet.bus")

#: The most headers a Channel request may carry (each a text name and value).
MAX_HEADERS: Final = 64
#: The longest header name or value accepted from a Channel client, in characters.
MAX_HEADER_LENGTH: Final = 8192
_REPLY_BASE: Final = "_trionet/channel"
_REQUEST_KEYS: Final = frozenset({"topic", "payload", "headers", "content_type"})


class ChannelRequestError(BusError):
    """A Channel client's request was refused (malformed, or no handler for its topic)."""


def _text_map(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ChannelRequestError(f"{what} must be a mapping of text to text")
    if len(value) > MAX_HEADERS:
        raise ChannelRequestError(f"at most {MAX_HEADERS} {what} are accepted")
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise ChannelRequestError(f"{what} must be a mapping of text to text")
        if len(name) > MAX_HEADER_LENGTH or len(text) > MAX_HEADER_LENGTH:
            raise ChannelRequestError(f"a header is longer than {MAX_HEADER_LENGTH} characters")
        headers[name] = text
    return headers


def _payload(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ChannelRequestError(f"payload must be bytes or text, not {type(value).__name__}")


def _content_type(value: object) -> str | None:
    if value is None or (isinstance(value, str) and len(value) <= 255):
        return value
    raise ChannelRequestError("content_type must be text of at most 255 characters, or None")


class ChannelSocket(BusSocket):
    """A socket serving bus handlers to Channel clients (made by :class:`ChannelSocketProvider`).

    Its subscriptions are the topics clients may send requests to; a request to any other
    topic is refused at once. Replies (:meth:`~BusSocket.reply`, or a handler's return value)
    go back to the client that asked. It cannot publish anywhere else nor send requests:
    there is no broker behind it (:class:`~trionet.bus.BusError`).
    """

    config: ChannelConfig

    def __init__(
        self,
        config: ChannelConfig,
        *,
        topics: Sequence[str] = (),
        name: str | None = None,
        tls: ServerTLSArgument = None,
        bound: list[Any] | None = None,
    ) -> None:
        super().__init__(config, topics=topics, name=name, default_codec=None)
        self._tls = tls
        self._bound = bound if bound is not None else []
        self._filters: dict[str, TopicFilter] = {}
        self._waiting: dict[str, OneShot[BusMessage]] = {}
        self._prefix = f"{_REPLY_BASE}/{uuid.uuid4().hex[:16]}/"
        self._ids = itertools.count(1)
        self._connections = 0

    @property
    def addresses(self) -> list[Any]:
        """The addresses the socket listens on (``(host, port)`` tuples) while it is open."""
        return list(self._bound)

    @asynccontextmanager
    async def _serving(self, nursery: trio.Nursery) -> AsyncIterator[None]:
        config = self.config
        addresses = await nursery.start(
            lambda task_status: start_server(
                (config.host, config.port), self._serve_connection,
                codec=config.channel_codec, tls=self._tls, task_status=task_status))
        self._bound[:] = addresses
        try:
            yield
        finally:
            self._bound.clear()
            for waiter in self._waiting.values():
                waiter.fail(ChannelRequestError("the bus socket closed"))

    def _connection(self, nursery: trio.Nursery) -> AbstractAsyncContextManager[None]:
        return self._serving(nursery)

    async def _serve_connection(self, channel: Channel) -> None:
        if self._connections >= self.config.max_connections:
            logger.warning("%s: refused a Channel connection from %s: %d are open",
                           self.client_id, channel.origin, self._connections)
            return
        self._connections += 1
        channel._traced = False  # the bus traces its messages itself (trionet.tracing)
        try:
            await channel.serve(self._answer, max_concurrency=self.config.max_pending)
        finally:
            self._connections -= 1

    async def _answer(self, content: object) -> dict[str, Any]:
        """One client request: deliver it to the reader, wait for the handler's reply."""
        if not isinstance(content, Mapping) or not _REQUEST_KEYS.issuperset(content) or (
                "topic" not in content):
            raise ChannelRequestError(
                "a request is a mapping with 'topic', 'payload', 'headers', 'content_type'")
        topic = content["topic"]
        if not isinstance(topic, str):
            raise ChannelRequestError("topic must be text")
        try:
            check_topic(topic)
        except ConfigurationError as exc:
            raise ChannelRequestError(str(exc)) from None
        if topic.startswith(_RESERVED) or not any(
                f.matches(topic) for f in self._filters.values()):
            raise ChannelRequestError(f"no handler for the topic {topic!r}")
        correlation_id = f"{next(self._ids):x}"
        timeout = self.config.request_timeout
        assert timeout is not None  # ChannelConfig requires one
        message = BusMessage(
            _payload(content.get("payload", b"")), topic,
            content_type=_content_type(content.get("content_type")),
            headers=_text_map(content.get("headers"), "headers"),
            correlation_id=correlation_id,
            response_topic=self._prefix + correlation_id,
            deadline=trio.current_time() + timeout,
        )
        waiter: OneShot[BusMessage] = OneShot()
        self._waiting[correlation_id] = waiter
        try:
            with trio.move_on_after(timeout):
                await self._inbound_send.send((topic, message, None, 0.0))
                reply = await waiter.wait()
                return self._result(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ChannelRequestError("the bus socket is closing") from None
        finally:
            del self._waiting[correlation_id]
        raise RequestTimeout(topic, timeout, correlation_id)

    def _result(self, reply: BusMessage) -> dict[str, Any]:
        payload: bytes | str = reply.payload
        if self.config.channel_codec == "json":
            try:
                payload = reply.payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ChannelRequestError(
                    "the reply is binary; a json channel carries text only (use "
                    "channel_codec='msgpack')") from None
        return {"payload": payload, "headers": dict(reply.headers),
                "content_type": reply.content_type}

    async def _send(self, topic: str, data: bytes | BusMessage) -> None:
        await trio.lowlevel.checkpoint()
        if not topic.startswith(self._prefix):
            raise BusError(f"a channel:// socket only answers requests; it cannot publish to "
                           f"{topic!r} (publish on a broker's socket)")
        assert isinstance(data, BusMessage)  # the codec is None: messages are handed over
        waiter = self._waiting.get(topic[len(self._prefix):])
        if waiter is None or not waiter.set(data):
            self.statistics.late_replies += 1
            logger.debug("%s: dropped a late reply to %r", self.client_id, topic)

    async def _subscribe(self, filters: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for topic_filter in filters:
            self._filters[topic_filter] = TopicFilter(topic_filter)

    async def _unsubscribe(self, filters: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for topic_filter in filters:
            self._filters.pop(topic_filter, None)

    async def _open_reply_route(self) -> None:
        raise BusError("a channel:// socket cannot send requests: it has no broker behind it")


class ChannelSocketProvider(SocketProvider):
    """Makes :class:`ChannelSocket` s (``channel://host:port``).

    Args:
        config: the configuration (default ``channel://127.0.0.1:0``).
        tls: serve TLS, in the :mod:`trionet.tls` server vocabulary (a server context, a
            :class:`~trionet.tls.TLSOptions`, or a :class:`~trionet.tls.CertificateReloader`);
            ``None``: plain TCP.
    """

    config: ChannelConfig

    def __init__(self, config: ChannelConfig | None = None, *,
                 tls: ServerTLSArgument = None, _bound: list[Any] | None = None) -> None:
        super().__init__(config or ChannelConfig())
        self.tls = tls
        self._bound: list[Any] = _bound if _bound is not None else []

    @property
    def addresses(self) -> list[Any]:
        """Where the last socket opened from this provider (or a rebuilt copy) listens."""
        return list(self._bound)

    def create_socket(self, topics: Topics = None, *, name: str | None = None) -> ChannelSocket:
        """A new, unopened socket listening on the configured address."""
        return ChannelSocket(self.config, topics=self._topics(topics), name=name,
                             tls=self.tls, bound=self._bound)

    def _with_config(self, config: object) -> ChannelSocketProvider:
        assert isinstance(config, ChannelConfig)
        return ChannelSocketProvider(config, tls=self.tls, _bound=self._bound)


async def channel_request(
    channel: Channel,
    message: BusMessage | Any,
    topic: str | None = None,
    *,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> BusMessage:
    """Send a bus request over a Channel to a ``channel://`` transport; return the reply.

    ::

        async with open_connection(("127.0.0.1", 5555)) as channel:
            reply = await channel_request(channel, b"2 apples", "orders/new")

    *message* is what :meth:`BusSocket.request <trionet.bus.BusSocket.request>` takes (a
    :class:`BusMessage`, or bytes, text or a typed object with a *topic*). The channel's
    codec must be the transport's ``channel_codec``; over ``"json"`` the payload must be
    UTF-8 text.

    Raises:
        trionet.errors.RemoteException: the transport refused the request (no handler for the
            topic, malformed), or no reply came within its ``request_timeout``.
        TypeError: a binary payload on a json channel.
        trionet.errors.ChannelClosed: the connection is gone.
    """
    request = as_message(message, topic, content_type=content_type, headers=headers)
    payload: bytes | str = request.payload
    if isinstance(channel.codec, JSON):
        try:
            payload = request.payload.decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError("a json channel carries text payloads only") from None
    result = await channel.send({"topic": request.topic, "payload": payload,
                                 "headers": dict(request.headers),
                                 "content_type": request.content_type})
    if not isinstance(result, Mapping):
        raise RemoteException(channel.origin, "the reply is not a mapping", "ChannelRequestError")
    try:
        return BusMessage(_payload(result.get("payload", b"")), request.topic,
                          content_type=_content_type(result.get("content_type")),
                          headers=_text_map(result.get("headers"), "headers"),
                          correlation_id=request.correlation_id)
    except ChannelRequestError as exc:
        raise RemoteException(channel.origin, f"malformed reply: {exc}",
                              "ChannelRequestError") from None
