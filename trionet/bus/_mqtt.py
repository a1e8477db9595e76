"""``mqtt://``: bus sockets on :mod:`trionet.mqtt` (paho-mqtt underneath).

Each socket is one MQTT connection with its own client id. Every subscribed filter is one
``client.subscription(...)`` block read by a task that feeds the socket's bounded queue; the
reply route (``_trionet/reply/<client id>/+``) has its own block whose task hands replies
straight to the waiting requests, so replies never queue behind ordinary messages.

Delivery guarantees: publishes use the configured QoS (1 by default: ``publish`` returns on the
broker's PUBACK). The MQTT client runs with ``ack="processed"``: a received QoS 1 message is
acknowledged to the broker when the bus acknowledges it, as the app's
:class:`~trionet.bus.AckPolicy` says (``AFTER``: once the handler is done with it). With
``clean_start=false`` and a fixed ``client_id``, messages that arrive while an application is
down, and QoS 1 messages whose handler was interrupted (``on_error="raise"``, a crash), are
kept by the broker and delivered when it comes back (also those of a resumed session that
arrive before their subscription block exists). QoS 2 messages belong to the client from their
PUBREC on (see the MQTT client's ``ack`` option).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import trio

from ..mqtt import MQTTV5, MQTTV311, MQTTClient, MQTTMessage, Subscription
from ._config import MqttConfig, Topics
from ._message import BusMessage
from ._socket import CLOSE_TIMEOUT, AckFn, BusSocket, SocketProvider
from ._topics import TopicFilter

__all__ = ["MqttSocket", "MqttSocketProvider"]


class _Reader:
    __slots__ = ("done", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()


def _acker(box: Subscription, message: MQTTMessage) -> AckFn:
    async def ack() -> None:
        box.ack(message)
        await trio.lowlevel.checkpoint()

    return ack


class MqttSocket(BusSocket):
    """A bus socket on one MQTT connection (made by :class:`MqttSocketProvider`)."""

    config: MqttConfig

    def __init__(self, config: MqttConfig, *, topics: Sequence[str] = (),
                 name: str | None = None) -> None:
        super().__init__(config, topics=topics, name=name,
                         client_id_base=config.client_id,
                         compact_client_id=config.version != "5",
                         endpoint=f"mqtt {config.host}:{config.effective_port}",
                         default_codec="msgpack")
        self._client: MQTTClient | None = None
        self._nursery: trio.Nursery | None = None
        self._readers: dict[str, _Reader] = {}
        self._filters: dict[str, TopicFilter] = {}

    @property
    def mqtt_client(self) -> MQTTClient:
        """The underlying :class:`trionet.mqtt.MQTTClient` (while the socket is open)."""
        if self._client is None:
            self._check_open()
        assert self._client is not None
        return self._client

    @asynccontextmanager
    async def _connect(self, nursery: trio.Nursery) -> AsyncIterator[None]:
        config = self.config
        client = MQTTClient(
            self.client_id,
            protocol=MQTTV5 if config.version == "5" else MQTTV311,
            clean_start=config.clean_start,
            keepalive=config.keepalive,
            username=config.username,
            password=config.password,
            allow_insecure_auth=config.allow_insecure_auth,
            tls=config.tls or None,
            authenticator=None if config.authenticator is None else config.authenticator(),
            subscription_buffer_size=config.max_queue,
            max_buffered_messages=max(1000, 2 * config.max_queue),
            max_concurrency=1,  # the catch-all handler below keeps arrival order
            ack="processed",  # the broker hears of a message when the bus acknowledges it
        )
        client._traced = False  # the bus traces its messages itself (trionet.tracing)
        client.on_message(partial(self._unrouted, client))
        try:
            async with client:
                await client.connect(config.host, config.effective_port)
                self._client = client
                self._nursery = nursery
                yield
        finally:
            # The client is closed first, so that the readers' subscription blocks end without
            # unsubscribing: a persistent session keeps its subscriptions for the next run.
            self._client = None
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                readers = list(self._readers.values())
                self._readers.clear()
                for reader in readers:
                    reader.scope.cancel()
                for reader in readers:
                    await reader.done.wait()

    def _connection(self, nursery: trio.Nursery) -> AbstractAsyncContextManager[None]:
        return self._connect(nursery)

    async def _unrouted(self, client: MQTTClient, message: MQTTMessage) -> None:
        """Messages that arrive before their subscription block exists: a resumed persistent
        session's queued messages, sent by the broker right after it accepts the connection."""
        topic = message.topic
        if topic.startswith(self._reply_base):
            self._route_reply(topic, message.payload)
            return
        done = client.take_ack(message)  # acknowledged when the bus acknowledges it

        async def ack() -> None:
            done()
            await trio.lowlevel.checkpoint()

        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._inbound_send.send((topic, message.payload, ack, trio.current_time()))

    async def _send(self, topic: str, data: bytes | BusMessage) -> None:
        assert isinstance(data, bytes)
        assert self._client is not None
        await self._client.publish(topic, data, qos=self.config.qos)

    async def _read(self, topic_filter: str, replies: bool, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        client = self._client
        assert client is not None
        reader = _Reader()
        self._readers[topic_filter] = reader
        try:
            with reader.scope:
                async with client.subscription(topic_filter, self.config.qos,
                                               max_buffer_size=self.config.max_queue) as box:
                    task_status.started()
                    if replies:
                        async for message in box:
                            self._route_reply(message.topic, message.payload)
                            box.ack(message)
                        return
                    send = self._inbound_send.send
                    async for message in box:
                        topic = message.topic
                        # A message matching several of this socket's filters arrives in each of
                        # their blocks; only the first matching filter's reader passes it on.
                        if len(self._filters) > 1 and self._first_match(topic) != topic_filter:
                            box.ack(message)
                            continue
                        await send((topic, message.payload, _acker(box, message),
                                    trio.current_time()))
        finally:
            reader.done.set()
            if self._readers.get(topic_filter) is reader:
                del self._readers[topic_filter]

    def _first_match(self, topic: str) -> str | None:
        for text, topic_filter in self._filters.items():
            if topic_filter.matches(topic):
                return text
        return None

    async def _subscribe(self, filters: Sequence[str]) -> None:
        assert self._nursery is not None
        for topic_filter in filters:
            self._filters[topic_filter] = TopicFilter(topic_filter)
            try:
                await self._nursery.start(self._read, topic_filter, False)
            except BaseException:
                del self._filters[topic_filter]
                raise

    async def _unsubscribe(self, filters: Sequence[str]) -> None:
        for topic_filter in filters:
            self._filters.pop(topic_filter, None)
            reader = self._readers.pop(topic_filter, None)
            if reader is not None:
                reader.scope.cancel()
                await reader.done.wait()

    async def _open_reply_route(self) -> None:
        assert self._nursery is not None
        await self._nursery.start(self._read, f"{self._reply_base}/+", True)


class MqttSocketProvider(SocketProvider):
    """Makes sockets connected to an MQTT broker (``mqtt://user:password@host:port``).

    Args:
        config: the broker configuration.
    """

    config: MqttConfig

    def __init__(self, config: MqttConfig) -> None:
        super().__init__(config)

    def create_socket(self, topics: Topics = None, *, name: str | None = None) -> MqttSocket:
        """A new, unopened socket (one MQTT connection)."""
        return MqttSocket(self.config, topics=self._topics(topics), name=name)

    def _with_config(self, config: Any) -> MqttSocketProvider:
        return MqttSocketProvider(config)
