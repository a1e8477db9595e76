"""ASGI: trionet (on its own trio worker and on Hypercorn's) vs what users run instead, and
two bounds.

One server process per contender, each serving the same two endpoints with one worker
(access log off): ``GET /hello`` (a 13-byte text body) and ``POST /echo`` (parse a JSON body,
answer it re-encoded). Contenders (``app@server``):

* ``starlette@uvicorn-std`` / ``starlette@uvicorn-h11``: Starlette routes + one pure-ASGI
  middleware on uvicorn, with ``uvicorn[standard]`` (uvloop + httptools) and with plain
  asyncio + h11. What most users run; the first is the baseline of the "all servers" rows.
* ``raw@uvicorn-std``, ``raw@uvicorn-h11``, ``raw@hypercorn-asyncio``, ``raw@hypercorn-trio``:
  a hand-written ASGI callable (no framework at all) on each server.
* ``raw@granian``: the same callable on granian (Rust HTTP, one worker, one runtime thread):
  how fast an ASGI app can be served from Python at all.
* ``starlette@hypercorn-trio``: Starlette on the same server as trionet.
* ``trio+h11 bound``: the leanest trio server we could write: ``trio.serve_tcp``, one h11
  connection per stream, the reply written inline (no ASGI, no date/server headers): what a
  trio-native HTTP/1.1 stack could reach here.
* ``trionet@hypercorn-trio``: ``trionet.asgi`` Router + ``ASGIApplication`` + the middleware,
  on Hypercorn's own trio worker (``hypercorn.trio.serve``).
* ``trionet@trionet-worker-hc11``: the same app on trionet's worker with HTTP/1.1 handled by
  Hypercorn's ``H11Protocol`` (``TRIONET_ASGI_HTTP1=hypercorn``; the worker's path before its
  own h11 one), to compare the two paths in the same run.
* ``trionet@trionet-worker``: the same app served by ``trionet.asgi.serve()`` as users run it:
  trionet's trio worker (its own h11 path for HTTP/1.1), with serve()'s request limits.

No baseline process imports trionet (an import hook in each makes it an error). The
middleware is the same tiny pure-ASGI class for both frameworks (it adds a response header).

Load comes from ``wrk`` (one thread, 16 keep-alive connections, a fixed duration, same
settings for every contender) in its own process; without ``wrk`` a bounded Python load
generator (``--loadgen``, also a separate process) is used. Contenders are interleaved per
round (the order reverses every other round).

Rows, per method: requests/s of every server (ratio contender/``starlette@uvicorn-std``, no
goal: this is where trionet stands against what users run); the same measurements seen as
"framework cost on Hypercorn-trio" (ratio over ``raw@hypercorn-trio``, goal: trionet >= 0.95x)
and against the trio+h11 bound; trionet's worker against Hypercorn's trio worker (goal: >= 2x
the requests/s and <= 0.5x the CPU per request, i.e. a CPU ratio >= 2) and against Starlette on
uvicorn h11 (stretch goal >= 1x); the apps called in-process without a server (what the
framework alone costs per request); each server's CPU time per request, from
``/proc/<pid>/stat`` utime+stime deltas of the server process and its children; and p50/p99
latency. The µs rows report ratio baseline/contender, so > 1 still means better.

Run: ``.venv/bin/python bench/asgi.py [--quick] [--rounds N]`` (``BENCH_ASGI_DURATION=S`` sets
the seconds per measurement, default 3; ``--quick`` uses 1; ``BENCH_ASGI_ONLY=name,name`` runs
only those servers, and only the rows whose contenders are all among them).
Needs: ``wrk`` (``apt-get install wrk``, optional) and the ``bench`` extra (starlette,
``uvicorn[standard]``, granian).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HELLO = b"Hello, world!"
ECHO_BODY = json.dumps({"name": "widget", "tags": ["a", "b", "c"], "count": 3, "ok": True})
CONNECTIONS = 16
KINDS = ("raw", "starlette", "trionet")  # the apps, called in-process
# The servers, as "app@server"; the first is the baseline of the "all servers" rows, the last
# is trionet (the harness judges a row's goal on its last contender).
SERVERS = (
    "starlette@uvicorn-std",
    "starlette@uvicorn-h11",
    "raw@uvicorn-std",
    "raw@uvicorn-h11",
    "raw@granian",
    "raw@hypercorn-asyncio",
    "raw@hypercorn-trio",
    "starlette@hypercorn-trio",
    "trio+h11 bound",
    "trionet@hypercorn-trio",
    "trionet@trionet-worker-hc11",
    "trionet@trionet-worker",
)
FRAMEWORK_ROW = ("raw@hypercorn-trio", "starlette@hypercorn-trio", "trionet@hypercorn-trio")
BOUND_ROW = ("trio+h11 bound", "trionet@trionet-worker")
# trionet.asgi.serve() on its default worker against the same app on Hypercorn's trio worker
# (issue 20's goal: >= 2x the requests, <= 0.5x the CPU per request), and against Starlette on
# uvicorn with h11 (the stretch goal: >= 1x).
WORKER_ROW = ("trionet@hypercorn-trio", "trionet@trionet-worker")
STRETCH_ROW = ("starlette@uvicorn-h11", "trionet@trionet-worker")
# trionet's worker with its own HTTP/1.1 path against the same worker around Hypercorn's
# H11Protocol (what it ran before).
PATH_ROW = ("trionet@trionet-worker-hc11", "trionet@trionet-worker")


# -- the three applications (built inside the server process) --------------------------------


class HeaderMiddleware:
    """The one middleware both frameworks get: adds ``x-served-by`` to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-served-by", b"bench")]
            await send(message)

        await self.app(scope, receive, send_with_header)


