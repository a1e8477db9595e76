"""The blocking Client against Server.start() running in a thread."""

import threading

from trionet.aproto import Client, Server

server = Server("127.0.0.1", 0)


@server.add_handler()
async def echo(client, packet):
    await client.send(packet)


thread = threading.Thread(target=server.start)
thread.start()
while not server.port:
    threading.Event().wait(0.01)
try:
    with Client(tls=False, encoding="ziproto", timeout=10) as client:
        client.connect("127.0.0.1", server.port)
        print(client.request({"hello": "world"}))
        print(client.request_many([{"n": 1}, {"n": 2}]))  # pipelined
        client.send('{"json": "text works too"}')
        print(client.receive_raw())  # headers included
finally:
    server.stop()  # from another thread
    thread.join()
