"""Framing + codec throughput: trionet vs a plain ``struct`` + msgpack loop.

Rows: decode and encode, for payloads whose msgpack encoding is 7 B, 1 KiB and 64 KiB. The wire
bytes are cut into 64 KiB reads, as a socket would deliver them. Both sides decode the codec too,
so a row measures what a protocol layer pays per frame. Both encoders reuse one
``msgpack.Packer`` for every frame (``msgpack.packb`` would build a new one per call); both
decoders call ``msgpack.unpackb`` per frame. The baseline does not import trionet.

Goal (foundation issue): trionet's decoder ≥ 0.9× the plain loop on 1 KiB frames.
"""

from __future__ import annotations

import struct

import msgpack
from _harness import Contender, Row, main_args, run_rows

from trionet.codecs import MsgPack
from trionet.framing import LengthPrefixDecoder, LengthPrefixEncoder

CHUNK = 65536
HEADER = struct.Struct(">I")


def _payloads() -> dict[str, object]:
    small = ["ping", 4]
    assert len(msgpack.packb(small)) == 7
    kib = {"data": "x" * 1000, "seq": 1}
    big = {"blob": b"\x01" * (65536 - 20), "seq": 1}
    return {"7B": small, "1KiB": kib, "64KiB": big}


def _wire(obj: object, count: int) -> list[bytes]:
    body = msgpack.packb(obj, use_bin_type=True)
    frame = HEADER.pack(len(body)) + body
    data = frame * count
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def plain_decode(chunks: list[bytes]) -> int:
    """What a hand-written reader does: a bytearray, struct.unpack_from, msgpack.unpackb."""
    buf = bytearray()
    n = 0
    unpack_from = HEADER.unpack_from
    unpackb = msgpack.unpackb
    for chunk in chunks:
        buf += chunk
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (length,) = unpack_from(buf, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            unpackb(bytes(buf[pos + 4 : stop]), raw=False)
            n += 1
            pos = stop
        del buf[:pos]
    return n


def trionet_decode(chunks: list[bytes]) -> int:
    decoder = LengthPrefixDecoder()
    decode = MsgPack().decode
    n = 0
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            decode(frame)
            n += 1
    return n


def plain_encode(obj: object, count: int) -> int:
    """One ``msgpack.Packer`` reused for every frame, as trionet's codec does (``packb`` would
    build a new Packer per call)."""
    pack = HEADER.pack
    packb = msgpack.Packer(use_bin_type=True).pack
    for _ in range(count):
        body = packb(obj)
        pack(len(body)) + body
    return count


def trionet_encode(obj: object, count: int) -> int:
    encode_frame = LengthPrefixEncoder().encode
    encode = MsgPack().encode
    for _ in range(count):
        encode_frame(encode(obj))
    return count


def main() -> None:
    args = main_args(__doc__ or "")
    scale = 0.1 if args.quick else 1.0
    counts = {"7B": 200_000, "1KiB": 50_000, "64KiB": 1_500}
    rows = []
    for label, obj in _payloads().items():
        count = max(10, int(counts[label] * scale))
        chunks = _wire(obj, count)
        assert plain_decode(chunks) == trionet_decode(chunks) == count
        rows.append(
            Row(
                f"decode {label}",
                [
                    Contender("struct+msgpack", lambda c=chunks: plain_decode(c)),
                    Contender("trionet", lambda c=chunks: trionet_decode(c)),
                ],
                goal=0.9 if label == "1KiB" else None,
                unit="frames/s",
            )
        )
        rows.append(
            Row(
                f"encode {label}",
                [
                    Contender("struct+msgpack", lambda o=obj, n=count: plain_encode(o, n)),
                    Contender("trionet", lambda o=obj, n=count: trionet_encode(o, n)),
                ],
                unit="frames/s",
            )
        )
    for row in rows:
        row.unit = "ops/s"  # frames/s: the harness computes ops per second
    run_rows("framing", rows, rounds=args.rounds, note="ops = frames (decode includes msgpack)")


if __name__ == "__main__":
    main()
