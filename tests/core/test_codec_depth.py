"""Nesting depth is bounded in every decoder of untrusted bytes (issue: one ~700-byte frame of
nested msgpack extension values crashed the process with SIGSEGV).

The deep inputs are decoded in a subprocess: a crash there shows up as a signal in the exit
status instead of taking the test run down with it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import msgpack
import pytest

from trionet.aproto._packet import Rejected, parse_body
from trionet.bus import BusMessage, EnvelopeError
from trionet.bus._message import decode_envelope
from trionet.codecs import (
    DEFAULT_MAX_DEPTH,
    JSON,
    MAX_EXT_DEPTH,
    MsgPack,
    ZiProto,
    check_depth,
    decode_json,
    decode_msgpack,
)
from trionet.errors import CodecError
from trionet.mqtt import MQTTMessage

DEPTHS = (10, 100, 1_000, 100_000)

# Every decoder at every depth, in the main thread and in a worker thread; each line of output
# says what one decode did. A crash ends the process with a signal.
_DECODE_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    import msgpack
    from trionet.codecs import JSON, MsgPack, ZiProto, decode_json, decode_msgpack
    from trionet.errors import CodecError

    class Point:
        def __init__(self, value):
            self.value = value

    def with_serializer(codec):
        codec.add_serializer(Point, lambda p: p.value, Point)
        return codec

    def nested_ext(depth):
        data = msgpack.packb(1)
        for _ in range(depth):
            data = msgpack.packb(msgpack.ExtType(16, data))
        return data

    def inputs(depth):
        arrays = b"\\x91" * depth + b"\\x01"
        maps = b"\\x81\\x01" * depth + b"\\x01"
        text = b"[" * depth + b"]" * depth
        objects = b'{"a":' * depth + b"1" + b"}" * depth
        yield "json-arrays", JSON().decode, text
        yield "json-objects", JSON().decode, objects
        yield "json-hooked", with_serializer(JSON()).decode, text
        yield "decode_json", decode_json, objects
        yield "msgpack-arrays", MsgPack().decode, arrays
        yield "msgpack-maps", MsgPack().decode, maps
        yield "ziproto-arrays", ZiProto().decode, arrays
        yield "decode_msgpack", decode_msgpack, maps
        yield "msgpack-ext", with_serializer(MsgPack()).decode, nested_ext(depth)
        yield "msgpack-ext-arrays", with_serializer(MsgPack()).decode, arrays

    def run(where):
        for depth in map(int, sys.argv[1:]):
            for name, decode, data in inputs(depth):
                try:
                    decode(data)
                except CodecError:
                    outcome = "CodecError"
                except BaseException as exc:
                    outcome = type(exc).__name__
                else:
                    outcome = "ok"
                print(where, name, depth, outcome, flush=True)

    run("main")
    thread = threading.Thread(target=run, args=("thread",))
    thread.start()
    thread.join()
    """
)


