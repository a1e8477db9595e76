"""A server and an AsyncClient in one nursery."""

import trio

from trionet.aproto import AsyncClient, Filters, Packet, Server

server = Server("127.0.0.1", 0)  # port 0: any free port


@server.add_handler(Filters.Fields(cmd="ping$"))
async def ping(client, packet):
    await client.send(Packet({"status": "ok", "pong": True}, encoding=packet.encoding))


async def main():
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)  # runs setup(), binds, reports the port
        async with AsyncClient(tls=False) as client:
            await client.connect("127.0.0.1", port)
            for _ in range(3):  # one connection, many requests
                print(await client.request({"cmd": "ping"}))
        server.stop()  # graceful; serve() returns


trio.run(main)