def raw_app() -> Any:
    hello_headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/hello" and scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": hello_headers})
            await send({"type": "http.response.body", "body": HELLO})
            return
        if path == "/echo" and scope["method"] == "POST":
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            out = json.dumps(json.loads(body), separators=(",", ":")).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": out})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request as SRequest
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route as SRoute

    async def hello(request: SRequest) -> PlainTextResponse:
        return PlainTextResponse("Hello, world!")

    async def echo(request: SRequest) -> JSONResponse:
        return JSONResponse(await request.json())

    return Starlette(
        routes=[SRoute("/hello", hello), SRoute("/echo", echo, methods=["POST"])],
        middleware=[Middleware(HeaderMiddleware)],
    )


def trionet_app() -> Any:
    from trionet.asgi import ASGIApplication, Request, Response, Router

    router = Router()

    @router.route("/hello")
    async def hello(request: Request) -> Response:
        return Response.text("Hello, world!")

    @router.route("/echo", methods=["POST"])
    async def echo(request: Request) -> Response:
        return Response.json(await request.json())

    app = ASGIApplication(router)
    app.add_middleware(HeaderMiddleware)
    return app


def _forbid_trionet() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _bounds import forbid_trionet

    forbid_trionet()


def granian_app() -> Any:
    """The factory granian's worker process calls (``--factory asgi:granian_app``)."""
    _forbid_trionet()
    return raw_app()


def run_trio_h11_bound(port: int) -> None:
    """The leanest trio + h11 HTTP/1.1 server: one h11 connection per stream, reply inline."""
    import h11
    import trio

    hello_headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")]

    def reply(conn: h11.Connection, request: h11.Request, body: bytes) -> bytes:
        if request.target == b"/hello" and request.method == b"GET":
            headers, out, status = hello_headers, HELLO, 200
        elif request.target == b"/echo" and request.method == b"POST":
            out = json.dumps(json.loads(body), separators=(",", ":")).encode()
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(out)).encode())]
            status = 200
        else:
            headers, out, status = [(b"content-length", b"0")], b"", 404
        return b"".join((
            conn.send(h11.Response(status_code=status, headers=headers)) or b"",
            conn.send(h11.Data(data=out)) or b"",
            conn.send(h11.EndOfMessage()) or b"",
        ))

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    request = event
                    body.clear()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    await stream.send_all(reply(conn, request, bytes(body)))
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
                else:  # ConnectionClosed, PAUSED
                    return
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    trio.run(functools.partial(trio.serve_tcp, handle, port, host="127.0.0.1"))


def run_server(name: str, port: int) -> None:
    if name == "trio+h11 bound":
        _forbid_trionet()
        run_trio_h11_bound(port)
        return
    kind, server = name.split("@")
    if kind != "trionet":
        _forbid_trionet()
    app = {"raw": raw_app, "starlette": starlette_app, "trionet": trionet_app}[kind]()
    if server.startswith("uvicorn-"):
        import uvicorn

        standard = server == "uvicorn-std"
        uconfig = uvicorn.Config(
            app, host="127.0.0.1", port=port, loop="uvloop" if standard else "asyncio",
            http="httptools" if standard else "h11", ws="none", lifespan="on",
            access_log=False, log_level="warning",
        )
        uvicorn.Server(uconfig).run()
        return
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    if server == "trionet-worker-hc11":  # trionet's worker, HTTP/1.1 by Hypercorn's protocol
        os.environ["TRIONET_ASGI_HTTP1"] = "hypercorn"
        server = "trionet-worker"
    if server == "trionet-worker":  # what trionet.asgi.serve() runs by default
        from functools import partial

        import trio

        from trionet.asgi import serve

        trio.run(partial(serve, app, None, config=config, worker="trionet"))
    elif server == "hypercorn-trio":
        import trio
        from hypercorn.trio import serve as trio_serve

        trio.run(trio_serve, app, config)
    elif server == "hypercorn-asyncio":
        import asyncio

        from hypercorn.asyncio import serve as asyncio_serve

        asyncio.run(asyncio_serve(app, config))
    else:
        raise ValueError(name)


