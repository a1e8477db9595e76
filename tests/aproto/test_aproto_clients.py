"""AsyncClient and the blocking Client: exact reply parsing, pipelining, errors, TLS."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trustme
from aproto_helpers import ENCODER, echo_server, raw_packet, start

from trionet.aproto import (
    AsyncClient,
    Client,
    ConnectionClosed,
    HandlerClient,
    Packet,
    PacketEncoder,
    Server,
)
from trionet.errors import (
    AProtoError,
    ConfigurationError,
    FrameTooLarge,
    IncompleteFrame,
    TLSNotSpoken,
    TLSVerificationError,
)

ScriptedReply = Callable[[trio.SocketStream], Awaitable[None]]


async def scripted_server(nursery: trio.Nursery, script: ScriptedReply) -> int:
    """A raw server: reads the first request (any bytes), then runs *script* on the stream."""

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await script(stream)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


REPLIES = [ENCODER.encode({"n": n}, "ziproto" if n % 2 else "json") for n in range(6)]


async def fragmented_and_pipelined(stream: trio.SocketStream) -> None:
    wire = b"".join(REPLIES)
    # byte by byte for the first two replies, then the rest in one write (pipelined)
    cut = len(REPLIES[0]) + len(REPLIES[1])
    for i in range(cut):
        await stream.send_all(wire[i : i + 1])
        await trio.sleep(0.001)
    await stream.send_all(wire[cut:])
    await stream.send_eof()


async def test_async_client_parses_fragmented_and_pipelined_replies(
    nursery: trio.Nursery,
) -> None:
    port = await scripted_server(nursery, fragmented_and_pipelined)
    async with AsyncClient(tls=False) as client:
        await client.connect("127.0.0.1", port)
        await client.send({"go": 1})
        assert [await client.receive() for _ in range(5)] == [{"n": n} for n in range(5)]
        assert await client.receive_raw() == REPLIES[5]
        assert await client.receive_raw() == b""
        with pytest.raises(ConnectionClosed):
            await client.receive()


def test_blocking_client_parses_fragmented_and_pipelined_replies() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await scripted_server(nursery, fragmented_and_pipelined)
            await trio.to_thread.run_sync(blocking_part, port)
            nursery.cancel_scope.cancel()

    def blocking_part(port: int) -> None:
        with Client(tls=False, timeout=10) as client:
            client.connect("127.0.0.1", port)
            client.send({"go": 1})
            assert [client.receive() for _ in range(5)] == [{"n": n} for n in range(5)]
            assert client.receive_raw() == REPLIES[5]
            assert client.receive_raw() == b""
            with pytest.raises(ConnectionClosed):
                client.receive()

    trio.run(main)


async def truncated(stream: trio.SocketStream) -> None:
    await stream.send_all(REPLIES[0][:-2])
    await stream.send_eof()


async def bad_version(stream: trio.SocketStream) -> None:
    await stream.send_all(raw_packet(b"\x17\x00{}") + raw_packet(b"\x16\x00[1]"))


async def huge(stream: trio.SocketStream) -> None:
    await stream.send_all((10**9).to_bytes(4, "big"))


async def test_async_client_errors(nursery: trio.Nursery) -> None:
    for script, check in [
        (truncated, IncompleteFrame),
        (huge, FrameTooLarge),
    ]:
        port = await scripted_server(nursery, script)
        async with AsyncClient(tls=False, max_packet_size=1000) as client:
            await client.connect("127.0.0.1", port)
            await client.send({})
            with pytest.raises(check):
                await client.receive()
    port = await scripted_server(nursery, bad_version)
    async with AsyncClient(tls=False) as client:
        await client.connect("127.0.0.1", port)
        await client.send({})
        with pytest.raises(AProtoError, match="Protocol-Version 23") as info:
            await client.receive()
        assert info.value.fault == "remote"
        assert info.value.error_code == "ERR_HEADER_INVALID"
        with pytest.raises(AProtoError, match="not a map"):
            await client.receive()


def test_blocking_client_errors() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ports = [await scripted_server(nursery, s) for s in (truncated, huge, bad_version)]
            await trio.to_thread.run_sync(blocking_part, ports)
            nursery.cancel_scope.cancel()

    def blocking_part(ports: list[int]) -> None:
        for port, check in zip(ports, (IncompleteFrame, FrameTooLarge, AProtoError), strict=True):
            with Client(tls=False, timeout=10, max_packet_size=1000) as client:
                client.connect("127.0.0.1", port)
                client.send({})
                with pytest.raises(check):
                    client.receive()

    trio.run(main)


async def test_async_client_against_the_server(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server(header_size=2, byteorder="little"))
    async with AsyncClient(header_size=2, byteorder="little", tls=False, encoding="ziproto") as c:
        await c.connect("127.0.0.1", port)
        assert c.connected
        assert (await c.request({"a": 1}))["echo"] == {"a": 1}
        assert (await c.request('{"json": "text"}'))["echo"] == {"json": "text"}
        assert (await c.request(Packet({"p": 1}, encoding="json")))["echo"] == {"p": 1}
        replies = await c.request_many({"i": i} for i in range(100))
        assert [r["echo"] for r in replies] == [{"i": i} for i in range(100)]
        await c.send_many([{"x": 1}, {"x": 2}])
        assert [(await c.receive())["echo"] for _ in range(2)] == [{"x": 1}, {"x": 2}]
        with pytest.raises(AProtoError, match="not valid JSON"):
            await c.send("{nope")
        with pytest.raises(AProtoError, match="JSON object"):
            await c.send("[1]")
        with pytest.raises(TypeError):
            await c.send(5)  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="already connected"):
            await c.connect("127.0.0.1", port)
    assert "not connected" in repr(c)
    with pytest.raises(trio.ClosedResourceError, match="not connected"):
        await c.request({})
    await c.disconnect()  # no error when not connected


async def test_concurrent_requests_and_cancelled_requests(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler()
    async def slow_first(client: HandlerClient, packet: Packet) -> None:
        if packet.get("slow"):
            await trio.sleep(0.3)
        await client.send({"n": packet["n"]})

    port = await start(nursery, server)
    async with AsyncClient(tls=False) as client:
        await client.connect("127.0.0.1", port)
        with trio.move_on_after(0.05):
            await client.request({"n": 0, "slow": True})
        # The cancelled request's late reply is skipped, not returned to the next request.
        assert await client.request({"n": 1}) == {"n": 1}
        results: dict[int, Any] = {}

        async def ask(n: int) -> None:
            results[n] = await client.request({"n": n})

        async with trio.open_nursery() as tasks:
            for n in range(2, 12):
                tasks.start_soon(ask, n)
        assert results == {n: {"n": n} for n in range(2, 12)}


async def test_async_client_timeout(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler()
    async def silent(client: HandlerClient, packet: Packet) -> None:
        pass

    port = await start(nursery, server)
    async with AsyncClient(tls=False, timeout=0.1) as client:
        await client.connect("127.0.0.1", port)
        with pytest.raises(trio.TooSlowError):
            await client.request({"no": "reply"})


def test_blocking_client_against_the_server_in_a_thread() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await start(nursery, echo_server())
            await trio.to_thread.run_sync(blocking_part, port)
            nursery.cancel_scope.cancel()

    def blocking_part(port: int) -> None:
        with Client(tls=False, encoding="ziproto", timeout=10) as client:
            client.connect("127.0.0.1", port)
            for i in range(20):
                assert client.request({"i": i})["echo"] == {"i": i}
            replies = client.request_many([{"p": i} for i in range(50)])
            assert [r["echo"] for r in replies] == [{"p": i} for i in range(50)]
            client.send('{"text": 1}')
            raw = client.receive_raw()
            assert raw[:4] == (len(raw) - 4).to_bytes(4, "big")
            assert raw[4:6] == b"\x16\x01"  # JSON text is sent in the client's encoding
            with pytest.raises(RuntimeError, match="already connected"):
                client.connect("127.0.0.1", port)
        with Client(tls=False, timeout=0.2) as quiet:
            quiet.connect("127.0.0.1", port)
            with pytest.raises(TimeoutError):
                quiet.receive()
        with pytest.raises(ConnectionError, match="not connected"):
            Client(tls=False).send({})

    trio.run(main)


def test_client_argument_validation() -> None:
    for cls in (Client, AsyncClient):
        with pytest.raises(ConfigurationError):
            cls(byteorder="middle")
        with pytest.raises(ConfigurationError):
            cls(header_size=0)
        with pytest.raises(ValueError, match="encoding"):
            cls(encoding="xml")
        with pytest.raises(ConfigurationError):
            cls(tls="yes")  # type: ignore[arg-type]
        assert "not connected" in repr(cls(tls=False))


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA) -> Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    server = Server("127.0.0.1", 0, logging_level=100, tls=context)

    @server.add_handler()
    async def echo(client: HandlerClient, packet: Packet) -> None:
        await client.send({"secure": packet["n"], "peer": client.address})

    return server


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_async_client_verified(nursery: trio.Nursery, ca: trustme.CA) -> None:
    port = await start(nursery, tls_server(ca))
    async with AsyncClient(tls=client_context(ca)) as client:
        await client.connect("127.0.0.1", port)
        for n in range(3):
            assert await client.request({"n": n}) == {"secure": n, "peer": "127.0.0.1"}
        assert await client.request_many([{"n": 7}, {"n": 8}]) == [
            {"secure": 7, "peer": "127.0.0.1"},
            {"secure": 8, "peer": "127.0.0.1"},
        ]
    async with AsyncClient(tls=client_context(ca)) as client:  # name checked too
        await client.connect("127.0.0.1", port, server_hostname="localhost")
        assert (await client.request({"n": 1}))["secure"] == 1


async def test_tls_is_verified_by_default(nursery: trio.Nursery, ca: trustme.CA) -> None:
    port = await start(nursery, tls_server(ca))
    client = AsyncClient()  # tls=True: system CAs, which do not trust our test CA
    with pytest.raises(trio.BrokenResourceError) as info:
        await client.connect("127.0.0.1", port)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert not client.connected
    wrong_name = AsyncClient(tls=client_context(ca))
    with pytest.raises(trio.BrokenResourceError):
        await wrong_name.connect("127.0.0.1", port, server_hostname="example.com")
    # the server survives the failed handshakes
    async with AsyncClient(tls=client_context(ca)) as good:
        await good.connect("127.0.0.1", port)
        assert (await good.request({"n": 5}))["secure"] == 5


def test_tls_blocking_client(ca: trustme.CA) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await start(nursery, tls_server(ca))
            await trio.to_thread.run_sync(blocking_part, port)
            nursery.cancel_scope.cancel()

    def blocking_part(port: int) -> None:
        with Client(tls=client_context(ca), timeout=10) as client:
            client.connect("127.0.0.1", port)
            assert client.request({"n": 3}) == {"secure": 3, "peer": "127.0.0.1"}
        with pytest.raises(TLSVerificationError) as info:
            Client(timeout=10).connect("127.0.0.1", port)  # tls=True by default, verified
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)

    trio.run(main)


async def test_plain_client_against_tls_server_fails_cleanly(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    port = await start(nursery, tls_server(ca))
    async with AsyncClient(tls=False, timeout=5) as client:
        await client.connect("127.0.0.1", port)
        await client.send({"n": 1})
        with pytest.raises((ConnectionClosed, trio.BrokenResourceError, AProtoError)):
            await client.receive()


def test_packet_encoder_is_shared_by_both_clients() -> None:
    # The clients send exactly what the encoder builds.
    assert PacketEncoder().encode({"a": 1}) == b'\x00\x00\x00\x09\x16\x00{"a":1}'


# -- TLS failures say what happened (issue 15, defects 7 and 8) ---------------------------------


def tls_ca_server(tls_ca: trustme.CA) -> Server:
    """A TLS server whose certificate (for localhost and 127.0.0.1) comes from ``tls_ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    server = Server("127.0.0.1", 0, logging_level=100, tls=context)

    @server.add_handler()
    async def echo(client: HandlerClient, packet: Packet) -> None:
        await client.send({"secure": packet["n"]})

    return server


