"""The sans-I/O decoder: feed it any split of bytes, get exactly the frames that were sent."""

from trionet.errors import FrameTooLarge, IncompleteFrame
from trionet.framing import NEED_DATA, LengthPrefixDecoder, LengthPrefixEncoder

encoder = LengthPrefixEncoder(header_size=2, byteorder="little")
wire = encoder.encode(b"first") + encoder.encode(b"") + encoder.encode(b"third")

decoder = LengthPrefixDecoder(header_size=2, byteorder="little", max_frame_size=1024)
frames = []
for i in range(len(wire)):  # one byte at a time
    frames.extend(decoder.feed(wire[i : i + 1]))
assert frames == [b"first", b"", b"third"]
assert decoder.feed(b"") == []  # clean end of file

# The h11-style interface: receive_data() then next_frame() until NEED_DATA.
decoder = LengthPrefixDecoder()
decoder.receive_data(b"\x00\x00\x00\x02hi\x00\x00")
assert decoder.next_frame() == b"hi"
assert decoder.next_frame() is NEED_DATA
try:
    decoder.receive_data(b"")  # end of file in the middle of a header
except IncompleteFrame as exc:
    print("truncated:", exc)

# A header announcing more than max_frame_size is refused before any payload is read.
decoder = LengthPrefixDecoder(max_frame_size=1024)
try:
    decoder.feed(b"\xff\xff\xff\xff")
except FrameTooLarge as exc:
    assert (exc.size, exc.limit, exc.fault) == (2**32 - 1, 1024, "remote")
    print("refused:", exc)
