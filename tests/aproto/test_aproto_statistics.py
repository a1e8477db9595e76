"""Server.statistics(): connections, packets, bad packets, handler errors."""

from __future__ import annotations

import trio

from trionet.aproto import AsyncClient, HandlerClient, Packet, Server


async def test_server_statistics_count_what_happened() -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler()
    async def answer(client: HandlerClient, packet: Packet) -> None:
        if packet.get("cmd") == "boom":
            raise RuntimeError("handler bug")
        await client.send({"status": "ok"})

    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        assert server.statistics().connections == 0
        async with AsyncClient(tls=False) as client:
            await client.connect("127.0.0.1", port)
            for _ in range(3):
                assert await client.request({"cmd": "ping"}) == {"status": "ok"}
            stats = server.statistics()
            assert (stats.connections, stats.open_sessions, stats.packets) == (1, 1, 3)
        # A bad packet (wrong protocol version) and a failing handler, each on its own
        # connection.
        bad = await trio.open_tcp_stream("127.0.0.1", port)
        await bad.send_all(b"\x00\x00\x00\x04\x15\x00{}")
        assert b"ERR_HEADER_INVALID" in await bad.receive_some(200)
        await bad.aclose()
        async with AsyncClient(tls=False) as client:
            await client.connect("127.0.0.1", port)
            await client.send({"cmd": "boom"})
            assert await client.receive_raw() == b""  # the server closed the connection
        server.stop()
    stats = server.statistics()
    assert stats.connections == 3
    assert stats.packets == 4
    assert stats.rejected == 1
    assert stats.handler_errors == 1
    assert stats.open_sessions == 0
