"""The ASGI part of ``trionet demo``: a small app on Hypercorn's trio worker, exercised by a
client in the same nursery."""

from __future__ import annotations

import json
from collections.abc import Callable

import trio

from ..asgi import (
    ASGIApplication,
    BoundAddress,
    Request,
    RequestIdMiddleware,
    Response,
    Router,
    WebSocket,
    connect_websocket,
    serve,
)

__all__ = ["build_demo_app", "demo", "echo", "http_request"]


async def echo(websocket: WebSocket) -> None:
    """A websocket endpoint that sends every message back until the client closes."""
    await websocket.accept()
    async for message in websocket:
        await websocket.send(message)


def build_demo_app() -> ASGIApplication:
    """The demo application: ``GET /hello?name=...`` and a websocket echo at ``/echo``."""
    router = Router()

    @router.route("/hello")
    async def hello(request: Request) -> Response:
        name = request.query_params.get("name", "world")
        return Response.json({"message": f"hello, {name}"})

    router.add_websocket_route("/echo", echo)
    app = ASGIApplication(router)
    app.add_middleware(RequestIdMiddleware)
    return app


async def http_request(
    host: str, port: int, method: str, target: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A minimal HTTP/1.1 client on h11 (one request per connection), for the demos.

    Returns the status code, the response headers (lower-case names) and the body.
    """
    import h11  # a Hypercorn dependency, so present whenever trionet[asgi] is

    connection = h11.Connection(h11.CLIENT)
    headers = [("Host", f"{host}:{port}"), ("Connection", "close")]
    if body is not None:
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        data = connection.send(h11.Request(method=method, target=target, headers=headers))
        if body is not None:
            data += connection.send(h11.Data(data=body))
        data += connection.send(h11.EndOfMessage())
        await stream.send_all(data)
        status, response_headers, content = 0, {}, b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                content += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, response_headers, content


async def demo(report: Callable[[str], None]) -> None:
    """Serve the demo app on 127.0.0.1 (a free port), call it over HTTP and a websocket,
    report each step through ``report(line)``, then shut the server down."""
    app = build_demo_app()
    async with trio.open_nursery() as nursery:
        address: BoundAddress = await nursery.start(serve, app, "127.0.0.1:0")
        report(f"asgi: Hypercorn trio worker serving a trionet app on {address.url}")

        status, headers, body = await http_request(
            address.host, address.port, "GET", "/hello?name=trionet"
        )
        message = json.loads(body)["message"]
        report(
            f"asgi: GET /hello?name=trionet -> {status} {message!r} "
            f"(x-request-id {headers.get('x-request-id', '?')[:8]}…)"
        )

        async with connect_websocket(address.ws_url + "/echo") as websocket:
            for text in ("ping", "structured concurrency"):
                await websocket.send(text)
                echoed = await websocket.receive()
                report(f"asgi: websocket /echo: sent {text!r}, got {echoed!r}")
        report("asgi: websocket closed normally")

        nursery.cancel_scope.cancel()
    report("asgi: server shut down gracefully")
