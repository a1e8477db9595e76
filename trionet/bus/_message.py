"""Bus messages and their envelopes (sans-I/O).

A :class:`BusMessage` travels inside an *envelope*: the bytes a transport carries. trionet
writes a msgpack map (binary-safe, compact) by default, or JSON with spa_dat's field names for
talking to spa_dat programs. :func:`decode_envelope` reads both, telling them apart by the first
byte (a JSON object starts with ``{``, a msgpack map never does), and accepts spa_dat's
PascalCase aliases (``Payload``, ``ResponseTopic``, ...) as well as snake_case names.

The msgpack envelope is a map with the keys ``payload`` (bin), ``topic`` (str) and, when set,
``content_type``, ``client_name``, ``response_topic``, ``timestamp`` (int, seconds),
``headers`` (map of str to str), ``correlation_id`` (str), ``message_id`` (str, set by
:meth:`BusSocket.publish <trionet.bus.BusSocket.publish>`), ``key`` (str, the ordering key) and
``timeout_ms`` (int: how many milliseconds the message's deadline was away when it was
published; a receiver counts them from when it takes the message, at most
:data:`MAX_TIMEOUT_MS`). Unknown keys are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

import msgpack

from ..codecs import decode_json, decode_msgpack
from ..errors import CodecError
from ._errors import EnvelopeError, NoResponseTopic

__all__ = [
    "MAX_TIMEOUT_MS",
    "BusMessage",
    "EnvelopeCodec",
    "SpaMessage",
    "decode_envelope",
    "encode_envelope",
]

#: How envelopes are written: ``"msgpack"`` (binary-safe, the default) or ``"json"`` (spa_dat's
#: SpaMessage JSON; payloads that are not UTF-8 are base64-encoded and flagged).
EnvelopeCodec: TypeAlias = Literal["msgpack", "json"]

PayloadInput: TypeAlias = bytes | bytearray | memoryview | str

#: The longest deadline a received envelope can give its message (a day, in milliseconds):
#: a larger ``timeout_ms`` from a peer is cut to this.
MAX_TIMEOUT_MS: Final = 86_400_000

_FIELDS: Final = (
    "payload",
    "topic",
    "content_type",
    "client_name",
    "response_topic",
    "timestamp",
    "headers",
    "correlation_id",
)

# spa_dat 0.4 declares its model with a PascalCase alias generator.
_PASCAL: Final = {
    "Payload": "payload",
    "Topic": "topic",
    "ContentType": "content_type",
    "ClientName": "client_name",
    "ResponseTopic": "response_topic",
    "Timestamp": "timestamp",
    "Headers": "headers",
    "CorrelationId": "correlation_id",
    "MessageId": "message_id",
    "PayloadEncoding": "payload_encoding",
}


class BusMessage:
    """One message on the bus.

    ``BusMessage(payload, topic)`` is the minimum; text payloads are encoded as UTF-8, as
    spa_dat's pydantic model did. ``timestamp`` defaults to the time the message is made (whole
    seconds since the epoch, as in spa_dat).

    Args:
        payload: the message body (``str`` is stored as its UTF-8 bytes).
        topic: the topic to publish to, or the topic it arrived on.
        content_type: a MIME type for the payload, for the receiver's benefit.
        client_name: who sent it.
        response_topic: where replies go; :meth:`BusSocket.request
            <trionet.bus.BusSocket.request>` sets it.
        timestamp: seconds since the epoch; the current time if omitted.
        headers: free-form text metadata.
        correlation_id: pairs a reply with its request.
        message_id: identifies the message in logs; :meth:`BusSocket.publish
            <trionet.bus.BusSocket.publish>` gives one (unique per socket and run) to a message
            that has none. It is not compared by ``==``.
        key: the ordering key: a consumer with ``max_concurrency > 1`` handles messages with
            the same key one at a time, in order; on Kafka it is also the record key, which
            picks the partition. ``None``: no order is kept with other messages.
        deadline: when the message is no longer worth handling, in :func:`trio.current_time`
            terms (as trio's own deadlines), or ``None``. :meth:`BusSocket.request
            <trionet.bus.BusSocket.request>` sets it to when the requester stops waiting; it
            travels in the envelope as the time left, and a consumer application runs the
            handler under it. Not compared by ``==``.
    """

    __slots__ = (
        "client_name",
        "content_type",
        "correlation_id",
        "deadline",
        "headers",
        "key",
        "message_id",
        "payload",
        "response_topic",
        "timestamp",
        "topic",
    )

    payload: bytes
    topic: str
    content_type: str | None
    client_name: str | None
    response_topic: str | None
    timestamp: int
    headers: dict[str, str]
    correlation_id: str | None
    message_id: str | None
    key: str | None
    deadline: float | None

    def __init__(
        self,
        payload: PayloadInput,
        topic: str,
        content_type: str | None = None,
        client_name: str | None = None,
        response_topic: str | None = None,
        timestamp: int | None = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        *,
        message_id: str | None = None,
        key: str | None = None,
        deadline: float | None = None,
    ) -> None:
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, bytes):
            if not isinstance(payload, bytearray | memoryview):
                raise TypeError(
                    f"payload must be bytes or str, not {type(payload).__name__}"
                )
            payload = bytes(payload)
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a str or None, not {type(key).__name__}")
        self.payload = payload
        self.topic = topic
        self.content_type = content_type
        self.client_name = client_name
        self.response_topic = response_topic
        self.timestamp = int(time.time()) if timestamp is None else int(timestamp)
        self.headers = {} if headers is None else dict(headers)
        self.correlation_id = correlation_id
        self.message_id = message_id
        self.key = key
        self.deadline = deadline

    # -- conveniences ---------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (raises :class:`UnicodeDecodeError` if it is not)."""
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        """The payload parsed as JSON.

        Raises:
            CodecError: the payload is not JSON, or nests deeper than
                :data:`~trionet.codecs.DEFAULT_MAX_DEPTH` (also a :exc:`ValueError`).
        """
        return decode_json(self.payload)

    def copy(self, **changes: Any) -> BusMessage:
        """A copy (with its own ``headers`` dict), with the given fields changed."""
        fields = {name: getattr(self, name) for name in _FIELDS}
        fields["message_id"] = self.message_id
        fields["key"] = self.key
        fields["deadline"] = self.deadline
        fields.update(changes)
        return BusMessage(**fields)

    def _clone(self) -> BusMessage:
        """A fast copy for the in-memory transport (its own ``headers`` dict)."""
        new = object.__new__(BusMessage)
        new.payload = self.payload
        new.topic = self.topic
        new.content_type = self.content_type
        new.client_name = self.client_name
        new.response_topic = self.response_topic
        new.timestamp = self.timestamp
        new.headers = dict(self.headers) if self.headers else {}
        new.correlation_id = self.correlation_id
        new.message_id = self.message_id
        new.key = self.key
        new.deadline = self.deadline
        return new

    def make_reply(
        self,
        payload: PayloadInput,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        client_name: str | None = None,
    ) -> BusMessage:
        """A reply to this message: addressed to its ``response_topic``, same correlation id.

        Raises:
            NoResponseTopic: if this message names no ``response_topic``.
        """
        if not self.response_topic:
            raise NoResponseTopic(f"the message on {self.topic!r} has no response_topic")
        return BusMessage(
            payload,
            self.response_topic,
            content_type=content_type,
            client_name=client_name,
            headers=headers,
            correlation_id=self.correlation_id,
        )

    # -- dunder ---------------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusMessage):
            return NotImplemented
        return self.key == other.key and all(
            getattr(self, name) == getattr(other, name) for name in _FIELDS
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like spa_dat's pydantic model

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 40 else self.payload[:37] + b"..."
        extra = "".join(
            f", {name}={getattr(self, name)!r}"
            for name in ("content_type", "client_name", "response_topic", "correlation_id",
                         "message_id", "key", "deadline")
            if getattr(self, name) is not None
        )
        if self.headers:
            extra += f", headers={self.headers!r}"
        return f"BusMessage(payload={shown!r}, topic={self.topic!r}{extra})"

    # -- envelopes ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The message as a plain dict of spa_dat's field names (payload as bytes)."""
        return {name: getattr(self, name) for name in _FIELDS}

    def to_json(self) -> bytes:
        """spa_dat's JSON form (see :func:`encode_envelope` with ``codec="json"``)."""
        return encode_envelope(self, "json")

    @classmethod
    def from_json(cls, data: bytes | str) -> BusMessage:
        """Parse spa_dat's JSON form (snake_case or PascalCase field names).

        Raises:
            EnvelopeError: if *data* is not such a JSON object.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        return _decode_json(data)


#: spa_dat's name for :class:`BusMessage`.
SpaMessage = BusMessage

def encode_envelope(message: BusMessage, codec: EnvelopeCodec = "msgpack", *,
                    now: float | None = None) -> bytes:
    """The bytes that carry *message* over a transport.

    Args:
        message: the message.
        codec: ``"msgpack"`` (binary-safe, compact) or ``"json"`` (spa_dat's JSON).
        now: the current :func:`trio.current_time`, needed to write a message's
            ``deadline`` as the time left (without it, the deadline is not written).

    Raises:
        EnvelopeError: (``fault="local"``) if a header is not text, or the codec is unknown.
    """
    return _encode_envelope(message, codec, message.message_id, _timeout_ms(message, now))


def _timeout_ms(message: BusMessage, now: float | None) -> int | None:
    """The time left until *message*'s deadline, in whole milliseconds (None: no deadline)."""
    deadline = message.deadline
    if deadline is None or now is None or deadline == float("inf"):
        return None
    left = (deadline - now) * 1000
    if not left > 0:  # also NaN
        return 0
    return int(min(left, MAX_TIMEOUT_MS))


def _encode_envelope(message: BusMessage, codec: EnvelopeCodec | str,
                     message_id: str | None, timeout_ms: int | None = None) -> bytes:
    if codec == "msgpack":
        envelope: dict[str, Any] = {"payload": message.payload, "topic": message.topic}
        if message.content_type is not None:
            envelope["content_type"] = message.content_type
        if message.client_name is not None:
            envelope["client_name"] = message.client_name
        if message.response_topic is not None:
            envelope["response_topic"] = message.response_topic
        envelope["timestamp"] = message.timestamp
        if message.headers:
            _check_headers(message.headers)
            envelope["headers"] = message.headers
        if message.correlation_id is not None:
            envelope["correlation_id"] = message.correlation_id
        if message_id is not None:
            envelope["message_id"] = message_id
        if message.key is not None:
            envelope["key"] = message.key
        if timeout_ms is not None:
            envelope["timeout_ms"] = timeout_ms
        try:
            return msgpack.packb(envelope, use_bin_type=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise EnvelopeError(f"cannot encode the message: {exc}", fault="local") from exc
    if codec == "json":
        return _encode_json(message, message_id, timeout_ms)
    raise EnvelopeError(f"unknown envelope codec {codec!r}; use 'msgpack' or 'json'",
                        fault="local")


def decode_envelope(data: bytes, *, now: float | None = None) -> BusMessage:
    """Read a message from envelope bytes written by :func:`encode_envelope` or spa_dat.

    Args:
        data: the envelope.
        now: the current :func:`trio.current_time`: with it, an envelope's ``timeout_ms``
            becomes the message's ``deadline`` (``now`` plus the time left, at most
            :data:`MAX_TIMEOUT_MS`); without it, the message has no deadline.

    Raises:
        EnvelopeError: for anything that is not a valid envelope, whatever the bytes.
    """
    if not data:
        raise EnvelopeError("empty envelope")
    if data[0] == 0x7B or data[:1].isspace():  # "{" or leading JSON whitespace
        return _decode_json(data, now)
    try:
        value = decode_msgpack(data, strict_map_key=True)
    except CodecError as exc:
        raise EnvelopeError(f"not a bus envelope ({exc})") from exc
    if not isinstance(value, dict):
        raise EnvelopeError(f"not a bus envelope (a msgpack {type(value).__name__})")
    payload = value.get("payload")
    if not isinstance(payload, bytes):
        raise EnvelopeError("not a bus envelope (no binary 'payload')")
    return _from_fields(value, payload, now)


def _check_headers(headers: Mapping[str, str]) -> None:
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise EnvelopeError(
                f"header {key!r}: names and values must be str, not {type(value).__name__}",
                fault="local",
            )


def _optional_str(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None or isinstance(value, str):
        return value
    raise EnvelopeError(f"envelope field {name!r} must be a string, not {type(value).__name__}")


#: The largest timestamp an envelope may carry (that of a signed 64-bit integer).
_MAX_TIMESTAMP: Final = 2**63 - 1


def _deadline(fields: Mapping[str, Any], now: float | None) -> float | None:
    timeout_ms = fields.get("timeout_ms")
    if timeout_ms is None:
        return None
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise EnvelopeError("envelope field 'timeout_ms' must be an integer")
    if now is None:
        return None
    # A peer's value is bounded: negative means "already past", huge means at most a day.
    return now + max(0, min(timeout_ms, MAX_TIMEOUT_MS)) / 1000


def _from_fields(fields: Mapping[str, Any], payload: bytes,
                 now: float | None = None) -> BusMessage:
    topic = fields.get("topic")
    if not isinstance(topic, str):
        raise EnvelopeError("envelope field 'topic' must be a string")
    timestamp = fields.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool) or not isinstance(timestamp, int | float)
        or not -_MAX_TIMESTAMP <= timestamp <= _MAX_TIMESTAMP  # also refuses NaN
    ):
        raise EnvelopeError("envelope field 'timestamp' must be a number of seconds "
                            "within a signed 64-bit integer")
    headers = fields.get("headers")
    if headers is None:
        headers = {}
    elif not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise EnvelopeError("envelope field 'headers' must map strings to strings")
    return BusMessage(
        payload,
        topic,
        content_type=_optional_str(fields, "content_type"),
        client_name=_optional_str(fields, "client_name"),
        response_topic=_optional_str(fields, "response_topic"),
        timestamp=None if timestamp is None else int(timestamp),
        headers=headers,
        correlation_id=_optional_str(fields, "correlation_id"),
        message_id=_optional_str(fields, "message_id"),
        key=_optional_str(fields, "key"),
        deadline=_deadline(fields, now),
    )


def _encode_json(message: BusMessage, message_id: str | None,
                 timeout_ms: int | None = None) -> bytes:
    try:
        payload: str = message.payload.decode("utf-8")
        encoding = None
    except UnicodeDecodeError:
        payload = base64.b64encode(message.payload).decode("ascii")
        encoding = "base64"
    body: dict[str, Any] = {
        "payload": payload,
        "topic": message.topic,
        "content_type": message.content_type,
        "client_name": message.client_name,
        "response_topic": message.response_topic,
        "timestamp": message.timestamp,
    }
    if encoding is not None:
        body["payload_encoding"] = encoding
    if message.headers:
        _check_headers(message.headers)
        body["headers"] = message.headers
    if message.correlation_id is not None:
        body["correlation_id"] = message.correlation_id
    if message_id is not None:
        body["message_id"] = message_id
    if message.key is not None:
        body["key"] = message.key
    if timeout_ms is not None:
        body["timeout_ms"] = timeout_ms
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _decode_json(data: bytes, now: float | None = None) -> BusMessage:
    try:
        value = decode_json(data)
    except CodecError as exc:
        raise EnvelopeError(f"not a bus envelope (invalid JSON: {exc})") from exc
    if not isinstance(value, dict):
        raise EnvelopeError(f"not a bus envelope (a JSON {type(value).__name__})")
    fields: dict[str, Any] = {}
    for key, item in value.items():
        fields[_PASCAL.get(key) or key] = item
    raw = fields.get("payload")
    if not isinstance(raw, str):
        raise EnvelopeError("not a bus envelope (no string 'payload')")
    encoding = fields.get("payload_encoding")
    if encoding is None:
        payload = raw.encode("utf-8", "surrogatepass")
    elif encoding == "base64":
        try:
            payload = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EnvelopeError(f"payload is not valid base64: {exc}") from exc
    else:
        raise EnvelopeError(f"unknown payload_encoding {encoding!r}")
    return _from_fields(fields, payload, now)
