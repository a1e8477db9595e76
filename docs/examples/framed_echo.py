"""A framed echo server and a client in one nursery, msgpack-encoded."""

from functools import partial

import trio

from trionet.codecs import MsgPack
from trionet.framing import FramedStream


async def echo(stream: trio.SocketStream) -> None:
    async with FramedStream(stream) as framed:
        async for frame in framed:  # ends when the client closes
            await framed.send_frame(frame)


async def main() -> None:
    codec = MsgPack()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with FramedStream(await trio.open_tcp_stream("127.0.0.1", port)) as client:
            await client.send_frame(codec.encode({"hello": "trio", "n": [1, 2, 3]}))
            reply = codec.decode(await client.receive_frame())
            assert reply == {"hello": "trio", "n": [1, 2, 3]}
            print("echoed:", reply)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
