"""Messages, QoS levels, MQTT 5 properties, wills and connection states: plain data, no I/O."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from ..codecs import decode_json
from ..errors import ConfigurationError
from ._errors import InvalidPayload
from ._topics import topic_matches, validate_topic

__all__ = [
    "MQTTV5",
    "MQTTV311",
    "BrokerLimits",
    "ConnectionEvent",
    "ConnectionState",
    "MQTTMessage",
    "MQTTStatistics",
    "MessageProperties",
    "Payload",
    "QoS",
    "Will",
    "to_payload",
]

#: Protocol level of MQTT 3.1.1 (the ``protocol=`` argument of the client).
MQTTV311: Final = 4
#: Protocol level of MQTT 5.0.
MQTTV5: Final = 5

#: What may be passed as a payload: text is encoded as UTF-8, ``None`` is an empty payload.
Payload = bytes | bytearray | memoryview | str | None


class QoS(enum.IntEnum):
    """MQTT quality-of-service levels (the names used by mtaio)."""

    AT_MOST_ONCE = 0
    """Fire and forget: delivered at most once, no acknowledgement."""
    AT_LEAST_ONCE = 1
    """Acknowledged with PUBACK; may be delivered more than once."""
    EXACTLY_ONCE = 2
    """Four-step handshake (PUBREC/PUBREL/PUBCOMP): delivered exactly once."""


_QOS_BY_INT: Final = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)


def to_qos(value: int) -> QoS:
    """Return *value* as a :class:`QoS`, or raise :exc:`~trionet.errors.ConfigurationError`."""
    if type(value) is QoS:
        return value
    if type(value) is int and 0 <= value <= 2:
        return _QOS_BY_INT[value]
    try:
        return QoS(value)
    except (ValueError, TypeError):
        raise ConfigurationError(f"qos must be 0, 1 or 2, got {value!r}") from None


def to_payload(payload: object) -> bytes:
    """Return *payload* as bytes: ``str`` is UTF-8 encoded, ``None`` is ``b""``.

    Raises:
        InvalidPayload: any other type (numbers are not silently turned into text).
    """
    if type(payload) is bytes:
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if payload is None:
        return b""
    raise InvalidPayload(payload)


@dataclass(frozen=True, slots=True)
class MessageProperties:
    """MQTT 5 message properties (all optional).

    On MQTT 3.1.1 connections messages have no properties, except the response topic and
    correlation data of a request made with :meth:`~trionet.mqtt.MQTTClient.request`, which
    trionet carries in a small envelope around the payload there.

    Attributes:
        payload_format_indicator: 1 if the payload is UTF-8 text, 0 if unspecified bytes.
        message_expiry_interval: seconds after which the broker discards an undelivered message.
        content_type: a MIME type describing the payload, e.g. ``"application/json"``.
        response_topic: where the receiver should publish its answer (request/response).
        correlation_data: opaque bytes the answer must carry back, to match it to the request.
        user_properties: free-form ``(name, value)`` string pairs, in order (names may repeat).
        subscription_identifiers: on received messages, the identifiers of the subscriptions
            that matched (set by the broker; ignored when publishing).
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    subscription_identifiers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.payload_format_indicator not in (None, 0, 1):
            raise ConfigurationError("payload_format_indicator must be 0, 1 or None")
        expiry = self.message_expiry_interval
        if expiry is not None and not 0 <= expiry <= 0xFFFFFFFF:
            raise ConfigurationError("message_expiry_interval must fit in 32 bits")
        # (values typed as Any: callers may pass other types, which are normalised here)
        correlation: Any = self.correlation_data
        if correlation is not None and not isinstance(correlation, bytes):
            object.__setattr__(self, "correlation_data", to_payload(correlation))
        user: Any = self.user_properties
        if not isinstance(user, tuple):
            object.__setattr__(self, "user_properties", tuple(user))
        pairs: tuple[Any, ...] = self.user_properties
        for pair in pairs:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(isinstance(part, str) for part in pair)
            ):
                raise ConfigurationError(
                    f"user_properties must be (str, str) pairs, got {pair!r}"
                )
        ids: Any = self.subscription_identifiers
        if not isinstance(ids, tuple):
            object.__setattr__(self, "subscription_identifiers", tuple(ids))

    def user_property(self, name: str, default: str | None = None) -> str | None:
        """The value of the first user property called *name*, or *default*."""
        for key, value in self.user_properties:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True, init=False)
