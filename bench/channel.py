"""Request-reply channel throughput: trionet vs aiomas 2.0.1 vs a raw trio echo, in one run.

Every contender runs its own echo server in its own process and its client in another, so a
request crosses two processes as in production; servers and clients stay up for the whole run and
the contenders are interleaved round by round.

Contenders:

* ``aiomas``: ``aiomas.channel`` on asyncio, with its JSON codec or a MsgPack codec patched for
  msgpack >= 1.0 (``raw=False`` instead of the removed ``encoding=``). Server:
  ``while True: req = await ch.recv(); await req.reply(req.content)``.
* ``raw``: the same framing and codec as trionet written directly on ``trio.SocketStream``:
  ``LengthPrefixDecoder.feed`` and one ``send_all`` per received chunk on the server; on the
  client the requester reads its own reply (``seq``, ``conn20``), or a reader task wakes
  per-request events behind a coalescing writer (``pipe100``).
* ``trionet``: ``trionet.channel.start_server`` with ``await channel.serve(identity)`` (the
  channel's own answering loop), and ``open_connection`` + ``await channel.send(payload)``.
  ``TRIONET_BENCH_SERVER=loop`` makes the server a hand-written ``async for req in channel:
  await req.reply(req.content)`` loop instead.

Modes: ``seq`` (1 connection, 1 request outstanding), ``pipe100`` (1 connection, 100 tasks each
with 1 outstanding), ``conn20`` (20 connections, 1 outstanding each). Payloads: ``["ping", 42]``,
a 1 KiB string and a 64 KiB string, echoed back.

Goals (issue 3), per codec: trionet/aiomas >= 1.0 (seq), >= 2.0 (pipe100), >= 0.75 (conn20),
and trionet/raw >= 0.9 in every mode. Memory: 10,000 idle connected channels on one trionet
server cost <= 16 KiB each (RSS growth of the server process; aiomas measured alongside).

Run: ``.venv/bin/python bench/channel.py [--quick] [--rounds N] [--duration S] [--no-memory]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

IMPLS = ("aiomas", "raw", "trionet")
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


def serve(impl: str, codec: str) -> None:
    """Server process: print ``PORT n`` once listening, serve until stdin closes."""
    _raise_fd_limit()
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

    import trio

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if impl == "raw":
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


def _raw_echo_handler(codec_name: str) -> Callable[[Any], Any]:
    from trionet.codecs import get_codec
    from trionet.framing import LengthPrefixDecoder

    codec = get_codec(codec_name)
    header = struct.Struct(">I").pack

    async def handler(stream: Any) -> None:
        decoder = LengthPrefixDecoder()
        encode, decode = codec.encode, codec.decode
        while True:
            try:
                data = await stream.receive_some(65536)
            except Exception:
                return
            if not data:
                return
            out = []
            for frame in decoder.feed(data):
                _, msg_id, content = decode(frame)
                body = encode([1, msg_id, content])
                out.append(header(len(body)))
                out.append(body)
            if out:
                try:
                    await stream.send_all(b"".join(out))
                except Exception:
                    return

    return handler


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

    from trionet.codecs import get_codec
    from trionet.framing import LengthPrefixDecoder

    codec = get_codec(codec_name)
    header = struct.Struct(">I").pack
    n_conns, n_tasks = MODES[mode]
    result: dict[str, float] = {}

    def frame(msg_id: int) -> bytes:
        body = codec.encode([0, msg_id, payload])
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
            self.decoder = LengthPrefixDecoder()
            self.next_id = 0
            self.pending: dict[int, Slot] = {}
            self.queue: list[bytes] = []
            self.writing = False

        async def call_own(self) -> Any:
            msg_id = self.next_id
            self.next_id += 1
            await self.stream.send_all(frame(msg_id))
            while True:
                frames = self.decoder.feed(await self.stream.receive_some(65536))
                if frames:
                    return codec.decode(frames[0])[2]

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
                for f in self.decoder.feed(data):
                    _, msg_id, content = codec.decode(f)
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


MEASURE = {"trionet": _trionet_measure, "raw": _raw_measure, "aiomas": _aiomas_measure}


def client(impl: str) -> None:
    """Client process: one JSON command per stdin line, one JSON result per stdout line."""
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


def _ping(sock: socket.socket, codec: str, msg_id: int) -> None:
    import msgpack

    body = (
        json.dumps([0, msg_id, "ping"]).encode()
        if codec == "json"
        else msgpack.packb([0, msg_id, "ping"])
    )
    sock.sendall(struct.pack(">I", len(body)) + body)
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            raise RuntimeError("server closed the connection")
        header += chunk
    (length,) = struct.unpack(">I", header)
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
    try:
        def connect(count: int) -> None:
            for _ in range(count):
                s = socket.create_connection(("127.0.0.1", port))
                _ping(s, codec, 0)
                socks.append(s)

        connect(50)  # warm up: first-connection allocations are not per-connection cost
        time.sleep(0.2)
        before = rss_kib(proc.p.pid)
        connect(n)
        time.sleep(0.5)
        after = rss_kib(proc.p.pid)
        return (after - before) / n
    finally:
        for s in socks:
            s.close()
        proc.stop()


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


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
    duration = args.duration or (0.1 if args.quick else 0.4)
    codecs = args.codecs.split(",")
    modes = args.modes.split(",")
    payloads = args.payloads.split(",")
    load_before = os.getloadavg()

    servers: dict[tuple[str, str], tuple[Proc, int]] = {}
    clients: dict[str, Proc] = {}
    rows = [(c, m, p) for c in codecs for m in modes for p in payloads]
    results: dict[tuple[str, str, str], dict[str, list[float]]] = {r: {} for r in rows}
    try:
        for impl in IMPLS:
            clients[impl] = Proc("--role", "client", "--impl", impl)
            for codec in codecs:
                servers[impl, codec] = start_server(impl, codec)
        for r in range(rounds):
            for row in rows:
                codec, mode, payload = row
                # Rotate who goes first, so that no contender always runs warm or first.
                order = IMPLS[r % 3 :] + IMPLS[: r % 3]
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
            print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        for proc in clients.values():
            proc.stop()
        for proc, _ in servers.values():
            proc.stop()

    memory: dict[str, float] = {}
    if not args.no_memory:
        n = args.memory_connections or (1000 if args.quick else 10_000)
        for impl in ("trionet", "aiomas"):
            memory[impl] = measure_memory(impl, n)
    load_after = os.getloadavg()

    print(
        f"\n## channel ({rounds} rounds of {duration} s per measurement, medians of req/s; "
        "ratios are medians of per-round ratios, [min-max] across rounds)"
    )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores)\n")
    print("| row | aiomas | raw | trionet | trionet/aiomas | goal | trionet/raw | goal | met |")
    print("|---|---|---|---|---|---|---|---|---|")
    out_rows = []
    all_met = True
    for row in rows:
        codec, mode, payload = row
        res = results[row]
        med = {impl: statistics.median(v) for impl, v in res.items()}
        ra = [t / a for t, a in zip(res["trionet"], res["aiomas"], strict=True)]
        rr = [t / w for t, w in zip(res["trionet"], res["raw"], strict=True)]
        ratio_a, ratio_r = statistics.median(ra), statistics.median(rr)
        met = ratio_a >= GOALS[mode] and ratio_r >= RAW_GOAL
        all_met &= met
        name = f"{codec} {mode} {payload}"
        print(
            f"| {name} | {_fmt(med['aiomas'])} | {_fmt(med['raw'])} | {_fmt(med['trionet'])} "
            f"| {ratio_a:.2f}× [{min(ra):.2f}-{max(ra):.2f}] | ≥ {GOALS[mode]} "
            f"| {ratio_r:.2f}× [{min(rr):.2f}-{max(rr):.2f}] | ≥ {RAW_GOAL} "
            f"| {'yes' if met else 'NO'} |"
        )
        out_rows.append(
            {
                "row": name,
                "unit": "req/s",
                "medians": med,
                "ratios": {"trionet/aiomas": ratio_a, "trionet/raw": ratio_r},
                "ratio_ranges": {
                    "trionet/aiomas": [min(ra), max(ra)],
                    "trionet/raw": [min(rr), max(rr)],
                },
                "goal": {"trionet/aiomas": GOALS[mode], "trionet/raw": RAW_GOAL},
                "met": met,
            }
        )
    if memory:
        n = args.memory_connections or (1000 if args.quick else 10_000)
        ok = memory["trionet"] <= MEMORY_GOAL_KIB
        all_met &= ok
        print(
            f"\nidle connections: {n} per server; RSS growth per connection: "
            f"trionet {memory['trionet']:.1f} KiB, aiomas {memory['aiomas']:.1f} KiB "
            f"(goal trionet ≤ {MEMORY_GOAL_KIB:.0f} KiB: {'yes' if ok else 'NO'})"
        )
    print()
    print(
        json.dumps(
            {
                "bench": "channel",
                "rounds": rounds,
                "duration": duration,
                "load": [load_before[0], load_after[0]],
                "rows": out_rows,
                "memory_kib_per_connection": memory,
                "all_met": all_met,
            }
        )
    )


if __name__ == "__main__":
    main()
