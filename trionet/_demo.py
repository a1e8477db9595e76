"""``trionet demo``: every component in one nursery, on embedded defaults (no broker needed)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import trio

from .codecs import MsgPack
from .framing import FramedStream

Report = Callable[[str], None]
DemoPart = Callable[[Report], Awaitable[None]]


async def _framed_echo(report: Report) -> None:
    """A framed echo server and a client in one nursery, msgpack-encoded."""
    codec = MsgPack()

    async def echo(stream: trio.SocketStream) -> None:
        framed = FramedStream(stream)
        async with framed:
            async for frame in framed:
                await framed.send_frame(frame)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        host, port = listeners[0].socket.getsockname()[:2]
        report(f"framed echo server listening on {host}:{port}")
        stream = await trio.open_tcp_stream(host, port)
        async with FramedStream(stream) as client:
            for message in (["ping", 42], {"hello": "trio"}, b"\x00binary\xff"):
                await client.send_frame(codec.encode(message))
                reply = codec.decode(await client.receive_frame())
                report(f"framed echo: sent {message!r}, got back {reply!r}")
        nursery.cancel_scope.cancel()
    report("framed echo server stopped")


def _parts() -> dict[str, DemoPart]:
    from .aproto._demo import demo as aproto_demo
    from .asgi._demo import demo as asgi_demo
    from .channel._demo import demo as channel_demo

    return {
        "framing": _framed_echo,
        "asgi": asgi_demo,
        "channel": channel_demo,
        "aproto": aproto_demo,
    }


async def run_demo(only: Sequence[str] | None = None) -> int:
    """Run the demo parts named in *only* (all by default); print a line per event."""
    parts = _parts()
    unknown = sorted(set(only or ()) - set(parts))
    if unknown:
        print(f"unknown demo part(s): {', '.join(unknown)}; known: {', '.join(parts)}",
              file=sys.stderr)
        return 2

    def report(line: str) -> None:
        print(line, flush=True)

    chosen = [name for name in parts if not only or name in only]
    with trio.fail_after(60):
        for name in chosen:
            report(f"== {name}")
            await parts[name](report)
    report("demo finished: every component shut down cleanly")
    return 0
