"""HTTP behaviour both trio workers must keep (``tests/asgi/conftest.py`` runs every test here
on trionet's worker, on it with HTTP/1.1 left to Hypercorn's protocol, and on Hypercorn's
worker): keep-alive and pipelining, chunked bodies,
``Expect: 100-continue``, HEAD, HTTP/2 over TLS (ALPN) and cleartext (prior knowledge and the
``h2c`` upgrade), websockets (fragments, ping/pong, close codes), keep-alive and slowloris
cut-offs, and the graceful shutdown of idle connections."""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
import wsproto
import wsproto.events as ws_events
from asgi_support import hypercorn_config, raw_http, use_worker
from hypercorn.config import Config

from trionet.asgi import BoundAddress, serve


@pytest.fixture(autouse=True, params=["trionet", "trionet-hc11", "hypercorn"])
def asgi_worker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Here also trionet's worker with HTTP/1.1 left to Hypercorn's protocol (the A/B switch)."""
    return use_worker(monkeypatch, request.param)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echo server: GET /hello, POST /echo (the body back), websocket /ws (echo)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text"),
                        "bytes": message.get("bytes")})
    body = b"Hello, world!"
    if scope["path"] == "/echo":
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(parts)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-http-version", scope["http_version"].encode())]})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def served(config: Config | None = None, **kwargs: Any) -> AsyncIterator[BoundAddress]:
    async with trio.open_nursery() as nursery:
        address: BoundAddress = await nursery.start(
            partial(serve, app, "127.0.0.1:0", config=config, **kwargs)
        )
        yield address
        nursery.cancel_scope.cancel()


_config = hypercorn_config


async def test_keep_alive_and_pipelining() -> None:
    async with served() as address:
        request = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        post = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        last = b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        with trio.fail_after(10):
            data = await raw_http(address, request + post + last)
        assert data.count(b"HTTP/1.1 200") == 3
        first, second, third = data.split(b"HTTP/1.1 200")[1:]
        assert first.endswith(b"Hello, world!") and second.endswith(b"abc")
        assert third.endswith(b"Hello, world!")


async def test_chunked_request_body_and_head() -> None:
    async with served() as address:
        chunked = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                   b"Connection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        with trio.fail_after(10):
            data = await raw_http(address, chunked)
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nabcdefg")
            head = await raw_http(address, b"HEAD /hello HTTP/1.1\r\nHost: t\r\n"
                                           b"Connection: close\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-length: 13" in head.lower() and head.endswith(b"\r\n\r\n")


async def test_expect_100_continue() -> None:
    async with served() as address:
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
            with trio.fail_after(10):
                interim = await stream.receive_some()
                assert interim.startswith(b"HTTP/1.1 100")
                await stream.send_all(b"hello")
                data = b""
                async for chunk in stream:
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")


async def test_http2_over_tls_with_alpn(tls_ca: trustme.CA) -> None:
    cert = tls_ca.issue_cert("127.0.0.1")
    with tempfile.TemporaryDirectory() as directory:
        certfile, keyfile = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
        cert.private_key_pem.write_to_path(str(keyfile))
        config = _config(certfile=str(certfile), keyfile=str(keyfile))
        async with served(config) as address:
            context = ssl.create_default_context()
            tls_ca.configure_trust(context)
            url = f"https://127.0.0.1:{address.port}"
            async with httpx.AsyncClient(http2=True, verify=context) as client:
                with trio.fail_after(10):
                    get = await client.get(url + "/hello")
                    post = await client.post(url + "/echo", content=b"x" * 100_000)
            assert get.http_version == "HTTP/2" and get.text == "Hello, world!"
            assert post.http_version == "HTTP/2" and post.content == b"x" * 100_000


def _blocking_tls_requests(port: int, context: ssl.SSLContext, body: bytes, times: int
                           ) -> list[bytes]:
    """Send ``POST /echo`` with ``Connection: close`` *times* over TLS from a plain blocking
    ``ssl`` socket; return what each connection received before its end."""
    answers = []
    for _ in range(times):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            answers.append(data)
    return answers


async def test_tls_connection_close_gets_the_whole_response(tls_ca: trustme.CA) -> None:
    """``Connection: close`` over TLS: the response arrives whole before the close (trionet's
    worker once closed the TLS stream while its writer was still sending: about half of the
    answers were empty)."""
    cert = tls_ca.issue_cert("127.0.0.1")
    with tempfile.TemporaryDirectory() as directory:
        certfile, keyfile = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
        cert.private_key_pem.write_to_path(str(keyfile))
        async with served(_config(certfile=str(certfile), keyfile=str(keyfile))) as address:
            context = ssl.create_default_context()
            tls_ca.configure_trust(context)
            for body, times in ((b"hi", 10), (b"y" * 1_000_000, 2)):
                with trio.fail_after(60):
                    answers = await trio.to_thread.run_sync(
                        _blocking_tls_requests, address.port, context, body, times)
                for data in answers:
                    assert data.startswith(b"HTTP/1.1 200")
                    assert data.endswith(b"\r\n\r\n" + body)


async def test_cleartext_http2_prior_knowledge_and_upgrade() -> None:
    async with served() as address:
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            with trio.fail_after(10):
                response = await client.get(f"{address.url}/hello")
        assert response.http_version == "HTTP/2" and response.text == "Hello, world!"
        upgrade = (b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                   b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        with trio.fail_after(10):
            data = await raw_http(address, upgrade, read_until_close=False)
        assert data.startswith(b"HTTP/1.1 101")


async def _websocket(address: BoundAddress) -> tuple[trio.SocketStream, wsproto.WSConnection]:
    stream = await trio.open_tcp_stream(address.host, address.port)
    conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(conn.send(ws_events.Request(host="t", target="/ws")))
    await _events(stream, conn, ws_events.AcceptConnection)
    return stream, conn


async def _events(stream: trio.SocketStream, conn: wsproto.WSConnection, until: type
                  ) -> list[Any]:
    seen: list[Any] = []
    while True:
        data = await stream.receive_some()
        conn.receive_data(data or None)
        for event in conn.events():
            seen.append(event)
            if isinstance(event, until):
                return seen
        if not data:
            return seen


async def test_websocket_fragments_ping_and_close_codes() -> None:
    async with served() as address:
        stream, conn = await _websocket(address)
        async with stream:
            with trio.fail_after(10):
                await stream.send_all(
                    conn.send(ws_events.TextMessage("hel", message_finished=False))
                    + conn.send(ws_events.TextMessage("lo", message_finished=True))
                )
                texts: list[str] = []
                while "".join(texts) != "hello":
                    for event in await _events(stream, conn, ws_events.TextMessage):
                        if isinstance(event, ws_events.TextMessage):
                            texts.append(event.data)
                await stream.send_all(conn.send(ws_events.Ping(b"are you there")))
                events = await _events(stream, conn, ws_events.Pong)
                assert any(isinstance(e, ws_events.Pong) and e.payload == b"are you there"
                           for e in events)
                await stream.send_all(conn.send(ws_events.CloseConnection(code=4000)))
                events = await _events(stream, conn, ws_events.CloseConnection)
                assert isinstance(events[-1], ws_events.CloseConnection)


async def test_idle_keep_alive_connections_are_closed() -> None:
    async with served(_config(keep_alive_timeout=0.5)) as address:
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            with trio.fail_after(10):
                async for chunk in stream:  # the response, then the close when idle
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"Hello, world!")


@pytest.mark.parametrize("connections", [1000])
async def test_slowloris_connections_are_cut_while_others_are_served(connections: int) -> None:
    """1 000 clients trickle a request head one byte at a time; each is cut when the keep-alive
    timeout (here 1 s) passes without a complete request, and a normal client is served
    throughout."""
    cut = 0

    async def trickle(address: BoundAddress) -> None:
        nonlocal cut
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            try:
                for byte in b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 10_000:
                    await stream.send_all(bytes([byte]))
                    with trio.move_on_after(0.5):
                        if await stream.receive_some() == b"":
                            break
            except trio.BrokenResourceError:
                pass
            cut += 1

    async with served(_config(keep_alive_timeout=1)) as address:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for _ in range(connections):
                    nursery.start_soon(trickle, address)
                served_meanwhile = 0
                # httpx's 5 s connect timeout is shorter than a SYN retry behind 1 000 opening
                # connections on a loaded machine; the test's fail_after bounds the wait instead.
                # A new connection per request: a kept-alive one can be closed by the server's
                # 1 s keep-alive timeout just as the next request goes out (a loaded machine
                # stretches the 50 ms pause), which is the client's race, not a server fault.
                async with httpx.AsyncClient(
                    timeout=50, limits=httpx.Limits(max_keepalive_connections=0)
                ) as client:
                    while cut < connections:
                        try:
                            response = await client.get(f"{address.url}/hello")
                        except httpx.RemoteProtocolError:
                            # On a machine loaded far beyond its cores, this process (which
                            # also runs the 1 000 tricklers) may not get a request head out
                            # within the 1 s timeout either, and is cut like them: try again.
                            continue
                        assert response.text == "Hello, world!"
                        served_meanwhile += 1
                        await trio.sleep(0.05)
        assert cut == connections
        assert served_meanwhile > 0


async def test_graceful_shutdown_closes_idle_connections_at_once() -> None:
    """An idle keep-alive connection does not hold the shutdown for its graceful_timeout: the
    server closes it at once and serve() returns (the hang cap is half that timeout)."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            address: BoundAddress = await nursery.start(
                partial(serve, app, "127.0.0.1:0", graceful_timeout=30)
            )
            stream = await trio.open_tcp_stream(address.host, address.port)
            await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            response = b""
            while not response.endswith(b"Hello, world!"):
                response += await stream.receive_some()
            assert response.startswith(b"HTTP/1.1 200")
            nursery.cancel_scope.cancel()  # shut down while the connection is idle
        async with stream:
            assert await stream.receive_some() == b""  # closed by the server


async def test_a_cancelled_application_stays_cancelled_even_when_it_also_failed() -> None:
    """The app call is cancelled while one of its tasks fails: the failure is logged and the
    cancellation goes on (it used to be swallowed with the group)."""
    from trionet.asgi._worker import _run_app

    logged: list[str] = []
    sent: list[object] = []

    class Log:
        async def exception(self, message: str) -> None:
            logged.append(message)

    class Config:
        log = Log()

    async def failing(scope: object, receive: object, send: object, *_: object) -> None:
        async def boom() -> None:
            raise ValueError("boom")  # before any checkpoint: it fails despite the cancel

        async with trio.open_nursery() as nursery:
            nursery.start_soon(boom)
            nursery.start_soon(trio.sleep_forever)

    async def send(message: object) -> None:
        sent.append(message)

    with trio.CancelScope() as outer:
        outer.cancel()
        await _run_app(failing, Config(), {}, None, send)  # type: ignore[arg-type]
    assert outer.cancelled_caught
    assert logged == ["Error in ASGI Framework"]
    assert sent == [None]