def server_command(name: str, port: int) -> list[str]:
    if name == "raw@granian":
        granian = Path(sys.executable).with_name("granian")
        return [str(granian), "--interface", "asgi", "--workers", "1", "--runtime-threads", "1",
                "--no-ws", "--no-log", "--no-access-log", "--host", "127.0.0.1",
                "--port", str(port), "--working-dir", str(Path(__file__).parent), "--factory",
                "asgi:granian_app"]
    return [sys.executable, __file__, "--serve", name, str(port)]


# -- a bounded Python load generator (used when wrk is not installed) -------------------------


def python_loadgen(url: str, method: str, duration: float, connections: int) -> dict[str, float]:
    """Keep-alive HTTP/1.1 clients in one process: returns requests/s and p50/p99 in µs."""
    import trio

    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    body = ECHO_BODY.encode() if method == "POST" else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host_port}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    request = head.encode() + b"\r\n" + body
    latencies: list[float] = []

    async def client(deadline: float) -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        buffer = b""
        async with stream:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await stream.send_all(request)
                while True:
                    end = buffer.find(b"\r\n\r\n")
                    if end >= 0:
                        match = re.search(rb"content-length: *(\d+)", buffer[:end].lower())
                        need = end + 4 + (int(match.group(1)) if match else 0)
                        if len(buffer) >= need:
                            buffer = buffer[need:]
                            break
                    buffer += await stream.receive_some(65536)
                latencies.append(time.perf_counter() - t0)

    async def main() -> float:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(client, start + duration)
        return time.perf_counter() - start

    elapsed = trio.run(main)
    latencies.sort()
    n = len(latencies)
    return {
        "rps": n / elapsed,
        "requests": float(n),
        "p50": latencies[n // 2] * 1e6,
        "p99": latencies[min(n - 1, int(n * 0.99))] * 1e6,
    }


# -- driving the load ------------------------------------------------------------------------

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _wrk_latency(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"cannot find the {percentile}% latency in wrk's output:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def measure(url: str, method: str, duration: int, script: Path | None) -> dict[str, float]:
    """Load ``url`` for ``duration`` seconds from another process; rps and p50/p99 (µs)."""
    if shutil.which("wrk"):
        command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", url]
        if method == "POST":
            assert script is not None
            command[1:1] = ["-s", str(script)]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        if not match or not total or "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk reported errors:\n{out}")
        return {
            "rps": float(match.group(1)),
            "requests": float(total.group(1)),
            "p50": _wrk_latency(out, "50"),
            "p99": _wrk_latency(out, "99"),
        }
    command = [sys.executable, __file__, "--loadgen", url, method, str(duration)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    result: dict[str, float] = json.loads(out)
    return result


def in_process(kind: str, method: str, calls: int) -> Callable[[], float]:
    """Call the application directly (no server, no sockets) ``calls`` times: isolates what
    the framework itself costs per request."""
    import trio

    app = {"raw": raw_app, "starlette": starlette_app, "trionet": trionet_app}[kind]()
    body = ECHO_BODY.encode() if method == "POST" else b""
    path = "/echo" if method == "POST" else "/hello"
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    request = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        pass

    async def loop() -> None:
        for _ in range(calls):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.1"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": headers,
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8000),
                "state": {},
                "extensions": {},
            }
            await app(scope, receive, send)

    def run() -> float:
        trio.run(loop)
        return calls

    return run


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of process ``pid`` and its live descendants (granian
    serves from a worker process), from Linux ``/proc/<pid>/stat`` utime + stime."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu ticks)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(stats[p][1] for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, process: subprocess.Popen[bytes], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start within {limit} s")