def test_deep_inputs_give_codec_error_never_a_crash() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _DECODE_SCRIPT, *map(str, DEPTHS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    outcomes = {}
    for line in proc.stdout.splitlines():
        where, name, depth, outcome = line.split()
        outcomes[where, name, int(depth)] = outcome
    names = {name for _, name, _ in outcomes}
    assert len(names) == 10
    assert len(outcomes) == 2 * len(names) * len(DEPTHS)
    for (where, name, depth), outcome in outcomes.items():
        if name == "msgpack-ext":
            limit = MAX_EXT_DEPTH
        elif "json" in name:
            limit = sys.getrecursionlimit()  # the parser's own bound, below DEFAULT_MAX_DEPTH
        else:
            limit = DEFAULT_MAX_DEPTH
        expected = "ok" if depth < limit else "CodecError"
        assert outcome == expected, (where, name, depth)


# A Channel server with a serializer registered (the pattern docs/channel.rst recommends)
# receives one 714-byte frame of 200 nested extension values, then serves a good client.
_CHANNEL_SCRIPT = textwrap.dedent(
    """
    import struct
    from functools import partial
    import msgpack, trio
    from trionet.channel import open_connection, start_server
    from trionet.codecs import MsgPack

    class Point:
        def __init__(self, x):
            self.x = x

    def codec():
        c = MsgPack()
        c.add_serializer(Point, lambda p: p.x, Point)
        return c

    async def echo(channel):
        async for request in channel:
            await request.reply(request.content)

    async def main():
        async with trio.open_nursery() as nursery:
            [addr] = await nursery.start(
                partial(start_server, ("127.0.0.1", 0), echo, codec=codec))
            data = msgpack.packb(1)
            for _ in range(200):
                data = msgpack.packb(msgpack.ExtType(16, data))
            frame = b"\\x93\\x00\\x00" + data  # [0, 0, <200 nested extension values>]
            for _ in range(3):
                attacker = await trio.open_tcp_stream(*addr)
                await attacker.send_all(struct.pack(">I", len(frame)) + frame)
                with trio.fail_after(10):
                    assert await attacker.receive_some() == b""  # dropped, not crashed
                await attacker.aclose()
            async with open_connection(addr, codec=codec) as channel:
                with trio.fail_after(10):
                    reply = await channel.send(["ping", Point(7)])
            print("served", reply[0], reply[1].x, flush=True)
            nursery.cancel_scope.cancel()

    trio.run(main)
    """
)


def test_channel_server_survives_a_nested_extension_frame() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHANNEL_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == ["served", "ping", "7"]


# -- the limit is configurable, and applies everywhere ---------------------------------------


def test_max_depth_is_configurable() -> None:
    assert JSON(max_depth=3).decode(b"[[[1]]]") == [[[1]]]
    with pytest.raises(CodecError, match="max_depth=3"):
        JSON(max_depth=3).decode(b"[[[[1]]]]")
    deep = b"\x91" * 500 + b"\x01"
    with pytest.raises(CodecError, match="max_depth=128"):
        MsgPack(max_depth=128).decode(deep)
    with pytest.raises(CodecError, match="max_depth=128"):
        decode_msgpack(deep, max_depth=128)
    value = MsgPack(max_depth=600).decode(deep)
    for _ in range(500):
        value = value[0]
    assert value == 1
    assert MsgPack().decode(deep) is not None  # the default is msgpack's own limit, 1024
    with pytest.raises(CodecError, match="max_depth=1024"):
        MsgPack().decode(b"\x91" * 1025 + b"\x01")
    with pytest.raises(ValueError, match="max_depth"):
        ZiProto(max_depth=0)


def test_brackets_inside_json_strings_do_not_count() -> None:
    text = '{"a": "' + "[{" * 1000 + '\\"]", "b": [[1]]}'
    assert JSON(max_depth=3).decode(text.encode())["b"] == [[1]]
    assert decode_json(text, max_depth=3)["b"] == [[1]]


def test_wide_values_are_not_deep() -> None:
    wide = [[i, {"k": [i]}] for i in range(2_000)]
    for limit in (4, 128, DEFAULT_MAX_DEPTH):
        assert MsgPack(max_depth=limit).decode(msgpack.packb(wide)) == wide
        assert decode_msgpack(msgpack.packb(wide), max_depth=limit) == wide
        assert JSON(max_depth=limit).decode(JSON().encode(wide)) == wide
        assert decode_json(JSON().encode(wide), max_depth=limit) == wide


def test_extension_content_counts_toward_the_depth() -> None:
    codec = MsgPack(max_depth=140)
    codec.add_serializer(complex, lambda c: [c.real, c.imag], lambda v: complex(*v))
    inner = msgpack.packb([[[1.0, 2.0]] * 1] * 1)
    shallow = msgpack.packb([msgpack.ExtType(16, msgpack.packb([1.0, 2.0]))] + [[0]] * 200)
    assert codec.decode(shallow)[0] == complex(1, 2)
    deep_content = msgpack.packb(msgpack.ExtType(16, b"\x91" * 150 + inner))
    with pytest.raises(CodecError, match="max_depth=140"):
        codec.decode(deep_content)


def test_check_depth_is_iterative() -> None:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(CodecError, match="max_depth=1024"):
        check_depth(value)
    with pytest.raises(CodecError, match="max_depth=1"):
        check_depth([[1]], 1)
    check_depth([[1]], 2)
    check_depth(({"a": [1]},), 3)


def test_codec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_json(b"{")


def test_bus_envelopes_are_bounded() -> None:
    deep_json = b'{"payload": "", "x":' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    deep_msgpack = b"\x82\xa7payload\xc4\x00\xa1x" + b"\x91" * 2_000 + b"\x01"
    for data in (deep_json, deep_msgpack):
        with pytest.raises(EnvelopeError, match="max_depth"):
            decode_envelope(data)
    with pytest.raises(CodecError, match="max_depth"):
        BusMessage(b"[" * 5_000 + b"]" * 5_000, "t").json()


def test_mqtt_json_payload_is_bounded() -> None:
    with pytest.raises(CodecError, match="max_depth"):
        MQTTMessage("t", b"[" * 5_000 + b"]" * 5_000).json()


@pytest.mark.parametrize("encoding", [0, 1])
def test_aproto_packets_are_bounded(encoding: int) -> None:
    body = b"[" * 5_000 + b"]" * 5_000 if encoding == 0 else b"\x91" * 5_000 + b"\x01"
    rejected = parse_body(bytes([22, encoding]) + body)
    assert isinstance(rejected, Rejected)
    assert "max_depth" in rejected.reason
