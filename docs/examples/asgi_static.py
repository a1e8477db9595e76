"""Static files: a directory mounted under /static, with caching headers and ranges."""

import tempfile
from pathlib import Path

import trio

from trionet.asgi import ASGIApplication, Request, Response, Router, StaticFiles, TestClient


def build_app(directory: Path) -> ASGIApplication:
    router = Router()
    # html=True: /static/ serves index.html, and a missing file serves 404.html if present.
    router.mount("/static", StaticFiles(directory=directory, html=True,
                                        cache_control="public, max-age=3600"))

    @router.route("/")
    async def home(request: Request) -> Response:
        return Response.redirect("/static/")

    return ASGIApplication(router)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        public = Path(tmp)
        (public / "index.html").write_text("<h1>Hello</h1>")
        (public / "video.bin").write_bytes(bytes(1000))
        (public / ".env").write_text("SECRET=1")  # never served: dotfiles are refused
        async with TestClient(build_app(public)) as client:
            index = await client.get("/static/")
            print(index.status_code, index.text, index.headers["etag"])
            # The browser asks again with the ETag it has: 304, no body.
            again = await client.get("/static/", headers={"if-none-match": index.headers["etag"]})
            print(again.status_code)
            # A media player asks for a part of the file.
            part = await client.get("/static/video.bin", headers={"range": "bytes=100-199"})
            print(part.status_code, part.headers["content-range"], len(part.content))
            secret = await client.get("/static/.env")
            print(secret.status_code)
            assert (again.status_code, part.status_code, secret.status_code) == (304, 206, 404)


if __name__ == "__main__":
    trio.run(main)
