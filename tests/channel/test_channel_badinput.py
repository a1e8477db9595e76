"""Bad input from a peer: the documented error, that connection closed, the others served."""

from __future__ import annotations

import json
import logging
import struct
from functools import partial
from typing import Any

import pytest
import trio

from trionet.channel import Channel, ChannelClosed, MessageError, open_connection, start_server
from trionet.errors import CodecError, FrameTooLarge, IncompleteFrame


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def jframe(message: Any) -> bytes:
    return frame(json.dumps(message).encode())


async def echo(channel: Channel) -> None:
    async for request in channel:
        await request.reply(request.content)


async def read_until_closed(stream: trio.abc.Stream) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset)."""
    received = b""
    with trio.fail_after(5):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return received
            if not chunk:
                return received
            received += chunk


BAD_INPUTS = {
    "truncated frame": (struct.pack(">I", 100) + b"only ten b", IncompleteFrame, True),
    "header announcing 4 GiB": (b"\xff\xff\xff\xff" + b"x" * 10, FrameTooLarge, False),
    "not a 3-element list": (jframe([0, 1]), MessageError, False),
    "not a list at all": (jframe({"msg_type": 0}), MessageError, False),
    "unknown msg_type": (jframe([3, 0, "cancel?"]), MessageError, False),
    "unknown msg_id": (jframe([1, 12345, "a reply nobody asked for"]), MessageError, False),
    "garbage codec bytes": (frame(b"\x00\xffnot json at all"), CodecError, False),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
async def test_server_drops_only_the_bad_client(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, error, then_eof = BAD_INPUTS[case]
    caplog.set_level(logging.WARNING, logger="trionet.channel")
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(start_server, ("127.0.0.1", 0), echo)
        async with open_connection(address) as good:
            assert await good.send("before") == "before"
            bad = await trio.open_tcp_stream(*address)
            # A valid request first, answered; then the bad bytes.
            await bad.send_all(jframe([0, 0, "valid first"]))
            reply = b""
            while len(reply) < 4 or len(reply) < 4 + struct.unpack(">I", reply[:4])[0]:
                reply += await bad.receive_some(65536)
            assert json.loads(reply[4:]) == [1, 0, "valid first"]
            await bad.send_all(data)
            if then_eof:
                await bad.send_eof()
            assert await read_until_closed(bad) == b""
            await bad.aclose()
            assert await good.send("after") == "after"
        nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert message.startswith("closing the connection to 127.0.0.1:")
    expected = {
        IncompleteFrame: "connection closed mid-frame",
        FrameTooLarge: "larger than max_frame_size",
        CodecError: "json: invalid data",
        MessageError: "",
    }[error]
    assert expected in message


async def test_oversize_request_from_a_trionet_client() -> None:
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(start_server, ("127.0.0.1", 0), echo, max_frame_size=1024)
        )
        async with open_connection(address) as greedy, open_connection(address) as modest:
            with pytest.raises(ChannelClosed) as info:
                await greedy.send("x" * 5000)
            assert "closed by the peer" in str(info.value) or "broken" in str(info.value)
            assert await modest.send("fits") == "fits"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (frame(b"\x00\xff garbage"), CodecError),
        (jframe([1, 999, "unknown id"]), MessageError),
        (jframe(["x"]), MessageError),
        (b"\x7f\xff\xff\xff", FrameTooLarge),
    ],
)
async def test_client_facing_a_bad_server(reply: bytes, error: type[Exception]) -> None:
    async def bad_server(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(reply)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, bad_server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_connection(("127.0.0.1", port), max_frame_size=1 << 20) as channel:
            with pytest.raises(ChannelClosed) as info:
                await channel.send("hello?")
            assert isinstance(info.value.__cause__, error)
            assert isinstance(channel.close_reason, error)
            with pytest.raises(ChannelClosed):
                await channel.send("again")
        nursery.cancel_scope.cancel()


async def test_truncated_reply_then_eof() -> None:
    async def cut_short(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(struct.pack(">I", 50) + b"[1, 0,")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, cut_short, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_connection(("127.0.0.1", port)) as channel:
            with pytest.raises(ChannelClosed) as info:
                await channel.send("hello?")
            assert isinstance(info.value.__cause__, IncompleteFrame)
        nursery.cancel_scope.cancel()