class MQTTMessage:
    """One MQTT application message, as received (or to be published with ``publish_many``).

    Attributes:
        topic: the topic name.
        payload: the payload bytes (text given to the constructor is UTF-8 encoded).
        qos: the QoS it was delivered (or is to be published) with.
        retain: on a received message: it is a retained message the broker stored earlier and
            sent because of a new subscription. When publishing: ask the broker to retain it.
        message_id: the packet identifier of a QoS 1/2 delivery (None for QoS 0).
        properties: MQTT 5 properties (None when there are none).
    """

    topic: str
    payload: bytes
    qos: QoS
    retain: bool
    message_id: int | None
    properties: MessageProperties | None = field(repr=False)

    def __init__(
        self,
        topic: str,
        payload: Payload = b"",
        qos: QoS | int = QoS.AT_MOST_ONCE,
        retain: bool = False,
        message_id: int | None = None,
        properties: MessageProperties | None = None,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "topic", topic)
        setattr_(self, "payload", payload if type(payload) is bytes else to_payload(payload))
        setattr_(self, "qos", qos if type(qos) is QoS else to_qos(qos))
        setattr_(self, "retain", retain)
        setattr_(self, "message_id", message_id)
        setattr_(self, "properties", properties)

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (raises :exc:`UnicodeDecodeError` if it is not)."""
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        """The payload decoded as JSON.

        Raises:
            CodecError: the payload is not JSON, or nests deeper than
                :data:`~trionet.codecs.DEFAULT_MAX_DEPTH` (also a :exc:`ValueError`).
        """
        return decode_json(self.payload)

    def matches(self, topic_filter: str) -> bool:
        """Whether this message's topic matches *topic_filter* (wildcards, ``$share/...``)."""
        return topic_matches(topic_filter, self.topic)


