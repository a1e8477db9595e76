"""Middleware: order, the seed's example, and the built-ins."""

from __future__ import annotations

import gzip
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from trionet.asgi import (
    ASGIApplication,
    ASGIMiddleware,
    CORSMiddleware,
    GZipMiddleware,
    Headers,
    LoggingMiddleware,
    Message,
    Receive,
    Request,
    RequestIdMiddleware,
    Response,
    Router,
    Scope,
    Send,
    TestClient,
    TimeoutMiddleware,
    TrustedHostMiddleware,
    current_request_id,
)

logger = logging.getLogger("tests.asgi.seed")


# The seed's middleware example, verbatim apart from the imports above.
class SeedLoggingMiddleware(ASGIMiddleware):
    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        start_time = time.time()
        await self.app(scope, receive, send)
        duration = time.time() - start_time
        logger.info(f"Request processed in {duration:.2f}s")


def make_app() -> ASGIApplication:
    router = Router()

    @router.route("/hello")
    async def hello(request: Request) -> Response:
        state_id = request.state.request_id if "request_id" in request.state else None
        return Response.json({"request_id": current_request_id(), "state_id": state_id})

    @router.route("/big")
    async def big(request: Request) -> Response:
        return Response.text("x" * 2000)

    @router.route("/small")
    async def small(request: Request) -> Response:
        return Response.text("tiny")

    async def lines() -> AsyncIterator[str]:
        for i in range(3):
            yield f"line {i}\n" * 100

    @router.route("/stream")
    async def stream(request: Request) -> Response:
        return Response.stream(lines(), media_type="text/plain")

    @router.route("/sleep")
    async def sleep(request: Request) -> Response:
        await trio.sleep(10)
        return Response.text("too late")  # pragma: no cover

    @router.route("/items", methods=["GET", "POST"])
    async def items(request: Request) -> Response:
        return Response.json([1, 2])

    return ASGIApplication(router)


async def test_seed_middleware_example_is_applied(caplog: pytest.LogCaptureFixture) -> None:
    # mtaio stored middleware in add_middleware but never ran it.
    app = make_app()
    app.add_middleware(SeedLoggingMiddleware)
    with caplog.at_level(logging.INFO, logger="tests.asgi.seed"):
        assert (await TestClient(app).get("/hello")).status_code == 200
    # One line, as the seed's example logs it (its duration depends on the machine's load).
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and re.fullmatch(r"Request processed in \d+\.\d\ds", messages[0])


