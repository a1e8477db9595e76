"""StaticFiles: safe paths, conditional requests, ranges, HEAD, html mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asgi_support import raw_http, running_server

from trionet.asgi import ASGIApplication, Router, StaticFiles, TestClient
from trionet.asgi._static import parse_ranges
from trionet.errors import ASGIError

CONTENT = bytes(range(256)) * 40  # 10 240 bytes


@pytest.fixture
def site(tmp_path: Path) -> Path:
    public = tmp_path / "public"
    (public / "docs").mkdir(parents=True)
    (public / "data.bin").write_bytes(CONTENT)
    (public / "hello.txt").write_text("hello\n")
    (public / "docs" / "index.html").write_text("<h1>docs</h1>")
    (public / "404.html").write_text("<h1>lost</h1>")
    (public / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (public / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (public / "inside.txt").symlink_to(public / "hello.txt")
    os.mkfifo(public / "pipe")
    return public


def app_for(directory: Path, **kwargs: object) -> ASGIApplication:
    router = Router()
    router.mount("/static", StaticFiles(directory=directory, **kwargs))  # type: ignore[arg-type]
    return ASGIApplication(router)


async def test_files_headers_head_and_safe_defaults(site: Path) -> None:
    async with TestClient(app_for(site)) as client:
        response = await client.get("/static/hello.txt")
        assert (response.status_code, response.text) == (200, "hello\n")
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["accept-ranges"] == "bytes"
        assert response.headers["content-length"] == "6"
        assert response.headers["etag"].startswith('"')
        assert "last-modified" in response.headers
        head = await client.head("/static/data.bin")
        assert (head.status_code, head.text) == (200, "")
        assert head.headers["content-length"] == str(len(CONTENT))
        assert (await client.get("/static/data.bin")).content == CONTENT
        # A symlink inside the directory is fine; one that leads out is not.
        assert (await client.get("/static/inside.txt")).text == "hello\n"
        assert (await client.get("/static/escape.txt")).status_code == 404
        for path in ("/static/.env", "/static/pipe", "/static/docs", "/static/nothing",
                     "/static/docs/"):
            assert (await client.get(path)).status_code == 404, path
        post = await client.post("/static/hello.txt")
        assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


async def test_opt_ins_html_mode_and_symlinks(site: Path) -> None:
    app = app_for(site, html=True, follow_symlinks=True, allow_dotfiles=True)
    async with TestClient(app) as client:
        assert (await client.get("/static/escape.txt")).text == "TOP SECRET"
        assert (await client.get("/static/.env")).text == "SECRET=1"
        redirect = await client.get("/static/docs?x=1")
        assert (redirect.status_code, redirect.headers["location"]) == (307, "/static/docs/?x=1")
        index = await client.get("/static/docs/")
        assert (index.status_code, index.text) == (200, "<h1>docs</h1>")
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        missing = await client.get("/static/nope")
        assert (missing.status_code, missing.text) == (404, "<h1>lost</h1>")
    with pytest.raises(ASGIError):
        StaticFiles(directory=site / "missing")


async def test_conditional_requests(site: Path) -> None:
    async with TestClient(app_for(site)) as client:
        first = await client.get("/static/hello.txt")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        again = await client.get("/static/hello.txt", headers={"if-none-match": etag})
        assert (again.status_code, again.text, again.headers["etag"]) == (304, "", etag)
        weak = await client.get("/static/hello.txt", headers={"if-none-match": f'"x", W/{etag}'})
        assert weak.status_code == 304
        other = await client.get("/static/hello.txt", headers={"if-none-match": '"other"'})
        assert other.status_code == 200
        since = await client.get("/static/hello.txt", headers={"if-modified-since": modified})
        assert since.status_code == 304
        old = "Mon, 01 Jan 1990 00:00:00 GMT"
        assert (await client.get("/static/hello.txt",
                                 headers={"if-modified-since": old})).status_code == 200
        assert (await client.get("/static/hello.txt",
                                 headers={"if-modified-since": "garbage"})).status_code == 200


def test_parse_ranges() -> None:
    assert parse_ranges("bytes=0-9", 100, 16) == [(0, 9)]
    assert parse_ranges("bytes=90-", 100, 16) == [(90, 99)]
    assert parse_ranges("bytes=-10", 100, 16) == [(90, 99)]
    assert parse_ranges("bytes=-500", 100, 16) == [(0, 99)]
    assert parse_ranges("bytes=50-500", 100, 16) == [(50, 99)]
    # Overlapping and adjacent ranges are merged, so overlap cannot multiply the output.
    assert parse_ranges("bytes=0-9, 5-19, 20-29, 50-59", 100, 16) == [(0, 29), (50, 59)]
    assert parse_ranges("bytes=0-0,0-0,0-0", 100, 16) == [(0, 0)]
    assert parse_ranges("bytes=200-300, 0-1", 100, 16) == [(0, 1)]
    for ignored in ("items=0-1", "bytes=", "bytes=a-b", "bytes=5-1", "bytes=-", "bytes=1-2-3"):
        assert parse_ranges(ignored, 100, 16) is None, ignored
    for refused in ("bytes=100-", "bytes=-0", "bytes=" + ",".join(["0-1"] * 17),
                    "bytes=0-1" + " " * 2000):
        with pytest.raises(ValueError):
            parse_ranges(refused, 100, 16)


async def test_range_requests(site: Path) -> None:
    async with TestClient(app_for(site)) as client:
        part = await client.get("/static/data.bin", headers={"range": "bytes=10-19"})
        assert (part.status_code, part.content) == (206, CONTENT[10:20])
        assert part.headers["content-range"] == f"bytes 10-19/{len(CONTENT)}"
        assert part.headers["content-length"] == "10"
        tail = await client.get("/static/data.bin", headers={"range": "bytes=-5"})
        assert tail.content == CONTENT[-5:]
        bad = await client.get("/static/data.bin", headers={"range": "bytes=99999-"})
        assert (bad.status_code, bad.headers["content-range"]) == (416, f"bytes */{len(CONTENT)}")
        many = ",".join(f"{n}-{n}" for n in range(0, 40, 2))
        assert (await client.get("/static/data.bin",
                                 headers={"range": f"bytes={many}"})).status_code == 416
        ignored = await client.get("/static/data.bin", headers={"range": "lines=1-2"})
        assert (ignored.status_code, ignored.content) == (200, CONTENT)
        # If-Range: the range holds only for the current version.
        etag = part.headers["etag"]
        fresh = await client.get("/static/data.bin",
                                 headers={"range": "bytes=0-1", "if-range": etag})
        assert fresh.status_code == 206
        stale = await client.get("/static/data.bin",
                                 headers={"range": "bytes=0-1", "if-range": '"old"'})
        assert (stale.status_code, stale.content) == (200, CONTENT)
        multi = await client.get("/static/data.bin",
                                 headers={"range": "bytes=0-3, 100-103"})
        assert multi.status_code == 206
        content_type = multi.headers["content-type"]
        assert content_type.startswith("multipart/byteranges; boundary=")
        boundary = content_type.split("boundary=")[1].encode()
        assert int(multi.headers["content-length"]) == len(multi.content)
        parts = multi.content.split(b"--" + boundary)
        assert parts[0] == b"" and parts[-1] == b"--\r\n"
        assert parts[1].endswith(b"\r\n\r\n" + CONTENT[0:4] + b"\r\n")
        assert b"Content-Range: bytes 100-103/10240" in parts[2]
        assert parts[2].endswith(CONTENT[100:104] + b"\r\n")
        head = await client.head("/static/data.bin", headers={"range": "bytes=0-9"})
        assert (head.status_code, head.content) == (206, b"")


async def test_traversal_over_a_real_server(site: Path) -> None:
    async with running_server(app_for(site)) as address:
        for target in (
            "/static/../secret.txt",
            "/static/%2e%2e/secret.txt",
            "/static/docs/%2E%2E/%2E%2E/secret.txt",
            "/static/..%2fsecret.txt",
            "/static/..%5csecret.txt",
            "/static/hello.txt%00.png",
            "/static/docs%2findex.html",
        ):
            answer = await raw_http(
                address, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            status = answer.split(b" ", 2)[1]
            assert status in (b"400", b"404"), (target, answer[:80])
            assert b"SECRET" not in answer
        ok = await raw_http(
            address, b"GET /static/hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"hello\n")


async def test_nested_mounts_use_root_path(site: Path) -> None:
    inner = Router()
    inner.mount("/assets", StaticFiles(directory=site))
    outer = Router()
    outer.mount("/v1", inner)
    async with TestClient(ASGIApplication(outer)) as client:
        assert (await client.get("/v1/assets/hello.txt")).text == "hello\n"
        assert (await client.get("/v1/assets/docs/index.html")).text == "<h1>docs</h1>"
        assert (await client.get("/v1/hello.txt")).status_code == 404


async def test_url_for_a_file_under_a_named_mount(site: Path) -> None:
    router = Router()
    router.mount("/static", StaticFiles(directory=site), name="static")
    users = Router()
    users.mount("/files", StaticFiles(directory=site), name="files")
    router.mount("/users/{user_id:int}", users, name="users")
    assert router.url_for("static", path="docs/index.html") == "/static/docs/index.html"
    assert router.url_for("static", path="/a b.txt") == "/static/a%20b.txt"
    assert router.url_for("users:files", user_id=3, path="x.txt") == "/users/3/files/x.txt"
    async with TestClient(ASGIApplication(router)) as client:
        url = router.url_for("static", path="hello.txt")
        assert (await client.get(url)).text == "hello\n"
