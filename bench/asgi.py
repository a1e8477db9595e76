"""ASGI on Hypercorn's trio worker: trionet vs a raw ASGI callable vs Starlette.

Three server processes run the same two endpoints on one Hypercorn trio worker each (same
``hypercorn.trio.serve`` call, access log off):

* ``raw``: a hand-written ASGI callable (the floor: no framework at all);
* ``starlette``: Starlette routes + one pure-ASGI middleware;
* ``trionet``: ``trionet.asgi`` Router + ``ASGIApplication`` + one middleware.

The middleware is the same tiny pure-ASGI class for both frameworks (it adds a response
header). Endpoints: ``GET /hello`` (a 13-byte text body) and ``POST /echo`` (parse a JSON body,
answer it re-encoded).

Load comes from ``wrk`` (one thread, 16 keep-alive connections, a fixed duration) in its own
process, so the server process's CPU is measured alone; without ``wrk`` a bounded Python load
generator (``--loadgen``, also a separate process) is used. Contenders are interleaved per
round. Rows: requests/s (ratio contender/raw, goal: trionet >= 0.95x); the same apps called
in-process without a server (what the framework alone costs per request); the server
process's CPU time per request (from ``/proc``); and p50/p99 latency. The microsecond rows
report ratio raw/contender, so > 1 still means faster.

Run: ``.venv/bin/python bench/asgi.py [--quick] [--rounds N]`` (``BENCH_ASGI_DURATION=S`` sets
the seconds per measurement, default 3; ``--quick`` uses 1).
Needs: ``wrk`` (``apt-get install wrk``, optional) and ``starlette`` (``pip install starlette``).
"""

from __future__ import annotations

import argparse
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
KINDS = ("raw", "starlette", "trionet")


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


def run_server(kind: str, port: int) -> None:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    app = {"raw": raw_app, "starlette": starlette_app, "trionet": trionet_app}[kind]()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    trio.run(serve, app, config)


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
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _harness import Contender, Row, main_args, run_rows

    parser_args = main_args(__doc__ or "")
    # wrk takes whole seconds.
    duration = 1 if parser_args.quick else int(os.environ.get("BENCH_ASGI_DURATION", "3"))
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
            for kind in KINDS:
                port = _free_port()
                servers[kind] = subprocess.Popen(
                    [sys.executable, __file__, "--serve", kind, str(port)]
                )
                _wait_port(port, servers[kind])
                urls[kind] = f"http://127.0.0.1:{port}"
            for kind in KINDS:  # warm up every server and check it answers correctly
                measure(urls[kind] + "/hello", "GET", 1, script)
                measure(urls[kind] + "/echo", "POST", 1, script)

            latencies: dict[tuple[str, str, str], list[float]] = {}

            def throughput(kind: str, path: str, method: str) -> Callable[[], float]:
                def run() -> float:
                    pid = servers[kind].pid
                    t0 = time.perf_counter()
                    cpu0 = _cpu_seconds(pid)
                    result = measure(urls[kind] + path, method, duration, script)
                    cpu = _cpu_seconds(pid) - cpu0
                    result["cpu"] = cpu * 1e6 / max(result["requests"], 1.0)
                    for pct in ("p50", "p99", "cpu"):
                        latencies.setdefault((kind, method, pct), []).append(result[pct])
                    # The harness divides by its own timing of this call; hand it the count
                    # that makes that ratio wrk's measured requests/s.
                    return result["rps"] * (time.perf_counter() - t0)

                return run

            def latency(kind: str, method: str, pct: str) -> Callable[[], float]:
                return lambda: latencies[(kind, method, pct)].pop(0)

            rows = [
                Row(
                    f"{method} {path} (req/s)",
                    [Contender(kind, throughput(kind, path, method)) for kind in KINDS],
                    goal=0.95,
                )
                for method, path in (("GET", "/hello"), ("POST", "/echo"))
            ]
            calls = 2_000 if parser_args.quick else 20_000
            rows += [
                Row(
                    f"{method} in-process app call, no server (calls/s)",
                    [Contender(kind, in_process(kind, method, calls)) for kind in KINDS],
                )
                for method in ("GET", "POST")
            ]
            rows += [
                Row(
                    f"{method} server CPU per request",
                    [Contender(kind, latency(kind, method, "cpu")) for kind in KINDS],
                    unit="us",
                )
                for method in ("GET", "POST")
            ]
            rows += [
                Row(
                    f"{method} latency {pct}",
                    [Contender(kind, latency(kind, method, pct)) for kind in KINDS],
                    unit="us",
                )
                for method in ("GET", "POST")
                for pct in ("p50", "p99")
            ]
            loadgen = "wrk -t1" if shutil.which("wrk") else "python loadgen"
            run_rows(
                "asgi",
                rows,
                rounds=parser_args.rounds,
                note=(
                    f"one Hypercorn trio worker per app; {loadgen}, {CONNECTIONS} connections, "
                    f"{duration:g} s per measurement; for the µs rows (server CPU time per "
                    "request, latency) the ratio is raw/contender, so > 1 means faster"
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
