"""Nesting depth is bounded: deeper input is a CodecError, never a crash."""

from trionet.codecs import JSON, MsgPack, decode_json
from trionet.errors import CodecError

assert JSON(max_depth=3).decode(b"[[[1]]]") == [[[1]]]
assert len(MsgPack().decode(b"\x91" * 1000 + b"\x01")) == 1  # within the default, 1024

for codec, data in (
    (MsgPack(), b"\x91" * 100_000 + b"\x01"),  # 100 000 nested arrays
    (MsgPack(max_depth=32), b"\x91" * 100 + b"\x01"),
    (JSON(), b"[" * 100_000),
):
    try:
        codec.decode(data)
    except CodecError as exc:
        print(exc)  # msgpack: value nested deeper than max_depth=1024 (at least 1025 levels)
    else:
        raise AssertionError("decoded a value nested too deep")

# CodecError is a ValueError, as json.JSONDecodeError is
try:
    decode_json(b'{"a": [[[[1]]]]}', max_depth=4)
except ValueError as exc:
    print(exc)
