"""A download route with ``FileResponse``: validators, conditional requests and ranges.

Run it as a program: it serves a file on a free loopback port and asks for it three ways over a
real connection: whole, again with its ``ETag`` (304), and a resumed download (206).
"""

import tempfile
from functools import partial
from pathlib import Path

import httpx
import trio

from trionet.asgi import ASGIApplication, FileResponse, Request, Response, serve


def make_app(directory: Path) -> ASGIApplication:
    app = ASGIApplication()

    @app.route("/reports/{name}", methods=["GET", "HEAD"])
    async def report(request: Request, name: str) -> Response:
        if name != "2026.csv":  # never build a path from what the client sent
            return Response.text("no such report", 404)
        return FileResponse(directory / "report-2026.csv", filename="report 2026.csv",
                            content_disposition_type="attachment")

    return app


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "report-2026.csv").write_text("month,total\n" + "jan,1\n" * 1000)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(partial(serve, make_app(directory), "127.0.0.1:0"))
            async with httpx.AsyncClient(base_url=address.url) as client:
                whole = await client.get("/reports/2026.csv")
                print(whole.status_code, whole.headers["content-disposition"])
                cached = await client.get("/reports/2026.csv",
                                          headers={"If-None-Match": whole.headers["etag"]})
                print(cached.status_code, "(not modified: use your copy)")
                # A download cut after 100 bytes resumes where it stopped.
                rest = await client.get("/reports/2026.csv", headers={
                    "Range": "bytes=100-", "If-Range": whole.headers["etag"]})
                print(rest.status_code, rest.headers["content-range"])
            assert cached.status_code == 304 and rest.status_code == 206
            assert whole.content[:100] + rest.content == whole.content
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
