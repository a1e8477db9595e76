"""trionet's own HTTP/1.1 path (``trionet/asgi/_http11.py``), over real sockets: disconnects
seen by ``receive()``, many pipelined requests, ``Expect: 100-continue`` only when the body is
read, ambiguous or broken framing refused, a websocket after HTTP requests on the same
connection (handed over to Hypercorn's protocol), read timeouts, the access log, and a
response that reaches the client although the request body was not read."""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

import pytest
import trio
import wsproto
import wsproto.events as ws_events
from asgi_support import hypercorn_config, raw_http, running_server, use_worker


@pytest.fixture(autouse=True)
def asgi_worker(monkeypatch: pytest.MonkeyPatch) -> str:
    """These tests are about trionet's worker with its own HTTP/1.1 path (the default)."""
    return use_worker(monkeypatch, "trionet")


class Probe:
    """An ASGI app whose requests the test can follow and steer."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.messages: list[str] = []
        self.started = trio.Event()
        self.go_on = trio.Event()
        self.done = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].replace("lifespan.", "")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": message.get("text")})
            await receive()
            return
        path = scope["path"]
        self.paths.append(path)
        if path == "/reject":  # answers without reading the body
            await _respond(send, b"too large", 413)
            return
        if path == "/stream":  # a streamed response: the head goes before the body exists
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await self.go_on.wait()
            await send({"type": "http.response.body", "body": b"later"})
            return
        if path == "/early":  # a sized response started before the body is read
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"5")]})
            message = await receive()
            await send({"type": "http.response.body", "body": message["body"]})
            return
        body = b""
        while True:
            message = await receive()
            self.messages.append(message["type"])
            if message["type"] == "http.disconnect":
                self.done.set()
                return
            body += message.get("body", b"")
            self.started.set()
            if not message.get("more_body"):
                break
        if path == "/wait":  # the test closes the connection, then the app looks
            await self.go_on.wait()
            self.messages.append((await receive())["type"])
            self.done.set()
            return
        await _respond(send, body or path.encode())
        if path == "/after":  # receive() once the response is complete
            self.messages.append((await receive())["type"])
            self.done.set()


async def _respond(send: Any, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_response(stream: trio.SocketStream, buffer: bytes = b"") -> tuple[bytes, bytes]:
    """One response with a content-length; returns it and what follows it."""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive_some()
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += await stream.receive_some()
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


async def test_a_client_gone_while_the_application_works_is_seen_by_receive() -> None:
    app = Probe()
    async with running_server(app) as address:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(address.host, address.port)
            await stream.send_all(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
            await app.started.wait()
            await stream.aclose()
            app.go_on.set()  # the app calls receive() only now, not while the client left
            await app.done.wait()
    assert app.messages == ["http.request", "http.disconnect"]


async def test_a_client_gone_in_the_middle_of_the_body_is_seen_by_receive() -> None:
    app = Probe()
    async with running_server(app) as address:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(address.host, address.port)
            await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
                                  b"\r\nabc")
            await app.started.wait()
            await stream.aclose()
            await app.done.wait()
    assert app.messages == ["http.request", "http.disconnect"]


async def test_a_stalled_body_ends_with_the_read_timeout() -> None:
    app = Probe()
    async with running_server(app, config=hypercorn_config(read_timeout=0.5)) as address:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: t\r\n"
                                      b"Content-Length: 10\r\n\r\nabc")
                await app.done.wait()
                assert await stream.receive_some() == b""  # and the connection is closed
    assert app.messages == ["http.request", "http.disconnect"]


async def test_receive_after_the_response_reports_the_end_and_the_connection_goes_on() -> None:
    app = Probe()
    async with running_server(app) as address:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
                first, rest = await _read_response(stream)
                await app.done.wait()
                await stream.send_all(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
                second, _ = await _read_response(stream, rest)
    assert first.endswith(b"\r\n\r\n/after") and second.endswith(b"\r\n\r\n/again")
    assert app.messages == ["http.request", "http.disconnect", "http.request"]


async def test_many_pipelined_requests_are_answered_in_order() -> None:
    app = Probe()
    requests = []
    for i in range(60):
        if i % 3 == 0:
            body = f"body {i}".encode()
            requests.append(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                            % (len(body), body))
        elif i % 3 == 1:
            requests.append(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                            b"\r\n5\r\nchunk\r\n%d\r\n %d\r\n0\r\n\r\n" % (len(str(i)) + 1, i))
        else:
            requests.append(f"GET /get/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    requests.append(b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    async with running_server(app) as address:
        with trio.fail_after(20):
            data = await raw_http(address, b"".join(requests))
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in data.split(b"HTTP/1.1 200")[1:]]
    expected = [f"body {i}" if i % 3 == 0 else f"chunk {i}" if i % 3 == 1 else f"/get/{i}"
                for i in range(60)]
    assert [body.decode() for body in bodies] == [*expected, "/last"]


async def test_100_continue_only_when_the_application_reads_the_body() -> None:
    app = Probe()
    async with running_server(app) as address:
        with trio.fail_after(10):
            head = (b"Host: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            refused = await raw_http(address, b"POST /reject HTTP/1.1\r\n" + head)
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(b"POST /echo HTTP/1.1\r\n" + head)
                interim = await stream.receive_some()
                await stream.send_all(b"hello")
                response, _ = await _read_response(stream)
    assert refused.startswith(b"HTTP/1.1 413") and b" 100 " not in refused
    assert interim.startswith(b"HTTP/1.1 100")
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"hello")


@pytest.mark.parametrize(("head", "status"), [
    (b"Content-Length: 3\r\nContent-Length: 4", b"400"),
    (b"Content-Length: 3\r\nTransfer-Encoding: chunked", b"400"),
    (b"Transfer-Encoding: gzip, chunked", b"501"),
    (b"Content-Length: -1", b"400"),
    (b"Content-Length: 3\r\n Folded: x", b"400"),
])
async def test_ambiguous_or_invalid_framing_is_refused_and_the_connection_closed(
        head: bytes, status: bytes) -> None:
    """Nothing after such a head is taken as a request (request smuggling)."""
    app = Probe()
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    request = b"POST /echo HTTP/1.1\r\nHost: t\r\n" + head + b"\r\n\r\n0\r\n\r\n" + smuggled
    async with running_server(app) as address:
        with trio.fail_after(10):
            data = await raw_http(address, request)  # read until the server closes
    assert data.startswith(b"HTTP/1.1 " + status) and data.count(b"HTTP/1.1") == 1
    assert app.paths == []


async def test_a_bad_chunk_size_gets_400_and_the_application_a_disconnect() -> None:
    app = Probe()
    request = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"zz\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
    async with running_server(app) as address:
        with trio.fail_after(10):
            data = await raw_http(address, request)
            await app.done.wait()
    assert data.startswith(b"HTTP/1.1 400") and data.count(b"HTTP/1.1") == 1
    assert app.paths == ["/echo"] and app.messages == ["http.disconnect"]


async def test_a_websocket_after_http_requests_on_the_same_connection() -> None:
    app = Probe()
    async with running_server(app) as address:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
                response, rest = await _read_response(stream)
                assert rest == b"" and response.endswith(b"/first")
                conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
                await stream.send_all(conn.send(ws_events.Request(host="t", target="/ws")))
                events: list[Any] = []
                while not any(isinstance(e, ws_events.AcceptConnection) for e in events):
                    conn.receive_data(await stream.receive_some())
                    events += conn.events()
                await stream.send_all(conn.send(ws_events.TextMessage("hi")))
                while not any(isinstance(e, ws_events.TextMessage) for e in events):
                    conn.receive_data(await stream.receive_some())
                    events += conn.events()
                await stream.send_all(conn.send(ws_events.CloseConnection(code=1000)))
    assert [e.data for e in events if isinstance(e, ws_events.TextMessage)] == ["hi"]


async def test_the_response_reaches_a_client_still_sending_an_unread_body() -> None:
    """The server closes without reading the body; it drops what still comes for a while
    first, so that the kernel does not reset the connection under the response."""
    app = Probe()
    body = b"x" * 512 * 1024
    async with running_server(app) as address:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(b"POST /reject HTTP/1.1\r\nHost: t\r\n"
                                      b"Content-Length: %d\r\n\r\n" % len(body))

                async def send_body() -> None:
                    with suppress(trio.BrokenResourceError):
                        await stream.send_all(body)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send_body)
                    data = b""
                    while chunk := await stream.receive_some():
                        data += chunk
    assert data.startswith(b"HTTP/1.1 413") and data.endswith(b"too large")


async def test_the_access_log_has_every_request(caplog: pytest.LogCaptureFixture) -> None:
    app = Probe()
    config = hypercorn_config(accesslog=logging.getLogger("test.access"))
    caplog.set_level(logging.INFO, logger="test.access")
    async with running_server(app, config=config) as address:
        with trio.fail_after(10):
            await raw_http(address, b"GET /one HTTP/1.1\r\nHost: t\r\n\r\n"
                                    b"POST /reject HTTP/1.1\r\nHost: t\r\nContent-Length: 0"
                                    b"\r\nConnection: close\r\n\r\n")
    lines = [r.getMessage() for r in caplog.records if r.name == "test.access"]
    assert len(lines) == 2
    assert "GET /one" in lines[0] and " 200 " in lines[0]
    assert "POST /reject" in lines[1] and " 413 " in lines[1]


async def test_a_streamed_response_head_goes_before_its_body() -> None:
    app = Probe()
    async with running_server(app) as address:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some()
                app.go_on.set()
                rest = head.split(b"\r\n\r\n", 1)[1]
                while not rest.endswith(b"0\r\n\r\n"):
                    rest += await stream.receive_some()
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert rest == b"5\r\nlater\r\n0\r\n\r\n"


async def test_a_response_started_before_the_body_is_read_reaches_a_waiting_client() -> None:
    """The client (``Expect: 100-continue``) waits for an answer before sending the body; the
    application starts its response, then reads the body: the head must go out first."""
    app = Probe()
    async with running_server(app) as address:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                await stream.send_all(b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 5"
                                      b"\r\nExpect: 100-continue\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some()
                await stream.send_all(b"hello")
                response, _ = await _read_response(stream, head)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"\r\n\r\nhello")
