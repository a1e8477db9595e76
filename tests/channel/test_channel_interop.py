"""Interop with the real aiomas 2.0.1 (run on asyncio in a subprocess), both directions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from trionet import rpc
from trionet.channel import Channel, open_connection, start_server
from trionet.errors import RemoteException

PEER = str(Path(__file__).with_name("aiomas_peer.py"))
UNICODE = "héllo wörld ✓ 🐍 日本語"
MIB = "€" * (1024 * 1024 // 3)

pytestmark = pytest.mark.parametrize("codec", ["json", "msgpack"])


@asynccontextmanager
async def aiomas_server(role: str, codec: str) -> AsyncIterator[tuple[str, int]]:
    """Start ``aiomas_peer.py ROLE CODEC``; yield its address; stop it by closing its stdin."""
    process = await trio.lowlevel.open_process(
        [sys.executable, PEER, role, codec], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the aiomas peer exited before listening"
                line += chunk
        word, port = line.split()
        assert word == b"PORT"
        yield ("127.0.0.1", int(port))
    finally:
        await process.stdin.aclose()
        with trio.fail_after(10):
            await process.wait()
        await process.stdout.aclose()
    assert process.returncode == 0


async def run_aiomas_client(role: str, codec: str, port: int) -> dict[str, Any]:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, PEER, role, codec, str(port)], capture_stdout=True
        )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


async def test_trionet_client_with_aiomas_server(codec: str) -> None:
    async with (
        aiomas_server("server", codec) as address,
        open_connection(address, codec=codec) as channel,
    ):
        assert await channel.send(["echo", ["ping", 42]]) == ["ping", 42]
        assert await channel.send(["echo", UNICODE]) == UNICODE
        assert await channel.send(["echo", MIB]) == MIB
        with pytest.raises(RemoteException) as info:
            await channel.send(["fail", "bad thing"])
        assert info.value.remote_type == "ValueError"
        assert "ValueError: bad thing" in info.value.remote_traceback
        assert info.value.origin == f"127.0.0.1:{address[1]}"

        results: dict[int, Any] = {}

        async def ask(i: int) -> None:
            results[i] = await channel.send(["echo", i])

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(ask, i)
        assert results == {i: i for i in range(100)}

        # Cancelled mid-flight (fatal to an aiomas client when the reply comes): fine here.
        with trio.move_on_after(0.05):
            await channel.send(["slow", 0.3, "late"])
        await trio.sleep(0.4)
        assert await channel.send(["echo", "next"]) == "next"
        assert channel.statistics().late_replies == 1


async def aiomas_style_handler(channel: Channel) -> None:
    async def answer(content: Any) -> Any:
        kind, *args = content
        if kind == "echo":
            return args[0]
        if kind == "fail":
            raise ValueError(args[0])
        await trio.sleep(args[0])
        return args[1]

    await channel.serve(answer)


async def test_aiomas_client_with_trionet_server(codec: str) -> None:
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(start_server, ("127.0.0.1", 0), aiomas_style_handler, codec=codec)
        )
        out = await run_aiomas_client("client", codec, address[1])
        nursery.cancel_scope.cancel()
    assert out["ping"] == ["ping", 42]
    assert out["unicode"] == UNICODE
    assert out["mib_ok"] is True
    assert "ValueError: bad thing" in out["remote"]
    assert out["remote"].startswith("Traceback (most recent call last):")
    assert out["concurrent"] == list(range(100))


async def test_trionet_rpc_client_with_aiomas_rpc_server(codec: str) -> None:
    async with (
        aiomas_server("rpcserver", codec) as address,
        rpc.open_connection(address, codec=codec) as client,
    ):
        assert await client.remote.calc.add(1, 2) == 3
        assert await client.remote.calc.add("a", "b") == "ab"
        assert await client.remote.echo(UNICODE) == UNICODE
        assert await client.call("calc/add", 20, b=22) == 42
        with pytest.raises(RemoteException) as info:
            await client.remote.calc.fail("nope")
        assert info.value.remote_type == "KeyError"
        with pytest.raises(RemoteException) as info:
            await client.remote.calc.missing()
        assert info.value.remote_type == "LookupError"


class Calculator:
    router = rpc.Service()

    @rpc.expose
    def add(self, a: Any, b: Any) -> Any:
        return a + b

    @rpc.expose
    def fail(self, text: str) -> None:
        raise KeyError(text)


class Root:
    router = rpc.Service(["calc"])

    def __init__(self) -> None:
        self.calc = Calculator()

    @rpc.expose
    async def echo(self, value: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return value


async def test_aiomas_rpc_client_with_trionet_rpc_server(codec: str) -> None:
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(rpc.start_server, ("127.0.0.1", 0), Root(), codec=codec)
        )
        out = await run_aiomas_client("rpcclient", codec, address[1])
        nursery.cancel_scope.cancel()
    assert out["add"] == 3
    assert out["echo"] == UNICODE
    assert "KeyError: 'nope'" in out["remote"]
    assert "LookupError" in out["missing"]
