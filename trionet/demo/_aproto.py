"""The AsyncAProto part of ``trionet demo``: a server and an AsyncClient in one nursery."""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..aproto import APIKeyFactory, AsyncClient, Filters, HandlerClient, Packet, Server

__all__ = ["demo"]


async def demo(report: Callable[[str], None]) -> None:
    """Run an AProto server and a client in their own nursery, report a few exchanges, stop.

    Args:
        report: called with one line of text per event.
    """
    keys = APIKeyFactory()
    key = keys.issue({"user": "demo"})
    server = Server("127.0.0.1", 0, logging_level=100, timeout=10)

    @server.add_handler(Filters.Fields(cmd="ping$"))
    async def ping(client: HandlerClient, packet: Packet) -> None:
        await client.send(Packet({"status": "ok", "pong": True}, encoding=packet.encoding))

    @server.add_handler(Filters.Fields(cmd="whoami$", key=None) & Filters.APIFactory(keys, "key"))
    async def whoami(client: HandlerClient, packet: Packet) -> None:
        user = keys.get(packet["key"])["user"]
        await client.send({"status": "ok", "user": user, "address": client.address})

    @server.add_handler(group=1)
    async def audit(client: HandlerClient, packet: Packet) -> None:
        # A later group sees every packet too, unless a handler stops propagation.
        if "cmd" not in packet:
            await client.send({"status": "failure", "error": "ERR_NO_COMMAND"})

    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        report(f"aproto server listening on 127.0.0.1:{port} (protocol v22, keep-alive)")
        async with AsyncClient(tls=False, encoding="ziproto") as client:
            await client.connect("127.0.0.1", port)
            for payload in ({"cmd": "ping"}, {"cmd": "whoami", "key": key}, {"hello": 1}):
                reply = await client.request(payload)
                shown = {k: ("<api key>" if k == "key" else v) for k, v in payload.items()}
                report(f"aproto: sent {shown!r}, got {reply!r}")
            replies = await client.request_many([{"cmd": "ping"}] * 3)
            report(f"aproto: 3 pipelined pings on the same connection -> {len(replies)} replies")
        server.stop()
    report("aproto server stopped")
