"""Channel.serve over real sockets: batches of pipelined requests answered in one go.

On sockets, ``serve()`` answers every request that arrived in one read before it yields,
queues the replies without a helper task and writes them with ``writev``. These tests send
many requests at once, so that batches form, and check every answer: plain results, failures,
unencodable results, async results, large replies the kernel takes in pieces, and a batch
interrupted by cancellation.
"""

from __future__ import annotations

import struct
from functools import partial
from typing import Any

import msgpack
import trio

from trionet.channel import Channel, open_channel, open_connection, start_server
from trionet.errors import RemoteException


def mixed_handler(content: Any) -> Any:
    kind, value = content
    if kind == "plain":
        return value + 1
    if kind == "raise":
        raise ValueError(f"bad value {value}")
    if kind == "unencodable":
        return object()

    async def later() -> Any:
        await trio.lowlevel.checkpoint()
        return value * 2

    return later()


async def test_pipelined_batches_with_every_kind_of_result() -> None:
    async def handle(channel: Channel) -> None:
        await channel.serve(mixed_handler)

    kinds = ("plain", "raise", "unencodable", "async")
    results: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(start_server, ("127.0.0.1", 0), handle, codec="msgpack")
        )
        async with open_connection(address, codec="msgpack") as channel:

            async def ask(i: int) -> None:
                kind = kinds[i % 7 % 4]  # mostly plain, the others in between
                try:
                    results[i] = await channel.send([kind, i])
                except RemoteException as exc:
                    results[i] = exc.remote_type

            async with trio.open_nursery() as asks:
                for i in range(600):
                    asks.start_soon(ask, i)
            assert channel.statistics().pending_requests == 0
        nursery.cancel_scope.cancel()

    for i in range(600):
        kind = kinds[i % 7 % 4]
        expected = {
            "plain": i + 1,
            "raise": "ValueError",
            "unencodable": "trionet.errors.CodecError",
            "async": i * 2,
        }[kind]
        assert results[i] == expected, (i, kind)


async def test_large_replies_go_out_whole_when_the_kernel_takes_them_in_pieces() -> None:
    blob = bytes(range(256)) * 1024  # 256 KiB per reply

    def handler(content: Any) -> Any:
        return [content, blob]

    client_sock, server_sock = trio.socket.socketpair()
    # Small buffers: each writev is partial, the rest goes through the drainer.
    for sock in (client_sock, server_sock):
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 32 * 1024)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 32 * 1024)
    got: dict[int, Any] = {}
    async with (
        open_channel(trio.SocketStream(server_sock), codec="msgpack") as server,
        open_channel(trio.SocketStream(client_sock), codec="msgpack") as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(server.serve, handler)

        async def ask(i: int) -> None:
            got[i] = await client.send(i)

        async with trio.open_nursery() as asks:
            for i in range(40):
                asks.start_soon(ask, i)
        assert server.statistics().buffered_output == 0
        nursery.cancel_scope.cancel()
    assert sorted(got) == list(range(40))
    for i, (echoed, data) in got.items():
        assert echoed == i
        assert data == blob


async def test_a_batch_cut_short_by_cancellation_still_sends_whole_replies() -> None:
    # Raw frames sent in one write arrive in one read: serve() answers them as one batch. The
    # handler cancels serve() at request 40, which takes effect at its next cancellation check
    # (every 32 requests); the replies made before that go out whole, and nothing after.
    client_sock, server_sock = trio.socket.socketpair()
    header = struct.Struct(">I")
    frames = []
    for i in range(100):
        body = msgpack.packb([0, i, i])
        frames.append(header.pack(len(body)) + body)
    await client_sock.send(b"".join(frames))

    async with open_channel(trio.SocketStream(server_sock), codec="msgpack") as server:
        with trio.CancelScope() as scope:

            def handler(content: Any) -> Any:
                if content == 40:
                    scope.cancel()
                return content

            await server.serve(handler)
        assert scope.cancelled_caught
    # The channel is closed now: read everything it wrote before closing.
    data = b""
    while chunk := await client_sock.recv(1 << 20):
        data += chunk
    client_sock.close()
    replies = []
    while data:
        (size,) = header.unpack_from(data)
        replies.append(msgpack.unpackb(data[4 : 4 + size]))
        data = data[4 + size :]
    ids = [msg_id for _, msg_id, _ in replies]
    assert ids == list(range(len(ids)))  # in order, whole, no gaps
    assert 40 < len(ids) < 100
    assert all(kind == 1 and msg_id == value for kind, msg_id, value in replies)
