"""Channels over real sockets: TCP, Unix sockets and TLS; server lifecycle and backpressure."""

from __future__ import annotations

import logging
import ssl
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from trionet.channel import Channel, ChannelClosed, open_connection, start_server
from trionet.errors import RemoteException


async def echo(channel: Channel) -> None:
    async for request in channel:
        if request.content == "fail":
            await request.fail(RuntimeError("asked to fail"))
        else:
            await request.reply(request.content)


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def test_tcp_round_trip_and_extra_info() -> None:
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(start_server, ("127.0.0.1", 0), echo)
        assert len(addresses) == 1
        host, port = addresses[0]
        assert host == "127.0.0.1"
        assert port > 0
        async with open_connection((host, port)) as channel:
            assert await channel.send(["ping", 42]) == ["ping", 42]
            assert channel.get_extra_info("peername") == (host, port)
            assert channel.sockname[0] == "127.0.0.1"
            assert channel.get_extra_info("socket") is not None
            assert channel.get_extra_info("peercert") is None
            assert channel.origin == f"127.0.0.1:{port}"
            with pytest.raises(RemoteException) as info:
                await channel.send("fail")
            assert info.value.remote_type == "RuntimeError"
            assert info.value.origin == f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "channel.sock")
    seen_peers: list[Any] = []

    async def handler(channel: Channel) -> None:
        seen_peers.append(channel.origin)
        await echo(channel)

    async with trio.open_nursery() as nursery:
        # A stale socket file from an earlier run is replaced.
        stale = trio.socket.socket(trio.socket.AF_UNIX)
        await stale.bind(path)
        stale.close()
        addresses = await nursery.start(start_server, path, handler)
        assert addresses == [path]
        async with open_connection(path) as channel:
            assert await channel.send("über unix") == "über unix"
            assert channel.origin == path
            assert channel.get_extra_info("peername") == path
        nursery.cancel_scope.cancel()
    assert seen_peers == ["unix socket client"]
    assert not await trio.Path(path).exists()  # removed when the server stopped


async def test_tls_over_tcp(tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls_contexts
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(
                start_server, ("127.0.0.1", 0), echo, ssl_context=server_ctx, codec="msgpack"
            )
        )
        async with open_connection(address, ssl_context=client_ctx, codec="msgpack") as channel:
            payload = {"bytes": b"\x00" * 100_000, "text": "tls ✓"}
            assert await channel.send(payload) == payload
            assert channel.get_extra_info("peercert")["subject"]
            assert channel.get_extra_info("cipher") is not None
            assert channel.get_extra_info("ssl_object") is channel.stream
            assert channel.get_extra_info("sslcontext") is client_ctx
            assert channel.get_extra_info("peername") == tuple(address)
            with pytest.raises(RemoteException):
                await channel.send("fail")
        nursery.cancel_scope.cancel()


