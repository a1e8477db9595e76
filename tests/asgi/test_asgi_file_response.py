"""``FileResponse`` answers conditional and range requests as ``StaticFiles`` does (one shared
sender): ETag / If-None-Match, If-Modified-Since, Range (206, multipart, 416, the range cap),
If-Range, HEAD, and ``Content-Disposition`` like Starlette's; over a real server connection."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from asgi_support import running_server

from trionet.asgi import (
    ASGIApplication,
    FileResponse,
    GZipMiddleware,
    Request,
    Response,
    StaticFiles,
)

DATA = bytes(range(256)) * 40  # 10 240 bytes


@asynccontextmanager
async def client_for(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    app = ASGIApplication()

    @app.route("/file", methods=["GET", "HEAD"])
    async def file(request: Request) -> Response:
        return FileResponse(path, max_ranges=4)

    @app.route("/report", methods=["GET"])
    async def report(request: Request) -> Response:
        return FileResponse(path, media_type="application/pdf", filename="Rapport été.pdf",
                            content_disposition_type="inline")

    @app.route("/created", methods=["GET"])
    async def created(request: Request) -> Response:
        return FileResponse(path, 201, {"ETag": '"mine"'})

    with trio.fail_after(20):
        async with running_server(app) as address, \
                httpx.AsyncClient(base_url=address.url) as client:
            yield client


async def test_etag_and_if_modified_since_give_304(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        whole = await client.get("/file")
        assert whole.status_code == 200 and whole.content == DATA
        assert whole.headers["accept-ranges"] == "bytes"
        etag, modified = whole.headers["etag"], whole.headers["last-modified"]
        assert modified == "Tue, 14 Nov 2023 22:13:20 GMT"
        again = await client.get("/file", headers={"If-None-Match": f'W/"x", {etag}'})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        other = await client.get("/file", headers={"If-None-Match": '"other"'})
        assert other.status_code == 200 and other.content == DATA
        since = await client.get("/file", headers={"If-Modified-Since": modified})
        assert since.status_code == 304
        older = await client.get("/file",
                                 headers={"If-Modified-Since": "Mon, 13 Nov 2023 00:00:00 GMT"})
        assert older.status_code == 200 and older.content == DATA


async def test_ranges(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        part = await client.get("/file", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == DATA[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(DATA)}"
        suffix = await client.get("/file", headers={"Range": "bytes=-5"})
        assert suffix.status_code == 206 and suffix.content == DATA[-5:]

        multi = await client.get("/file", headers={"Range": "bytes=0-1, 100-102"})
        assert multi.status_code == 206
        content_type = multi.headers["content-type"]
        assert content_type.startswith("multipart/byteranges; boundary=")
        boundary = content_type.partition("boundary=")[2].encode()
        parts = multi.content.split(b"--" + boundary)
        assert parts[1].endswith(b"\r\n\r\n" + DATA[0:2] + b"\r\n")
        assert b"Content-Range: bytes 100-102/10240" in parts[2]
        assert parts[2].endswith(DATA[100:103] + b"\r\n") and parts[3] == b"--\r\n"
        assert int(multi.headers["content-length"]) == len(multi.content)

        # Unsatisfiable, or more ranges than max_ranges: 416.
        for header in ("bytes=20000-", "bytes=0-0,2-2,4-4,6-6,8-8"):
            refused = await client.get("/file", headers={"Range": header})
            assert refused.status_code == 416, header
            assert refused.headers["content-range"] == f"bytes */{len(DATA)}"

        # If-Range with a stale validator: the whole file.
        stale = await client.get("/file", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == DATA
        etag = (await client.head("/file")).headers["etag"]
        fresh = await client.get("/file", headers={"Range": "bytes=0-9", "If-Range": etag})
        assert fresh.status_code == 206 and fresh.content == DATA[:10]


async def test_head_gets_the_headers_only(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        head = await client.head("/file")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(DATA))
        assert head.headers["content-type"] == "application/octet-stream"
        ranged = await client.head("/file", headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 206 and ranged.headers["content-length"] == "10"


async def test_content_disposition_and_other_statuses(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        report = await client.get("/report")
        assert report.headers["content-disposition"] == (
            "inline; filename*=utf-8''Rapport%20%C3%A9t%C3%A9.pdf"
        )
        assert report.headers["content-type"] == "application/pdf"
        # Conditions and ranges apply to 200 only; the application's ETag is the one sent.
        created = await client.get("/created", headers={"Range": "bytes=0-9",
                                                        "If-None-Match": '"mine"'})
        assert created.status_code == 201 and created.content == DATA
        assert created.headers.get_list("etag") == ['"mine"']
    with pytest.raises(ValueError, match="content_disposition_type"):
        FileResponse(tmp_path / "data.bin", content_disposition_type="evil; x=1")


async def test_gzip_leaves_partial_content_alone(tmp_path: Path) -> None:
    """A 206 body is a byte range of the file: GZipMiddleware compressed it (for StaticFiles
    already before FileResponse had ranges), so its Content-Range described bytes the client
    never got."""
    path = tmp_path / "page.txt"
    path.write_bytes(b"abcdefghij" * 1000)
    app = ASGIApplication()
    app.mount("/static", StaticFiles(directory=tmp_path))

    @app.route("/page")
    async def page(request: Request) -> Response:
        return FileResponse(path)

    app.add_middleware(GZipMiddleware, minimum_size=10)
    headers = {"Accept-Encoding": "gzip", "Range": "bytes=5-2004"}
    with trio.fail_after(20):
        async with running_server(app) as address, \
                httpx.AsyncClient(base_url=address.url) as client:
            for url in ("/static/page.txt", "/page"):
                part = await client.get(url, headers=headers)
                assert part.status_code == 206, url
                assert "content-encoding" not in part.headers, url
                assert part.content == path.read_bytes()[5:2005], url
                assert part.headers["content-length"] == "2000", url
                whole = await client.get(url, headers={"Accept-Encoding": "gzip"})
                assert whole.headers["content-encoding"] == "gzip", url


async def test_gzip_makes_the_etag_weak(tmp_path: Path) -> None:
    """The compressed bytes are another representation than the file's: their ETag is weak,
    so an If-Range with it gets the whole (compressed) file, never a range of the uncompressed
    bytes to splice into compressed ones; If-None-Match still matches (the weak comparison).
    GZipMiddleware kept the strong ETag."""
    path = tmp_path / "page.txt"
    path.write_bytes(b"abcdefghij" * 1000)
    app = ASGIApplication()

    @app.route("/page")
    async def page(request: Request) -> Response:
        return FileResponse(path)

    app.add_middleware(GZipMiddleware, minimum_size=10)
    gz = {"Accept-Encoding": "gzip"}
    with trio.fail_after(20):
        async with running_server(app) as address, \
                httpx.AsyncClient(base_url=address.url) as client:
            whole = await client.get("/page", headers=gz)
            etag = whole.headers["etag"]
            assert whole.headers["content-encoding"] == "gzip"
            assert etag.startswith('W/"'), etag
            cached = await client.get("/page", headers={**gz, "If-None-Match": etag})
            assert cached.status_code == 304
            resumed = await client.get("/page", headers={**gz, "Range": "bytes=100-",
                                                         "If-Range": etag})
            assert resumed.status_code == 200 and resumed.content == path.read_bytes()
            identity = await client.get("/page", headers={"Accept-Encoding": "identity"})
            assert not identity.headers["etag"].startswith("W/")