async def test_middleware_order_last_added_is_outermost() -> None:
    events: list[str] = []

    def recorder(tag: str) -> type[ASGIMiddleware]:
        class Recorder(ASGIMiddleware):
            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                events.append(f"{tag} in")

                async def tagged_send(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        events.append(f"{tag} sees response")
                    await send(message)

                await self.app(scope, receive, tagged_send)
                events.append(f"{tag} out")

        return Recorder

    app = make_app()
    app.add_middleware(recorder("first"))
    app.add_middleware(recorder("second"))
    await TestClient(app).get("/hello")
    assert events == [
        "second in",
        "first in",
        "first sees response",
        "second sees response",
        "first out",
        "second out",
    ]
    # The constructor list means the same as add_middleware calls in that order.
    events.clear()
    app = ASGIApplication(make_app().router, middleware=[recorder("a"), (recorder("b"), {})])
    await TestClient(app).get("/hello")
    assert events[:2] == ["b in", "a in"]


async def test_error_responses_pass_through_middleware() -> None:
    app = make_app()
    app.add_middleware(RequestIdMiddleware)
    response = await TestClient(app).get("/missing")
    assert response.status_code == 404
    assert "x-request-id" in response.headers


async def test_failing_middleware_gives_500(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(ASGIMiddleware):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            raise RuntimeError("middleware bug")

    app = make_app()
    app.add_middleware(Broken)
    with caplog.at_level(logging.CRITICAL, logger="trionet.asgi"):
        response = await TestClient(app, raise_app_exceptions=False).get("/hello")
    assert (response.status_code, response.json()) == (500, {"error": "Internal Server Error"})


async def test_logging_middleware(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    app.add_middleware(LoggingMiddleware, server_timing=True)
    with caplog.at_level(logging.INFO, logger="trionet.asgi.access"):
        response = await TestClient(app).get("/hello")
    assert response.headers["server-timing"].startswith("app;dur=")
    (record,) = caplog.records
    assert record.getMessage().startswith("GET /hello 200 ")


async def test_request_id_middleware() -> None:
    app = make_app()
    app.add_middleware(RequestIdMiddleware)
    client = TestClient(app)
    response = await client.get("/hello")
    generated = response.headers["x-request-id"]
    assert len(generated) == 32
    assert response.json() == {"request_id": generated, "state_id": generated}
    response = await client.get("/hello", headers={"X-Request-ID": "upstream-123"})
    assert response.headers["x-request-id"] == "upstream-123"
    response = await client.get("/hello", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert current_request_id() is None

    untrusting = make_app()
    untrusting.add_middleware(RequestIdMiddleware, trust_incoming=False, generator=lambda: "fixed")
    response = await TestClient(untrusting).get("/hello", headers={"X-Request-ID": "upstream"})
    assert response.headers["x-request-id"] == "fixed"


async def test_cors_preflight_and_simple_requests() -> None:
    app = make_app()
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["https://good.example"],
        allow_methods=["GET", "POST"],
        allow_headers=["X-Token"],
        allow_credentials=True,
        expose_headers=["X-Total"],
    )
    client = TestClient(app)
    response = await client.options(
        "/items",
        headers={
            "Origin": "https://good.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-token, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://good.example"
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "x-token" in response.headers["access-control-allow-headers"]
    assert response.headers["access-control-max-age"] == "600"

    response = await client.options(
        "/items",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"},
    )
    assert (response.status_code, response.text) == (400, "Disallowed CORS origin, method")

    response = await client.get("/items", headers={"Origin": "https://good.example"})
    assert response.headers["access-control-allow-origin"] == "https://good.example"
    assert response.headers["access-control-expose-headers"] == "X-Total"
    assert response.headers["vary"] == "Origin"
    response = await client.get("/items", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Origin"
    response = await client.get("/items")
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Origin"


async def test_cors_wildcard_and_regex() -> None:
    app = make_app()
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_headers=["*"])
    client = TestClient(app)
    response = await client.get("/items", headers={"Origin": "https://any.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    regex_app = make_app()
    regex_app.add_middleware(CORSMiddleware, allow_origin_regex=r"https://.*\.good\.example")
    client = TestClient(regex_app)
    ok = await client.get("/items", headers={"Origin": "https://a.good.example"})
    assert ok.headers["access-control-allow-origin"] == "https://a.good.example"
    bad = await client.get("/items", headers={"Origin": "https://good.example.evil"})
    assert "access-control-allow-origin" not in bad.headers


def vary_tokens(headers: Headers) -> list[str]:
    """Every token of every ``Vary`` header, lower-cased, in order."""
    values = headers.getlist("vary")
    return [t.strip().lower() for value in values for t in value.split(",") if t.strip()]


async def test_cors_vary_origin_on_every_response_that_depends_on_it() -> None:
    # Fetch standard, "CORS protocol and HTTP caches": when Access-Control-Allow-Origin depends
    # on the Origin, every response says Vary: Origin, also those without the header, so a
    # shared cache does not hand the answer for one origin (or for none) to another.
    app = make_app()

    @app.router.route("/varied")
    async def varied(request: Request) -> Response:
        return Response.text("v", headers={"Vary": "Accept-Language"})

    app.add_middleware(CORSMiddleware, allow_origins=["https://good.example"])
    client = TestClient(app)
    for headers in ({}, {"Origin": "https://good.example"}, {"Origin": "https://evil.example"}):
        response = await client.get("/items", headers=headers)
        assert vary_tokens(response.headers) == ["origin"], headers
        merged = await client.get("/varied", headers=headers)
        assert vary_tokens(merged.headers) == ["accept-language", "origin"], headers
        assert len(merged.headers.getlist("vary")) == 1
    for origin in ("https://good.example", "https://evil.example"):
        preflight = await client.options(
            "/items", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        assert vary_tokens(preflight.headers) == ["origin"], origin

    # "*" with credentials echoes the origin: it depends on it too.
    creds = make_app()
    creds.add_middleware(CORSMiddleware, allow_origins=["*"], allow_credentials=True)
    response = await TestClient(creds).get("/items")
    assert vary_tokens(response.headers) == ["origin"]

    # A plain "*": the same answer for everyone, with or without Origin, and no Vary.
    star = make_app()
    star.add_middleware(CORSMiddleware, allow_origins=["*"], expose_headers=["X-Total"])
    client = TestClient(star)
    for headers in ({}, {"Origin": "https://any.example"}):
        response = await client.get("/items", headers=headers)
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-expose-headers"] == "X-Total"
        assert "vary" not in response.headers


async def test_gzip_middleware() -> None:
    app = make_app()
    app.add_middleware(GZipMiddleware, minimum_size=500)
    client = TestClient(app)
    gz = {"Accept-Encoding": "br, gzip;q=0.8"}
    response = await client.get("/big", headers=gz)
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert int(response.headers["content-length"]) == len(response.content) < 2000
    assert gzip.decompress(response.content) == b"x" * 2000

    small = await client.get("/small", headers=gz)
    assert "content-encoding" not in small.headers
    assert small.content == b"tiny"

    plain = await client.get("/big", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in plain.headers

    async with client.stream("GET", "/stream", headers=gz) as streamed:
        assert streamed.headers["content-encoding"] == "gzip"
        assert "content-length" not in streamed.headers
        decompressor = zlib.decompressobj(31)
        pieces = [decompressor.decompress(chunk) async for chunk in streamed.aiter_bytes()]
    # Each chunk is flushed, so it decompresses on arrival.
    assert pieces[0] == b"line 0\n" * 100
    assert b"".join(pieces) == b"".join(f"line {i}\n".encode() * 100 for i in range(3))


async def test_gzip_head_gets_the_get_headers(tmp_path: Path) -> None:
    app = make_app()
    (tmp_path / "page.txt").write_bytes(b"p" * 3000)
    (tmp_path / "tiny.txt").write_bytes(b"t" * 10)

    @app.router.route("/file/{name}")
    async def file(request: Request, name: str) -> Response:
        return Response.file(tmp_path / name)

    app.add_middleware(GZipMiddleware, minimum_size=500)
    client = TestClient(app)
    gz = {"Accept-Encoding": "gzip"}
    for path in ("/big", "/small"):
        get = await client.get(path, headers=gz)
        head = await client.head(path, headers=gz)
        assert head.content == b""
        # Identical headers, the compressed Content-Length included.
        assert head.headers.multi_items() == get.headers.multi_items(), path
    assert (await client.head("/big", headers=gz)).headers["content-length"] == str(
        len((await client.get("/big", headers=gz)).content)
    )
    # No body to compress: the compressed size is unknown, so no Content-Length.
    for path in ("/stream", "/file/page.txt"):
        head = await client.head(path, headers=gz)
        assert head.headers["content-encoding"] == "gzip", path
        assert head.headers["vary"] == "Accept-Encoding", path
        assert "content-length" not in head.headers, path
        get = await client.get(path, headers=gz)
        assert get.headers["content-encoding"] == "gzip", path
    tiny = await client.head("/file/tiny.txt", headers=gz)
    assert "content-encoding" not in tiny.headers
    assert tiny.headers["content-length"] == "10"
    plain = await client.head("/big")
    assert "content-encoding" not in plain.headers
    assert plain.headers["content-length"] == "2000"


async def test_trusted_host_middleware() -> None:
    app = make_app()
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["example.com", "*.example.org"])
    ok = TestClient(app, base_url="http://example.com:8000")
    assert (await ok.get("/hello")).status_code == 200
    subdomain = TestClient(app, base_url="http://api.example.org")
    assert (await subdomain.get("/hello")).status_code == 200
    bad = await TestClient(app, base_url="http://example.org").get("/hello")
    assert (bad.status_code, bad.text) == (400, "Invalid host header")
    assert (await TestClient(app, base_url="http://evil.com").get("/hello")).status_code == 400
    with pytest.raises(ValueError, match="wildcard"):
        TrustedHostMiddleware(app, allowed_hosts=["api.*.com"])
    middleware = TrustedHostMiddleware(app, allowed_hosts=["::1", "[::1]"])
    assert middleware.host_allowed("[::1]:8000")


async def test_timeout_middleware_answers_504(autojump_clock: trio.abc.Clock) -> None:
    app = make_app()
    app.add_middleware(TimeoutMiddleware, timeout=1.0)
    client = TestClient(app)
    response = await client.get("/sleep")
    assert (response.status_code, response.json()) == (504, {"error": "request timed out"})
    assert (await client.get("/hello")).status_code == 200
    with pytest.raises(ValueError, match="positive"):
        TimeoutMiddleware(app, timeout=0)