class Replay:
    """A contender that hands the harness values measured by another row, in round order."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.index = 0

    def __call__(self) -> float:
        value = self.values[self.index]
        self.index += 1
        return value


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _harness import Contender, Row, main_args, run_rows

    parser_args = main_args(__doc__ or "")
    # wrk takes whole seconds.
    duration = 1 if parser_args.quick else int(os.environ.get("BENCH_ASGI_DURATION", "3"))
    only = {n for n in os.environ.get("BENCH_ASGI_ONLY", "").split(",") if n}
    names = tuple(n for n in SERVERS if not only or n in only)

    def wanted(row: tuple[str, ...]) -> bool:
        return all(n in names for n in row)

    servers: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(ECHO_BODY)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        try:
            for name in names:
                port = _free_port()
                servers[name] = subprocess.Popen(server_command(name, port))
                _wait_port(port, servers[name])
                urls[name] = f"http://127.0.0.1:{port}"
            for name in names:  # warm up every server and check it answers correctly
                measure(urls[name] + "/hello", "GET", 1, script)
                measure(urls[name] + "/echo", "POST", 1, script)

            # (server, method, metric) -> per-round values, in round order
            measured: dict[tuple[str, str, str], list[float]] = {}

            def throughput(name: str, path: str, method: str) -> Callable[[], float]:
                def run() -> float:
                    pid = servers[name].pid
                    cpu0 = _cpu_seconds(pid)
                    result = measure(urls[name] + path, method, duration, script)
                    cpu = _cpu_seconds(pid) - cpu0
                    result["cpu"] = cpu * 1e6 / max(result["requests"], 1.0)
                    for metric in ("rps", "p50", "p99", "cpu"):
                        measured.setdefault((name, method, metric), []).append(result[metric])
                    return result["rps"]

                return run

            def replay(names: tuple[str, ...], method: str, metric: str) -> list[Contender]:
                return [Contender(n, Replay(measured.setdefault((n, method, metric), [])))
                        for n in names]

            rows = []
            measuring: dict[str, Row] = {}
            for method, path in (("GET", "/hello"), ("POST", "/echo")):
                measuring[method] = Row(
                    f"{method} {path}: all servers (req/s)",
                    [Contender(name, throughput(name, path, method)) for name in names],
                    unit="req/s", higher_is_better=True,
                )
                rows.append(measuring[method])
                rows.append(Row(
                    f"{method} {path}: framework cost on Hypercorn-trio (req/s)",
                    replay(FRAMEWORK_ROW, method, "rps"),
                    goal=0.95, unit="req/s", higher_is_better=True, replays=measuring[method],
                ))
                rows.append(Row(
                    f"{method} {path}: against the trio+h11 bound (req/s)",
                    replay(BOUND_ROW, method, "rps"), unit="req/s", higher_is_better=True,
                    replays=measuring[method],
                ))
                rows.append(Row(
                    f"{method} {path}: trionet's worker vs Hypercorn's trio worker (req/s)",
                    replay(WORKER_ROW, method, "rps"), goal=2.0, unit="req/s",
                    higher_is_better=True, replays=measuring[method],
                ))
                rows.append(Row(
                    f"{method} {path}: trionet's worker vs Hypercorn's trio worker (CPU/request)",
                    replay(WORKER_ROW, method, "cpu"), goal=2.0, unit="us",
                    replays=measuring[method],
                ))
                rows.append(Row(
                    f"{method} {path}: trionet vs Starlette on uvicorn h11 (req/s, stretch)",
                    replay(STRETCH_ROW, method, "rps"), goal=1.0, unit="req/s",
                    higher_is_better=True, replays=measuring[method],
                ))
                rows.append(Row(
                    f"{method} {path}: the worker's h11 path vs Hypercorn's H11Protocol in it "
                    "(CPU/request)",
                    replay(PATH_ROW, method, "cpu"), unit="us", replays=measuring[method],
                ))
            rows = [row for row in rows if wanted(tuple(c.name for c in row.contenders))]
            calls = 2_000 if parser_args.quick else 20_000
            rows += [
                Row(
                    f"{method} in-process app call, no server (calls/s)",
                    [Contender(kind, in_process(kind, method, calls)) for kind in KINDS],
                )
                for method in ("GET", "POST")
            ]
            rows += [
                Row(f"{method} server CPU per request", replay(names, method, "cpu"), unit="us",
                    replays=measuring[method])
                for method in ("GET", "POST")
            ]
            rows += [
                Row(f"{method} latency {pct}", replay(names, method, pct), unit="us",
                    replays=measuring[method])
                for method in ("GET", "POST")
                for pct in ("p50", "p99")
            ]
            loadgen = "wrk -t1" if shutil.which("wrk") else "python loadgen"
            run_rows(
                "asgi",
                rows,
                rounds=parser_args.rounds,
                note=(
                    f"one worker per server, each in its own process; {loadgen}, "
                    f"{CONNECTIONS} connections, {duration:g} s per measurement; the "
                    "framework-cost, bound, CPU and latency rows re-read the req/s rows' "
                    "measurements (same rounds); for the µs rows (server CPU time per request, "
                    "latency) the ratio is baseline/contender, so > 1 means better"
                ),
            )
        finally:
            for process in servers.values():
                process.send_signal(signal.SIGTERM)
            for process in servers.values():
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        run_server(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "--loadgen":
        load = argparse.ArgumentParser()
        load.add_argument("flag")
        load.add_argument("url")
        load.add_argument("method")
        load.add_argument("duration", type=float)
        ns = load.parse_args()
        print(json.dumps(python_loadgen(ns.url, ns.method, ns.duration, CONNECTIONS)))
    else:
        main()
