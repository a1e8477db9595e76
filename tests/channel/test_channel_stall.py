"""A Channel server drops clients that stall a frame or sit idle, and serves the others
throughout (issue: half a frame was still held after 65 s; 16 such clients raised the
server's memory by 240 MiB for as long as they liked)."""

from __future__ import annotations

import gc
import inspect
import ssl
import struct
import tracemalloc
import weakref
from functools import partial
from typing import Any

import trio
import trustme

from trionet.channel import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    Channel,
    open_connection,
    start_server,
)
from trionet.rpc import Service, expose, start_server as start_rpc_server

MiB = 1024 * 1024


async def _echo(seen: weakref.WeakSet[Channel], channel: Channel) -> None:
    seen.add(channel)
    async for request in channel:
        if request.content == "slow":
            await trio.sleep(1.0)
        await request.reply(request.content)


async def _closed_by_server(stream: trio.SocketStream) -> bool:
    """True once the server closed *stream* (EOF or reset)."""
    try:
        while True:
            if await stream.receive_some() == b"":
                return True
    except trio.BrokenResourceError:
        return True


async def _start(nursery: trio.Nursery, seen: weakref.WeakSet[Channel], **kwds: Any) -> Any:
    [addr] = await nursery.start(partial(start_server, ("127.0.0.1", 0),
                                         partial(_echo, seen), **kwds))
    return addr


async def test_stalled_frames_are_dropped_and_their_memory_freed() -> None:
    seen: weakref.WeakSet[Channel] = weakref.WeakSet()
    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            addr = await _start(nursery, seen, frame_timeout=1.0,
                                max_frame_size=32 * MiB)
            baseline = tracemalloc.get_traced_memory()[0]
            attackers: list[trio.SocketStream] = []
            try:
                for _ in range(8):
                    stream = await trio.open_tcp_stream(*addr)
                    attackers.append(stream)
                    # announce 16 MiB, send 6 MiB of it, then stall
                    await stream.send_all(struct.pack(">I", 16 * MiB) + b"\0" * (6 * MiB))
                async with open_connection(addr) as good:
                    # the server has read what the attackers sent
                    with trio.fail_after(10):
                        while tracemalloc.get_traced_memory()[0] - baseline < 40 * MiB:
                            await trio.sleep(0.05)
                            assert await good.send(["ping"]) == ["ping"]
                    with trio.fail_after(15):  # frame_timeout is 1 s: a generous bound
                        for stream in attackers:
                            assert await _closed_by_server(stream)
                            # served while the attackers are being dropped
                            assert await good.send(["still here"]) == ["still here"]
                    # The server's tasks for the dropped connections end right after the
                    # close: then only the good client's channel is alive, and the memory of
                    # the partial frames is back.
                    with trio.fail_after(10):
                        while True:
                            gc.collect()
                            memory = tracemalloc.get_traced_memory()[0] - baseline
                            if len(seen) == 1 and memory < 8 * MiB:
                                break
                            await trio.sleep(0.05)
                    assert await good.send(["after"]) == ["after"]
            finally:
                for stream in attackers:
                    await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()


async def test_idle_connections_are_closed_busy_ones_are_not() -> None:
    seen: weakref.WeakSet[Channel] = weakref.WeakSet()
    async with trio.open_nursery() as nursery:
        addr = await _start(nursery, seen, idle_timeout=0.3)
        silent = await trio.open_tcp_stream(*addr)
        async with open_connection(addr) as busy:
            # a handler that takes longer than idle_timeout: the client waits for its reply
            with trio.fail_after(10):
                assert await busy.send("slow") == "slow"
                assert await _closed_by_server(silent)
        await silent.aclose()
        nursery.cancel_scope.cancel()


async def test_a_stalled_tls_handshake_is_dropped(tls_ca: trustme.CA) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost").configure_cert(server_ctx)
    seen: weakref.WeakSet[Channel] = weakref.WeakSet()
    async with trio.open_nursery() as nursery:
        addr = await _start(nursery, seen, ssl_context=server_ctx, frame_timeout=0.3)
        stalled = await trio.open_tcp_stream(*addr)
        await stalled.send_all(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        with trio.fail_after(10):
            assert await _closed_by_server(stalled)
        await stalled.aclose()
        nursery.cancel_scope.cancel()


async def test_the_rpc_server_passes_the_timeouts_on() -> None:
    class Echo:
        router = Service()

        @expose
        def echo(self, value: object) -> object:
            return value

    async with trio.open_nursery() as nursery:
        [addr] = await nursery.start(partial(start_rpc_server, ("127.0.0.1", 0), Echo(),
                                             frame_timeout=0.3))
        stream = await trio.open_tcp_stream(*addr)
        await stream.send_all(struct.pack(">I", 100) + b"[0,")
        with trio.fail_after(10):
            assert await _closed_by_server(stream)
        await stream.aclose()
        nursery.cancel_scope.cancel()


def test_timeouts_are_on_by_default() -> None:
    for server in (start_server, start_rpc_server):
        params = inspect.signature(server).parameters
        assert params["frame_timeout"].default == DEFAULT_FRAME_TIMEOUT == 30.0
        assert params["idle_timeout"].default == DEFAULT_IDLE_TIMEOUT == 300.0
