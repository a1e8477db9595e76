"""Sources: what a bridge subscribes to for each connection, and how a message looks to a browser.

A *source* is a callable that takes the connection (the :class:`~trionet.asgi.Request` of an
event stream, or the :class:`~trionet.asgi.WebSocket`) and returns an async context manager
that subscribes on entry and gives an async iterable of messages. MQTT subscriptions, bus
sockets and Kafka consumers all have that shape already; the helpers here only bind the
arguments. Any other callable of that shape works too.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from ..asgi import HTTPConnection
from ..bus import BusConfig, BusMessage, BusSocket, SocketProvider, from_config

if TYPE_CHECKING:
    from ..kafka import KafkaRecord
    from ..mqtt import MQTTClient, MQTTMessage, QoS

__all__ = ["Source", "bus_source", "describe", "kafka_source", "mqtt_source"]

T = TypeVar("T")

#: Subscribes for one connection: ``source(connection)`` returns an async context manager that
#: gives an async iterable of messages.
Source: TypeAlias = Callable[[HTTPConnection], AbstractAsyncContextManager[AsyncIterable[T]]]


def mqtt_source(
    client: MQTTClient | Callable[[], MQTTClient],
    topic_filter: str,
    *,
    qos: QoS | int = 0,
    max_buffer_size: int | None = None,
) -> Source[MQTTMessage]:
    """One MQTT ``client.subscription(topic_filter, qos)`` per connection.

    Args:
        client: a connected :class:`~trionet.mqtt.MQTTClient` shared by every connection, or a
            callable returning it (when the client is opened after the routes are built).
        topic_filter: the filter to subscribe to (wildcards allowed).
        qos: the maximum QoS to receive with.
        max_buffer_size: the subscription's own buffer (default: the client's
            ``subscription_buffer_size``); with ``overflow="pause"``, once it is full too,
            the client's flow control throttles the broker.
    """

    def subscribe(connection: HTTPConnection) -> AbstractAsyncContextManager[Any]:
        shared: Any = client if hasattr(client, "subscription") else client()
        subscription: AbstractAsyncContextManager[Any] = shared.subscription(
            topic_filter, qos, max_buffer_size=max_buffer_size)
        return subscription

    return subscribe


def bus_source(
    provider: SocketProvider | BusConfig | str,
    topics: str | Sequence[str],
    *,
    name: str = "bridge",
) -> Source[BusMessage]:
    """One bus socket subscribed to *topics* per connection.

    Every connection gets its own socket (on ``mqtt://`` and ``kafka://``, its own connection
    to the broker), whose bounded queue (``max_queue``) makes the transport wait when full.

    Args:
        provider: a socket provider, a :class:`~trionet.bus.BusConfig` or a broker URL
            (``memory://``, ``mqtt://...``, ``kafka://...``).
        topics: the filter(s) to subscribe to.
        name: the sockets' name (in client ids and logs).
    """
    made = from_config(provider)
    wanted = (topics,) if isinstance(topics, str) else tuple(topics)

    def subscribe(connection: HTTPConnection) -> AbstractAsyncContextManager[BusSocket]:
        return made.create_socket(wanted, name=name)

    return subscribe


def kafka_source(*topics: str, **consumer_options: Any) -> Source[KafkaRecord]:
    """One :class:`~trionet.kafka.KafkaConsumer` of *topics* per connection.

    *consumer_options* go to the consumer (``bootstrap_servers=...``; without a ``group_id``
    the consumer reads every partition and commits nothing). The consumer's read-ahead is
    bounded (at most ``prefetch`` x ``max_poll_records`` records), so not reading it
    (``overflow="pause"``) stops its polling once that is full; a small ``max_poll_records``
    makes the bound tight.
    """
    from ..kafka import KafkaConsumer  # the kafka extra, only when used

    def subscribe(connection: HTTPConnection) -> AbstractAsyncContextManager[KafkaConsumer]:
        return KafkaConsumer(*topics, **consumer_options)

    return subscribe


def _payload(value: Any) -> dict[str, Any]:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return {"payload": raw.decode("utf-8")}
        except UnicodeDecodeError:
            return {"payload": base64.b64encode(raw).decode("ascii"), "encoding": "base64"}
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return {"payload": value}
    return {"payload": str(value)}


def describe(message: Any) -> dict[str, Any]:
    """A message as a JSON-ready dict: ``{"topic": ..., "payload": ...}``.

    The payload is text when it is UTF-8, else base64 (with ``"encoding": "base64"``). Kafka
    records also give ``partition``, ``offset`` and ``key``; bus messages their
    ``content_type``. This is what a bridge sends by default (as an event's JSON ``data``, or a
    websocket text message).
    """
    if isinstance(message, bytes | str):
        return _payload(message)
    described: dict[str, Any] = {}
    topic = getattr(message, "topic", None)  # MQTTMessage, BusMessage, KafkaRecord
    if topic is not None:
        described["topic"] = topic
    if isinstance(message, BusMessage):
        described.update(_payload(message.payload))
        if message.content_type:
            described["content_type"] = message.content_type
    elif hasattr(message, "payload"):
        described.update(_payload(message.payload))
    elif hasattr(message, "value") and hasattr(message, "offset"):  # a Kafka record
        described["partition"] = message.partition
        described["offset"] = message.offset
        key = message.key
        if key is not None:
            described["key"] = _payload(key)["payload"]
        described.update(_payload(message.value))
    else:
        described.update(_payload(message))
    return described
