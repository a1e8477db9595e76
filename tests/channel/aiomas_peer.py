"""The real aiomas 2.0.1, on asyncio, as the peer of trionet's interop tests.

Run as a subprocess (trionet itself never imports asyncio):

* ``aiomas_peer.py server CODEC``: an aiomas channel server; prints ``PORT n``, serves until
  stdin closes. Requests: ``["echo", x]`` -> ``x``; ``["fail", text]`` -> ``ValueError(text)``;
  ``["slow", seconds, x]`` -> ``x`` after a sleep.
* ``aiomas_peer.py rpcserver CODEC``: an aiomas RPC server (``calc.add``, ``calc.fail``,
  ``echo``); prints ``PORT n``, serves until stdin closes.
* ``aiomas_peer.py client CODEC PORT``: runs the client scenario against a trionet server with
  the same request vocabulary and prints one JSON line of results.
* ``aiomas_peer.py rpcclient CODEC PORT``: calls a trionet RPC server, prints one JSON line.

CODEC is ``json`` (aiomas's own) or ``msgpack`` (aiomas's MsgPack codec is broken with
msgpack >= 1.0, so this one is patched: ``raw=False`` instead of the removed ``encoding=``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from typing import Any

warnings.simplefilter("ignore", DeprecationWarning)

import aiomas  # noqa: E402
import aiomas.codecs  # noqa: E402
import msgpack  # noqa: E402

UNICODE = "héllo wörld ✓ 🐍 日本語"
MIB = "€" * (1024 * 1024 // 3)  # about 1 MiB once UTF-8 encoded


class PatchedMsgPack(aiomas.codecs.Codec):  # type: ignore[misc]
    def encode(self, data: Any) -> bytes:
        return msgpack.packb(data, default=self.serialize_obj, use_bin_type=True)  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        return msgpack.unpackb(data, object_hook=self.deserialize_obj, use_list=False, raw=False)


def codec_class(name: str) -> Any:
    return aiomas.codecs.JSON if name == "json" else PatchedMsgPack


async def handle(channel: Any) -> None:
    async def answer(request: Any) -> None:
        kind, *args = request.content
        if kind == "echo":
            await request.reply(args[0])
        elif kind == "fail":
            await request.fail(ValueError(args[0]))
        elif kind == "slow":
            await asyncio.sleep(args[0])
            await request.reply(args[1])

    tasks = set()
    try:
        while True:
            request = await channel.recv()
            task = asyncio.ensure_future(answer(request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except ConnectionError:
        pass
    finally:
        await channel.close()


class Calculator:
    router = aiomas.rpc.Service()

    @aiomas.expose  # type: ignore[untyped-decorator]
    def add(self, a: Any, b: Any) -> Any:
        return a + b

    @aiomas.expose  # type: ignore[untyped-decorator]
    def fail(self, text: str) -> None:
        raise KeyError(text)


class Root:
    router = aiomas.rpc.Service(["calc"])

    def __init__(self) -> None:
        self.calc = Calculator()

    @aiomas.expose  # type: ignore[untyped-decorator]
    async def echo(self, value: Any) -> Any:
        await asyncio.sleep(0)
        return value


async def wait_for_stdin_close() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve(codec: str) -> None:
    server = await aiomas.channel.start_server(("127.0.0.1", 0), handle, codec=codec_class(codec))
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    await wait_for_stdin_close()
    server.close()
    await server.wait_closed()


async def rpcserve(codec: str) -> None:
    server = await aiomas.rpc.start_server(("127.0.0.1", 0), Root(), codec=codec_class(codec))
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    await wait_for_stdin_close()
    server.close()
    await server.wait_closed()


async def client(codec: str, port: int) -> dict[str, Any]:
    channel = await aiomas.channel.open_connection(("127.0.0.1", port), codec=codec_class(codec))
    out: dict[str, Any] = {}
    try:
        out["ping"] = await channel.send(["echo", ["ping", 42]])
        out["unicode"] = await channel.send(["echo", UNICODE])
        out["mib_ok"] = await channel.send(["echo", MIB]) == MIB
        try:
            await channel.send(["fail", "bad thing"])
            out["remote"] = None
        except aiomas.RemoteException as exc:
            out["remote"] = exc.remote_traceback
        replies = await asyncio.gather(*(channel.send(["echo", i]) for i in range(100)))
        out["concurrent"] = list(replies)
    finally:
        await channel.close()
    return out


async def rpcclient(codec: str, port: int) -> dict[str, Any]:
    rpc = await aiomas.rpc.open_connection(("127.0.0.1", port), codec=codec_class(codec))
    out: dict[str, Any] = {}
    try:
        out["add"] = await rpc.remote.calc.add(1, 2)
        out["echo"] = await rpc.remote.echo(UNICODE)
        try:
            await rpc.remote.calc.fail("nope")
            out["remote"] = None
        except aiomas.RemoteException as exc:
            out["remote"] = exc.remote_traceback
        try:
            await rpc.remote.calc.missing()
            out["missing"] = None
        except aiomas.RemoteException as exc:
            out["missing"] = exc.remote_traceback
    finally:
        await rpc.close()
    return out


def main() -> None:
    role, codec = sys.argv[1], sys.argv[2]
    if role == "server":
        asyncio.run(serve(codec))
    elif role == "rpcserver":
        asyncio.run(rpcserve(codec))
    elif role == "client":
        print(json.dumps(asyncio.run(client(codec, int(sys.argv[3])))), flush=True)
    elif role == "rpcclient":
        print(json.dumps(asyncio.run(rpcclient(codec, int(sys.argv[3])))), flush=True)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
