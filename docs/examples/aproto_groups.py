"""Handler groups, stop_propagation and sessions."""

import trio

from trionet.aproto import AsyncClient, Filters, Server

server = Server("127.0.0.1", 0)


@server.add_handler(Filters.Fields(cmd="get", key=None), group=0)
async def get(client, packet):
    if packet["key"] == "secret":
        await client.send({"status": "failure", "error": "ERR_FORBIDDEN"})
        packet.stop_propagation()  # the audit group does not see it
    await client.send({"status": "ok", "value": packet["key"].upper()})


@server.add_handler(group=1)
async def audit(client, packet):
    sessions = client.get_sessions()  # open sessions from this peer IP
    await client.send({"audit": dict(packet), "sessions": len(sessions)})


async def main():
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with AsyncClient(tls=False, encoding="ziproto") as client:
            await client.connect("127.0.0.1", port)
            await client.send({"cmd": "get", "key": "abc"})
            print(await client.receive(), await client.receive())
            print(await client.request({"cmd": "get", "key": "secret"}))
        server.stop()


trio.run(main)
