"""Teaching a codec a new type, and what garbage input does."""

import dataclasses

from trionet.codecs import get_codec
from trionet.errors import CodecError


@dataclasses.dataclass
class Point:
    x: float
    y: float


codec = get_codec("msgpack")  # a fresh codec with its own serializer registry
codec.add_serializer(Point, lambda p: [p.x, p.y], lambda data: Point(*data))

data = codec.encode({"path": [Point(0, 0), Point(1.5, 2)], "raw": b"\x00\xff"})
assert codec.decode(data) == {"path": [Point(0, 0), Point(1.5, 2)], "raw": b"\x00\xff"}

try:
    codec.decode(b"\xc1 not msgpack")
except CodecError as exc:
    print("rejected:", exc, "| fault:", exc.fault)

# ZiProto (AsyncAProto's encoding 1) writes exactly the bytes msgpack writes.
assert get_codec("ziproto").encode({"a": 1}) == b"\x81\xa1a\x01"
