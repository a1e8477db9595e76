"""Everything end to end through a real Hypercorn trio server on loopback (httpx, raw sockets,
subprocesses for the command lines)."""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from asgi_support import raw_http, running_server

from trionet.asgi import (
    ASGIApp,
    ASGIApplication,
    ASGIMiddleware,
    BoundAddress,
    CORSMiddleware,
    GZipMiddleware,
    LoggingMiddleware,
    Message,
    Receive,
    Request,
    RequestIdMiddleware,
    Response,
    Router,
    Scope,
    Send,
    connect_websocket,
    serve,
)
from trionet.errors import ASGIError

HERE = Path(__file__).parent
SAMPLE_APP = "asgi_sample_app:app"


class Signals:
    def __init__(self) -> None:
        self.release = trio.Event()
        self.entered = trio.Event()
        self.events: list[str] = []


def make_app(signals: Signals) -> ASGIApplication:
    router = Router()

    @router.route("/items/{item_id:int}")
    async def item(request: Request, item_id: int) -> Response:
        return Response.json({"item_id": item_id})

    @router.route("/items", methods=["POST"])
    async def create(request: Request) -> Response:
        return Response.json(await request.json(), status_code=201)

    @router.route("/upload", methods=["POST"])
    async def upload(request: Request) -> Response:
        form = await request.form()
        doc = form["doc"]
        assert not isinstance(doc, str)
        return Response.json({"title": form["title"], "doc": doc.filename, "size": doc.size})

    @router.route("/count", methods=["POST"])
    async def count(request: Request) -> Response:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return Response.json(total)

    async def live() -> AsyncIterator[bytes]:
        yield b"first\n"
        await signals.release.wait()
        yield b"second\n"

    @router.route("/live")
    async def live_stream(request: Request) -> Response:
        return Response.stream(live(), media_type="text/plain")

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick\n"
                await trio.sleep(0.005)
        finally:
            signals.events.append("endless closed")
            signals.entered.set()

    @router.route("/endless")
    async def endless_stream(request: Request) -> Response:
        return Response.stream(endless())

    async def crash_midway() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("stream broke")

    @router.route("/crash-midway")
    async def crash(request: Request) -> Response:
        return Response.stream(crash_midway())

    @router.route("/crash")
    async def crash_early(request: Request) -> Response:
        raise RuntimeError("handler broke")

    @router.route("/slow")
    async def slow(request: Request) -> Response:
        signals.entered.set()
        try:
            await signals.release.wait()
        except trio.Cancelled:
            signals.events.append("slow cancelled")
            raise
        return Response.text("finished")

    app = ASGIApplication(router, max_body_size=50_000)
    app.add_middleware(LoggingMiddleware)
    return app


async def test_routing_404_405_head_over_http() -> None:
    async with running_server(make_app(Signals())) as address, httpx.AsyncClient(
        base_url=address.url
    ) as client:
        get = await client.get("/items/12")
        assert (get.status_code, get.json()) == (200, {"item_id": 12})
        assert get.headers["content-length"] == str(len(get.content))
        assert (await client.get("/items/twelve")).status_code == 404
        response = await client.delete("/items/12")
        assert (response.status_code, response.headers["allow"]) == (405, "GET, HEAD")
        head = await client.head("/items/12")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == get.headers["content-length"]


async def test_bodies_over_http() -> None:
    async with running_server(make_app(Signals())) as address, httpx.AsyncClient(
        base_url=address.url
    ) as client:
        response = await client.post("/items", json={"name": "widget"})
        assert (response.status_code, response.json()) == (201, {"name": "widget"})
        response = await client.post("/items", content=b'{"name": ')
        assert response.status_code == 400
        assert response.json()["error"].startswith("invalid JSON body")
        response = await client.post("/items", content=b"x" * 50_001)
        assert response.status_code == 413

        async def chunked(parts: int) -> AsyncIterator[bytes]:
            for _ in range(parts):
                yield b"y" * 20_000

        # No Content-Length: the limit is enforced while the chunks arrive.
        response = await client.post("/count", content=chunked(2))
        assert response.json() == 40_000
        response = await client.post("/count", content=chunked(3))
        assert response.status_code == 413

        response = await client.post(
            "/upload",
            data={"title": "quarterly"},
            files={"doc": ("q3.pdf", b"%PDF" + b"0" * 1000, "application/pdf")},
        )
        assert response.json() == {"title": "quarterly", "doc": "q3.pdf", "size": 1004}


