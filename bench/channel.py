"""Request-reply channel throughput: trionet vs aiomas 2.0.1 and raw trio/asyncio bounds.

Every contender runs its own echo server in its own process and its client in another, so a
request crosses two processes as in production; servers and clients stay up for the whole run and
the contenders are interleaved round by round (the order rotates every round).

Contenders:

* ``aiomas``: ``aiomas.channel`` on asyncio, with its JSON codec or a MsgPack codec patched for
  msgpack >= 1.0 (``raw=False`` instead of the removed ``encoding=``). Server:
  ``while True: req = await ch.recv(); await req.reply(req.content)``.
* ``raw asyncio``: the leanest asyncio code we could write for the same wire format:
  ``asyncio.Protocol`` on both sides, own length-prefix parsing, the server answering every
  request of one ``data_received`` with one ``transport.write``; the client resolves a future
  per request and, with several requests outstanding, writes the requests of one loop
  iteration together.
* ``raw trio``: the same on ``trio.SocketStream``: own parsing and one ``send_all`` per
  received chunk on the server; on the client the requester reads its own reply (``seq``,
  ``conn20``), or a reader task wakes per-request events behind a coalescing writer
  (``pipe100``).
* ``trionet``: ``trionet.channel.start_server`` with ``await channel.serve(identity)`` (the
  channel's own answering loop), and ``open_connection`` + ``await channel.send(payload)``.
  ``TRIONET_BENCH_SERVER=loop`` makes the server a hand-written ``async for req in channel:
  await req.reply(req.content)`` loop instead.

The bounds and aiomas never import trionet (their processes make it an error); their codecs
are the fastest stdlib JSON calls and a reused ``msgpack.Packer`` (``bench/_bounds.py``).

Modes: ``seq`` (1 connection, 1 request outstanding), ``pipe100`` (1 connection, 100 tasks each
with 1 outstanding), ``conn20`` (20 connections, 1 outstanding each). Payloads: ``["ping", 42]``,
a 1 KiB string and a 64 KiB string, echoed back. Each measurement runs for ``--duration``
seconds (default 2; ``--quick`` 0.1) after a short warm-up.

Idle memory: in every round, for every contender, a fresh server process gets 10,000 connected
channels (1,000 with ``--quick``), each having answered one request; the row reports its RSS
growth per connection.

Goals (issue 3), per codec: trionet/aiomas >= 1.0 (seq), >= 2.0 (pipe100), >= 0.75 (conn20),
and trionet/raw trio >= 0.9 in every mode (raw asyncio is shown, without a goal). Memory:
trionet <= 16 KiB per idle connected channel.

Run: ``.venv/bin/python bench/channel.py [--quick] [--rounds N] [--duration S] [--no-memory]``.
A full run takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bounds import U32, forbid_trionet, json_codec, msgpack_codec, take_frames

IMPLS = ("aiomas", "raw-asyncio", "raw-trio", "trionet")
LABELS = {"aiomas": "aiomas", "raw-asyncio": "raw asyncio", "raw-trio": "raw trio",
          "trionet": "trionet"}
CODECS = ("json", "msgpack")
MODES = {"seq": (1, 1), "pipe100": (1, 100), "conn20": (20, 1)}  # connections, tasks each
PAYLOADS: dict[str, Any] = {"ping": ["ping", 42], "1KiB": "x" * 1024, "64KiB": "x" * 65536}
GOALS = {"seq": 1.0, "pipe100": 2.0, "conn20": 0.75}
RAW_GOAL = 0.9
MEMORY_GOAL_KIB = 16.0
WARMUP = 5


# -- contenders: servers ------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _aiomas_codec(name: str) -> Any:
    import aiomas.codecs
    import msgpack

    if name == "json":
        return aiomas.codecs.JSON

    class PatchedMsgPack(aiomas.codecs.Codec):  # type: ignore[misc]
        """aiomas.codecs.MsgPack with ``raw=False`` instead of the removed ``encoding=``."""

        def encode(self, data: Any) -> bytes:
            return msgpack.packb(data, default=self.serialize_obj, use_bin_type=True)  # type: ignore[no-any-return]

        def decode(self, data: bytes) -> Any:
            return msgpack.unpackb(
                data, object_hook=self.deserialize_obj, use_list=False, raw=False
            )

    return PatchedMsgPack


def _bound_codec(name: str) -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    return json_codec() if name == "json" else msgpack_codec()


def serve(impl: str, codec: str) -> None:
    """Server process: print ``PORT n`` once listening, serve until stdin closes."""
    _raise_fd_limit()
    if impl != "trionet":
        forbid_trionet()
    if impl == "aiomas":
        import asyncio

        import aiomas

        async def handle(channel: Any) -> None:
            try:
                while True:
                    request = await channel.recv()
                    await request.reply(request.content)
            except ConnectionError:
                pass
            finally:
                await channel.close()

        async def amain() -> None:
            server = await aiomas.channel.start_server(
                ("127.0.0.1", 0), handle, codec=_aiomas_codec(codec)
            )
            print("PORT", server.sockets[0].getsockname()[1], flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)
            server.close()

        asyncio.run(amain())
        return
    if impl == "raw-asyncio":
        _raw_asyncio_serve(codec)
        return

    import trio

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if impl == "raw-trio":
                listeners = await nursery.start(
                    partial(trio.serve_tcp, _raw_echo_handler(codec), 0, host="127.0.0.1")
                )
                port = listeners[0].socket.getsockname()[1]
            else:
                from trionet.channel import Channel, start_server

                def identity(content: Any) -> Any:
                    return content

                async def echo(channel: Channel) -> None:
                    if os.environ.get("TRIONET_BENCH_SERVER") == "loop":
                        async for request in channel:
                            await request.reply(request.content)
                    else:
                        await channel.serve(identity)

                addresses = await nursery.start(
                    partial(start_server, ("127.0.0.1", 0), echo, codec=codec)
                )
                port = addresses[0][1]
            print("PORT", port, flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()

    trio.run(main)


def _answer_frames(buf: bytearray, encode: Callable[[Any], bytes],
                   decode: Callable[[bytes], Any]) -> bytes:
    """The bounds' server side: the replies to every complete request in *buf* (removed from
    it), as one buffer to write at once."""
    pack = U32.pack
    out: list[bytes] = []
    for frame in take_frames(buf):
        _, msg_id, content = decode(frame)
        body = encode([1, msg_id, content])
        out += (pack(len(body)), body)
    return b"".join(out)


def _raw_echo_handler(codec_name: str) -> Callable[[Any], Any]:
    """The raw trio bound's server: every reply to one read goes out in one ``send_all``."""
    import trio

    encode, decode = _bound_codec(codec_name)

    async def handler(stream: Any) -> None:
        buf = bytearray()
        async with stream:
            try:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                    out = _answer_frames(buf, encode, decode)
                    if out:
                        await stream.send_all(out)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    return handler