def assert_unverified(error: TLSVerificationError, host: str, reason: str) -> None:
    text = str(error)
    assert "certificate" in text and "could not be verified" in text, text
    assert host in text and error.host == host, text
    assert reason in text, text  # the ssl library's reason
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)


async def test_tls_verification_failures_name_the_host_and_the_reason(
    nursery: trio.Nursery, tls_ca: trustme.CA
) -> None:
    port = await start(nursery, tls_ca_server(tls_ca))
    other_ca = client_context(trustme.CA())  # trusts a CA that did not issue the server's cert
    trusting = client_context(tls_ca)

    client = AsyncClient(tls=other_ca, timeout=10)
    with pytest.raises(TLSVerificationError) as info:
        await client.connect("127.0.0.1", port)
    assert_unverified(info.value, "127.0.0.1", "unable to get local issuer certificate")
    assert isinstance(info.value, trio.BrokenResourceError)  # what older code caught
    assert not client.connected

    client = AsyncClient(tls=trusting, timeout=10)
    with pytest.raises(TLSVerificationError) as info:
        await client.connect("127.0.0.1", port, server_hostname="example.com")
    assert_unverified(info.value, "example.com", "Hostname mismatch")

    def blocking() -> None:
        with pytest.raises(TLSVerificationError) as info:
            Client(tls=other_ca, timeout=10).connect("127.0.0.1", port)
        assert_unverified(info.value, "127.0.0.1", "unable to get local issuer certificate")
        with pytest.raises(TLSVerificationError) as info:
            Client(tls=trusting, timeout=10).connect(
                "127.0.0.1", port, server_hostname="example.com"
            )
        assert_unverified(info.value, "example.com", "Hostname mismatch")
        with Client(tls=trusting, timeout=10) as good:  # the server survived all of that
            good.connect("127.0.0.1", port, server_hostname="localhost")
            assert good.request({"n": 1}) == {"secure": 1}

    await trio.to_thread.run_sync(blocking)


