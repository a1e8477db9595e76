"""Seeded fuzzing of every decoder a server feeds with untrusted bytes.

Run as a program (``python tests/core/fuzz_decoders.py N``) by ``test_decoder_fuzz.py``, so that
a crash (a signal, a C stack overflow) shows up in the exit status instead of ending the test
run. Each decoder gets nested containers and extension values, deep nesting, random bytes,
mutations of valid encodings and random splits, and may raise only its documented errors.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings, strategies as st

from trionet.aproto._packet import Incoming, PacketDecoder, Rejected
from trionet.bus import EnvelopeError
from trionet.bus._message import decode_envelope
from trionet.channel import ChannelProtocol
from trionet.codecs import JSON, MsgPack, ZiProto
from trionet.errors import CodecError, FrameError, ProtocolError
from trionet.framing import LengthPrefixDecoder


class Point:
    def __init__(self, value: Any) -> None:
        self.value = value


def _with_serializers(codec: Any) -> Any:
    codec.add_serializer(Point, lambda p: p.value, Point)
    codec.add_serializer(complex, lambda c: [c.real, c.imag], lambda v: complex(*v))
    return codec


_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
            | st.text(max_size=20) | st.binary(max_size=20))


def _nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
            | children.map(lambda v: msgpack.ExtType(16, msgpack.packb(v, use_bin_type=True)))
            | children.map(lambda v: msgpack.ExtType(17, msgpack.packb(v, use_bin_type=True)))
            | children.map(lambda v: msgpack.ExtType(99, msgpack.packb(v, use_bin_type=True))))


_values = st.recursive(_scalars, _nest, max_leaves=30)


@st.composite
def _deep_msgpack(draw: st.DrawFn) -> bytes:
    """Up to 3000 levels of arrays, maps and extension values, in any mix."""
    depth = draw(st.integers(1, 3000))
    kinds = draw(st.lists(st.sampled_from("am e"), min_size=1, max_size=8))
    data = msgpack.packb(draw(_scalars), use_bin_type=True)
    for level in range(depth):
        kind = kinds[level % len(kinds)]
        if kind == "a":
            data = b"\x91" + data
        elif kind == "m":
            data = b"\x81\xa1k" + data
        elif kind == "e":
            data = msgpack.packb(msgpack.ExtType(16, data))
        else:
            data = b"\x92\x01" + data
    return data


@st.composite
def _deep_json(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 5000))
    balanced = draw(st.booleans())
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('["[",', "]")]))
    text = opener * depth + "1" + (closer * depth if balanced else "")
    return text.encode()


def _mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for index, value in flips:
        if buf:
            buf[index % len(buf)] = value
    return bytes(buf)


_flips = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4)
_msgpack_inputs = (_values.map(lambda v: msgpack.packb(v, use_bin_type=True)) | _deep_msgpack()
                   | st.binary(max_size=200))
_json_inputs = (_values.map(lambda v: json.dumps(v, default=repr).encode()) | _deep_json()
                | st.binary(max_size=200) | st.text(max_size=100).map(str.encode))


def _decoders() -> list[tuple[str, Callable[[bytes], Any]]]:
    return [
        ("json", JSON().decode),
        ("json+serializers", _with_serializers(JSON()).decode),
        ("msgpack", MsgPack().decode),
        ("msgpack+serializers", _with_serializers(MsgPack()).decode),
        ("ziproto", ZiProto().decode),
        ("msgpack+serializers, max_depth=8", _with_serializers(MsgPack(max_depth=8)).decode),
    ]


def _frame(body: bytes, size: int = 4, order: str = "big") -> bytes:
    return len(body).to_bytes(size, order) + body  # type: ignore[arg-type]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return [p for p in pieces if p]


SETTINGS = settings(derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


def run(examples: int) -> None:
    config = settings(SETTINGS, max_examples=examples)

    @config
    @given(data=_msgpack_inputs | _json_inputs, flips=_flips)
    def codecs(data: bytes, flips: list[tuple[int, int]]) -> None:
        for sample in (data, _mutate(data, flips)):
            for _, decode in _decoders():
                with contextlib.suppress(CodecError):
                    decode(sample)

    @config
    @given(body=_msgpack_inputs | _json_inputs, flips=_flips, cuts=st.lists(st.integers(0, 5000)),
           codec=st.sampled_from(["json", "msgpack"]), eof=st.booleans())
    def channel(body: bytes, flips: list[tuple[int, int]], cuts: list[int], codec: str,
                eof: bool) -> None:
        proto = ChannelProtocol(_with_serializers(MsgPack() if codec == "msgpack" else JSON()),
                                max_frame_size=1 << 20)
        wire = _mutate(_frame(body), flips) + _frame(b"\x93\x00\x01\xa2ok")
        try:
            for piece in [*_split(wire, cuts), *([b""] if eof else [])]:
                proto.receive_data(piece)
            proto.check()
        except ProtocolError:
            pass

    @config
    @given(body=_msgpack_inputs | _json_inputs, flips=_flips, cuts=st.lists(st.integers(0, 5000)),
           header=st.sampled_from([(1, "big"), (2, "little"), (4, "big"), (8, "little")]),
           encoding=st.sampled_from([b"\x16\x00", b"\x16\x01", b"\x16\x07", b""]))
    def aproto(body: bytes, flips: list[tuple[int, int]], cuts: list[int],
               header: tuple[int, str], encoding: bytes) -> None:
        size, order = header
        decoder = PacketDecoder(header_size=size, byteorder=order,  # type: ignore[arg-type]
                                max_packet_size=min(1 << 20, (1 << (8 * size)) - 1))
        payload = (encoding + body)[: (1 << (8 * size)) - 1]
        wire = _mutate(_frame(payload, size, order), flips)
        for piece in [*_split(wire, cuts), b""]:
            for event in decoder.feed(piece):
                assert isinstance(event, (Incoming, Rejected)), event

    @config
    @given(data=_msgpack_inputs | _json_inputs, flips=_flips, cuts=st.lists(st.integers(0, 500)),
           size=st.integers(1, 8))
    def framing(data: bytes, flips: list[tuple[int, int]], cuts: list[int], size: int) -> None:
        decoder = LengthPrefixDecoder(header_size=size, max_frame_size=1 << 16)
        try:
            for piece in [*_split(_mutate(data, flips), cuts), b""]:
                decoder.feed(piece)
        except FrameError:
            pass

    fields = st.fixed_dictionaries(
        {"payload": st.binary(max_size=10), "topic": st.text(max_size=5)},
        optional={
            "timestamp": st.floats() | st.integers(-(2**63), 2**64 - 1) | _values,
            **{name: _values for name in ("headers", "content_type", "client_name",
                                           "response_topic", "correlation_id",
                                           "payload_encoding")},
        },
    )
    envelope_values: st.SearchStrategy[bytes] = (
        fields.map(lambda f: msgpack.packb(f, use_bin_type=True))
        | fields.map(lambda f: json.dumps(
            {k: v.hex() if isinstance(v, bytes) else v for k, v in f.items()},
            default=repr).encode()))

    @config
    @given(data=envelope_values)
    def envelope_fields(data: bytes) -> None:
        with contextlib.suppress(EnvelopeError):
            decode_envelope(data)

    @config
    @given(data=_msgpack_inputs | _json_inputs, flips=_flips)
    def envelopes(data: bytes, flips: list[tuple[int, int]]) -> None:
        for sample in (data, _mutate(data, flips),
                       b'{"payload": "", "headers": ' + data + b"}"):
            with contextlib.suppress(EnvelopeError):
                decode_envelope(sample)

    for test in (codecs, channel, aproto, framing, envelope_fields, envelopes):
        test()
        print(test.__name__, "ok", flush=True)


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