async def test_tls_over_a_unix_socket(
    tmp_path: Path, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, client_ctx = tls_contexts
    path = str(tmp_path / "tls.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(start_server, path, echo, ssl_context=server_ctx))
        async with open_connection(path, ssl_context=client_ctx) as channel:
            assert await channel.send("secret") == "secret"
        nursery.cancel_scope.cancel()


async def test_failed_tls_handshake_closes_only_that_connection(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls_contexts
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(start_server, ("127.0.0.1", 0), echo, ssl_context=server_ctx)
        )
        plain = await trio.open_tcp_stream(*address)
        await plain.send_all(b"this is not a TLS client hello\r\n" * 4)
        with trio.fail_after(5):
            while await plain.receive_some(1024):
                pass
        await plain.aclose()
        async with open_connection(address, ssl_context=client_ctx) as channel:
            assert await channel.send("still serving") == "still serving"
        nursery.cancel_scope.cancel()


async def test_many_clients_at_once() -> None:
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(start_server, ("127.0.0.1", 0), echo)

        async def client(i: int) -> None:
            async with open_connection(address, codec="json") as channel:
                for j in range(20):
                    assert await channel.send([i, j]) == [i, j]

        async with trio.open_nursery() as clients:
            for i in range(20):
                clients.start_soon(client, i)
        nursery.cancel_scope.cancel()


async def test_shutdown_cancels_handlers_and_leaves_nothing_behind() -> None:
    threads_before = threading.active_count()
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    handler_cancelled = trio.Event()
    handler_started = trio.Event()

    async def stubborn(channel: Channel) -> None:
        await channel.recv()
        handler_started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            handler_cancelled.set()
            raise

    errors: list[BaseException] = []
    async with trio.open_nursery() as outer, trio.open_nursery() as server_nursery:
        (address,) = await server_nursery.start(start_server, ("127.0.0.1", 0), stubborn)

        async def client() -> None:
            async with open_connection(address) as channel:
                try:
                    await channel.send("wait for me")
                except ChannelClosed as exc:
                    errors.append(exc)

        outer.start_soon(client)
        await handler_started.wait()
        server_nursery.cancel_scope.cancel()
    assert handler_cancelled.is_set()
    assert len(errors) == 1
    assert isinstance(errors[0], trio.BrokenResourceError)
    assert threading.active_count() == threads_before
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before


async def test_handler_exception_is_logged_and_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionet.channel")

    async def picky(channel: Channel) -> None:
        async for request in channel:
            if request.content == "crash the handler":
                raise KeyError("handler bug")
            await request.reply(request.content)

    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(start_server, ("127.0.0.1", 0), picky)
        async with open_connection(address) as good, open_connection(address) as bad:
            assert await good.send(1) == 1
            with pytest.raises(ChannelClosed):
                await bad.send("crash the handler")
            assert await good.send(2) == 2
        nursery.cancel_scope.cancel()
    assert any(
        "unhandled error in the handler" in r.getMessage() and r.exc_info for r in caplog.records
    )


async def test_connect_errors() -> None:
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(start_server, ("127.0.0.1", 0), echo)
        nursery.cancel_scope.cancel()
    with pytest.raises(OSError):
        async with open_connection(address):
            pass  # pragma: no cover
    with pytest.raises(FileNotFoundError):
        async with open_connection("/nonexistent/trionet.sock"):
            pass  # pragma: no cover
    with pytest.raises(TypeError):
        async with open_connection(42):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_body_exceptions_come_out_unwrapped() -> None:
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(start_server, ("127.0.0.1", 0), echo)
        with pytest.raises(ZeroDivisionError):
            async with open_connection(address):
                1 / 0  # noqa: B018
        nursery.cancel_scope.cancel()


async def test_cancel_during_a_partial_write_completes_the_frame_and_keeps_the_channel() -> None:
    gate = trio.Event()

    async def slow_reader(channel: Channel) -> None:
        await gate.wait()  # read nothing until the client has given up
        await echo(channel)

    big = b"\x01" * (8 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(
                start_server,
                ("127.0.0.1", 0),
                slow_reader,
                codec="msgpack",
                max_frame_size=64 * 1024 * 1024,
            )
        )
        async with open_connection(
            address, codec="msgpack", max_frame_size=64 * 1024 * 1024
        ) as channel:
            # A small send buffer (no autotuning) makes sure the kernel cannot take it all.
            sock = channel.get_extra_info("socket")
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 64 * 1024)
            with trio.move_on_after(0.2) as scope:
                await channel.send(big)
            assert scope.cancelled_caught
            # The kernel did not take it all: the rest waits in the channel, not half-sent.
            assert channel.statistics().buffered_output > 0

            # Senders beyond the buffer limit wait (backpressure) and can be cancelled too.
            with trio.move_on_after(0.1) as scope:
                await channel.send(big)
            assert scope.cancelled_caught

            gate.set()
            assert await channel.send("after") == "after"
            stats = channel.statistics()
            assert stats.late_replies == 1
            assert stats.pending_requests == 0
            assert stats.buffered_output == 0
        nursery.cancel_scope.cancel()


async def test_codec_objects_factories_and_server_side_info() -> None:
    from trionet.codecs import MsgPack

    codecs_seen: list[Any] = []

    async def handler(channel: Channel) -> None:
        codecs_seen.append(channel.codec)
        assert channel.peername[0] == "127.0.0.1"
        await echo(channel)

    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(start_server, ("127.0.0.1", 0), handler, codec=MsgPack, backlog=8)
        )
        for _ in range(2):
            async with open_connection(address, codec=MsgPack()) as channel:
                assert await channel.send(b"bytes need msgpack") == b"bytes need msgpack"
        nursery.cancel_scope.cancel()
    assert len(codecs_seen) == 2
    assert codecs_seen[0] is not codecs_seen[1]  # a class is a factory: one codec each
    with pytest.raises(TypeError, match="codec"):
        await start_server(("127.0.0.1", 0), echo, codec=42)  # type: ignore[arg-type]
