"""Nesting depth is bounded: deeper input is a CodecError, never a crash."""

from trionet.codecs import JSON, MsgPack, decode_json
from trionet.errors import CodecError

assert JSON(max_depth=3).decode(b"[[[1]]]") == [[[1]]]

for data in (b"\x91" * 1000 + b"\x01", b"[" * 100_000):  # msgpack and JSON, too deep
    try:
        (MsgPack() if data[0] == 0x91 else JSON()).decode(data)
    except CodecError as exc:
        print(exc)  # ...: value nested deeper than max_depth=128 (at least 129 levels)
    else:
        raise AssertionError("decoded a value nested too deep")

# CodecError is a ValueError, as json.JSONDecodeError is
try:
    decode_json(b'{"a": [[[[1]]]]}', max_depth=4)
except ValueError as exc:
    print(exc)
