"""AsyncAProto v22 packets, sans-I/O: bytes in, decoded packets or rejections out.

Theory of operation
-------------------
A packet on the wire is::

    Content-Length (header_size bytes, byteorder) || Protocol-Version (1 byte, 22)
        || Content-Encoding (1 byte: 0 = JSON, 1 = ZiProto) || payload

``Content-Length`` counts the two one-byte headers and the payload. The payload must decode to a
JSON object / msgpack map.

:class:`PacketDecoder` splits the byte stream with the shared
:class:`~trionet.framing.LengthPrefixDecoder`, then checks each frame's two header bytes and
decodes its payload. Every frame becomes either an :class:`Incoming` (a valid request) or a
:class:`Rejected` carrying the error the original server would send back. Only a rejection marked
``fatal`` loses the framing (an announced length above ``max_packet_size``, or end of file in the
middle of a packet); every other bad packet is skipped exactly and the next one is parsed.

The decoder is built with ``extra_header_size=0`` on purpose: a ``Content-Length`` of 0 or 1 is a
malformed *packet*, not lost framing, so it gets ``ERR_REQUEST_MALFORMED`` and the connection goes
on.

:class:`PacketEncoder` builds packets and the four error replies, byte for byte as the original
AsyncAPY server sends them (``json.dumps`` with its default separators, JSON encoding, except
``ERR_REQUEST_MALFORMED`` for a ZiProto packet, which goes back in ZiProto).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final, NoReturn, TypeAlias

import msgpack

from ..codecs import JSON, Codec, ZiProto
from ..errors import AProtoError, FrameError, FrameTooLarge
from ..framing import (
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    LengthPrefixDecoder,
    LengthPrefixEncoder,
    NeedData,
)
from ._errors import StopPropagation
from ._peer import ByteOrder, Encoding, Peer

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "ENCODINGS",
    "ERR_HEADER_INVALID",
    "ERR_REQUEST_MALFORMED",
    "ERR_SESSION_LIMIT_REACHED",
    "ERR_TIMED_OUT",
    "PROTOCOL_VERSION",
    "ByteOrder",
    "Encoding",
    "Incoming",
    "Packet",
    "PacketDecoder",
    "PacketEncoder",
    "Rejected",
    "error_payload",
    "parse_body",
]


#: The only protocol version this implementation (and the original's last release) accepts.
PROTOCOL_VERSION: Final = 22
#: Content-Encoding byte -> encoding name.
ENCODINGS: Final[tuple[Encoding, Encoding]] = ("json", "ziproto")
_ENCODING_IDS: Final[dict[str, int]] = {"json": 0, "ziproto": 1}

#: The payload did not decode, or is not a map (also: a packet shorter than its 2 header bytes).
ERR_REQUEST_MALFORMED: Final = "ERR_REQUEST_MALFORMED"
#: Protocol-Version is not 22, Content-Encoding is not 0 or 1, or Content-Length is too large.
ERR_HEADER_INVALID: Final = "ERR_HEADER_INVALID"
#: The idle timeout (or the session time limit) fired.
ERR_TIMED_OUT: Final = "ERR_TIMED_OUT"
#: The peer's IP address already has ``session_limit`` open sessions.
ERR_SESSION_LIMIT_REACHED: Final = "ERR_SESSION_LIMIT_REACHED"

_ERROR_CODES: Final = frozenset(
    {ERR_REQUEST_MALFORMED, ERR_HEADER_INVALID, ERR_TIMED_OUT, ERR_SESSION_LIMIT_REACHED}
)

#: Default limit on a packet's Content-Length: 16 MiB.
DEFAULT_MAX_PACKET_SIZE: Final = DEFAULT_MAX_FRAME_SIZE


def check_encoding(encoding: object) -> Encoding:
    """Return *encoding* if it is ``"json"`` or ``"ziproto"``; raise ValueError otherwise."""
    if encoding == "json":
        return "json"
    if encoding == "ziproto":
        return "ziproto"
    raise ValueError(f"encoding must be 'json' or 'ziproto', not {encoding!r}")


def error_payload(error_code: str, encoding: Encoding = "json") -> bytes:
    """The payload of an error reply, exactly as the original server encodes it.

    JSON: ``json.dumps({"status": "failure", "error": code})`` (default separators, so with a space
    after ``:`` and ``,``). ZiProto: the msgpack map of the same two entries, which is what the
    ``ziproto`` package writes.

    Raises:
        ValueError: *error_code* is not one of the four protocol errors.
    """
    if error_code not in _ERROR_CODES:
        raise ValueError(f"unknown AsyncAProto error code {error_code!r}")
    reply = {"status": "failure", "error": error_code}
    if check_encoding(encoding) == "json":
        return json.dumps(reply).encode("utf-8")
    return msgpack.packb(reply, use_bin_type=True)  # type: ignore[no-any-return]


class Incoming:
    """A valid packet: its decoded map and the encoding it came in."""

    __slots__ = ("encoding", "fields")

    def __init__(self, fields: dict[Any, Any], encoding: Encoding) -> None:
        self.fields = fields
        self.encoding: Encoding = encoding

    def __repr__(self) -> str:
        return f"Incoming({self.fields!r}, encoding={self.encoding!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Incoming):
            return NotImplemented
        return self.fields == other.fields and self.encoding == other.encoding

    __hash__ = None  # type: ignore[assignment]


class Rejected:
    """A bad packet and the error reply it deserves.

    Attributes:
        error_code: the protocol error to send back (``ERR_REQUEST_MALFORMED`` or
            ``ERR_HEADER_INVALID``).
        encoding: the encoding of the error reply (``"ziproto"`` only for a ZiProto packet whose
            payload is bad, as the original does).
        reason: a human-readable explanation, for logs.
        fatal: True if the framing is lost: no further packet can be parsed from this stream.
    """

    __slots__ = ("encoding", "error_code", "fatal", "reason")

    def __init__(
        self, error_code: str, encoding: Encoding, reason: str, fatal: bool = False
    ) -> None:
        self.error_code = error_code
        self.encoding: Encoding = encoding
        self.reason = reason
        self.fatal = fatal

    def __repr__(self) -> str:
        flag = ", fatal" if self.fatal else ""
        return f"Rejected({self.error_code}, {self.encoding}, {self.reason!r}{flag})"

    def to_error(self) -> AProtoError:
        """This rejection as an :class:`~trionet.errors.AProtoError` (``fault="remote"``)."""
        return AProtoError(self.reason, error_code=self.error_code, fault="remote")


def _describe(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


# Decoding is stateless (json.loads / msgpack.unpackb), so every decoder shares these: a codec
# object costs about 4 KiB, which matters with 10,000 idle connections.
_DECODERS: Final[tuple[Codec, Codec]] = (JSON(), ZiProto())


def parse_body(body: bytes) -> Incoming | Rejected:
    """Check a packet body's two header bytes and decode its payload.

    *body* is what follows the Content-Length header: Protocol-Version, Content-Encoding and
    the payload.
    """
    if len(body) < 2:
        return Rejected(
            ERR_REQUEST_MALFORMED,
            "json",
            f"Content-Length {len(body)} cannot hold the 2 header bytes",
        )
    version = body[0]
    if version != PROTOCOL_VERSION:
        return Rejected(
            ERR_HEADER_INVALID, "json", f"unsupported Protocol-Version {version}, expected 22"
        )
    encoding_id = body[1]
    if encoding_id > 1:
        return Rejected(
            ERR_HEADER_INVALID,
            "json",
            f"unknown Content-Encoding {encoding_id}, expected 0 (JSON) or 1 (ZiProto)",
        )
    name = ENCODINGS[encoding_id]
    try:
        value = _DECODERS[encoding_id].decode(body[2:])
    except Exception as exc:  # codecs raise CodecError; be safe against any decoder bug
        return Rejected(ERR_REQUEST_MALFORMED, name, f"undecodable payload: {exc}")
    if type(value) is not dict:
        what = _describe(value)
        return Rejected(ERR_REQUEST_MALFORMED, name, f"the payload is {what}, not a map")
    return Incoming(value, name)


#: A valid packet as :meth:`PacketDecoder._feed` returns it: its map and its encoding.
Received: TypeAlias = tuple[dict[Any, Any], Encoding]


class PacketDecoder:
    """Incremental AsyncAProto packet decoder (no I/O).

    Feed received bytes with :meth:`feed` (``b""`` means end of file) and get back, in order, an
    :class:`Incoming` or a :class:`Rejected` for every packet the bytes complete. Any split of the
    input and any number of packets per chunk give the same result.

    The three-verb form is also available: :meth:`receive_data` then :meth:`next_event` until it
    returns :data:`~trionet.framing.NEED_DATA`.

    Args:
        header_size: bytes in the Content-Length header, 1 to 8.
        byteorder: ``"big"`` or ``"little"``.
        max_packet_size: the largest acceptable Content-Length; a larger one gives a fatal
            ``ERR_HEADER_INVALID`` rejection as soon as the header is complete.
    """

    __slots__ = ("_events", "_frames", "_pending_error")

    def __init__(
        self,
        *,
        header_size: int = 4,
        byteorder: ByteOrder = "big",
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        self._frames = LengthPrefixDecoder(
            header_size=header_size,
            byteorder=byteorder,
            extra_header_size=0,
            max_frame_size=max_packet_size,
        )
        self._events: list[Incoming | Rejected] = []
        self._pending_error: Rejected | None = None

    @property
    def header_size(self) -> int:
        """Bytes in the Content-Length header."""
        return self._frames.header_size

    @property
    def byteorder(self) -> ByteOrder:
        """Byte order of the Content-Length header."""
        return self._frames.byteorder

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned in a packet (an unfinished packet's bytes)."""
        return self._frames.buffered

    @property
    def at_packet_boundary(self) -> bool:
        """True when no partial packet is buffered."""
        return self._frames.at_frame_boundary

    def feed_frames(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes and return the raw bodies (header bytes 22/encoding + payload) they complete.

        This is the layer below :meth:`feed`, for clients that want raw packets.

        Raises:
            FrameTooLarge: a Content-Length above ``max_packet_size``.
            IncompleteFrame: end of file in the middle of a packet.
        """
        frames = self._frames.feed(data)
        if frames and data:
            # Frames that came before a bad header are returned first; the decoder keeps the
            # error for the next call. Surface it now: the peer may send nothing more.
            self._frames.next_frame()
        return frames

    def parse(self, body: bytes) -> Incoming | Rejected:
        """Check a raw body's header bytes and decode its payload (see :func:`parse_body`)."""
        return parse_body(body)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Incoming | Rejected]:
        """Add received bytes (``b""`` = end of file); return one event per completed packet.

        A fatal :class:`Rejected` is always the last event; after it the decoder returns nothing
        but that same rejection.
        """
        events = self._feed(data)
        return [Incoming(*event) if isinstance(event, tuple) else event for event in events]

    def _feed(self, data: bytes | bytearray | memoryview) -> list[Received | Rejected]:
        """:meth:`feed`, with each valid packet as a ``(fields, encoding)`` pair (the server
        makes a Packet of it: no Incoming object in between)."""
        if self._pending_error is not None:
            return [self._pending_error]
        if self._events:
            out: list[Received | Rejected] = [
                (event.fields, event.encoding) if isinstance(event, Incoming) else event
                for event in self._events
            ]
            self._events = []
            out.extend(self._feed(data))
            return out
        frames_decoder = self._frames
        try:
            frames = frames_decoder.feed(data)
        except FrameError as exc:
            return [self._fail(exc)]
        if not frames:
            return []
        out = []
        append = out.append
        event: Incoming | Rejected
        for frame in frames:
            # parse_body's well-formed case, inlined (one call less per packet); anything else,
            # including a decoder error, goes through parse_body itself
            if len(frame) >= 2 and frame[0] == PROTOCOL_VERSION and frame[1] <= 1:
                encoding_id = frame[1]
                try:
                    value = _DECODERS[encoding_id].decode(frame[2:])
                except Exception:  # (parse_body rejects it: decoded again there, rarely)
                    value = None
                if type(value) is dict:
                    append((value, ENCODINGS[encoding_id]))
                    continue
            event = parse_body(frame)
            append((event.fields, event.encoding) if isinstance(event, Incoming) else event)
        if data:
            # Frames that came before a bad header are returned first; the framing decoder
            # keeps the error for its next call. Surface it now: the peer may send nothing more.
            try:
                frames_decoder.next_frame()
            except FrameError as exc:
                out.append(self._fail(exc))
        return out

    def _fail(self, exc: FrameError) -> Rejected:
        code = ERR_HEADER_INVALID if isinstance(exc, FrameTooLarge) else ERR_REQUEST_MALFORMED
        self._pending_error = Rejected(code, "json", str(exc), fatal=True)
        return self._pending_error

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes (``b""`` = end of file); take the results with :meth:`next_event`."""
        self._events = self.feed(data)

    def next_event(self) -> Incoming | Rejected | NeedData:
        """Return the next decoded packet or rejection, or :data:`~trionet.framing.NEED_DATA`."""
        if self._events:
            return self._events.pop(0)
        return NEED_DATA


class PacketEncoder:
    """Builds AsyncAProto packets (no I/O).

    Args:
        header_size: bytes in the Content-Length header, 1 to 8.
        byteorder: ``"big"`` or ``"little"``.
        max_packet_size: the largest Content-Length this side will send; larger packets raise
            :class:`~trionet.errors.FrameTooLarge` (``fault="local"``).
    """

    __slots__ = ("_codecs", "_errors", "_frames", "_limit", "_pack")

    def __init__(
        self,
        *,
        header_size: int = 4,
        byteorder: ByteOrder = "big",
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
    ) -> None:
        self._frames = LengthPrefixEncoder(
            header_size=header_size,
            byteorder=byteorder,
            extra_header_size=2,
            max_frame_size=max_packet_size,
        )
        self._codecs: dict[str, tuple[Codec, bytes]] = {
            "json": (JSON(), b"\x16\x00"),
            "ziproto": (ZiProto(), b"\x16\x01"),
        }
        self._errors: dict[tuple[str, str], bytes] = {}
        # the framing encoder's header packer and bound, for encode()'s fast path
        frames = self._frames
        self._pack = None if frames._struct is None else frames._struct.pack
        self._limit = frames._limit

    def header(self, body_length: int) -> bytes:
        """The Content-Length header for a body (2 header bytes + payload) of that length."""
        return self._frames.header(body_length)

    def encode(self, fields: Any, encoding: Encoding = "json") -> bytes:
        """Return the packet carrying *fields* (normally a dict) in *encoding*.

        Raises:
            CodecError: *fields* cannot be encoded (``fault="local"``).
            FrameTooLarge: the packet exceeds ``max_packet_size``.
            ValueError: unknown encoding.
        """
        try:
            codec, prefix = self._codecs[encoding]
        except KeyError:
            check_encoding(encoding)
            raise  # pragma: no cover - check_encoding raised
        payload = codec.encode(fields)
        length = len(payload) + 2
        if self._pack is not None and length <= self._limit:  # LengthPrefixEncoder.encode's work
            return b"".join((self._pack(length), prefix, payload))
        return self._frames.encode(payload, prefix)

    def encode_body(self, fields: Any, encoding: Encoding = "json") -> bytes:
        """Protocol-Version, Content-Encoding and the encoded *fields*: a packet minus its
        Content-Length header (same errors as :meth:`encode`, except FrameTooLarge)."""
        try:
            codec, prefix = self._codecs[encoding]
        except KeyError:
            check_encoding(encoding)
            raise  # pragma: no cover - check_encoding raised
        return prefix + codec.encode(fields)

    def encode_payload(self, payload: bytes, encoding: Encoding = "json") -> bytes:
        """Return the packet carrying an already encoded *payload*."""
        try:
            prefix = self._codecs[encoding][1]
        except KeyError:
            check_encoding(encoding)
            raise  # pragma: no cover - check_encoding raised
        return self._frames.encode(payload, prefix)

    def error(self, error_code: str, encoding: Encoding = "json") -> bytes:
        """The complete error-reply packet for *error_code*, as the original sends it."""
        key = (error_code, encoding)
        packet = self._errors.get(key)
        if packet is None:
            packet = self.encode_payload(error_payload(error_code, encoding), encoding)
            self._errors[key] = packet
        return packet


def _parse_fields(fields: object) -> dict[Any, Any]:
    if isinstance(fields, dict):
        return fields
    if isinstance(fields, Mapping):
        return dict(fields)
    if isinstance(fields, (str, bytes, bytearray)):
        try:
            value = json.loads(fields)
        except ValueError as exc:
            raise AProtoError(
                f"packet fields are not valid JSON: {exc}",
                error_code=ERR_REQUEST_MALFORMED,
                fault="local",
            ) from exc
        if not isinstance(value, dict):
            raise AProtoError(
                f"packet fields must be a JSON object, not {_describe(value)}",
                error_code=ERR_REQUEST_MALFORMED,
                fault="local",
            )
        return value
    raise TypeError(
        f"packet fields must be a dict, a mapping or a JSON object string, "
        f"not {type(fields).__name__}"
    )


class Packet(Mapping[Any, Any]):
    """A high-level AsyncAProto packet: a read-only mapping plus its encoding and sender.

    ``packet["key"]``, ``"key" in packet``, ``for key in packet``, ``len(packet)``,
    ``packet.get(...)``, ``.keys()``/``.items()``/``.values()`` all work as on the dict.

    Args:
        fields: the payload: a dict (kept as is, not copied), any mapping (copied), or a JSON
            object as ``str``/``bytes`` (parsed; invalid JSON or a non-object raises
            :class:`~trionet.errors.AProtoError` with ``fault="local"``).
        encoding: ``"json"``, ``"ziproto"``, or ``None`` (the default): when sent, use the
            encoding of the client it is sent to (the encoding of its latest packet).
        sender: the :class:`HandlerClient` the packet came from; set by the server.

    Attributes:
        fields: the payload dict.
        encoding: the encoding (``None`` = the receiving client's).
        sender: the sending :class:`HandlerClient`, or ``None`` for packets built locally.
        protocol_version: always 22.
    """

    __slots__ = ("encoding", "fields", "sender")

    protocol_version: Final = PROTOCOL_VERSION

    def __init__(
        self,
        fields: Mapping[Any, Any] | str | bytes,
        encoding: Encoding | None = None,
        sender: Peer | None = None,
    ) -> None:
        self.fields: dict[Any, Any] = _parse_fields(fields)
        self.encoding: Encoding | None = None if encoding is None else check_encoding(encoding)
        self.sender = sender

    @classmethod
    def _received(cls, fields: dict[Any, Any], encoding: Encoding, sender: Peer) -> Packet:
        # The server's fast path: no validation, the decoder already did it.
        packet = cls.__new__(cls)
        packet.fields = fields
        packet.encoding = encoding
        packet.sender = sender
        return packet

    def stop_propagation(self) -> NoReturn:
        """Stop dispatching this packet to handlers in later groups.

        Raises :class:`StopPropagation`, which the server catches: the code after the call does
        not run, later groups are skipped, and the connection stays open. (``await
        packet.stop_propagation()``, the original's spelling, works too: the exception is raised
        before anything is awaited.)
        """
        raise StopPropagation

    def __getitem__(self, key: Any) -> Any:
        return self.fields[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def get(self, key: Any, default: Any = None) -> Any:
        """``packet.get(key, default)``, as on the dict."""
        return self.fields.get(key, default)

    def __repr__(self) -> str:
        return f"Packet({self.fields!r}, encoding={self.encoding!r})"