async def test_streaming_response_arrives_progressively() -> None:
    signals = Signals()
    async with running_server(make_app(signals)) as address, httpx.AsyncClient(
        base_url=address.url
    ) as client, client.stream("GET", "/live") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        chunks = response.aiter_bytes()
        # The first chunk arrives while the generator is still waiting.
        assert await chunks.__anext__() == b"first\n"
        signals.release.set()
        rest = b"".join([chunk async for chunk in chunks])
        assert rest == b"second\n"


async def test_client_disconnect_stops_a_streaming_response() -> None:
    signals = Signals()
    async with running_server(make_app(signals)) as address:
        stream = await trio.open_tcp_stream(address.host, address.port)
        await stream.send_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"tick") < 3:
            data += await stream.receive_some(4096)
        await stream.aclose()
        await signals.entered.wait()
    assert signals.events == ["endless closed"]


async def test_errors_before_and_after_response_start(caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(make_app(Signals())) as address, httpx.AsyncClient(
        base_url=address.url
    ) as client:
        response = await client.get("/crash")
        assert (response.status_code, response.json()) == (500, {"error": "Internal Server Error"})
        # After the status line went out, the connection is aborted: no second start, no
        # well-formed end of body.
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/crash-midway")
        raw = await raw_http(address, b"GET /crash-midway HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.count(b"HTTP/1.1") == 1
        assert raw.startswith(b"HTTP/1.1 200")
        assert not raw.endswith(b"0\r\n\r\n")  # the chunked body never terminates
        # The server carries on.
        assert (await client.get("/items/1")).status_code == 200
    assert any("stream broke" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_middleware_through_hypercorn() -> None:
    order: list[str] = []

    class Tag(ASGIMiddleware):
        def __init__(self, app: ASGIApp, *, name: str) -> None:
            super().__init__(app)
            self.name = name

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            order.append(self.name)
            await self.app(scope, receive, send)

    app = make_app(Signals())
    app.add_middleware(Tag, name="inner")
    app.add_middleware(GZipMiddleware, minimum_size=10)
    app.add_middleware(CORSMiddleware, allow_origins=["https://site.example"])
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(Tag, name="outer")
    async with running_server(app) as address, httpx.AsyncClient(base_url=address.url) as client:
        response = await client.get(
            "/items/5", headers={"Origin": "https://site.example", "Accept-Encoding": "gzip"}
        )
        assert response.json() == {"item_id": 5}  # httpx decompressed it
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["access-control-allow-origin"] == "https://site.example"
        assert len(response.headers["x-request-id"]) == 32
        missing = await client.get("/nope", headers={"Origin": "https://site.example"})
        assert missing.status_code == 404
        assert missing.headers["access-control-allow-origin"] == "https://site.example"
    assert order == ["outer", "inner", "outer", "inner"]


async def test_gzip_head_gets_the_get_headers_through_hypercorn() -> None:
    app = make_app(Signals())

    @app.router.route("/page")
    async def page(request: Request) -> Response:
        return Response.text("trionet " * 664)  # 5312 bytes, compresses to about 60

    app.add_middleware(GZipMiddleware)
    async with running_server(app) as address, httpx.AsyncClient(base_url=address.url) as client:
        gz = {"Accept-Encoding": "gzip"}
        get = await client.get("/page", headers=gz)
        head = await client.head("/page", headers=gz)
        names = ("content-type", "content-encoding", "vary", "content-length")
        assert [get.headers.get(n) for n in names] == [head.headers.get(n) for n in names]
        assert get.headers["content-encoding"] == "gzip"
        assert int(head.headers["content-length"]) < 200
        assert head.content == b""
        plain = await client.head("/page", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.headers["content-length"] == "5312"

async def test_cors_caching_headers_through_hypercorn() -> None:
    listed = make_app(Signals())
    listed.add_middleware(CORSMiddleware, allow_origins=["https://site.example"])
    star = make_app(Signals())
    star.add_middleware(CORSMiddleware, allow_origins=["*"])
    async with running_server(listed) as address, httpx.AsyncClient(
        base_url=address.url
    ) as client:
        # The answer depends on Origin, so a response to a request without one (or with a
        # refused one) must not be reusable for an allowed origin by a shared cache.
        for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "https://site.example"}):
            response = await client.get("/items/1", headers=headers)
            assert response.headers.get_list("vary") == ["Origin"], headers
    async with running_server(star) as address, httpx.AsyncClient(base_url=address.url) as client:
        for headers in ({}, {"Origin": "https://any.example"}):
            response = await client.get("/items/1", headers=headers)
            assert response.headers["access-control-allow-origin"] == "*", headers
            assert "vary" not in response.headers


async def test_a_bad_client_does_not_hurt_the_server() -> None:
    async with running_server(make_app(Signals())) as address:
        garbage = await raw_http(address, b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")
        async with httpx.AsyncClient(base_url=address.url) as client:
            assert (await client.get("/items/3")).json() == {"item_id": 3}


async def test_lifespan_and_background_tasks_under_hypercorn() -> None:
    events: list[str] = []
    app = ASGIApplication()

    async def heartbeat(started: trio.Event) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            events.append("heartbeat cancelled")

    @app.on_startup
    async def startup() -> None:
        events.append("startup")
        app.state.ready = trio.Event()
        app.start_background_task(heartbeat, app.state.ready)

    @app.on_shutdown
    async def shutdown() -> None:
        events.append("shutdown")

    @app.route("/ready")
    async def ready(request: Request) -> Response:
        await app.state.ready.wait()
        return Response.text("ready")

    async with running_server(app) as address, httpx.AsyncClient(base_url=address.url) as client:
        assert (await client.get("/ready")).text == "ready"
        assert events == ["startup"]
    assert events == ["startup", "heartbeat cancelled", "shutdown"]


async def test_graceful_shutdown_lets_in_flight_requests_finish() -> None:
    signals = Signals()
    results: list[tuple[int, str]] = []
    async with trio.open_nursery() as outer:
        server_scope = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[BoundAddress]) -> None:
            with server_scope:
                await serve(make_app(signals), "127.0.0.1:0", task_status=task_status)

        address: BoundAddress = await outer.start(run_server)

        async def client_request() -> None:
            async with httpx.AsyncClient(base_url=address.url) as client:
                response = await client.get("/slow")
                results.append((response.status_code, response.text))

        outer.start_soon(client_request)
        await signals.entered.wait()
        server_scope.cancel()  # shutdown begins while /slow is in flight
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(OSError, match="all attempts to connect"):  # no longer accepting
            await trio.open_tcp_stream(address.host, address.port)
        signals.release.set()
    assert results == [(200, "finished")]
    assert signals.events == []


async def test_graceful_shutdown_has_a_deadline() -> None:
    signals = Signals()
    async with trio.open_nursery() as nursery:
        address: BoundAddress = await nursery.start(
            _serve_with_graceful_timeout, make_app(signals), 0.2
        )

        async def stuck_client() -> None:
            async with httpx.AsyncClient(base_url=address.url) as client:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/slow")

        nursery.start_soon(stuck_client)
        await signals.entered.wait()
        nursery.cancel_scope.cancel()
    # The handler never got its release: the deadline cancelled it.
    assert signals.events == ["slow cancelled"]


async def _serve_with_graceful_timeout(
    app: ASGIApplication, grace: float, *, task_status: trio.TaskStatus[BoundAddress]
) -> None:
    await serve(app, "127.0.0.1:0", graceful_timeout=grace, task_status=task_status)


async def test_startup_failure_raises_asgi_error() -> None:
    app = ASGIApplication()

    @app.on_startup
    async def fail() -> None:
        raise ConnectionRefusedError("broker down")

    with pytest.raises(ASGIError, match=r"lifespan failed.*broker down"):
        await serve(app, "127.0.0.1:0")


# Hypercorn 0.18's Config._create_sockets does not close a socket whose bind() fails; collect
# it here so the ResourceWarning it triggers stays in this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_bind_failure_is_an_os_error() -> None:
    async with running_server(ASGIApplication()) as address:
        with pytest.raises(OSError, match=r"[Aa]ddress already in use"):
            await serve(ASGIApplication(), f"127.0.0.1:{address.port}")
    gc.collect()


async def test_serve_any_asgi_callable_and_websocket() -> None:
    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            message: Message = await receive()
            await send({"type": "websocket.send", "text": message["text"].upper()})
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"raw"})

    async with running_server(raw_app) as address:
        assert address.url == f"http://127.0.0.1:{address.port}"
        assert str(address) == address.url
        assert address.ws_url == f"ws://127.0.0.1:{address.port}"
        async with httpx.AsyncClient() as client:
            assert (await client.get(address.url)).text == "raw"
        async with connect_websocket(address.ws_url + "/") as ws:
            await ws.send("shout")
            assert await ws.receive() == "SHOUT"


