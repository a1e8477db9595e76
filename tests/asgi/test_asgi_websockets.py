"""WebSockets in-process and through a real Hypercorn trio server (trio-websocket client)."""

from __future__ import annotations

import base64
import os

import pytest
import trio
import trio.testing
from asgi_support import running_server
from hypercorn.config import Config

from trionet.asgi import (
    ASGIApplication,
    HTTPException,
    Message,
    Receive,
    Scope,
    Send,
    TestClient,
    WebSocket,
    WebSocketClient,
    WebSocketDisconnect,
    WebSocketRejected,
    connect_websocket,
)
from trionet.errors import ASGIError


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.closed = trio.Event()


def make_app(recorder: Recorder) -> ASGIApplication:
    app = ASGIApplication()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket:
            await websocket.send(message)
        recorder.events.append(f"echo ended {websocket.close_code}")
        recorder.closed.set()

    @app.websocket("/json/{room}")
    async def json_room(websocket: WebSocket, room: str) -> None:
        await websocket.accept(subprotocol="v2" if "v2" in websocket.subprotocols else None)
        data = await websocket.receive_json()
        await websocket.send_json({"room": room, "got": data})
        await websocket.close(4000, "done")

    @app.websocket("/small", max_message_size=1000)
    async def small(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send(await websocket.receive())
        except WebSocketDisconnect as exc:
            recorder.events.append(f"small closed {exc.code}")
            raise

    @app.websocket("/text-only")
    async def text_only(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())

    @app.websocket("/forbidden")
    async def forbidden(websocket: WebSocket) -> None:
        raise HTTPException(403, "members only")

    @app.websocket("/closed-early")
    async def closed_early(websocket: WebSocket) -> None:
        await websocket.close()

    @app.websocket("/crash")
    async def crash(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive()
        raise RuntimeError("handler bug")

    @app.websocket("/big-reply")
    async def big_reply(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send(b"z" * 5000)
        await websocket.receive()

    @app.websocket("/goodbye")
    async def goodbye(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.receive()
        except WebSocketDisconnect as exc:
            recorder.events.append(f"goodbye {exc.code} {exc.reason!r}")
            recorder.closed.set()

    @app.websocket("/slow-reader")
    async def slow_reader(websocket: WebSocket) -> None:
        await websocket.accept()
        await recorder.closed.wait()
        received = [await websocket.receive() for _ in range(3)]
        await websocket.send(f"got {len(received)}")

    return app


async def exercise_echo(ws: WebSocketClient) -> None:
    await ws.send("hello")
    assert await ws.receive() == "hello"
    await ws.send_bytes(b"\x00\x01")
    assert await ws.receive_bytes() == b"\x00\x01"
    await ws.send_json({"a": 1})
    assert await ws.receive_json() == {"a": 1}


# -- in-process --------------------------------------------------------------------------------


async def test_echo_in_process() -> None:
    recorder = Recorder()
    async with TestClient(make_app(recorder)) as client:
        async with client.websocket_connect("/echo") as ws:
            await exercise_echo(ws)
            await ws.close()
        await recorder.closed.wait()
    assert recorder.events == ["echo ended 1000"]


async def test_handler_sees_the_client_close_code_and_reason_in_process() -> None:
    recorder = Recorder()
    async with TestClient(make_app(recorder)) as client:
        async with client.websocket_connect("/goodbye") as ws:
            await ws.send("hi")
            await ws.close(4000, "bye")
        await recorder.closed.wait()
    assert recorder.events == ["goodbye 4000 'bye'"]


async def test_json_subprotocol_and_server_close_in_process() -> None:
    client = TestClient(make_app(Recorder()))
    async with client.websocket_connect("/json/lobby", subprotocols=["v1", "v2"]) as ws:
        assert ws.subprotocol == "v2"
        await ws.send_json([1, 2])
        assert await ws.receive_json() == {"room": "lobby", "got": [1, 2]}
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
        assert (info.value.code, info.value.reason) == (4000, "done")
        with pytest.raises(WebSocketDisconnect):
            await ws.send("after close")


async def test_oversize_message_closes_with_1009_in_process() -> None:
    recorder = Recorder()
    client = TestClient(make_app(recorder))
    async with client.websocket_connect("/small") as ws:
        await ws.send("a" * 1000)
        assert await ws.receive() == "a" * 1000
        await ws.send("é" * 501)  # 1002 bytes of UTF-8
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
        assert info.value.code == 1009
    assert "small closed 1009" in recorder.events


async def test_wrong_message_type_and_bad_json_in_process() -> None:
    client = TestClient(make_app(Recorder()))
    async with client.websocket_connect("/text-only") as ws:
        await ws.send(b"binary")
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
        assert info.value.code == 1003
    async with client.websocket_connect("/json/x") as ws:
        await ws.send("{oops")
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
        assert info.value.code == 1007
        assert info.value.reason.startswith("invalid JSON")
    async with client.websocket_connect("/json/x") as ws:
        await ws.send("[" * 5000 + "]" * 5000)  # nested deeper than the parser allows
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
        assert info.value.code == 1007
        assert "max_depth" in info.value.reason


async def test_rejections_in_process() -> None:
    client = TestClient(make_app(Recorder()))
    with pytest.raises(WebSocketRejected) as info:
        async with client.websocket_connect("/forbidden"):
            pass  # pragma: no cover
    assert (info.value.status_code, info.value.body) == (403, b'{"error": "members only"}')
    with pytest.raises(WebSocketRejected) as info:
        async with client.websocket_connect("/nowhere"):
            pass  # pragma: no cover
    assert info.value.status_code == 404
    with pytest.raises(WebSocketRejected) as info:
        async with client.websocket_connect("/closed-early"):
            pass  # pragma: no cover
    assert info.value.status_code == 403


async def test_handler_error_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(make_app(Recorder()))
    async with client.websocket_connect("/crash") as ws:
        await ws.send("trigger")
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
        assert info.value.code == 1011
    assert any("websocket handler for /crash failed" in r.getMessage() for r in caplog.records)


async def test_receive_queue_is_bounded_in_process() -> None:
    recorder = Recorder()
    client = TestClient(make_app(recorder), websocket_queue_size=2)
    async with client.websocket_connect("/slow-reader") as ws:
        await ws.send("1")
        await ws.send("2")
        third_sent = trio.Event()

        async def send_third() -> None:
            await ws.send("3")
            third_sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_third)
            await trio.testing.wait_all_tasks_blocked()
            assert not third_sent.is_set()  # the queue is full: the sender waits
            recorder.closed.set()  # let the handler start reading
        assert await ws.receive() == "got 3"


async def test_websocket_api_misuse() -> None:
    app = ASGIApplication()
    errors: list[str] = []

    @app.websocket("/misuse")
    async def misuse(websocket: WebSocket) -> None:
        try:
            await websocket.receive()
        except ASGIError as exc:
            errors.append(str(exc))
        try:
            await websocket.send("x")
        except ASGIError as exc:
            errors.append(str(exc))
        await websocket.accept()
        try:
            await websocket.accept()
        except ASGIError as exc:
            errors.append(str(exc))
        try:
            await websocket.reject()
        except ASGIError as exc:
            errors.append(str(exc))

    async with TestClient(app).websocket_connect("/misuse") as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
        assert info.value.code == 1000
    assert errors == [
        "accept() the websocket before receiving",
        "accept() the websocket before sending",
        "the websocket is already accepted or closed",
        "cannot reject an accepted websocket; close() it",
    ]


# -- through Hypercorn -------------------------------------------------------------------------


async def test_echo_and_close_codes_through_hypercorn() -> None:
    recorder = Recorder()
    async with running_server(make_app(recorder)) as address:
        async with connect_websocket(address.ws_url + "/echo") as ws:
            await exercise_echo(ws)
        await recorder.closed.wait()
        # A clean client close: the handler sees the client's code (Hypercorn 0.18 alone says
        # 1006, see test_handler_sees_the_client_close_code_through_hypercorn).
        assert recorder.events[0] == "echo ended 1000"
        async with connect_websocket(address.ws_url + "/json/r1", subprotocols=["v2"]) as ws:
            assert ws.subprotocol == "v2"
            await ws.send_json({"k": "v"})
            assert await ws.receive_json() == {"room": "r1", "got": {"k": "v"}}
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive()
            assert (info.value.code, info.value.reason) == (4000, "done")


async def test_handler_sees_the_client_close_code_through_hypercorn() -> None:
    recorder = Recorder()
    async with running_server(make_app(recorder)) as address:
        for code, reason in ((4000, "bye"), (1001, "")):
            recorder.closed = trio.Event()
            async with connect_websocket(address.ws_url + "/goodbye") as ws:
                await ws.send("hi")
                await ws.close(code, reason)
            await recorder.closed.wait()
    assert recorder.events == ["goodbye 4000 'bye'", "goodbye 1001 ''"]


async def test_raw_asgi_app_sees_the_client_close_code_through_hypercorn() -> None:
    disconnects: list[Message] = []
    done = trio.Event()

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                disconnects.append(message)
                done.set()
                return

    async with running_server(raw_app) as address:
        async with connect_websocket(address.ws_url + "/") as ws:
            await ws.close(4000, "bye")
        await done.wait()
    assert (disconnects[0]["code"], disconnects[0].get("reason")) == (4000, "bye")


async def test_oversize_messages_through_hypercorn() -> None:
    recorder = Recorder()
    config = Config()
    config.websocket_max_message_size = 3000
    async with running_server(make_app(recorder), config=config) as address:
        # The route's own limit (1000 bytes).
        async with connect_websocket(address.ws_url + "/small") as ws:
            await ws.send(b"b" * 1001)
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive()
            assert info.value.code == 1009
        # Hypercorn's limit (3000 bytes) on a route that accepts 1 MiB.
        async with connect_websocket(address.ws_url + "/echo") as ws:
            await ws.send(b"c" * 3001)
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive()
            assert info.value.code == 1009
        # The client's limit on what the server sends.
        async with connect_websocket(address.ws_url + "/big-reply", max_message_size=4000) as ws:
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive()
            assert info.value.code == 1009
    assert "small closed 1009" in recorder.events
    # Hypercorn's own refusal: the handler learns it was 1009 (Hypercorn alone says 1006).
    assert "echo ended 1009" in recorder.events


async def test_rejections_through_hypercorn() -> None:
    async with running_server(make_app(Recorder())) as address:
        with pytest.raises(WebSocketRejected) as info:
            async with connect_websocket(address.ws_url + "/forbidden"):
                pass  # pragma: no cover
        assert (info.value.status_code, info.value.body) == (403, b'{"error": "members only"}')
        with pytest.raises(WebSocketRejected) as info:
            async with connect_websocket(address.ws_url + "/nowhere"):
                pass  # pragma: no cover
        assert info.value.status_code == 404
    with pytest.raises(ASGIError, match="cannot open a websocket"):
        async with connect_websocket(address.ws_url + "/echo"):  # the server is gone
            pass  # pragma: no cover
    with pytest.raises(ASGIError, match="invalid websocket URL"):
        async with connect_websocket("http://example.com/"):
            pass  # pragma: no cover


async def test_abrupt_client_disconnect_through_hypercorn() -> None:
    recorder = Recorder()
    async with running_server(make_app(recorder)) as address:
        key = base64.b64encode(os.urandom(16)).decode()
        handshake = (
            f"GET /echo HTTP/1.1\r\nHost: {address.host}:{address.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        stream = await trio.open_tcp_stream(address.host, address.port)
        await stream.send_all(handshake)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 101")
        # Vanish without a close frame.
        await stream.aclose()
        await recorder.closed.wait()
        # The server is unaffected and serves the next client.
        async with connect_websocket(address.ws_url + "/echo") as ws:
            await ws.send("still here")
            assert await ws.receive() == "still here"
    assert recorder.events[0] == "echo ended 1006"


async def test_cancelling_a_client_closes_everything() -> None:
    recorder = Recorder()
    async with running_server(make_app(recorder)) as address:
        with trio.CancelScope() as scope:
            async with connect_websocket(address.ws_url + "/echo") as ws:
                await ws.send("one")
                assert await ws.receive() == "one"
                scope.cancel()
                await ws.receive()  # cancelled here
        assert scope.cancelled_caught
        await recorder.closed.wait()  # the server saw the connection go away
