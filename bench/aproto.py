"""AsyncAProto: the trionet server against raw trio bounds, in one interleaved run.

Servers run in child processes (one trio loop each: the bounds in one process that never
imports trionet, trionet's servers in another); the load generator runs here, so client and
server each get a core. All contenders of a row are driven by the *same* minimal client
(pre-encoded requests, replies only framed, not decoded), so a row compares servers.

Rows
----
* ``seq json`` / ``seq ziproto``: one keep-alive connection, one request at a time.
* ``pipe100 json`` / ``pipe100 ziproto``: one connection, 100 requests written at once, then
  their 100 replies read, repeated.

  Baseline: ``raw trio bound``, the leanest echo server we could write on trio without
  trionet: its own length-prefix parsing over one ``bytearray`` (``struct.unpack_from``), the
  fastest stdlib JSON calls and a reused ``msgpack.Packer`` (``bench/_bounds.py``), and one
  ``send_all`` per read carrying every reply that read completed (replies coalesced). trionet:
  an :class:`~trionet.aproto.Server` whose one handler (behind a ``Filters.Fields`` filter)
  sends the packet back. Goal: ≥ 0.9×.
* ``pipe100 ziproto vs package``: the same pipelined echo, where each side also encodes
  requests and decodes replies on the client: baseline = the raw bound's server + client using
  the ``ziproto`` 1.0 package; trionet = Server + client using trionet's msgpack-backed ZiProto
  codec. The payload has 5 fields and short lists (the package cannot decode 16+ entries).
  Goal: ≥ 3×.
* ``conn-per-request``: connect, one request, reply, close. Baseline: the raw bound closing
  after each reply, as the original does; trionet: ``Server(keep_alive=False)``.
* ``AsyncClient seq``: the client side: trionet's :class:`~trionet.aproto.AsyncClient` against
  the minimal client, both against the trionet server (informational).
* ``idle conn memory``: RSS growth of a fresh server process per idle keep-alive connection
  (each connection did one request), 10,000 connections (1,000 with ``--quick``), measured in
  every round for both the raw bound and trionet (a new server process each time). Goal:
  trionet ≤ 16 KiB per connection.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
import ziproto
from _bounds import U32, forbid_trionet, json_codec, msgpack_codec, take_frames
from _harness import Contender, Row, main_args, run_rows

# No trionet import at module level: the bound server process runs this file too.

HOST = "127.0.0.1"
REQUEST = {"id": 1, "cmd": "echo", "data": "hello world"}
RICH = {
    "id": 1,
    "cmd": "echo",
    "data": "x" * 32,
    "values": list(range(10)),
    "nested": {"a": 1, "b": [1, 2, 3], "c": "three"},
}
_EXTRA = {"json": b"\x16\x00", "ziproto": b"\x16\x01"}
BOUND_KINDS = ("raw", "raw-close", "raw-ziproto-package")
TRIONET_KINDS = ("trionet", "trionet-close")
Codec = Any  # an object with encode(value) -> bytes and decode(bytes) -> value


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- servers (child process) ----------------------------------------------------------------------


class _ZiprotoPackage:
    name = "ziproto-package"

    def encode(self, value: Any) -> bytes:
        return ziproto.encode(value)  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        return ziproto.decode(data)


async def _raw_echo(
    codecs: dict[int, tuple[Any, Any]], close_after_reply: bool, stream: trio.SocketStream
) -> None:
    """The raw bound: own length-prefix parsing, one send_all per read with every reply."""
    buf = bytearray()
    pack = U32.pack
    async with stream:
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
                out: list[bytes] = []
                for body in take_frames(buf):
                    encode, decode = codecs[body[1]]
                    reply = encode(decode(body[2:]))
                    out += (pack(len(reply) + 2), body[:2], reply)
                    if close_after_reply:
                        break
                if out:
                    await stream.send_all(b"".join(out))
                    if close_after_reply:
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


def _trionet_server(**kwargs: Any) -> Any:
    from trionet.aproto import Filters, Server

    server = Server(HOST, 0, logging_level=100, **kwargs)

    @server.add_handler(Filters.Fields(id=None, cmd="echo", data=None))
    async def echo(client: Any, packet: Any) -> None:
        await client.send(packet)

    @server.add_handler(Filters.Fields(id=None, cmd="echo", data=None, values=None, nested=None))
    async def echo_rich(client: Any, packet: Any) -> None:
        await client.send(packet)

    return server


async def _serve(kinds: list[str]) -> None:
    ports: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        for kind in kinds:
            if kind == "trionet":
                ports[kind] = await nursery.start(_trionet_server().serve)
            elif kind == "trionet-close":
                ports[kind] = await nursery.start(_trionet_server(keep_alive=False).serve)
            else:
                std = {0: json_codec(), 1: msgpack_codec()}
                package = _ZiprotoPackage()
                pkg = {0: json_codec(), 1: (package.encode, package.decode)}
                handler = {
                    "raw": partial(_raw_echo, std, False),
                    "raw-close": partial(_raw_echo, std, True),
                    "raw-ziproto-package": partial(_raw_echo, pkg, False),
                }[kind]
                listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host=HOST))
                ports[kind] = listeners[0].socket.getsockname()[1]
        print(json.dumps(ports), flush=True)
        # Stop when the parent closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)
        nursery.cancel_scope.cancel()


class ServerProcess:
    def __init__(self, kinds: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", ",".join(kinds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the server process failed to start")
        self.ports: dict[str, int] = json.loads(line)

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- load generator -------------------------------------------------------------------------------


def _packet(codec: Codec, extra: bytes, value: Any) -> bytes:
    body = codec.encode(value)
    return U32.pack(len(body) + len(extra)) + extra + body


async def _read_replies(stream: trio.SocketStream, buf: bytearray, want: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < want:
        data = await stream.receive_some(65536)
        if not data:
            raise RuntimeError("server closed the connection")
        buf += data
        got.extend(take_frames(buf))
    return got


async def _seq(port: int, packet: bytes, n: int) -> int:
    stream = await trio.open_tcp_stream(HOST, port)
    decoder = bytearray()
    async with stream:
        for _ in range(n):
            await stream.send_all(packet)
            await _read_replies(stream, decoder, 1)
    return n


async def _pipe(port: int, packet: bytes, depth: int, batches: int) -> int:
    stream = await trio.open_tcp_stream(HOST, port)
    decoder = bytearray()
    batch = packet * depth
    async with stream:
        for _ in range(batches):
            await stream.send_all(batch)
            await _read_replies(stream, decoder, depth)
    return depth * batches


async def _pipe_codec(port: int, codec: Codec, depth: int, batches: int) -> int:
    """Pipelined, with the client encoding each request and decoding each reply."""
    stream = await trio.open_tcp_stream(HOST, port)
    decoder = bytearray()
    async with stream:
        for b in range(batches):
            requests = []
            for i in range(depth):
                RICH["id"] = b * depth + i
                requests.append(_packet(codec, b"\x16\x01", RICH))
            await stream.send_all(b"".join(requests))
            for body in await _read_replies(stream, decoder, depth):
                reply = codec.decode(body[2:])
                assert reply["cmd"] == "echo"
    return depth * batches


async def _conn_per_request(port: int, packet: bytes, n: int) -> int:
    for _ in range(n):
        stream = await trio.open_tcp_stream(HOST, port)
        decoder = bytearray()
        async with stream:
            await stream.send_all(packet)
            await _read_replies(stream, decoder, 1)
    return n


async def _async_client_seq(port: int, n: int) -> int:
    from trionet.aproto import AsyncClient

    async with AsyncClient(tls=False) as client:
        await client.connect(HOST, port)
        for _ in range(n):
            await client.request(REQUEST)
    return n


async def _bounded(fn: Callable[..., Any], *args: Any) -> Any:
    with trio.fail_after(120):  # a hung server fails the bench instead of hanging it
        return await fn(*args)


def _run(fn: Callable[..., Any], *args: Any) -> Callable[[], float]:
    def go() -> float:
        return float(trio.run(_bounded, fn, *args))

    return go


# -- idle connections -----------------------------------------------------------------------------


async def _open_idle(port: int, count: int, packet: bytes) -> list[trio.SocketStream]:
    streams: list[trio.SocketStream] = []
    limiter = trio.CapacityLimiter(200)

    async def one() -> None:
        async with limiter:
            stream = await trio.open_tcp_stream(HOST, port)
            decoder = bytearray()
            await stream.send_all(packet)
            await _read_replies(stream, decoder, 1)
            streams.append(stream)

    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    return streams


def _idle_memory(kind: str, count: int, packet: bytes) -> float:
    server = ServerProcess([kind])
    port = server.ports[kind]

    async def main() -> float:
        warm = await _open_idle(port, 50, packet)
        for s in warm:
            await s.aclose()
        await trio.sleep(0.3)
        before = server.rss_kib()
        streams = await _open_idle(port, count, packet)
        await trio.sleep(0.5)
        after = server.rss_kib()
        for s in streams:
            await s.aclose()
        return (after - before) / count

    try:
        return trio.run(main)
    finally:
        server.close()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _raise_fd_limit()
        kinds = sys.argv[2].split(",")
        if not set(kinds) & set(TRIONET_KINDS):
            forbid_trionet()
        trio.run(_serve, kinds)
        return
    args = main_args(__doc__.splitlines()[0] if __doc__ else "aproto")
    _raise_fd_limit()
    from trionet.codecs import JSON, ZiProto

    quick = args.quick
    seq_n = 300 if quick else 2000
    batches = 10 if quick else 60
    codec_batches = 3 if quick else 15
    conns = 100 if quick else 400
    idle = 1000 if quick else 10000

    json_packet = _packet(JSON(), _EXTRA["json"], REQUEST)
    zip_packet = _packet(ZiProto(), _EXTRA["ziproto"], REQUEST)
    assert zip_packet == _packet(_ZiprotoPackage(), _EXTRA["ziproto"], REQUEST)
    bound_encode = json_codec()[0]
    assert json_packet == U32.pack(len(bound_encode(REQUEST)) + 2) + _EXTRA["json"] + (
        bound_encode(REQUEST)
    )

    bounds = ServerProcess(list(BOUND_KINDS))
    try:
        servers = ServerProcess(list(TRIONET_KINDS))
    except BaseException:
        bounds.close()
        raise
    p = {**bounds.ports, **servers.ports}
    try:
        rows = [
            Row(
                "seq json",
                [
                    Contender("raw trio bound", _run(_seq, p["raw"], json_packet, seq_n)),
                    Contender("trionet", _run(_seq, p["trionet"], json_packet, seq_n)),
                ],
                goal=0.9,
            ),
            Row(
                "seq ziproto",
                [
                    Contender("raw trio bound", _run(_seq, p["raw"], zip_packet, seq_n)),
                    Contender("trionet", _run(_seq, p["trionet"], zip_packet, seq_n)),
                ],
                goal=0.9,
            ),
            Row(
                "pipe100 json",
                [
                    Contender("raw trio bound",
                              _run(_pipe, p["raw"], json_packet, 100, batches)),
                    Contender("trionet", _run(_pipe, p["trionet"], json_packet, 100, batches)),
                ],
                goal=0.9,
            ),
            Row(
                "pipe100 ziproto",
                [
                    Contender("raw trio bound", _run(_pipe, p["raw"], zip_packet, 100, batches)),
                    Contender("trionet", _run(_pipe, p["trionet"], zip_packet, 100, batches)),
                ],
                goal=0.9,
            ),
            Row(
                "pipe100 ziproto vs package",
                [
                    Contender(
                        "ziproto package",
                        _run(
                            _pipe_codec,
                            p["raw-ziproto-package"],
                            _ZiprotoPackage(),
                            100,
                            codec_batches,
                        ),
                    ),
                    Contender(
                        "trionet", _run(_pipe_codec, p["trionet"], ZiProto(), 100, codec_batches)
                    ),
                ],
                goal=3.0,
            ),
            Row(
                "conn-per-request",
                [
                    Contender(
                        "raw close-after-reply bound",
                        _run(_conn_per_request, p["raw-close"], json_packet, conns),
                    ),
                    Contender(
                        "trionet", _run(_conn_per_request, p["trionet-close"], json_packet, conns)
                    ),
                ],
            ),
            Row(
                "AsyncClient seq",
                [
                    Contender("minimal client", _run(_seq, p["trionet"], json_packet, seq_n)),
                    Contender("trionet", _run(_async_client_seq, p["trionet"], seq_n)),
                ],
            ),
            Row(
                f"idle conn memory ({idle})",
                [
                    Contender("raw trio bound", partial(_idle_memory, "raw", idle, json_packet)),
                    Contender("trionet", partial(_idle_memory, "trionet", idle, json_packet)),
                ],
                unit="KiB/conn",
                limit=16.0,
            ),
        ]
        note = (
            "raw trio bound: no trionet import, coalesced replies (bench/_bounds.py); idle "
            "memory: RSS growth per idle keep-alive connection of a fresh server process, "
            "every round, ratio = raw/trionet"
        )
        run_rows("aproto", rows, rounds=args.rounds, note=note)
    finally:
        servers.close()
        bounds.close()


if __name__ == "__main__":
    main()