@dataclass(frozen=True, slots=True, init=False)
class Will:
    """The message the broker publishes if the client disappears without a clean disconnect.

    Attributes:
        topic: where the will is published.
        payload: its payload (text given to the constructor is UTF-8 encoded).
        qos: its QoS.
        retain: whether the broker retains it.
        properties: MQTT 5 will properties (content type, message expiry, user properties...).

    Raises:
        InvalidTopic: the topic is not a valid topic name.
    """

    topic: str
    payload: bytes
    qos: QoS
    retain: bool
    properties: MessageProperties | None

    def __init__(
        self,
        topic: str,
        payload: Payload = b"",
        qos: QoS | int = QoS.AT_MOST_ONCE,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        validate_topic(topic)
        setattr_ = object.__setattr__
        setattr_(self, "topic", topic)
        setattr_(self, "payload", to_payload(payload))
        setattr_(self, "qos", to_qos(qos))
        setattr_(self, "retain", retain)
        setattr_(self, "properties", properties)


class ConnectionState(enum.Enum):
    """Where an :class:`~trionet.mqtt.MQTTClient` stands with its broker."""

    DISCONNECTED = "disconnected"
    """Not connected, and not trying to be (before ``connect()``, after ``disconnect()``)."""
    CONNECTING = "connecting"
    """``connect()`` is waiting for the broker's CONNACK."""
    CONNECTED = "connected"
    """Connected: publishes, subscriptions and messages flow."""
    RECONNECTING = "reconnecting"
    """The connection was lost; the client is reconnecting with backoff. QoS 1/2 publishes and
    subscriptions wait and complete once it is back."""
    CLOSED = "closed"
    """The client's ``async with`` block has ended; it cannot be used again."""


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """One change of :class:`ConnectionState`, as reported by ``client.connection_events()``.

    Attributes:
        state: the new state.
        reason_code: the CONNACK or DISCONNECT reason code behind the change, if there was one
            (MQTT 5 numbering, also on MQTT 3.1.1 connections).
        reason: a human-readable explanation ("connection refused: not authorized",
            "connection lost: keepalive timeout", ...).
        session_present: on CONNECTED, whether the broker resumed an existing session.
        attempt: on RECONNECTING, the number of the reconnect attempt that failed or is next
            (1 for the first); 0 otherwise.
    """

    state: ConnectionState
    reason_code: int | None = None
    reason: str = ""
    session_present: bool | None = None
    attempt: int = 0


#: The largest MQTT packet the protocol allows: 1 type byte, 4 length bytes and a remaining
#: length of at most 268,435,455 bytes (MQTT 3.1.1 §2.2.3, MQTT 5 §1.5.5).
MAX_PACKET_SIZE: Final = 1 + 4 + 268_435_455


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """What the broker announced in its CONNACK (MQTT 5; the protocol's own limits otherwise).

    ``client.broker_limits`` holds those of the current (or last) connection. The client obeys
    them: a publish that would break one raises
    :exc:`~trionet.mqtt.MQTTPublishError` at once and is never sent.

    Attributes:
        max_packet_size: the largest packet, in bytes, the broker accepts (Maximum Packet Size).
        receive_maximum: QoS 1/2 publishes the broker accepts unacknowledged at once (the
            client's in-flight window is the smaller of this and ``max_inflight``).
        topic_alias_maximum: topic aliases the broker accepts (trionet sends none).
        retain_available: whether the broker accepts retained messages.
        maximum_qos: the highest QoS the broker accepts in a PUBLISH.
    """

    max_packet_size: int = MAX_PACKET_SIZE
    receive_maximum: int = 65535
    topic_alias_maximum: int = 0
    retain_available: bool = True
    maximum_qos: int = 2


@dataclass(frozen=True, slots=True)
class MQTTStatistics:
    """A snapshot of a client's counters (see ``client.statistics()``).

    Attributes:
        state: the connection state.
        messages_received: application messages the broker delivered.
        messages_published: publishes completed (QoS 0: handed to the network thread).
        publishes_pending: QoS 1/2 publishes waiting for their handshake to complete.
        buffered_messages: received messages held in subscription and handler buffers.
        reads_paused: whether reading from the broker is paused because buffers are full.
        handler_errors: exceptions raised by ``on_message`` handlers (logged).
        unrouted_messages: messages that matched no subscription or handler (acknowledged and
            dropped).
        late_replies: replies that arrived after their request had given up (dropped).
        reconnects: successful reconnections after a lost connection.
    """

    state: ConnectionState
    messages_received: int
    messages_published: int
    publishes_pending: int
    buffered_messages: int
    reads_paused: bool
    handler_errors: int
    unrouted_messages: int
    late_replies: int
    reconnects: int


# -- the request/response envelope used on MQTT 3.1.1 -------------------------------------------
#
# MQTT 3.1.1 has no response topic or correlation data, so a request carries them in front of the
# payload:  MAGIC  b"Q"  u16 len  response topic (UTF-8)  u16 len  correlation data  payload
# and a reply carries the correlation data back:  MAGIC  b"R"  u16 len  correlation data  payload.
# Only trionet clients (or code that follows this layout) understand it; MQTT 5 needs none.

ENVELOPE_MAGIC: Final = b"\xfftrionet-rr\x01"
_U16 = struct.Struct("!H")


def pack_request_envelope(response_topic: str, correlation: bytes, payload: bytes) -> bytes:
    """Wrap a 3.1.1 request payload with its response topic and correlation data."""
    topic = response_topic.encode("utf-8")
    return b"".join(
        (ENVELOPE_MAGIC, b"Q", _U16.pack(len(topic)), topic, _U16.pack(len(correlation)),
         correlation, payload)
    )


def pack_reply_envelope(correlation: bytes, payload: bytes) -> bytes:
    """Wrap a 3.1.1 reply payload with the correlation data of its request."""
    return b"".join((ENVELOPE_MAGIC, b"R", _U16.pack(len(correlation)), correlation, payload))


def unpack_envelope(payload: bytes) -> tuple[str | None, bytes, bytes] | None:
    """Undo :func:`pack_request_envelope` / :func:`pack_reply_envelope`.

    Returns:
        ``(response_topic or None for a reply, correlation data, inner payload)``, or None when
        *payload* is not an envelope (it is then an ordinary payload).
    """
    if not payload.startswith(ENVELOPE_MAGIC):
        return None
    pos = len(ENVELOPE_MAGIC)
    kind = payload[pos : pos + 1]
    pos += 1
    try:
        response_topic: str | None = None
        if kind == b"Q":
            (size,) = _U16.unpack_from(payload, pos)
            pos += 2
            raw_topic = payload[pos : pos + size]
            if len(raw_topic) != size:
                return None
            response_topic = raw_topic.decode("utf-8")
            pos += size
        elif kind != b"R":
            return None
        (size,) = _U16.unpack_from(payload, pos)
        pos += 2
        correlation = payload[pos : pos + size]
        if len(correlation) != size:
            return None
        return response_topic, correlation, payload[pos + size :]
    except (struct.error, UnicodeDecodeError):
        return None
