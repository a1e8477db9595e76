"""FramedStream.send_eof (issue 23, aiomas parity: half-close on the framed stream): the peer
reads every frame, then end-of-input, and can still answer."""

from __future__ import annotations

import ssl
from functools import partial

import pytest
import trio
import trio.testing

from trionet.framing import FramedStream


async def test_the_peer_sees_every_frame_then_the_end_and_can_still_answer() -> None:
    got: list[bytes] = []

    async def server(stream: trio.SocketStream) -> None:
        async with FramedStream(stream) as framed:
            async for frame in framed:  # ends at the client's send_eof
                got.append(frame)
            await framed.send_frames([b"seen", str(len(got)).encode()])

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        async with FramedStream(await trio.open_tcp_stream("127.0.0.1", port)) as client:
            async with trio.open_nursery() as senders:  # frames sent before send_eof arrive
                for n in range(5):
                    senders.start_soon(client.send_frame, b"frame %d" % n)
                await trio.testing.wait_all_tasks_blocked()
                senders.start_soon(client.send_eof)
            await client.send_eof()  # again: nothing happens
            with pytest.raises(trio.ClosedResourceError, match="send_eof"):
                await client.send_frame(b"late")
            assert [frame async for frame in client] == [b"seen", b"5"]
        assert sorted(got) == [b"frame %d" % n for n in range(5)]
        nursery.cancel_scope.cancel()


async def test_a_stream_that_cannot_half_close_says_so() -> None:
    left, _right = trio.testing.memory_stream_pair()
    tls = trio.SSLStream(left, ssl.create_default_context(), server_hostname="localhost")
    framed = FramedStream(tls)
    with pytest.raises(TypeError, match="cannot half-close"):
        await framed.send_eof()


async def test_the_server_half_closes_and_still_hears_the_client() -> None:
    heard: list[bytes] = []
    done = trio.Event()

    async def server(stream: trio.SocketStream) -> None:
        async with FramedStream(stream) as framed:
            await framed.send_frames([b"hello", b"bye"])
            await framed.send_eof()
            heard.extend([frame async for frame in framed])  # the client's frames still arrive
            done.set()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, server, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        async with FramedStream(await trio.open_tcp_stream("127.0.0.1", port)) as client:
            assert [frame async for frame in client] == [b"hello", b"bye"]
            await client.send_frames([b"thanks", b"done"])
            await client.send_eof()
            with trio.fail_after(5):
                await done.wait()
        assert heard == [b"thanks", b"done"]
        nursery.cancel_scope.cancel()


async def test_sends_are_refused_as_soon_as_send_eof_begins() -> None:
    """While send_eof waits for a blocked write to finish, a new send is refused at once: it
    could otherwise still be being written when the end of input goes out."""
    left, right = trio.testing.lockstep_stream_pair()  # every write waits for the reader
    framed, peer = FramedStream(left), FramedStream(right)
    with trio.fail_after(10):
        await _refused_during_eof(framed, peer)
    await framed.aclose()
    await peer.aclose()


async def _refused_during_eof(framed: FramedStream, peer: FramedStream) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(framed.send_frame, b"first")  # blocks in the write
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(framed.send_eof)  # waits for "first" to go out
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.ClosedResourceError, match="send_eof"):
            await framed.send_frame(b"second")
        assert [frame async for frame in peer] == [b"first"]  # then the end of input