# -- command lines ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    return env


async def _wait_for_line(stream: trio.abc.ReceiveStream, pattern: str) -> tuple[re.Match[str], str]:
    buffer = ""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise AssertionError(f"process ended before printing {pattern!r}:\n{buffer}")
        buffer += chunk.decode()
        found = re.search(pattern, buffer)
        if found:
            return found, buffer


async def _exercise_served_sample_app(command: list[str], ready: str) -> str:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            run = functools.partial(
                trio.run_process,
                command,
                stderr=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                check=False,
                env=_env(),
            )
            process: trio.Process = await nursery.start(run)
            assert process.stderr is not None
            found, output = await _wait_for_line(process.stderr, ready)
            url = found.group(1)
            async with httpx.AsyncClient() as client:
                response = await client.get(url + "/hello/cli")
                assert response.json() == {"hello": "cli"}
            async with connect_websocket(url.replace("http", "ws", 1) + "/echo") as ws:
                await ws.send("over the cli")
                assert await ws.receive() == "over the cli"
            process.send_signal(signal.SIGINT)
            async for chunk in process.stderr:
                output += chunk.decode()
        return output


async def test_hypercorn_command_line_serves_the_same_app() -> None:
    output = await _exercise_served_sample_app(
        [sys.executable, "-m", "hypercorn", "-k", "trio", "-b", "127.0.0.1:0", SAMPLE_APP],
        r"Running on (http://127\.0\.0\.1:\d+)",
    )
    assert "sample app: startup" in output
    assert "sample app: shutdown" in output


async def test_trionet_serve_cli() -> None:
    command = [
        sys.executable,
        "-c",
        "import sys; from trionet.asgi._serve import serve_cli; "
        "sys.exit(serve_cli('asgi_sample_app:app', '127.0.0.1:0'))",
    ]
    output = await _exercise_served_sample_app(command, r"on (http://127\.0\.0\.1:\d+) \(Ctrl")
    assert "SIGINT received, shutting down" in output
    assert "sample app: shutdown" in output


def test_serve_cli_reports_a_bad_app_reference(capsys: pytest.CaptureFixture[str]) -> None:
    from trionet.asgi._serve import load_app, serve_cli

    assert serve_cli("no_such_module_xyz:app") == 2
    assert "cannot import 'no_such_module_xyz'" in capsys.readouterr().err
    assert serve_cli("json:nothing_here") == 2
    assert "has no attribute 'nothing_here'" in capsys.readouterr().err
    with pytest.raises(ASGIError, match="not an ASGI application"):
        load_app("json:__doc__")
    loaded: object = load_app("json:loads")
    assert loaded is json.loads
