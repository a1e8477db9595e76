"""A tiny scripted MQTT 3.1.1/5 server over real TCP, for the corner cases mosquitto will not
produce on demand: a refused SUBACK, a CONNACK that never comes, a broker that stops answering
pings, an error PUBACK, a PUBREL for a packet id the client no longer knows.

It understands just enough of the protocol to follow a script; each test says how to answer.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n % 128, n // 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + encode_length(len(body)) + body


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def packet_id(self) -> int:
        """The packet identifier (of a PUBLISH: the one after the topic)."""
        offset = 0
        if self.kind == PUBLISH:
            offset = 2 + int(struct.unpack_from("!H", self.body)[0])
        return int(struct.unpack_from("!H", self.body, offset)[0])


@dataclass
class Session:
    stream: trio.SocketStream
    protocol: int = 4
    buffer: bytearray = field(default_factory=bytearray)

    async def read(self) -> Packet | None:
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data

    def _parse(self) -> Packet | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        length, multiplier, pos = 0, 1, 1
        while True:
            if pos >= len(buf):
                return None
            byte = buf[pos]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            pos += 1
            if not byte & 0x80:
                break
        if len(buf) < pos + length:
            return None
        first = buf[0]
        body = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        return Packet(first >> 4, first & 0x0F, body)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def connack(self, code: int = 0, session_present: bool = False) -> None:
        body = bytes([1 if session_present else 0, code])
        if self.protocol == 5:
            body += b"\x00"  # no properties
        await self.send(packet(CONNACK, 0, body))

    async def suback(self, packet_id: int, code: int) -> None:
        body = struct.pack("!H", packet_id) + (b"\x00" if self.protocol == 5 else b"") + bytes(
            [code])
        await self.send(packet(SUBACK, 0, body))

    async def ack(self, kind: int, packet_id: int, code: int | None = None) -> None:
        body = struct.pack("!H", packet_id)
        if self.protocol == 5 and code is not None:
            body += bytes([code]) + b"\x00"
        await self.send(packet(kind, 2 if kind == PUBREL else 0, body))

    async def publish(self, topic: str, payload: bytes, qos: int, packet_id: int = 0) -> None:
        raw_topic = topic.encode()
        body = struct.pack("!H", len(raw_topic)) + raw_topic
        if qos:
            body += struct.pack("!H", packet_id)
        if self.protocol == 5:
            body += b"\x00"
        await self.send(packet(PUBLISH, qos << 1, body + payload))


Script = Callable[[Session, Packet], Awaitable[None]]


async def serve_script(
    script: Script, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve on 127.0.0.1: read CONNECT, then hand it and the session to *script*."""

    async def handler(stream: trio.SocketStream) -> None:
        session = Session(stream)
        first = await session.read()
        if first is None or first.kind != CONNECT:
            return
        # protocol level: after the 2-byte length and "MQTT"
        session.protocol = first.body[6]
        with contextlib.suppress(trio.BrokenResourceError):
            await script(session, first)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)
