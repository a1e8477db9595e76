"""The channel part of ``trionet demo``: a channel server and client, then an RPC call."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from .. import rpc
from ..channel import Channel, open_connection, start_server
from ..errors import RemoteException

__all__ = ["demo"]


class _Calculator:
    router = rpc.Service()

    @rpc.expose
    def add(self, a: int, b: int) -> int:
        return a + b

    @rpc.expose
    async def slow_double(self, x: int) -> int:
        await trio.sleep(0.01)
        return 2 * x


async def _slowly(content: Any) -> Any:
    await trio.sleep(0.05)
    return content


def _answer(content: Any) -> Any:
    if content == "divide by zero":
        return 1 // 0
    if content == "slow":
        return _slowly(content)  # an awaitable reply: answered from its own task
    return {"echo": content}


async def demo(report: Callable[[str], None]) -> None:
    """Run a channel server and a client in one nursery, exchange a few requests, stop.

    Args:
        report: called with one line of text per event.
    """

    async def handle(channel: Channel) -> None:
        await channel.serve(_answer)

    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(partial(start_server, ("127.0.0.1", 0), handle))
        report(f"channel server listening on {address[0]}:{address[1]} (aiomas wire format)")
        async with open_connection(address) as channel:
            for content in (["ping", 42], "héllo, trio", {"numbers": [1, 2, 3]}):
                reply = await channel.send(content)
                report(f"channel: sent {content!r}, got {reply!r}")
            try:
                await channel.send("divide by zero")
            except RemoteException as exc:
                report(f"channel: the server failed with {exc.remote_type}, as expected")
            with trio.move_on_after(0.01):
                await channel.send("slow")
            reply = await channel.send("after a cancelled request")
            report(f"channel: a request cancelled by its deadline, then {reply!r}")

        (rpc_address,) = await nursery.start(
            partial(rpc.start_server, ("127.0.0.1", 0), _Calculator())
        )
        async with rpc.open_connection(rpc_address) as client:
            total = await client.remote.add(1, 2)
            report(f"rpc: remote.add(1, 2) = {total}")
            doubled = await client.remote.slow_double(21)
            report(f"rpc: remote.slow_double(21) = {doubled}")
        nursery.cancel_scope.cancel()
    report("channel and rpc servers stopped")
