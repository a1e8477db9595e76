"""Plain value types of the Kafka layer, and the serializer plumbing.

Records, partitions and delivery reports are :class:`typing.NamedTuple` classes: they cost well
under a microsecond to build (a frozen dataclass costs three times that, per record), compare and
hash as tuples, and so mix freely with kafka-python's own ``TopicPartition`` tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

from ..codecs import Codec, get_codec
from ..errors import CodecError, ConfigurationError

__all__ = [
    "Deserializer",
    "HeadersInput",
    "KafkaRecord",
    "RecordMetadata",
    "Serializer",
    "TopicPartition",
]

#: How a value or key is turned into bytes: a callable, a :class:`~trionet.codecs.Codec`, or a
#: codec name such as ``"json"`` or ``"msgpack"``.
Serializer: TypeAlias = Callable[[Any], bytes] | Codec | str
#: How bytes are turned back into a value: a callable, a codec, or a codec name.
Deserializer: TypeAlias = Callable[[bytes], Any] | Codec | str
#: Record headers as given to ``send``: a mapping or a sequence of ``(name, value)`` pairs, the
#: values bytes or text (text is encoded as UTF-8).
HeadersInput: TypeAlias = (
    Mapping[str, bytes | bytearray | memoryview | str]
    | Sequence[tuple[str, bytes | bytearray | memoryview | str]]
)


class TopicPartition(NamedTuple):
    """One partition of a topic."""

    topic: str
    partition: int


class KafkaRecord(NamedTuple):
    """A record read from Kafka.

    ``key`` and ``value`` are what the consumer's deserializers made of the bytes (the bytes
    themselves without deserializers); ``headers`` are ``(name, bytes)`` pairs in broker order.
    """

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    headers: Sequence[tuple[str, bytes]]
    timestamp: int
    """Milliseconds since the epoch (create or log-append time, see ``timestamp_type``)."""
    timestamp_type: int
    """0: the producer's create time; 1: the broker's log-append time."""

    @property
    def topic_partition(self) -> TopicPartition:
        """The record's :class:`TopicPartition`."""
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        """The value of the last header called *name*, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


class RecordMetadata(NamedTuple):
    """Where an acknowledged record was written."""

    topic: str
    partition: int
    offset: int
    """The record's offset, or -1 when the producer runs with ``acks=0``."""
    timestamp: int
    """Milliseconds since the epoch."""


def bytes_or_none(value: Any, what: str) -> bytes | bytearray | memoryview | None:
    if value is None or isinstance(value, (bytes, bytearray, memoryview)):
        return value
    raise CodecError(
        f"{what} must be bytes (or configure a {what}_serializer), not {type(value).__name__}",
        codec="bytes", fault="local",
    )


def make_encoder(spec: Serializer | None, what: str) -> Callable[[Any], Any] | None:
    """A function turning a key or value into bytes, or None to pass bytes through.

    Raises:
        ConfigurationError: *spec* is neither a callable, a codec nor a known codec name.
    """
    if spec is None:
        return None
    codec = _codec(spec, what)
    if codec is not None:
        encode = codec.encode
        name = getattr(codec, "name", type(codec).__name__)

        def encode_checked(value: Any) -> bytes | None:
            if value is None:
                return None
            return encode(value)

        encode_checked.__qualname__ = f"encode_{what}_with_{name}"
        return encode_checked
    if callable(spec):
        return spec
    raise ConfigurationError(f"{what}_serializer must be a callable, a codec or a codec name, "
                             f"not {spec!r}")


def make_decoder(spec: Deserializer | None, what: str) -> Callable[[bytes], Any] | None:
    """A function turning bytes into a key or value, or None to keep the bytes.

    Raises:
        ConfigurationError: *spec* is neither a callable, a codec nor a known codec name.
    """
    if spec is None:
        return None
    codec = _codec(spec, what)
    if codec is not None:
        return codec.decode
    if callable(spec):
        return spec
    raise ConfigurationError(f"{what}_deserializer must be a callable, a codec or a codec name, "
                             f"not {spec!r}")


def _codec(spec: object, what: str) -> Codec | None:
    if isinstance(spec, str):
        try:
            return get_codec(spec)
        except ValueError as exc:
            raise ConfigurationError(f"{what}: {exc}") from None
    if isinstance(spec, Codec):
        return spec
    return None


def normalize_headers(headers: HeadersInput | None) -> list[tuple[str, bytes]]:
    """``send``'s headers as kafka-python wants them: a list of ``(str, bytes)`` tuples.

    Raises:
        ConfigurationError: a header name is not text or a value is neither bytes nor text.
    """
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, bytes]] = []
    for item in items:
        pair: tuple[Any, ...] | None = tuple(item) if isinstance(item, (tuple, list)) else None
        if pair is None or len(pair) != 2:
            raise ConfigurationError(f"a header must be a (name, value) pair, not {item!r}")
        name, raw = pair
        if not isinstance(name, str):
            raise ConfigurationError(f"header names must be text, not {name!r}")
        value: bytes
        if isinstance(raw, str):
            value = raw.encode()
        elif isinstance(raw, (bytes, bytearray, memoryview)):
            value = bytes(raw)
        else:
            raise ConfigurationError(
                f"header {name!r}: the value must be bytes or text, not {type(raw).__name__}"
            )
        out.append((name, value))
    return out
