"""The server over real loopback sockets: keep-alive, framing, bad input, timeouts, sessions."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio
from aproto_helpers import ENCODER, RawConn, echo_server, error_reply, raw_packet, start
from hypothesis import given, settings, strategies as st

from trionet.aproto import (
    ERR_HEADER_INVALID,
    ERR_REQUEST_MALFORMED,
    ERR_SESSION_LIMIT_REACHED,
    ERR_TIMED_OUT,
    Filters,
    HandlerClient,
    Packet,
    PacketEncoder,
    Server,
)
from trionet.errors import ConfigurationError

# -- keep-alive and close-after-reply -------------------------------------------------------------


async def test_keep_alive_many_requests_on_one_connection(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server())
    conn = await RawConn.open(port)
    for i in range(50):
        await conn.send_fields({"i": i}, "json" if i % 2 else "ziproto")
        assert await conn.reply() == {"echo": {"i": i}, "from": "127.0.0.1"}
    await conn.aclose()


async def test_close_after_reply_mode(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server(keep_alive=False))
    for i in range(3):
        conn = await RawConn.open(port)
        await conn.send_fields({"i": i})
        assert (await conn.reply())["echo"] == {"i": i}
        await conn.expect_eof()
        await conn.aclose()


async def test_close_after_reply_mode_with_pipelined_packets_answers_the_first(
    nursery: trio.Nursery,
) -> None:
    port = await start(nursery, echo_server(keep_alive=False))
    conn = await RawConn.open(port)
    await conn.send(ENCODER.encode({"i": 1}) + ENCODER.encode({"i": 2}))
    assert (await conn.reply())["echo"] == {"i": 1}
    await conn.expect_eof()
    await conn.aclose()


async def test_replies_keep_the_encoding_of_each_packet(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server())
    conn = await RawConn.open(port)
    await conn.send_fields({"a": 1}, "ziproto")
    assert (await conn.reply_body())[:2] == b"\x16\x01"
    await conn.send_fields({"a": 1}, "json")
    assert (await conn.reply_body())[:2] == b"\x16\x00"
    await conn.aclose()


# -- exact framing --------------------------------------------------------------------------------


async def test_packet_split_byte_by_byte(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server())
    conn = await RawConn.open(port)
    for i in range(3):
        for byte in ENCODER.encode({"split": i}):
            await conn.send(bytes([byte]))
            await trio.sleep(0.001)
        assert (await conn.reply())["echo"] == {"split": i}
    await conn.aclose()


async def test_pipelined_packets_are_all_answered_in_order(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server())
    conn = await RawConn.open(port)
    await conn.send(b"".join(ENCODER.encode({"n": n}) for n in range(200)))
    for n in range(200):
        assert (await conn.reply())["echo"] == {"n": n}
    await conn.aclose()


@pytest.mark.parametrize("header_size", [1, 2, 4, 8])
@pytest.mark.parametrize("byteorder", ["big", "little"])
async def test_header_sizes_and_byte_orders(
    nursery: trio.Nursery, header_size: int, byteorder: Any
) -> None:
    port = await start(nursery, echo_server(header_size=header_size, byteorder=byteorder))
    conn = await RawConn.open(port, header_size=header_size, byteorder=byteorder)
    encoder = PacketEncoder(header_size=header_size, byteorder=byteorder)
    await conn.send(encoder.encode({"hs": header_size}) + encoder.encode({"x": 1}, "ziproto"))
    assert (await conn.reply())["echo"] == {"hs": header_size}
    assert (await conn.reply())["echo"] == {"x": 1}
    await conn.aclose()


# -- bad input: every bad packet gets its reply, the server keeps serving -------------------------

BAD = [
    (b"\x17\x00{}", ERR_HEADER_INVALID, "json"),
    (b"\x16\x07{}", ERR_HEADER_INVALID, "json"),
    (b"\x16\x00{broken", ERR_REQUEST_MALFORMED, "json"),
    (b"\x16\x00[1, 2, 3]", ERR_REQUEST_MALFORMED, "json"),
    (b"\x16\x01\x93\x01\x02\x03", ERR_REQUEST_MALFORMED, "ziproto"),
    (b"\x16\x01\xc1", ERR_REQUEST_MALFORMED, "ziproto"),
    (b"\x16", ERR_REQUEST_MALFORMED, "json"),
    (b"", ERR_REQUEST_MALFORMED, "json"),
]


@pytest.mark.parametrize(("body", "code", "encoding"), BAD)
async def test_bad_packet_gets_its_error_and_the_connection_stays_open(
    nursery: trio.Nursery, body: bytes, code: str, encoding: Any
) -> None:
    port = await start(nursery, echo_server())
    conn = await RawConn.open(port)
    await conn.send(raw_packet(body))
    reply_body = await conn.reply_body()
    assert reply_body[1] == (0 if encoding == "json" else 1)
    assert PacketEncoder().encode_payload(reply_body[2:], encoding) == ENCODER.error(code, encoding)
    await conn.send_fields({"still": "open"})
    assert (await conn.reply())["echo"] == {"still": "open"}
    await conn.aclose()


async def test_error_reply_bytes_are_exactly_the_originals(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server())
    conn = await RawConn.open(port)
    await conn.send(raw_packet(b"\x17\x00{}"))
    body = await conn.reply_body()
    assert body == b'\x16\x00{"status": "failure", "error": "ERR_HEADER_INVALID"}'
    await conn.aclose()


async def test_oversized_packet_is_refused_then_closed_and_others_unaffected(
    nursery: trio.Nursery,
) -> None:
    port = await start(nursery, echo_server(max_packet_size=1000))
    bystander = await RawConn.open(port)
    conn = await RawConn.open(port)
    await conn.send((10**6).to_bytes(4, "big") + b"\x16\x00{")
    assert await conn.reply() == error_reply(ERR_HEADER_INVALID)
    await conn.expect_eof()
    await conn.aclose()
    await bystander.send_fields({"ok": True})
    assert (await bystander.reply())["echo"] == {"ok": True}
    await bystander.aclose()


async def test_garbage_header_then_eof_mid_packet(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server())
    conn = await RawConn.open(port)
    await conn.send(b"\x00\x00\x00\x40\x16\x00{")  # announces 64 bytes, sends 3
    await conn.stream.send_eof()
    assert await conn.reply() == error_reply(ERR_REQUEST_MALFORMED)
    await conn.expect_eof()
    await conn.aclose()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=20).map(
                lambda d: ("ok", d)
            ),
            st.sampled_from(BAD).map(lambda b: ("bad", b)),
        ),
        min_size=1,
        max_size=15,
    ),
    st.lists(st.integers(1, 40), min_size=1, max_size=8),
)
async def test_any_mix_of_good_and_bad_packets_in_any_split(
    items: list[tuple[str, Any]], steps: list[int]
) -> None:
    wire = b""
    expected: list[Any] = []
    for kind, value in items:
        if kind == "ok":
            wire += ENCODER.encode(value, "ziproto" if len(value) % 2 else "json")
            expected.append({"echo": value, "from": "127.0.0.1"})
        else:
            body, code, _ = value
            wire += raw_packet(body)
            expected.append(error_reply(code))
    async with trio.open_nursery() as nursery:
        port = await start(nursery, echo_server())
        conn = await RawConn.open(port)
        pos = 0
        index = 0
        while pos < len(wire):
            step = steps[index % len(steps)]
            await conn.send(wire[pos : pos + step])
            pos += step
            index += 1
        replies = [await conn.reply() for _ in expected]
        assert replies == expected
        await conn.aclose()
        nursery.cancel_scope.cancel()


# -- timeouts -------------------------------------------------------------------------------------


async def test_idle_timeout_sends_err_timed_out_and_closes(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server(timeout=0.2))
    conn = await RawConn.open(port)
    await conn.send_fields({"a": 1})
    assert (await conn.reply())["echo"] == {"a": 1}
    assert await conn.reply() == error_reply(ERR_TIMED_OUT)
    await conn.expect_eof()
    await conn.aclose()


async def test_idle_timeout_counts_from_the_packet_start_not_each_chunk(
    nursery: trio.Nursery,
) -> None:
    port = await start(nursery, echo_server(timeout=0.3))
    conn = await RawConn.open(port)
    packet = ENCODER.encode({"slow": "loris"})
    for byte in packet[:-1]:  # a byte every 0.05 s: never idle 0.3 s, but the packet is slower
        await conn.send(bytes([byte]))
        await trio.sleep(0.05)
    assert await conn.reply() == error_reply(ERR_TIMED_OUT)
    await conn.aclose()


async def test_slow_handler_is_not_an_idle_connection(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100, timeout=0.1)

    @server.add_handler()
    async def slow(client: HandlerClient, packet: Packet) -> None:
        await trio.sleep(0.4)
        await client.send({"done": True})

    port = await start(nursery, server)
    conn = await RawConn.open(port)
    await conn.send_fields({"go": 1})
    assert await conn.reply() == {"done": True}
    await conn.aclose()


async def test_session_timeout_bounds_a_busy_connection(nursery: trio.Nursery) -> None:
    port = await start(nursery, echo_server(timeout=None, session_timeout=0.3))
    conn = await RawConn.open(port)
    replies: list[Any] = []
    with trio.fail_after(5):
        while True:
            await conn.send_fields({"x": 1})
            reply = await conn.reply()
            replies.append(reply)
            if reply == error_reply(ERR_TIMED_OUT):
                break
            await trio.sleep(0.02)
    assert len(replies) > 2
    await conn.expect_eof()
    await conn.aclose()


# -- sessions -------------------------------------------------------------------------------------


async def test_session_limit_per_peer_ip(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100, session_limit=2)

    @server.add_handler()
    async def count(client: HandlerClient, packet: Packet) -> None:
        sessions = client.get_sessions()
        assert client.session in sessions
        await client.send({"sessions": len(sessions)})

    port = await start(nursery, server)
    first = await RawConn.open(port)
    second = await RawConn.open(port)
    await second.send_fields({})
    assert await second.reply() == {"sessions": 2}
    third = await RawConn.open(port)
    await third.send_fields({})
    assert await third.reply() == error_reply(ERR_SESSION_LIMIT_REACHED)
    await third.expect_eof()
    await third.aclose()
    await first.aclose()
    with trio.fail_after(5):
        while server.sessions.count("127.0.0.1") > 1:  # noqa: ASYNC110 - polls server state
            await trio.sleep(0.01)
    fourth = await RawConn.open(port)
    await fourth.send_fields({})
    assert await fourth.reply() == {"sessions": 2}
    await fourth.aclose()
    await second.aclose()


async def test_peer_address_is_the_clients_not_the_servers(nursery: trio.Nursery) -> None:
    seen: list[tuple[str, int]] = []
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler()
    async def who(client: HandlerClient, packet: Packet) -> None:
        seen.append((client.address, client.port))
        await client.send({"ok": 1})

    port = await start(nursery, server)
    conn = await RawConn.open(port)
    await conn.send_fields({})
    await conn.reply()
    assert seen == [("127.0.0.1", conn.stream.socket.getsockname()[1])]
    assert seen[0][1] != port
    await conn.aclose()


async def test_ipv6_peer_address(nursery: trio.Nursery) -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:  # pragma: no cover - depends on the machine
        pytest.skip("no IPv6 loopback on this machine")
    server = echo_server()
    server.addr = "::1"
    port = await start(nursery, server)
    conn = await RawConn.open(port, host="::1")
    await conn.send_fields({})
    assert (await conn.reply())["from"] == "::1"
    await conn.aclose()


# -- dispatch -------------------------------------------------------------------------------------


async def test_groups_run_in_order_first_match_per_group(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)
    calls: list[str] = []

    @server.add_handler(group=5)
    async def late(client: HandlerClient, packet: Packet) -> None:
        calls.append("late")
        await client.send({"step": "late"})

    @server.add_handler(Filters.Fields(cmd="^hi$"), group=-1)
    async def first(client: HandlerClient, packet: Packet) -> None:
        calls.append("first")
        await client.send({"step": "first"})

    @server.add_handler(group=-1)
    async def shadowed(client: HandlerClient, packet: Packet) -> None:
        calls.append("shadowed")  # pragma: no cover - the first match in group -1 wins

    port = await start(nursery, server)
    assert list(server.handlers) == [-1, 5]
    conn = await RawConn.open(port)
    await conn.send_fields({"cmd": "hi"})
    assert await conn.reply() == {"step": "first"}
    assert await conn.reply() == {"step": "late"}
    assert calls == ["first", "late"]
    await conn.aclose()


async def test_stop_propagation_skips_later_groups_and_keeps_the_connection(
    nursery: trio.Nursery,
) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler(group=0)
    async def gate(client: HandlerClient, packet: Packet) -> None:
        await client.send({"gate": packet["n"]})
        if packet["n"] == 1:
            packet.stop_propagation()

    @server.add_handler(group=1)
    async def after(client: HandlerClient, packet: Packet) -> None:
        await client.send({"after": packet["n"]})

    port = await start(nursery, server)
    conn = await RawConn.open(port)
    await conn.send_fields({"n": 1})
    await conn.send_fields({"n": 2})
    assert [await conn.reply() for _ in range(3)] == [{"gate": 1}, {"gate": 2}, {"after": 2}]
    await conn.aclose()


async def test_no_matching_handler_sends_nothing(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler(Filters.Fields(cmd="ping"))
    async def ping(client: HandlerClient, packet: Packet) -> None:
        await client.send({"pong": True})

    port = await start(nursery, server)
    conn = await RawConn.open(port)
    await conn.send_fields({"other": 1})
    await conn.send_fields({"cmd": "ping"})
    assert await conn.reply() == {"pong": True}
    await conn.aclose()


async def test_handler_close_and_send_close(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler(Filters.Fields(how="send"))
    async def send_close(client: HandlerClient, packet: Packet) -> None:
        await client.send({"bye": 1}, close=True)
        assert client.closed
        with pytest.raises(trio.ClosedResourceError):
            await client.send({"too": "late"})

    @server.add_handler(Filters.Fields(how="close"))
    async def close(client: HandlerClient, packet: Packet) -> None:
        await client.send({"bye": 2})
        await client.close()
        await client.close()  # idempotent

    @server.add_handler(group=1)
    async def never(client: HandlerClient, packet: Packet) -> None:  # pragma: no cover
        raise AssertionError("dispatch must stop after close()")

    port = await start(nursery, server)
    for how, n in (("send", 1), ("close", 2)):
        conn = await RawConn.open(port)
        await conn.send_fields({"how": how})
        await conn.send_fields({"how": how})  # pipelined: dropped after the close
        assert await conn.reply() == {"bye": n}
        await conn.expect_eof()
        await conn.aclose()


async def test_closing_another_session(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler(Filters.Fields(cmd="kick"))
    async def kick(client: HandlerClient, packet: Packet) -> None:
        for session in client.get_sessions():
            if session != client.session:
                assert session.get_client() is not client
                await session.close()
        await client.send({"kicked": True})

    @server.add_handler(Filters.Fields(cmd="hello"))
    async def hello(client: HandlerClient, packet: Packet) -> None:
        await client.send({"hello": True})

    port = await start(nursery, server)
    idle = await RawConn.open(port)
    admin = await RawConn.open(port)
    await idle.send_fields({"cmd": "hello"})  # answered: its session is registered
    assert await idle.reply() == {"hello": True}
    await admin.send_fields({"cmd": "kick"})
    assert await admin.reply() == {"kicked": True}
    await idle.expect_eof()
    await idle.aclose()
    await admin.aclose()


async def test_a_failing_handler_closes_only_its_connection(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server("127.0.0.1", 0, logging_level=logging.ERROR)

    @server.add_handler(Filters.Fields(cmd="boom"))
    async def boom(client: HandlerClient, packet: Packet) -> None:
        raise RuntimeError("handler bug")

    @server.add_handler()
    async def fine(client: HandlerClient, packet: Packet) -> None:
        await client.send({"fine": True})

    port = await start(nursery, server)
    other = await RawConn.open(port)
    conn = await RawConn.open(port)
    with caplog.at_level(logging.ERROR, logger="trionet.aproto.server"):
        await conn.send_fields({"cmd": "boom"})
        await conn.expect_eof()
    assert "a handler failed" in caplog.text
    assert "handler bug" in caplog.text
    await conn.aclose()
    await other.send_fields({"x": 1})
    assert await other.reply() == {"fine": True}
    await other.aclose()


async def test_concurrent_sends_from_handler_tasks(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler()
    async def fan_out(client: HandlerClient, packet: Packet) -> None:
        async with trio.open_nursery() as tasks:
            for i in range(20):
                tasks.start_soon(client.send, {"i": i, "pad": "x" * 5000})

    port = await start(nursery, server)
    conn = await RawConn.open(port)
    await conn.send_fields({})
    got = sorted([(await conn.reply())["i"] for _ in range(20)])
    assert got == list(range(20))
    await conn.aclose()


async def test_packet_without_encoding_follows_the_client(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler()
    async def reply(client: HandlerClient, packet: Packet) -> None:
        assert packet.sender is client
        assert client.encoding == packet.encoding
        await client.send(Packet({"same": True}))
        await client.send(Packet({"json": True}, encoding="json"))

    port = await start(nursery, server)
    conn = await RawConn.open(port)
    await conn.send_fields({}, "ziproto")
    assert (await conn.reply_body())[1] == 1
    assert (await conn.reply_body())[1] == 0
    await conn.aclose()


# -- registration and construction ----------------------------------------------------------------


def test_register_handler_validates() -> None:
    server = Server(logging_level=100)

    def sync_handler(client: Any, packet: Any) -> None:
        pass

    async def ok(client: Any, packet: Any) -> None:
        pass

    with pytest.raises(TypeError, match="async function"):
        server.register_handler(sync_handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Filter instances"):
        server.register_handler(ok, "not a filter")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="group"):
        server.register_handler(ok, group="1")  # type: ignore[arg-type]
    assert server.add_handler()(ok) is ok  # the decorator returns the function
    assert repr(server.handlers[0][0]).startswith("Handler(")


def test_servers_do_not_share_handlers_or_sessions() -> None:
    a = Server(logging_level=100)
    b = Server(logging_level=100)

    @a.add_handler()
    async def only_a(client: Any, packet: Any) -> None:
        pass

    assert a.handlers and not b.handlers
    assert a.sessions is not b.sessions


def test_construction_has_no_global_side_effects() -> None:
    before_timeout = socket.getdefaulttimeout()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    Server(timeout=5, logging_level=logging.DEBUG)
    assert socket.getdefaulttimeout() == before_timeout
    assert (list(root.handlers), root.level) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port"),
        ({"header_size": 9}, "header_size"),
        ({"byteorder": "middle"}, "byteorder"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"session_limit": -1}, "session_limit"),
        ({"buf": 0}, "buf"),
        ({"encoding": "xml"}, "encoding"),
        ({"tls": True}, "tls"),
        ({"addr": 127}, "addr"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Server(**kwargs)


async def test_a_client_that_never_reads_is_timed_out(nursery: trio.Nursery) -> None:
    server = Server("127.0.0.1", 0, logging_level=100, timeout=0.3)
    big = "x" * 1_000_000

    @server.add_handler()
    async def flood(client: HandlerClient, packet: Packet) -> None:
        for _ in range(100):  # far more than the socket buffers hold
            await client.send({"data": big})

    port = await start(nursery, server)
    conn = await RawConn.open(port)
    conn.stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await conn.send_fields({})
    with trio.fail_after(10):
        while server.sessions.count("127.0.0.1"):  # noqa: ASYNC110 - polls server state
            await trio.sleep(0.05)
    await conn.aclose()
    # The server is fine.
    other = await RawConn.open(port)
    await other.aclose()


# -- TLS on a plain port (issue 15, defect 8) -----------------------------------------------------


def packet_of_length(
    length: int, encoding: Any, header_size: int, byteorder: Any
) -> bytes:
    """A valid packet whose Content-Length is exactly *length*."""
    encoder = PacketEncoder(header_size=header_size, byteorder=byteorder)
    base = len(encoder.encode({"pad": ""}, encoding)) - header_size
    for extra in range(length - base, length - base - 8, -1):
        packet = encoder.encode({"pad": "x" * extra}, encoding)
        if len(packet) - header_size == length:
            return packet
    raise AssertionError(f"no packet of length {length}")


@pytest.mark.parametrize(
    ("header_size", "byteorder", "length"),
    [(4, "little", 0x0316), (3, "little", 0x0316), (3, "big", 0x160300), (8, "little", 0x0316)],
)
@pytest.mark.parametrize("encoding", ["json", "ziproto"])
async def test_packets_that_start_like_a_tls_record_are_served(
    nursery: trio.Nursery, header_size: int, byteorder: Any, length: int, encoding: Any
) -> None:
    # Their Content-Length header starts 0x16 0x03 0x00, as a TLS handshake record does.
    packet = packet_of_length(length, encoding, header_size, byteorder)
    assert packet.startswith(b"\x16\x03\x00")
    server = Server("127.0.0.1", 0, logging_level=100, header_size=header_size,
                    byteorder=byteorder)

    @server.add_handler()
    async def size(client: HandlerClient, packet: Packet) -> None:
        await client.send({"size": len(packet["pad"])})

    port = await start(nursery, server)
    conn = await RawConn.open(port, header_size=header_size, byteorder=byteorder)
    try:
        for chunk in (packet[:1], packet[1:3], packet[3:6], packet[6:]):  # split where we sniff
            await conn.send(chunk)
            await trio.sleep(0.01)
        reply = await conn.reply()
        assert reply["size"] > 0, reply
    finally:
        await conn.aclose()


async def test_a_tls_client_hello_on_a_plain_port_is_refused_with_one_warning(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    import ssl

    server = echo_server(logging_level=logging.INFO)
    port = await start(nursery, server)
    caplog.set_level(logging.INFO, logger="trionet.aproto.server")
    caplog.clear()
    # A real ClientHello, delivered one byte at a time.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="x")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    conn = await RawConn.open(port)
    try:
        for i in range(len(hello)):
            await conn.send(hello[i : i + 1])
            if i < 8:
                await trio.sleep(0.01)
        assert await conn.reply() == error_reply(ERR_HEADER_INVALID)
        await conn.expect_eof()
    finally:
        await conn.aclose()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "TLS" in message and "plain TCP" in message and "127.0.0.1:" in message, message
    assert not [r for r in caplog.records if r.exc_info]
    assert server.statistics().rejected == 1
    conn = await RawConn.open(port)  # still serving
    try:
        await conn.send_fields({"ok": 1})
        assert (await conn.reply())["echo"] == {"ok": 1}
    finally:
        await conn.aclose()


# -- unfinished packets are bounded across connections (issue 15, "Also") -------------------------


async def test_unfinished_packets_are_bounded_across_connections(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    mib = 1024 * 1024
    server = echo_server(logging_level=logging.INFO, max_pending_bytes=3 * mib)
    port = await start(nursery, server)
    # Each staller announces a 10 MiB packet (below max_packet_size) and sends 1 MiB of it.
    start_of_big_packet = (10 * mib).to_bytes(4, "big") + b"\x16\x00" + b" " * (mib - 6)

    async def stall() -> RawConn:
        conn = await RawConn.open(port)
        await conn.send(start_of_big_packet)
        return conn

    async def wait_pending(expected: int) -> None:
        with trio.fail_after(10):
            while server.statistics().pending_bytes != expected:  # noqa: ASYNC110 - polls state
                await trio.sleep(0.01)

    stallers = [await stall() for _ in range(3)]
    await wait_pending(3 * mib)
    caplog.clear()
    over = await stall()  # a fourth would take the server beyond 3 MiB: refused and closed
    try:
        assert await over.reply() == error_reply(ERR_HEADER_INVALID)
        await over.expect_eof()
    finally:
        await over.aclose()
    await wait_pending(3 * mib)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "max_pending_bytes" in warnings[0], warnings
    # Small packets are served meanwhile; closing a staller gives its bytes back.
    conn = await RawConn.open(port)
    await conn.send_fields({"n": 1})
    assert (await conn.reply())["echo"] == {"n": 1}
    await stallers.pop().aclose()
    await wait_pending(2 * mib)
    stallers.append(await stall())
    await wait_pending(3 * mib)
    for staller in stallers:
        await staller.aclose()
    await wait_pending(0)
    await conn.send_fields({"n": 2})
    assert (await conn.reply())["echo"] == {"n": 2}
    await conn.aclose()
    assert server.statistics().pending_bytes == 0


async def test_a_finished_big_packet_releases_its_bytes(nursery: trio.Nursery) -> None:
    server = echo_server(max_pending_bytes=1024 * 1024)
    port = await start(nursery, server)
    conn = await RawConn.open(port)
    try:
        for _ in range(3):  # 0.9 MiB packets in small pieces, one after another
            packet = ENCODER.encode({"pad": "x" * 900_000})
            for i in range(0, len(packet), 50_000):
                await conn.send(packet[i : i + 50_000])
            assert len((await conn.reply())["echo"]["pad"]) == 900_000
            assert server.statistics().pending_bytes == 0
    finally:
        await conn.aclose()


def test_max_pending_bytes_option() -> None:
    assert Server().max_pending_bytes == 64 * 1024 * 1024
    assert Server(max_pending_bytes=None).max_pending_bytes is None
    with pytest.raises(ConfigurationError, match="max_pending_bytes"):
        Server(max_pending_bytes=0)
