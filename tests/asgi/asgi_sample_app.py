"""A module-level app for the ``hypercorn -k trio`` and ``trionet serve`` subprocess tests."""

from __future__ import annotations

import sys

from trionet.asgi import ASGIApplication, Request, Response, WebSocket

app = ASGIApplication()


@app.route("/hello/{name}")
async def hello(request: Request, name: str) -> Response:
    return Response.json({"hello": name})


@app.websocket("/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for message in websocket:
        await websocket.send(message)


@app.on_startup
async def announce_startup() -> None:
    print("sample app: startup", file=sys.stderr, flush=True)


@app.on_shutdown
async def announce_shutdown() -> None:
    print("sample app: shutdown", file=sys.stderr, flush=True)
