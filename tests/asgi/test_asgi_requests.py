"""The request side through the in-process client: metadata, body limits, JSON, forms, streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from trionet.asgi import (
    ASGIApplication,
    ClientDisconnect,
    Message,
    Receive,
    Request,
    Response,
    Router,
    Scope,
    Send,
    TestClient,
    UploadFile,
)
from trionet.errors import ASGIError


def make_app(max_body_size: int | None = 1000) -> ASGIApplication:
    router = Router()

    @router.route("/echo", methods=["POST"])
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @router.route("/json", methods=["POST"])
    async def json_echo(request: Request) -> Response:
        return Response.json({"got": await request.json()})

    @router.route("/form", methods=["POST"])
    async def form(request: Request) -> Response:
        data = await request.form()
        out: dict[str, Any] = {}
        for key, value in data.multi_items():
            if isinstance(value, UploadFile):
                out.setdefault(key, []).append([value.filename, value.content_type, value.text()])
            else:
                out.setdefault(key, []).append(value)
        return Response.json(out)

    @router.route("/stream", methods=["POST"])
    async def stream(request: Request) -> Response:
        sizes = [len(chunk) async for chunk in request.stream()]
        return Response.json({"chunks": len(sizes), "total": sum(sizes)})

    @router.route("/big", methods=["POST"], max_body_size=10_000)
    async def big(request: Request) -> Response:
        return Response.json(len(await request.body()))

    @router.route("/meta/{name}")
    async def meta(request: Request, name: str) -> Response:
        return Response.json(
            {
                "method": request.method,
                "path": request.path,
                "query_string": request.query_string.decode(),
                "query": request.query_params.getlist("q"),
                "path_params": request.path_params,
                "tags": request.headers.getlist("x-tag"),
                "agent": request.headers["User-Agent"],
                "client": list(request.client) if request.client else None,
                "url": str(request.url),
                "cookies": request.cookies,
            }
        )

    return ASGIApplication(router, max_body_size=max_body_size)


async def test_request_metadata() -> None:
    client = TestClient(make_app(), cookies={"session": "abc"})
    response = await client.get(
        "/meta/x%20y?q=1&q=2",
        headers={"X-Tag": "only-last-wins-in-a-dict"},
        cookies={"theme": "dark"},
    )
    assert response.json() == {
        "method": "GET",
        "path": "/meta/x y",
        "query_string": "q=1&q=2",
        "query": ["1", "2"],
        "path_params": {"name": "x y"},
        "tags": ["only-last-wins-in-a-dict"],
        "agent": "trionet-testclient",
        "client": ["127.0.0.1", 50000],
        "url": "http://testserver/meta/x%20y?q=1&q=2",
        "cookies": {"session": "abc", "theme": "dark"},
    }


async def test_json_nested_too_deeply_is_400() -> None:
    client = TestClient(make_app(max_body_size=None))
    for depth in (5_000, 100_000):
        response = await client.post("/json", content=b"[" * depth + b"]" * depth)
        assert response.status_code == 400
        assert "nested deeper" in response.text and "max_depth" in response.text
    assert (await client.post("/json", content=b"[[1]]")).json() == {"got": [[1]]}


async def test_body_within_limit_and_chunked() -> None:
    client = TestClient(make_app())
    assert (await client.post("/echo", content=b"x" * 1000)).content == b"x" * 1000
    # The test client sends bodies over 64 KiB in several http.request events.
    response = await client.post("/big", content=b"y" * 9000)
    assert response.json() == 9000


async def test_body_over_limit_is_413_before_reading() -> None:
    reads: list[int] = []

    router = Router()

    @router.route("/upload", methods=["POST"])
    async def upload(request: Request) -> Response:
        await request.body()
        return Response.text("unreachable")

    app = ASGIApplication(router, max_body_size=100)

    async def counting_app(scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_receive() -> Message:
            message = await receive()
            reads.append(len(message.get("body", b"")))
            return message

        await app(scope, counting_receive, send)

    client = TestClient(counting_app)
    response = await client.post("/upload", content=b"z" * 101)
    assert response.status_code == 413
    assert response.json() == {"error": "request body of 101 bytes exceeds the limit of 100 bytes"}
    assert reads == []  # refused from Content-Length alone


async def test_body_over_limit_without_content_length_is_413() -> None:
    # A chunked body has no Content-Length: the limit applies as the body arrives.
    client = TestClient(make_app(max_body_size=70_000))
    response = await client.post("/echo", content=b"a" * 200_000, headers={"content-length": ""})
    assert response.status_code == 400  # an empty Content-Length is malformed
    router = Router()

    @router.route("/s", methods=["POST"])
    async def s(request: Request) -> Response:
        return Response.json(len(await request.body()))

    app = ASGIApplication(router, max_body_size=70_000)

    async def no_length(scope: Any, receive: Any, send: Any) -> None:
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        await app(scope, receive, send)

    response = await TestClient(no_length).post("/s", content=b"a" * 200_000)
    assert response.status_code == 413
    assert response.json() == {"error": "request body exceeds the limit of 70000 bytes"}


async def test_unlimited_body() -> None:
    client = TestClient(make_app(max_body_size=None))
    assert len((await client.post("/echo", content=b"q" * 300_000)).content) == 300_000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid JSON body: Expecting property name"),
        (b"", "invalid JSON body: the body is empty"),
        (b"\xff\xfe", "invalid JSON body"),
        (b"[" * 100_000, "invalid JSON body"),
    ],
)
async def test_bad_json_is_400_with_a_clear_message(body: bytes, message: str) -> None:
    client = TestClient(make_app(max_body_size=None))
    response = await client.post("/json", content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


async def test_good_json() -> None:
    client = TestClient(make_app())
    response = await client.post("/json", json={"a": [1, 2, "é"]})
    assert response.json() == {"got": {"a": [1, 2, "é"]}}


async def test_urlencoded_form_utf8_and_repeats() -> None:
    client = TestClient(make_app())
    response = await client.post("/form", data={"name": "Zoë", "tag": ["a", "b"], "empty": ""})
    assert response.json() == {"name": ["Zoë"], "tag": ["a", "b"], "empty": [""]}


async def test_multipart_form_with_files() -> None:
    client = TestClient(make_app())
    response = await client.post(
        "/form",
        data={"title": "report"},
        files={"doc": ("r.txt", b"hello\r\nworld", "text/plain"), "raw": b"bytes"},
    )
    assert response.json() == {
        "title": ["report"],
        "doc": [["r.txt", "text/plain", "hello\r\nworld"]],
        "raw": [["raw", "application/octet-stream", "bytes"]],
    }


async def test_bad_forms() -> None:
    client = TestClient(make_app())
    urlencoded = {"content-type": "application/x-www-form-urlencoded"}
    response = await client.post("/form", content=b"a=%ff", headers=urlencoded)
    assert response.status_code == 400
    assert "invalid form body" in response.json()["error"]
    multipart = {"content-type": "multipart/form-data"}
    response = await client.post("/form", content=b"x", headers=multipart)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed multipart body: no boundary parameter"
    as_json = {"content-type": "application/json"}
    response = await client.post("/form", content=b"{}", headers=as_json)
    assert response.status_code == 415
    response = await client.post(
        "/form",
        content=b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nv",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400
    assert "not terminated" in response.json()["error"]
    too_many = "&".join(f"f{i}=1" for i in range(1001))
    response = await client.post("/form", content=too_many, headers=urlencoded)
    assert response.status_code == 413  # 1001 fields is over the 1000-byte body limit
    response = await TestClient(make_app(max_body_size=None)).post(
        "/form", content=too_many, headers=urlencoded
    )
    assert response.status_code == 400
    assert "Max number of fields" in response.json()["error"]


async def test_stream_yields_chunks_without_buffering() -> None:
    client = TestClient(make_app(max_body_size=None))
    response = await client.post("/stream", content=b"s" * (3 * 65536 + 5))
    assert response.json() == {"chunks": 4, "total": 3 * 65536 + 5}
    response = await client.post("/stream", content=b"")
    assert response.json() == {"chunks": 0, "total": 0}


async def test_body_is_cached_and_stream_after_body_replays_it() -> None:
    router = Router()

    @router.route("/twice", methods=["POST"])
    async def twice(request: Request) -> Response:
        first = await request.body()
        again = await request.body()
        replay = b"".join([chunk async for chunk in request.stream()])
        return Response.json([len(first), first == again, replay == first])

    @router.route("/consumed", methods=["POST"])
    async def consumed(request: Request) -> Response:
        async for _ in request.stream():
            pass
        try:
            async for _ in request.stream():
                pass
        except ASGIError as exc:
            return Response.text(str(exc))
        return Response.text("no error")

    client = TestClient(router)
    assert (await client.post("/twice", content=b"abc")).json() == [3, True, True]
    assert (await client.post("/consumed", content=b"abc")).text == (
        "the request body has already been consumed"
    )


async def test_client_disconnect_while_reading_body() -> None:
    seen: list[str] = []
    router = Router()

    @router.route("/slow", methods=["POST"])
    async def slow(request: Request) -> Response:
        try:
            await request.body()
        except ClientDisconnect:
            seen.append("disconnect")
            raise
        return Response.text("unreachable")

    app = ASGIApplication(router)
    sent: list[Message] = []
    messages: Iterator[Message] = iter(
        [
            {"type": "http.request", "body": b"part", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/slow",
        "headers": [],
        "query_string": b"",
    }
    await app(scope, receive, send)
    assert seen == ["disconnect"]
    assert sent == []  # nobody to answer


async def test_invalid_content_length_is_400() -> None:
    client = TestClient(make_app())
    response = await client.post("/echo", content=b"abc", headers={"content-length": "-5"})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid Content-Length header '-5'"}


def test_request_needs_an_http_scope() -> None:
    with pytest.raises(ASGIError, match="http scope"):
        Request({"type": "websocket"})
