"""Shared helpers for the AsyncAProto tests: a raw byte-level client and a server starter."""

from __future__ import annotations

import json
from typing import Any

import trio

from trionet.aproto import Packet, PacketEncoder, Server
from trionet.framing import LengthPrefixDecoder

ENCODER = PacketEncoder()


def error_reply(code: str) -> dict[str, str]:
    return {"status": "failure", "error": code}


def raw_packet(body: bytes, header_size: int = 4, byteorder: Any = "big") -> bytes:
    """A packet with an arbitrary body (Protocol-Version and Content-Encoding included)."""
    return len(body).to_bytes(header_size, byteorder) + body


class RawConn:
    """A byte-level client: sends whatever bytes, parses replies exactly."""

    def __init__(self, stream: trio.SocketStream, header_size: int = 4, byteorder: Any = "big"):
        self.stream = stream
        self.decoder = LengthPrefixDecoder(
            header_size=header_size, byteorder=byteorder, extra_header_size=2
        )
        self.bodies: list[bytes] = []

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1", **fmt: Any) -> RawConn:
        return cls(await trio.open_tcp_stream(host, port), **fmt)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_fields(self, fields: dict[str, Any], encoding: Any = "json") -> None:
        await self.send(ENCODER.encode(fields, encoding))

    async def reply_body(self) -> bytes:
        """The next reply's body (version + encoding + payload)."""
        with trio.fail_after(10):
            while not self.bodies:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("server closed the connection")
                self.bodies.extend(self.decoder.feed(data))
        return self.bodies.pop(0)

    async def reply(self) -> dict[str, Any]:
        body = await self.reply_body()
        assert body[0] == 22
        if body[1] == 0:
            return json.loads(body[2:])  # type: ignore[no-any-return]
        import msgpack

        return msgpack.unpackb(body[2:], raw=False)  # type: ignore[no-any-return]

    async def expect_eof(self) -> None:
        """The server closes the connection (after any replies already taken)."""
        with trio.fail_after(10):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    assert not self.bodies
                    return
                self.bodies.extend(self.decoder.feed(data))
                assert not self.bodies, f"unexpected reply {self.bodies!r}"

    async def aclose(self) -> None:
        await self.stream.aclose()


def echo_server(**kwargs: Any) -> Server:
    """A server that answers every packet with ``{"echo": <fields>, "from": <address>}``."""
    kwargs.setdefault("logging_level", 100)
    server = Server("127.0.0.1", 0, **kwargs)

    @server.add_handler()
    async def echo(client: Any, packet: Packet) -> None:
        await client.send(Packet({"echo": packet.fields, "from": client.address}))

    return server


async def start(nursery: trio.Nursery, server: Server) -> int:
    port: int = await nursery.start(server.serve)
    return port