def _raw_asyncio_serve(codec_name: str) -> None:
    """The raw asyncio bound's server: a Protocol; one ``write`` per ``data_received``."""
    import asyncio

    encode, decode = _bound_codec(codec_name)

    class Echo(asyncio.Protocol):
        def __init__(self) -> None:
            self.buf = bytearray()
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.buf += data
            out = _answer_frames(self.buf, encode, decode)
            if out:
                self.transport.write(out)

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        print("PORT", server.sockets[0].getsockname()[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(amain())


# -- contenders: clients ------------------------------------------------------------------------


def _trionet_measure(
    port: int, codec: str, mode: str, payload: Any, duration: float
) -> dict[str, float]:
    import trio

    from trionet.channel import open_connection

    n_conns, n_tasks = MODES[mode]
    result: dict[str, float] = {}

    async def main() -> None:
        count = 0
        deadline = 0.0

        async def worker(channel: Any, warm: bool) -> None:
            nonlocal count
            if warm:
                for _ in range(WARMUP):
                    await channel.send(payload)
                return
            clock = time.perf_counter
            while clock() < deadline:
                await channel.send(payload)
                count += 1

        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            channels = [
                await stack.enter_async_context(open_connection(("127.0.0.1", port), codec=codec))
                for _ in range(n_conns)
            ]
            for warm in (True, False):
                deadline = time.perf_counter() + duration
                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for channel in channels:
                        for _ in range(n_tasks):
                            nursery.start_soon(worker, channel, warm)
                result["elapsed"] = time.perf_counter() - t0
        result["ops"] = count

    trio.run(main)
    return result


def _raw_measure(
    port: int, codec_name: str, mode: str, payload: Any, duration: float
) -> dict[str, float]:
    import trio

    encode, decode = _bound_codec(codec_name)
    header = U32.pack
    n_conns, n_tasks = MODES[mode]
    result: dict[str, float] = {}

    def frame(msg_id: int) -> bytes:
        body = encode([0, msg_id, payload])
        return header(len(body)) + body

    class Slot:
        __slots__ = ("event", "value")

        def __init__(self) -> None:
            self.event = trio.Event()
            self.value: Any = None

    class Conn:
        """A raw connection: requester-reads-own-reply, or reader task + events (pipelined)."""

        def __init__(self, stream: Any) -> None:
            self.stream = stream
            self.buf = bytearray()
            self.next_id = 0
            self.pending: dict[int, Slot] = {}
            self.queue: list[bytes] = []
            self.writing = False

        async def call_own(self) -> Any:
            msg_id = self.next_id
            self.next_id += 1
            await self.stream.send_all(frame(msg_id))
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise RuntimeError("server closed the connection")
                self.buf += data
                frames = take_frames(self.buf)
                if frames:
                    return decode(frames[0])[2]

        async def write(self, data: bytes) -> None:
            self.queue.append(data)
            if self.writing:
                return
            self.writing = True
            try:
                while self.queue:
                    chunk = b"".join(self.queue)
                    self.queue.clear()
                    await self.stream.send_all(chunk)
            finally:
                self.writing = False

        async def call_piped(self) -> Any:
            msg_id = self.next_id
            self.next_id += 1
            slot = Slot()
            self.pending[msg_id] = slot
            await self.write(frame(msg_id))
            await slot.event.wait()
            return slot.value

        async def reader(self) -> None:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return
                self.buf += data
                for f in take_frames(self.buf):
                    _, msg_id, content = decode(f)
                    slot = self.pending.pop(msg_id)
                    slot.value = content
                    slot.event.set()

    async def main() -> None:
        count = 0
        deadline = 0.0
        conns = [Conn(await trio.open_tcp_stream("127.0.0.1", port)) for _ in range(n_conns)]
        piped = n_tasks > 1

        async def worker(conn: Conn, warm: bool) -> None:
            nonlocal count
            call = conn.call_piped if piped else conn.call_own
            if warm:
                for _ in range(WARMUP):
                    await call()
                return
            clock = time.perf_counter
            while clock() < deadline:
                await call()
                count += 1

        async with trio.open_nursery() as outer:
            if piped:
                for conn in conns:
                    outer.start_soon(conn.reader)
            for warm in (True, False):
                deadline = time.perf_counter() + duration
                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for conn in conns:
                        for _ in range(n_tasks):
                            nursery.start_soon(worker, conn, warm)
                result["elapsed"] = time.perf_counter() - t0
            outer.cancel_scope.cancel()
        for conn in conns:
            await conn.stream.aclose()
        result["ops"] = count

    trio.run(main)
    return result


def _aiomas_measure(
    port: int, codec: str, mode: str, payload: Any, duration: float
) -> dict[str, float]:
    import asyncio

    import aiomas

    n_conns, n_tasks = MODES[mode]
    result: dict[str, float] = {}

    async def main() -> None:
        count = 0
        deadline = 0.0

        async def worker(channel: Any, warm: bool) -> None:
            nonlocal count
            if warm:
                for _ in range(WARMUP):
                    await channel.send(payload)
                return
            clock = time.perf_counter
            while clock() < deadline:
                await channel.send(payload)
                count += 1

        channels = [
            await aiomas.channel.open_connection(("127.0.0.1", port), codec=_aiomas_codec(codec))
            for _ in range(n_conns)
        ]
        for warm in (True, False):
            deadline = time.perf_counter() + duration
            t0 = time.perf_counter()
            await asyncio.gather(
                *(worker(channel, warm) for channel in channels for _ in range(n_tasks))
            )
            result["elapsed"] = time.perf_counter() - t0
        for channel in channels:
            await channel.close()
        result["ops"] = count

    asyncio.run(main())
    return result


def _raw_asyncio_measure(
    port: int, codec_name: str, mode: str, payload: Any, duration: float
) -> dict[str, float]:
    import asyncio

    encode, decode = _bound_codec(codec_name)
    header = U32.pack
    n_conns, n_tasks = MODES[mode]
    piped = n_tasks > 1
    result: dict[str, float] = {}

    class Client(asyncio.Protocol):
        """Futures per request id; with several outstanding, one write per loop iteration."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop
            self.buf = bytearray()
            self.pending: dict[int, asyncio.Future[Any]] = {}
            self.next_id = 0
            self.queue: list[bytes] = []
            self.transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            buf = self.buf
            buf += data
            for f in take_frames(buf):
                _, msg_id, content = decode(f)
                self.pending.pop(msg_id).set_result(content)

        def connection_lost(self, exc: Exception | None) -> None:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("server closed the connection"))

        def flush(self) -> None:
            self.transport.write(b"".join(self.queue))
            self.queue.clear()

        def call(self) -> asyncio.Future[Any]:
            msg_id = self.next_id
            self.next_id += 1
            future = self.loop.create_future()
            self.pending[msg_id] = future
            body = encode([0, msg_id, payload])
            if piped:
                if not self.queue:
                    self.loop.call_soon(self.flush)
                self.queue += (header(len(body)), body)
            else:
                self.transport.write(header(len(body)) + body)
            return future

    async def main() -> None:
        loop = asyncio.get_running_loop()
        count = 0
        deadline = 0.0

        async def worker(conn: Client, warm: bool) -> None:
            nonlocal count
            if warm:
                for _ in range(WARMUP):
                    await conn.call()
                return
            clock = time.perf_counter
            while clock() < deadline:
                await conn.call()
                count += 1

        conns = []
        for _ in range(n_conns):
            _, proto = await loop.create_connection(lambda: Client(loop), "127.0.0.1", port)
            conns.append(proto)
        for warm in (True, False):
            deadline = time.perf_counter() + duration
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(conn, warm) for conn in conns for _ in range(n_tasks)))
            result["elapsed"] = time.perf_counter() - t0
        for conn in conns:
            conn.transport.close()
        result["ops"] = count

    asyncio.run(main())
    return result


MEASURE = {
    "trionet": _trionet_measure,
    "raw-trio": _raw_measure,
    "raw-asyncio": _raw_asyncio_measure,
    "aiomas": _aiomas_measure,
}


def client(impl: str) -> None:
    """Client process: one JSON command per stdin line, one JSON result per stdout line."""
    if impl != "trionet":
        forbid_trionet()
    for line in sys.stdin:
        cmd = json.loads(line)
        res = MEASURE[impl](
            cmd["port"], cmd["codec"], cmd["mode"], PAYLOADS[cmd["payload"]], cmd["duration"]
        )
        print(json.dumps(res), flush=True)


# -- orchestration ------------------------------------------------------------------------------


class Proc:
    def __init__(self, *args: str) -> None:
        self.args = args
        self.p = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self) -> str:
        assert self.p.stdout is not None
        out = self.p.stdout.readline()
        if not out:
            raise RuntimeError(f"benchmark subprocess {' '.join(self.args)} died")
        return out

    def ask(self, cmd: dict[str, Any]) -> dict[str, float]:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return json.loads(self.line())  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.p.stdin is not None:
            self.p.stdin.close()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        if self.p.stdout is not None:
            self.p.stdout.close()


def start_server(impl: str, codec: str) -> tuple[Proc, int]:
    proc = Proc("--role", "server", "--impl", impl, "--codec", codec)
    words = proc.line().split()
    assert words[0] == "PORT", words
    return proc, int(words[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _ping_frame(codec: str) -> bytes:
    encode = _bound_codec(codec)[0]
    body = encode([0, 0, "ping"])
    return U32.pack(len(body)) + body


def _read_reply(sock: socket.socket) -> None:
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            raise RuntimeError("server closed the connection")
        header += chunk
    (length,) = U32.unpack(header)
    got = 0
    while got < length:
        chunk = sock.recv(length - got)
        if not chunk:
            raise RuntimeError("server closed the connection")
        got += len(chunk)


def measure_memory(impl: str, n: int, codec: str = "json") -> float:
    """KiB of server RSS growth per idle connected channel (each answered one request)."""
    _raise_fd_limit()
    proc, port = start_server(impl, codec)
    socks: list[socket.socket] = []
    ping = _ping_frame(codec)
    try:
        def connect(count: int) -> None:
            # In batches: connect, send every ping, then read every reply (the server answers
            # a batch at once instead of one round trip at a time). 100 stays within asyncio's
            # default listen backlog.
            for start in range(0, count, 100):
                batch = [socket.create_connection(("127.0.0.1", port))
                         for _ in range(min(100, count - start))]
                socks.extend(batch)
                for sock in batch:
                    sock.sendall(ping)
                for sock in batch:
                    _read_reply(sock)

        connect(50)  # warm up: first-connection allocations are not per-connection cost
        time.sleep(0.2)
        before = rss_kib(proc.p.pid)
        connect(n)
        time.sleep(0.5)
        after = rss_kib(proc.p.pid)
        return (after - before) / n
    finally:
        for sock in socks:
            sock.close()
        proc.stop()


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"



def _json_row(name: str, unit: str, values: dict[str, list[float]],
              ratios: tuple[list[float], list[float], list[float]], *, goal: Any, met: bool,
              load: Any, limit: float | None = None) -> dict[str, Any]:
    """One row of the JSON line: every contender's values and trionet's ratio to each peer."""
    ratio_lists = dict(zip(("trionet/aiomas", "trionet/raw trio", "trionet/raw asyncio"),
                           ratios, strict=True))
    row: dict[str, Any] = {
        "row": name,
        "unit": unit,
        "baseline": "aiomas",
        "medians": {LABELS[i]: statistics.median(v) for i, v in values.items()},
        "min": {LABELS[i]: min(v) for i, v in values.items()},
        "max": {LABELS[i]: max(v) for i, v in values.items()},
        "values": {LABELS[i]: v for i, v in values.items()},
        "ratios": {k: statistics.median(v) for k, v in ratio_lists.items()},
        "ratio_min": {k: min(v) for k, v in ratio_lists.items()},
        "ratio_max": {k: max(v) for k, v in ratio_lists.items()},
        "ratio_values": ratio_lists,
        "goal": goal,
        "met": met,
        "load_1min": load,
    }
    if limit is not None:
        row["limit"] = limit
    return row

def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds, short measurements")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5, quick 2)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--payloads", default=",".join(PAYLOADS))
    parser.add_argument("--no-memory", action="store_true", help="skip the idle-connection test")
    parser.add_argument("--memory-connections", type=int, default=None)
    parser.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--codec", choices=CODECS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        serve(args.impl, args.codec)
        return
    if args.role == "client":
        client(args.impl)
        return

    rounds = args.rounds or (2 if args.quick else 5)
    duration = args.duration or (0.1 if args.quick else 2.0)
    codecs = args.codecs.split(",")
    modes = args.modes.split(",")
    payloads = args.payloads.split(",")
    mem_n = args.memory_connections or (1000 if args.quick else 10_000)

    servers: dict[tuple[str, str], tuple[Proc, int]] = {}
    clients: dict[str, Proc] = {}
    rows = [(c, m, p) for c in codecs for m in modes for p in payloads]
    results: dict[tuple[str, str, str], dict[str, list[float]]] = {r: {} for r in rows}
    row_loads: dict[Any, list[float]] = {}  # 1-minute load average as each row's round began
    memory: dict[str, list[float]] = {}
    round_loads: list[list[float]] = []
    try:
        for impl in IMPLS:
            clients[impl] = Proc("--role", "client", "--impl", impl)
            for codec in codecs:
                servers[impl, codec] = start_server(impl, codec)
        for r in range(rounds):
            load_before = os.getloadavg()
            # Rotate who goes first, so that no contender always runs warm or first.
            order = IMPLS[r % len(IMPLS) :] + IMPLS[: r % len(IMPLS)]
            for row in rows:
                codec, mode, payload = row
                row_loads.setdefault(row, []).append(os.getloadavg()[0])
                for impl in order:
                    cmd = {
                        "port": servers[impl, codec][1],
                        "codec": codec,
                        "mode": mode,
                        "payload": payload,
                        "duration": duration,
                    }
                    answer = clients[impl].ask(cmd)
                    results[row].setdefault(impl, []).append(answer["ops"] / answer["elapsed"])
            if not args.no_memory:
                row_loads.setdefault("memory", []).append(os.getloadavg()[0])
                t0 = time.monotonic()
                for impl in order:
                    memory.setdefault(impl, []).append(measure_memory(impl, mem_n))
                print(f"  idle memory, {mem_n} connections x {len(order)}: "
                      f"{time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
            load_after = os.getloadavg()
            round_loads.append([round(load_before[0], 2), round(load_after[0], 2)])
            print(f"  round {r + 1}/{rounds} done (load {load_before[0]:.2f} → "
                  f"{load_after[0]:.2f})", file=sys.stderr, flush=True)
    finally:
        for proc in clients.values():
            proc.stop()
        for proc, _ in servers.values():
            proc.stop()

    def spread(values: list[float], fmt: Callable[[float], str] = _fmt) -> str:
        return f"{fmt(statistics.median(values))} [{fmt(min(values))}–{fmt(max(values))}]"

    def ratio_cell(values: list[float]) -> str:
        return (f"{statistics.median(values):.2f}× "
                f"[{min(values):.2f}–{max(values):.2f}]")

    def per_round(mine: list[float], theirs: list[float], lower: bool = False) -> list[float]:
        pairs = zip(mine, theirs, strict=True)
        return [t / m for m, t in pairs] if lower else [m / t for m, t in pairs]

    loads_text = ", ".join(f"{b:.2f} → {a:.2f}" for b, a in round_loads)
    print(
        f"\n## channel ({rounds} rounds of {duration:g} s per measurement: req/s median "
        "[min–max] over rounds; ratios: median [min–max] of per-round ratios)"
    )
    print(f"1-minute load average before → after each round: {loads_text} (2 cores)\n")
    labels = [LABELS[i] for i in IMPLS]
    print(f"| row | {' | '.join(labels)} | trionet/aiomas | goal | trionet/raw trio | goal "
          "| trionet/raw asyncio | met | load 1 min [min–max] |")
    print("|---|" + "---|" * (len(IMPLS) + 7))
    out_rows = []
    all_met = True
    for row in rows:
        codec, mode, payload = row
        res = results[row]
        ra = per_round(res["trionet"], res["aiomas"])
        rr = per_round(res["trionet"], res["raw-trio"])
        rs = per_round(res["trionet"], res["raw-asyncio"])
        ratio_a, ratio_r = statistics.median(ra), statistics.median(rr)
        met = ratio_a >= GOALS[mode] and ratio_r >= RAW_GOAL
        all_met &= met
        name = f"{codec} {mode} {payload}"
        print(
            f"| {name} | {' | '.join(spread(res[i]) for i in IMPLS)} | {ratio_cell(ra)} "
            f"| ≥ {GOALS[mode]} | {ratio_cell(rr)} | ≥ {RAW_GOAL} | {ratio_cell(rs)} "
            f"| {'yes' if met else 'NO'} | {spread(row_loads[row], lambda v: f'{v:.2f}')} |"
        )
        out_rows.append(_json_row(
            name, "req/s", res, (ra, rr, rs),
            goal={"trionet/aiomas": GOALS[mode], "trionet/raw trio": RAW_GOAL}, met=met,
            load=row_loads[row],
        ))
    if memory:
        ma = per_round(memory["trionet"], memory["aiomas"], lower=True)
        mr = per_round(memory["trionet"], memory["raw-trio"], lower=True)
        ms = per_round(memory["trionet"], memory["raw-asyncio"], lower=True)
        trionet_kib = statistics.median(memory["trionet"])
        ok = trionet_kib <= MEMORY_GOAL_KIB
        all_met &= ok
        name = f"idle memory, KiB per connection ({mem_n})"
        print(
            f"| {name} | {' | '.join(spread(memory[i]) for i in IMPLS)} | {ratio_cell(ma)} "
            f"| trionet ≤ {MEMORY_GOAL_KIB:g} KiB | {ratio_cell(mr)} | | {ratio_cell(ms)} "
            f"| {'yes' if ok else 'NO'} | {spread(row_loads['memory'], lambda v: f'{v:.2f}')} |"
        )
        out_rows.append(_json_row(
            name, "KiB/conn", memory, (ma, mr, ms), goal=None, met=ok,
            load=row_loads["memory"], limit=MEMORY_GOAL_KIB,
        ))
    print()
    print("for the memory row, ratios are contender/trionet (> 1: trionet uses less)")
    print()
    print(
        json.dumps(
            {
                "bench": "channel",
                "rounds": rounds,
                "duration": duration,
                "load": round_loads,
                "rows": out_rows,
                "memory_kib_per_connection": {
                    LABELS[i]: statistics.median(v) for i, v in memory.items()
                },
                "all_met": all_met,
            }
        )
    )


if __name__ == "__main__":
    main()
