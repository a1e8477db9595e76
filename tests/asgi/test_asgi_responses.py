"""Responses: the seed's factories, headers, cookies, redirect, streaming and files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from trionet.asgi import (
    FileResponse,
    Message,
    Request,
    Response,
    Router,
    StreamingResponse,
    TestClient,
)


async def collect(response: Response, method: str = "GET") -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    await response({"type": "http", "method": method}, receive, send)
    return sent


async def test_seed_factories_and_await_response_send() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await Response.json({"message": "Welcome to mtaio"})(send)
    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"30"), (b"content-type", b"application/json")],
        },
        {"type": "http.response.body", "body": b'{"message":"Welcome to mtaio"}'},
    ]
    text = Response.text("Not Found", status_code=404, headers={"X-A": "1"})
    assert (text.status_code, text.body) == (404, b"Not Found")
    assert text.raw_headers == [
        (b"x-a", b"1"),
        (b"content-length", b"9"),
        (b"content-type", b"text/plain; charset=utf-8"),
    ]
    html = Response.html("<h1>é</h1>")
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert html.headers["content-length"] == str(len("<h1>é</h1>".encode()))


def test_explicit_headers_win_and_status_is_checked() -> None:
    response = Response(b"{}", headers={"Content-Type": "application/vnd.x+json"}, media_type="a/b")
    assert response.headers.getlist("content-type") == ["application/vnd.x+json"]
    assert Response.json([1], headers=[("x-b", "2")]).headers["x-b"] == "2"
    assert "content-length" not in Response(None, 304).headers
    with pytest.raises(ValueError, match="100-599"):
        Response(b"", 99)
    with pytest.raises(ValueError, match="JSON response"):
        Response.json({}, 204)
    with pytest.raises(ValueError, match=r"NaN|Out of range"):
        Response.json(float("nan"))
    with pytest.raises(TypeError):
        Response.json(object())


async def test_call_as_asgi_app_hands_over_the_body_for_head() -> None:
    # The server does not transmit it; middleware such as GZipMiddleware needs it to give HEAD
    # the headers GET gets.
    sent = await collect(Response.text("hello"), method="HEAD")
    assert sent[1] == {"type": "http.response.body", "body": b"hello"}
    assert (b"content-length", b"5") in sent[0]["headers"]
    with pytest.raises(TypeError):
        await Response.text("x")()  # type: ignore[call-overload]


def test_redirect_and_cookies() -> None:
    response = Response.redirect("/over there?x=1")
    assert response.status_code == 307
    assert response.headers["location"] == "/over%20there?x=1"
    with pytest.raises(ValueError, match="3xx"):
        Response.redirect("/", 200)
    response = Response.text("ok")
    response.set_cookie("session", "a b", max_age=60, httponly=True, secure=True)
    response.set_cookie(
        "pref", "x", expires=datetime(2030, 1, 1, tzinfo=UTC), samesite="strict", path=None
    )
    response.delete_cookie("old")
    cookies = response.headers.getlist("set-cookie")
    assert cookies[0] == 'session="a b"; HttpOnly; Max-Age=60; Path=/; SameSite=lax; Secure'
    assert cookies[1] == "pref=x; expires=Tue, 01 Jan 2030 00:00:00 GMT; SameSite=strict"
    assert cookies[2].startswith('old=""; expires=')
    assert "Max-Age=0" in cookies[2]


async def test_cookies_round_trip_through_the_test_client() -> None:
    router = Router()

    @router.route("/login")
    async def login(request: Request) -> Response:
        response = Response.text("in")
        response.set_cookie("session", "s1")
        return response

    @router.route("/whoami")
    async def whoami(request: Request) -> Response:
        return Response.json(request.cookies)

    @router.route("/logout")
    async def logout(request: Request) -> Response:
        response = Response.text("out")
        response.delete_cookie("session")
        return response

    client = TestClient(router)
    await client.get("/login")
    assert (await client.get("/whoami")).json() == {"session": "s1"}
    await client.get("/logout")
    assert (await client.get("/whoami")).json() == {}


async def test_streaming_response_from_async_and_sync_iterators() -> None:
    async def numbers() -> AsyncIterator[str]:
        for i in range(3):
            yield f"{i}\n"
            await trio.lowlevel.checkpoint()

    sent = await collect(Response.stream(numbers(), media_type="text/plain"))
    assert sent[0]["status"] == 200
    assert (b"content-type", b"text/plain; charset=utf-8") in sent[0]["headers"]
    assert not any(name == b"content-length" for name, _ in sent[0]["headers"])
    assert [m.get("body") for m in sent[1:]] == [b"0\n", b"1\n", b"2\n", b""]
    assert [m.get("more_body", False) for m in sent[1:]] == [True, True, True, False]
    sent = await collect(StreamingResponse([b"a", "b", b""]))
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"ab"
    sent = await collect(StreamingResponse(iter([])))
    assert sent[1:] == [{"type": "http.response.body", "body": b""}]


async def test_streaming_head_does_not_run_the_iterator() -> None:
    started: list[bool] = []

    async def body() -> AsyncIterator[bytes]:
        started.append(True)
        yield b"x"

    sent = await collect(Response.stream(body()), method="HEAD")
    assert started == []
    assert sent[1] == {"type": "http.response.body", "body": b""}


async def test_streaming_stops_and_closes_the_generator_on_disconnect() -> None:
    events: list[str] = []

    async def forever() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick"
                await trio.sleep(0.01)
        finally:
            events.append("closed")

    router = Router()

    @router.route("/ticks")
    async def ticks(request: Request) -> Response:
        return Response.stream(forever())

    client = TestClient(router)
    async with client.stream("GET", "/ticks") as response:
        assert response.status_code == 200
        received = 0
        async for chunk in response.aiter_bytes():
            assert chunk == b"tick"
            received += 1
            if received == 3:
                break
    assert events == ["closed"]


async def test_error_before_first_chunk_is_a_normal_500() -> None:
    fail = True

    async def broken() -> AsyncIterator[bytes]:
        if fail:
            raise ValueError("boom")
        yield b""  # pragma: no cover

    router = Router()

    @router.route("/broken")
    async def handler(request: Request) -> Response:
        return Response.stream(broken())

    from trionet.asgi import ASGIApplication

    client = TestClient(ASGIApplication(router), raise_app_exceptions=False)
    response = await client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal Server Error"}


async def test_file_response(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    data = b"a,b\n" * 50_000
    path.write_bytes(data)
    sent = await collect(FileResponse(path, filename="report.csv"))
    headers = dict(sent[0]["headers"])
    assert headers[b"content-length"] == str(len(data)).encode()
    assert headers[b"content-type"] == b"text/csv; charset=utf-8"
    assert headers[b"content-disposition"] == b'attachment; filename="report.csv"'
    assert b"last-modified" in headers
    assert b"".join(m["body"] for m in sent[1:]) == data
    assert sent[-1]["more_body"] is False
    assert len(sent) == 2 + len(data) // (64 * 1024)
    sent = await collect(Response.file(path), method="HEAD")
    assert sent[1]["body"] == b""
    naive = FileResponse(path, filename="naïve résumé.csv")
    assert naive.headers["content-disposition"] == (
        "attachment; filename*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.csv"
    )


async def test_file_response_missing_file_is_404(tmp_path: Path) -> None:
    router = Router()

    @router.route("/f/{name}")
    async def serve_file(request: Request, name: str) -> Response:
        return Response.file(tmp_path / name)

    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "data.json").write_bytes(b"{}")
    client = TestClient(router)
    assert (await client.get("/f/missing.txt")).status_code == 404
    empty = await client.get("/f/empty.bin")
    assert (empty.status_code, empty.content, empty.headers["content-length"]) == (200, b"", "0")
    assert (await client.get("/f/data.json")).headers["content-type"] == "application/json"