def assert_not_tls(error: TLSNotSpoken, port: int) -> None:
    text = str(error)
    assert "does not speak TLS" in text, text
    assert "tls=False" in text and "certfile" in text, text  # what to do, on both ends
    assert str(port) in text and error.host == "127.0.0.1", text


@pytest.mark.parametrize(("header_size", "byteorder"), [(4, "big"), (2, "little"), (1, "big")])
async def test_default_client_against_default_server_says_what_to_do(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, header_size: int, byteorder: str
) -> None:
    server = Server("127.0.0.1", 0, header_size=header_size, byteorder=byteorder)  # plain TCP

    @server.add_handler()
    async def echo(client: HandlerClient, packet: Packet) -> None:
        await client.send({"plain": packet["n"]})

    port = await start(nursery, server)
    caplog.set_level(logging.INFO, logger="trionet.aproto.server")
    caplog.clear()
    client = AsyncClient(header_size=header_size, byteorder=byteorder, timeout=10)  # tls=True
    with pytest.raises(TLSNotSpoken) as info:
        await client.connect("127.0.0.1", port)
    assert_not_tls(info.value, port)
    assert not client.connected

    def blocking() -> None:
        with pytest.raises(TLSNotSpoken) as info:
            Client(header_size=header_size, byteorder=byteorder, timeout=10).connect(
                "127.0.0.1", port
            )
        assert_not_tls(info.value, port)

    await trio.to_thread.run_sync(blocking)

    # The server goes on serving, and logged one warning per TLS attempt, naming the client.
    async with AsyncClient(header_size=header_size, byteorder=byteorder, tls=False) as plain:
        await plain.connect("127.0.0.1", port)
        assert await plain.request({"n": 2}) == {"plain": 2}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    for record in warnings:
        message = record.getMessage()
        assert record.levelno == logging.WARNING
        assert "TLS" in message and "127.0.0.1:" in message, message
        assert "\n" not in message and record.exc_info is None
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert server.statistics().handler_errors == 0


async def test_a_stalled_tls_handshake_is_closed_after_the_idle_timeout(
    nursery: trio.Nursery, tls_ca: trustme.CA
) -> None:
    server = tls_ca_server(tls_ca)
    server.timeout = 0.5
    port = await start(nursery, server)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(b"\x16\x03\x01\x02\x00\x01")  # half a ClientHello, then silence
        with trio.fail_after(0.5 + 5 + 2 + 5):  # timeout + error-reply bound + linger + slack
            try:
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:  # closed with unread data: a reset, also fine
                pass
        assert server.statistics().open_sessions == 0
    finally:
        await stream.aclose()
