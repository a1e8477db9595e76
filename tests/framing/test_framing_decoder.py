"""Sans-I/O tests of the length-prefix decoder and encoder (no trio)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from trionet.errors import FrameError, FrameTooLarge, IncompleteFrame, ProtocolError
from trionet.framing import NEED_DATA, LengthPrefixDecoder, LengthPrefixEncoder

FORMATS = [(h, o) for h in range(1, 9) for o in ("big", "little")]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = []
    prev = 0
    for p in [*points, len(data)]:
        pieces.append(data[prev:p])
        prev = p
    return [p for p in pieces if p]


def decode_all(decoder: LengthPrefixDecoder, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    out.extend(decoder.feed(b""))
    return out


# -- golden bytes -------------------------------------------------------------------------------


def test_encoder_golden_bytes() -> None:
    assert LengthPrefixEncoder().encode(b"abc") == b"\x00\x00\x00\x03abc"
    assert LengthPrefixEncoder(header_size=2, byteorder="little").encode(b"ab") == b"\x02\x00ab"
    assert LengthPrefixEncoder(header_size=3).encode(b"x") == b"\x00\x00\x01x"
    assert LengthPrefixEncoder(header_size=1).encode(b"") == b"\x00"
    # AsyncAProto: the length counts the two header bytes after it.
    aproto = LengthPrefixEncoder(header_size=4, extra_header_size=2)
    assert aproto.encode(b"{}", extra=b"\x16\x00") == b"\x00\x00\x00\x04\x16\x00{}"


def test_one_byte_at_a_time_needs_data_until_complete() -> None:
    data = LengthPrefixEncoder().encode(b"hello")
    decoder = LengthPrefixDecoder()
    for byte in data[:-1]:
        decoder.receive_data(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
        assert not decoder.at_frame_boundary
    decoder.receive_data(data[-1:])
    assert decoder.next_frame() == b"hello"
    assert decoder.next_frame() is NEED_DATA
    assert decoder.at_frame_boundary


def test_many_frames_in_one_chunk_and_empty_frames() -> None:
    enc = LengthPrefixEncoder(header_size=2)
    payloads = [b"", b"a", b"", b"bc" * 100, b""]
    decoder = LengthPrefixDecoder(header_size=2)
    assert decoder.feed(b"".join(enc.encode(p) for p in payloads)) == payloads


def test_extra_header_bytes_are_part_of_the_frame() -> None:
    enc = LengthPrefixEncoder(header_size=1, extra_header_size=2)
    dec = LengthPrefixDecoder(header_size=1, extra_header_size=2)
    assert dec.feed(enc.encode(b"{}", extra=b"\x16\x01")) == [b"\x16\x01{}"]


def test_length_smaller_than_extra_header_is_an_error() -> None:
    dec = LengthPrefixDecoder(header_size=4, extra_header_size=2)
    with pytest.raises(FrameError, match="less than the 2 fixed header bytes") as info:
        dec.feed(b"\x00\x00\x00\x01\x16")
    assert info.value.fault == "remote"


# -- limits -------------------------------------------------------------------------------------


def test_oversize_header_rejected_before_payload() -> None:
    dec = LengthPrefixDecoder(max_frame_size=1024)
    # Only the header: the decoder must not wait for 4 GiB of payload to complain.
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(b"\xff\xff\xff\xff")
    assert info.value.size == 2**32 - 1
    assert info.value.limit == 1024
    assert info.value.fault == "remote"
    assert isinstance(info.value, ProtocolError)
    assert "max_frame_size=1024" in str(info.value)
    assert dec.buffered == 0


def test_oversize_header_split_across_chunks() -> None:
    dec = LengthPrefixDecoder(max_frame_size=10)
    assert dec.feed(b"\x00\x00") == []
    with pytest.raises(FrameTooLarge):
        dec.feed(b"\x00\x0b")


def test_errors_are_sticky_but_earlier_frames_are_delivered() -> None:
    enc = LengthPrefixEncoder()
    dec = LengthPrefixDecoder(max_frame_size=100)
    good = enc.encode(b"ok")
    # A good frame, then a header announcing too much, in one chunk.
    assert dec.feed(good + b"\x00\x00\x10\x00") == [b"ok"]
    with pytest.raises(FrameTooLarge):
        dec.feed(b"")
    with pytest.raises(FrameTooLarge):
        dec.feed(good)


def test_receive_data_next_frame_interface_defers_error() -> None:
    dec = LengthPrefixDecoder(max_frame_size=100)
    dec.receive_data(LengthPrefixEncoder().encode(b"x") + b"\x00\x00\x10\x00")
    assert dec.next_frame() == b"x"
    with pytest.raises(FrameTooLarge):
        dec.next_frame()


def test_frame_exactly_at_limit_is_accepted() -> None:
    dec = LengthPrefixDecoder(max_frame_size=5)
    assert dec.feed(b"\x00\x00\x00\x05hello") == [b"hello"]


def test_encoder_refuses_oversize_payload_as_local_fault() -> None:
    enc = LengthPrefixEncoder(max_frame_size=3)
    with pytest.raises(FrameTooLarge) as info:
        enc.encode(b"abcd")
    assert info.value.fault == "local"
    # A 1-byte header cannot announce more than 255, whatever max_frame_size says.
    with pytest.raises(FrameTooLarge):
        LengthPrefixEncoder(header_size=1).encode(b"x" * 256)


def test_encoder_checks_extra_length() -> None:
    with pytest.raises(ValueError, match="extra must be 2 bytes"):
        LengthPrefixEncoder(extra_header_size=2).encode(b"", extra=b"\x16")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"header_size": 0},
        {"header_size": 9},
        {"byteorder": "middle"},
        {"extra_header_size": -1},
        {"max_frame_size": -1},
    ],
)
def test_bad_format_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LengthPrefixDecoder(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LengthPrefixEncoder(**kwargs)  # type: ignore[arg-type]


# -- end of file --------------------------------------------------------------------------------


def test_eof_at_boundary_is_clean() -> None:
    dec = LengthPrefixDecoder()
    assert dec.feed(LengthPrefixEncoder().encode(b"a")) == [b"a"]
    assert dec.feed(b"") == []
    with pytest.raises(RuntimeError, match="after end of file"):
        dec.feed(b"more")


def test_eof_mid_header() -> None:
    dec = LengthPrefixDecoder()
    dec.feed(b"\x00\x00")
    with pytest.raises(IncompleteFrame) as info:
        dec.feed(b"")
    assert (info.value.expected, info.value.received) == (4, 2)


def test_eof_mid_payload() -> None:
    dec = LengthPrefixDecoder()
    dec.feed(b"\x00\x00\x00\x0aabc")
    with pytest.raises(IncompleteFrame) as info:
        dec.feed(b"")
    assert (info.value.expected, info.value.received) == (14, 7)
    assert "got 7 of 14 bytes" in str(info.value)


def test_large_frame_in_small_chunks_is_linear() -> None:
    """A 4 MiB frame fed 1 KiB at a time: the buffer grows once, it is never re-copied."""
    payload = bytes(range(256)) * (4 * 4096)
    data = LengthPrefixEncoder().encode(payload)
    dec = LengthPrefixDecoder()
    frames: list[bytes] = []
    for i in range(0, len(data), 1024):
        frames.extend(dec.feed(data[i : i + 1024]))
    assert frames == [payload]


# -- properties ---------------------------------------------------------------------------------

payload_lists = st.lists(st.binary(max_size=300), max_size=20)


@given(
    fmt=st.sampled_from(FORMATS),
    payloads=payload_lists,
    cuts=st.lists(st.integers(min_value=0), max_size=30),
)
def test_any_split_yields_exactly_the_frames_sent(
    fmt: tuple[int, str], payloads: list[bytes], cuts: list[int]
) -> None:
    header_size, order = fmt
    if header_size == 1:
        payloads = [p[:255] for p in payloads]
    enc = LengthPrefixEncoder(header_size=header_size, byteorder=order)  # type: ignore[arg-type]
    dec = LengthPrefixDecoder(header_size=header_size, byteorder=order)  # type: ignore[arg-type]
    data = b"".join(enc.encode(p) for p in payloads)
    assert decode_all(dec, split_at(data, cuts)) == payloads


@given(payloads=payload_lists, extra=st.binary(min_size=2, max_size=2))
def test_one_byte_at_a_time_with_extra_header(payloads: list[bytes], extra: bytes) -> None:
    enc = LengthPrefixEncoder(header_size=2, byteorder="little", extra_header_size=2)
    dec = LengthPrefixDecoder(header_size=2, byteorder="little", extra_header_size=2)
    data = b"".join(enc.encode(p, extra) for p in payloads)
    got = decode_all(dec, [data[i : i + 1] for i in range(len(data))])
    assert got == [extra + p for p in payloads]


@given(
    payloads=payload_lists,
    oversize=st.integers(min_value=301, max_value=2**32 - 1),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_oversize_header_after_good_frames(
    payloads: list[bytes], oversize: int, cuts: list[int]
) -> None:
    enc = LengthPrefixEncoder()
    dec = LengthPrefixDecoder(max_frame_size=300)
    data = b"".join(enc.encode(p) for p in payloads) + oversize.to_bytes(4, "big")
    got: list[bytes] = []
    with pytest.raises(FrameTooLarge) as info:
        for piece in [*split_at(data, cuts), b""]:
            got.extend(dec.feed(piece))
    assert got == payloads
    assert info.value.size == oversize


@given(
    payloads=st.lists(st.binary(max_size=50), min_size=1, max_size=5),
    drop=st.integers(min_value=1),
)
def test_truncated_input_raises_incomplete(payloads: list[bytes], drop: int) -> None:
    enc = LengthPrefixEncoder()
    data = b"".join(enc.encode(p) for p in payloads)
    last = len(enc.encode(payloads[-1]))
    cut = len(data) - 1 - drop % (last - 1)  # strictly inside the last frame
    dec = LengthPrefixDecoder()
    with pytest.raises(IncompleteFrame) as info:
        decode_all(dec, [data[:cut]])
    assert info.value.received > 0
    assert info.value.received < info.value.expected


@given(garbage=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_garbage_never_raises_anything_undocumented(garbage: bytes, cuts: list[int]) -> None:
    dec = LengthPrefixDecoder(max_frame_size=64, extra_header_size=1)
    try:
        frames = decode_all(dec, split_at(garbage, cuts))
    except (FrameError, IncompleteFrame):
        return
    for f in frames:
        assert 1 <= len(f) <= 64


def test_pending_error_is_visible_before_the_next_call() -> None:
    dec = LengthPrefixDecoder(max_frame_size=10)
    assert dec.pending_error is None
    assert dec.feed(b"\x00\x00\x00\x01x\x00\x00\x01\x00") == [b"x"]
    assert isinstance(dec.pending_error, FrameTooLarge)
