"""The sans-I/O packet codec: golden vectors, error replies, any split, pipelining, bad input."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
import ziproto
from hypothesis import given, settings, strategies as st

from trionet.aproto import (
    ERR_HEADER_INVALID,
    ERR_REQUEST_MALFORMED,
    ERR_SESSION_LIMIT_REACHED,
    ERR_TIMED_OUT,
    Incoming,
    Packet,
    PacketDecoder,
    PacketEncoder,
    Rejected,
    StopPropagation,
    error_payload,
)
from trionet.aproto._packet import parse_body
from trionet.codecs import JSON, ZiProto
from trionet.errors import AProtoError, CodecError, FrameTooLarge
from trionet.framing import NEED_DATA, LengthPrefixEncoder

HEADER_SIZES = [1, 2, 4, 8]
ORDERS = ["big", "little"]

# -- golden vectors -------------------------------------------------------------------------------

# From the original's protocol page ("The protocol - Supported encodings"): a ZiProto packet with
# a 4-byte big-endian header.
DOC_ZIPROTO = b"\x00\x00\x00\x0b\x16\x01\x81\xa3foo\xa3bar"
# The page's JSON example reads b'\x00\x00\x00\x10\x16\x01{"foo": "bar"}', but its own table says
# Content-Encoding 0 is JSON (and the original server decodes byte 1 as ZiProto): the example's
# encoding byte is a typo. This is the packet with the JSON encoding byte.
DOC_JSON = b'\x00\x00\x00\x10\x16\x00{"foo": "bar"}'
DOC_JSON_AS_PRINTED = b'\x00\x00\x00\x10\x16\x01{"foo": "bar"}'


def _events(data: bytes, **fmt: Any) -> list[Incoming | Rejected]:
    return PacketDecoder(**fmt).feed(data)


def test_doc_vectors_decode() -> None:
    assert _events(DOC_ZIPROTO) == [Incoming({"foo": "bar"}, "ziproto")]
    assert _events(DOC_JSON) == [Incoming({"foo": "bar"}, "json")]


def test_doc_json_vector_as_printed_is_a_ziproto_packet_with_a_json_payload() -> None:
    # The original server would try ZiProto on it and answer ERR_REQUEST_MALFORMED in ZiProto.
    [event] = _events(DOC_JSON_AS_PRINTED)
    assert isinstance(event, Rejected)
    assert (event.error_code, event.encoding, event.fatal) == (
        ERR_REQUEST_MALFORMED,
        "ziproto",
        False,
    )


def test_doc_ziproto_vector_encodes_exactly() -> None:
    assert PacketEncoder().encode({"foo": "bar"}, "ziproto") == DOC_ZIPROTO


@pytest.mark.parametrize("header_size", HEADER_SIZES)
@pytest.mark.parametrize("byteorder", ORDERS)
@pytest.mark.parametrize(
    ("encoding", "payload"),
    [("json", b'{"foo":"bar"}'), ("ziproto", b"\x81\xa3foo\xa3bar")],
)
def test_golden_vectors_every_header_size_and_order(
    header_size: int, byteorder: Any, encoding: Any, payload: bytes
) -> None:
    enc_byte = b"\x00" if encoding == "json" else b"\x01"
    expected = (len(payload) + 2).to_bytes(header_size, byteorder) + b"\x16" + enc_byte + payload
    encoder = PacketEncoder(header_size=header_size, byteorder=byteorder)
    assert encoder.encode({"foo": "bar"}, encoding) == expected
    decoder = PacketDecoder(header_size=header_size, byteorder=byteorder)
    assert decoder.feed(expected) == [Incoming({"foo": "bar"}, encoding)]
    # The original's JSON (default separators) decodes the same.
    if encoding == "json":
        spaced = b'{"foo": "bar"}'
        raw = (len(spaced) + 2).to_bytes(header_size, byteorder) + b"\x16\x00" + spaced
        assert PacketDecoder(header_size=header_size, byteorder=byteorder).feed(raw) == [
            Incoming({"foo": "bar"}, "json")
        ]


@pytest.mark.parametrize(
    "code", [ERR_REQUEST_MALFORMED, ERR_HEADER_INVALID, ERR_TIMED_OUT, ERR_SESSION_LIMIT_REACHED]
)
@pytest.mark.parametrize("header_size", HEADER_SIZES)
@pytest.mark.parametrize("byteorder", ORDERS)
def test_error_replies_are_byte_identical_to_the_original(
    code: str, header_size: int, byteorder: Any
) -> None:
    # What the original's _send builds for from_client=False, encoding None/0 ...
    text = json.dumps({"status": "failure", "error": code}).encode("utf-8")
    expected = (len(text) + 2).to_bytes(header_size, byteorder) + bytes([22, 0]) + text
    encoder = PacketEncoder(header_size=header_size, byteorder=byteorder)
    assert encoder.error(code) == expected
    assert b'"status": "failure", "error": ' in expected
    # ... and for encoding 1 (a bad ZiProto payload): the ziproto package's bytes.
    packed = ziproto.encode({"status": "failure", "error": code})
    assert error_payload(code, "ziproto") == packed
    assert encoder.error(code, "ziproto") == (
        (len(packed) + 2).to_bytes(header_size, byteorder) + bytes([22, 1]) + packed
    )


def test_error_payload_refuses_unknown_codes() -> None:
    with pytest.raises(ValueError, match="unknown AsyncAProto error code"):
        error_payload("ERR_NOPE")


# -- bad packets ----------------------------------------------------------------------------------


def _raw(body: bytes, header_size: int = 4) -> bytes:
    return len(body).to_bytes(header_size, "big") + body


@pytest.mark.parametrize(
    ("body", "code", "reply_encoding"),
    [
        (b"\x17\x00{}", ERR_HEADER_INVALID, "json"),  # version 23
        (b"\x0b\x00{}", ERR_HEADER_INVALID, "json"),  # the original's V1 (11)
        (b"\x16\x02{}", ERR_HEADER_INVALID, "json"),  # encoding 2
        (b"\x16\xff{}", ERR_HEADER_INVALID, "json"),
        (b"\x16\x00{not json", ERR_REQUEST_MALFORMED, "json"),
        (b"\x16\x00", ERR_REQUEST_MALFORMED, "json"),  # empty payload
        (b"\x16\x00[1, 2]", ERR_REQUEST_MALFORMED, "json"),  # a list, not a map
        (b'\x16\x00"text"', ERR_REQUEST_MALFORMED, "json"),
        (b"\x16\x00\xff\xfe", ERR_REQUEST_MALFORMED, "json"),  # not UTF-8
        (b"\x16\x01\x92\x01\x02", ERR_REQUEST_MALFORMED, "ziproto"),  # msgpack list
        (b"\x16\x01\xc1", ERR_REQUEST_MALFORMED, "ziproto"),  # never-used msgpack byte
        (b"\x16\x01\x81\xa3foo", ERR_REQUEST_MALFORMED, "ziproto"),  # truncated map
        (b"\x16\x01\x80\x80", ERR_REQUEST_MALFORMED, "ziproto"),  # trailing data
        (b"\x16", ERR_REQUEST_MALFORMED, "json"),  # Content-Length 1
        (b"", ERR_REQUEST_MALFORMED, "json"),  # Content-Length 0
    ],
)
def test_each_bad_packet_gets_its_error_and_parsing_goes_on(
    body: bytes, code: str, reply_encoding: str
) -> None:
    good = PacketEncoder().encode({"after": 1})
    events = _events(_raw(body) + good)
    assert len(events) == 2
    bad, after = events
    assert isinstance(bad, Rejected)
    assert (bad.error_code, bad.encoding, bad.fatal) == (code, reply_encoding, False)
    assert after == Incoming({"after": 1}, "json")
    assert isinstance(bad.to_error(), AProtoError)
    assert bad.to_error().error_code == code


def test_oversized_length_is_fatal_and_sticky() -> None:
    decoder = PacketDecoder(max_packet_size=100)
    good = PacketEncoder().encode({"a": 1})
    events = decoder.feed(good + (101).to_bytes(4, "big"))
    assert events[0] == Incoming({"a": 1}, "json")
    assert isinstance(events[1], Rejected)
    assert (events[1].error_code, events[1].fatal) == (ERR_HEADER_INVALID, True)
    assert decoder.feed(good) == [events[1]]


def test_eof_mid_packet_is_fatal_malformed() -> None:
    decoder = PacketDecoder()
    assert decoder.feed(PacketEncoder().encode({"a": 1})[:-1]) == []
    [event] = decoder.feed(b"")
    assert isinstance(event, Rejected)
    assert (event.error_code, event.fatal) == (ERR_REQUEST_MALFORMED, True)


def test_clean_eof_gives_nothing() -> None:
    decoder = PacketDecoder()
    assert decoder.feed(PacketEncoder().encode({"a": 1})) == [Incoming({"a": 1}, "json")]
    assert decoder.at_packet_boundary
    assert decoder.feed(b"") == []


def test_three_verb_interface() -> None:
    decoder = PacketDecoder()
    assert decoder.next_event() is NEED_DATA
    data = PacketEncoder().encode({"a": 1}) * 2
    decoder.receive_data(data[:5])
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(data[5:])
    assert decoder.next_event() == Incoming({"a": 1}, "json")
    assert decoder.next_event() == Incoming({"a": 1}, "json")
    assert decoder.next_event() is NEED_DATA


def test_ziproto_maps_of_16_and_more_entries_decode() -> None:
    value = {f"k{i}": i for i in range(40)}
    packed = ziproto.encode(value)  # the package encodes them; it cannot decode them
    assert packed == msgpack.packb(value, use_bin_type=True)
    with pytest.raises(Exception):  # noqa: B017 - the package's own failure
        ziproto.decode(packed)
    assert _events(_raw(b"\x16\x01" + packed)) == [Incoming(value, "ziproto")]
    nested = {"list": list(range(20)), "map": value}
    assert _events(PacketEncoder().encode(nested, "ziproto")) == [Incoming(nested, "ziproto")]


def test_encoder_limits_and_errors() -> None:
    encoder = PacketEncoder(header_size=1)
    with pytest.raises(FrameTooLarge):
        encoder.encode({"x": "y" * 300})
    with pytest.raises(CodecError):
        PacketEncoder().encode({"x": object()})
    with pytest.raises(ValueError, match="encoding"):
        PacketEncoder().encode({}, "xml")  # type: ignore[arg-type]


def test_header_and_body_helpers() -> None:
    encoder = PacketEncoder(header_size=2, byteorder="little")
    body = encoder.encode_body({"a": 1}, "ziproto")
    assert body == b"\x16\x01\x81\xa1a\x01"
    assert encoder.header(len(body)) + body == encoder.encode({"a": 1}, "ziproto")
    assert encoder.encode_payload(b"\x80", "ziproto") == b"\x03\x00\x16\x01\x80"


# -- hypothesis: splits, pipelining, garbage ------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=8,
)
maps = st.dictionaries(st.text(max_size=6), json_values, max_size=20)

bad_bodies = st.sampled_from(
    [b"\x17\x00{}", b"\x16\x05{}", b"\x16\x00[1]", b"\x16\x00{", b"\x16\x01\x91\x01", b"\x16", b""]
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, str, list[bytes], list[Any]]:
    header_size = draw(st.sampled_from(HEADER_SIZES))
    byteorder = draw(st.sampled_from(ORDERS))
    encoder = PacketEncoder(header_size=header_size, byteorder=byteorder)  # type: ignore[arg-type]
    packets: list[bytes] = []
    expected: list[Any] = []
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.booleans()):
            value = draw(maps)
            encoding = draw(st.sampled_from(["json", "ziproto"]))
            try:
                packet = encoder.encode(value, encoding)  # type: ignore[arg-type]
            except FrameTooLarge:  # a 1-byte header cannot announce it
                continue
            packets.append(packet)
            expected.append(("ok", value, encoding))
        else:
            body = draw(bad_bodies)
            packets.append(len(body).to_bytes(header_size, byteorder) + body)  # type: ignore[arg-type]
            expected.append(("bad",))
    return header_size, byteorder, packets, expected


def _summary(events: list[Incoming | Rejected]) -> list[Any]:
    return [("ok", e.fields, e.encoding) if isinstance(e, Incoming) else ("bad",) for e in events]


@given(streams(), st.data())
def test_any_split_of_any_pipeline_parses_exactly(
    stream: tuple[int, str, list[bytes], list[Any]], data: st.DataObject
) -> None:
    header_size, byteorder, packets, expected = stream
    wire = b"".join(packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    decoder = PacketDecoder(header_size=header_size, byteorder=byteorder)  # type: ignore[arg-type]
    events: list[Incoming | Rejected] = []
    for chunk in chunks:
        if chunk:
            events.extend(decoder.feed(chunk))
    events.extend(decoder.feed(b""))
    assert _summary(events) == expected


@given(st.binary(max_size=200), st.sampled_from(HEADER_SIZES), st.integers(1, 50))
def test_garbage_never_raises_and_fatal_is_last(
    garbage: bytes, header_size: int, step: int
) -> None:
    decoder = PacketDecoder(header_size=header_size, max_packet_size=1000)
    events: list[Incoming | Rejected] = []
    for i in range(0, len(garbage), step):
        events.extend(decoder.feed(garbage[i : i + step]))
        if events and isinstance(events[-1], Rejected) and events[-1].fatal:
            break
    else:
        events.extend(decoder.feed(b""))
    for event in events[:-1]:
        assert isinstance(event, Incoming) or not event.fatal
    for event in events:
        if isinstance(event, Rejected):
            assert event.error_code in (ERR_REQUEST_MALFORMED, ERR_HEADER_INVALID)


ziproto_safe = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=40)
    | st.binary(min_size=1, max_size=40)
    | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=15) | st.dictionaries(st.text(max_size=6), inner, max_size=15)
    ),
    max_leaves=10,
)


@settings(max_examples=60)
@given(st.dictionaries(st.text(max_size=6), ziproto_safe, max_size=15))
def test_ziproto_bytes_match_the_package(value: dict[str, Any]) -> None:
    packet = PacketEncoder().encode(value, "ziproto")
    assert packet[6:] == ziproto.encode(value)
    assert ziproto.decode(packet[6:]) == value
    assert _events(packet) == [Incoming(value, "ziproto")]


def test_empty_bytes_are_the_one_ziproto_difference() -> None:
    # ziproto 1.0 writes an empty bytes value as a bare 0xc4 (bin 8 without its length byte),
    # which is not valid msgpack; trionet writes the valid b"\xc4\x00".
    assert ziproto.encode({"b": b""}) == b"\x81\xa1b\xc4"
    assert PacketEncoder().encode({"b": b""}, "ziproto")[6:] == b"\x81\xa1b\xc4\x00"


# -- Packet ---------------------------------------------------------------------------------------


def test_packet_behaves_like_a_dict() -> None:
    packet = Packet({"a": 1, "b": [2]}, encoding="ziproto")
    assert packet["a"] == 1
    assert "b" in packet
    assert "z" not in packet
    assert list(packet) == ["a", "b"]
    assert len(packet) == 2
    assert dict(packet.items()) == {"a": 1, "b": [2]}
    assert packet.get("z", 3) == 3
    assert packet == {"a": 1, "b": [2]}
    assert packet.encoding == "ziproto"
    assert packet.sender is None
    assert packet.protocol_version == 22
    assert "encoding='ziproto'" in repr(packet)


def test_packet_from_json_text() -> None:
    assert Packet('{"a": 1}', "json").fields == {"a": 1}
    assert Packet(b'{"a": 1}').fields == {"a": 1}
    assert Packet(Packet({"a": 1})).fields == {"a": 1}
    with pytest.raises(AProtoError, match="not valid JSON"):
        Packet("{nope")
    with pytest.raises(AProtoError, match="JSON object"):
        Packet("[1, 2]")
    with pytest.raises(TypeError):
        Packet(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="encoding"):
        Packet({}, "yaml")  # type: ignore[arg-type]


def test_stop_propagation_raises() -> None:
    with pytest.raises(StopPropagation):
        Packet({}).stop_propagation()


# The decoder reads a well-formed packet inline and the encoder frames inline (hot paths):
# both must agree with parse_body and LengthPrefixEncoder on everything.
packet_bodies = st.one_of(
    st.binary(max_size=12),
    st.builds(
        lambda version, encoding, payload: bytes([version, encoding]) + payload,
        st.sampled_from([22, 21, 0]),
        st.sampled_from([0, 1, 2]),
        st.one_of(
            st.binary(max_size=12),
            st.sampled_from([b'{"a":1}', b"[1]", b"{}", b'{"a":', b"\x81\xa1a\x01", b"\x91\x01",
                             b"\xc1", b'"x"', b"  {}  ", b'{"a":1} x']),
        ),
    ),
)


def _key(event: object) -> object:
    # (Rejected has no __eq__: compare what it carries)
    if isinstance(event, Rejected):
        return ("rejected", event.error_code, event.encoding, event.reason, event.fatal)
    assert isinstance(event, Incoming)
    return ("incoming", event.fields, event.encoding)


@given(st.lists(packet_bodies, max_size=5))
def test_decoder_events_are_parse_body_results(bodies: list[bytes]) -> None:
    data = b"".join(len(body).to_bytes(4, "big") + body for body in bodies)
    got = PacketDecoder().feed(data)
    assert [_key(event) for event in got] == [_key(parse_body(body)) for body in bodies]


@pytest.mark.parametrize("header_size", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("byteorder", ["big", "little"])
def test_encoder_frames_as_length_prefix_encoder(header_size: int, byteorder: str) -> None:
    limit = min(300, (1 << (8 * header_size)) - 1)
    encoder = PacketEncoder(header_size=header_size, byteorder=byteorder,  # type: ignore[arg-type]
                            max_packet_size=limit)
    frames = LengthPrefixEncoder(header_size=header_size, byteorder=byteorder,  # type: ignore[arg-type]
                                 extra_header_size=2, max_frame_size=limit)
    for size in (0, 1, 100, limit - 10, limit - 9, limit - 8):
        fields = {"d": "x" * size}
        for encoding, codec, prefix in (("json", JSON(), b"\x16\x00"),
                                        ("ziproto", ZiProto(), b"\x16\x01")):
            payload = codec.encode(fields)
            if len(payload) + 2 > limit:
                with pytest.raises(FrameTooLarge):
                    encoder.encode(fields, encoding)  # type: ignore[arg-type]
                continue
            assert encoder.encode(fields, encoding) == frames.encode(  # type: ignore[arg-type]
                payload, prefix
            )
