"""Filters (Fields, Ip, APIFactory, composition) and API keys, alone and behind a real server."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import string
from pathlib import Path
from typing import Any

import pytest
import trio
from aproto_helpers import RawConn, error_reply, raw_packet, start
from hypothesis import given, settings, strategies as st

from trionet.aproto import (
    APIKeyFactory,
    Filter,
    Filters,
    HandlerClient,
    MemoryKeyStorage,
    Packet,
    Server,
    SQLiteKeyStorage,
)
from trionet.aproto._apikeys import MAX_KEY_SIZE
from trionet.errors import ConfigurationError


class FakeClient:
    """Stands in for a HandlerClient in pure filter checks (filters only read .ip/.address)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.ip = ipaddress.ip_address(address)


def check(f: Filter, fields: dict[str, Any], address: str = "127.0.0.1") -> bool:
    return f.check(FakeClient(address), Packet(fields))  # type: ignore[arg-type]


# -- Fields ---------------------------------------------------------------------------------------


def test_fields_exact_key_set_and_regexes() -> None:
    f = Filters.Fields(cmd="ping", token=None)
    assert check(f, {"cmd": "ping", "token": 5})
    assert check(f, {"cmd": "pingpong", "token": None})  # re.match anchors at the start only
    assert not check(f, {"cmd": "ping"})  # missing field
    assert not check(f, {"cmd": "ping", "token": 1, "extra": 2})  # extra field
    assert not check(f, {"cmd": "pong", "token": 1})
    assert check(Filters.Fields(n=r"\d+$"), {"n": 42})  # values are matched as str(value)
    assert check(Filters.Fields(cmd=re.compile("p.ng$")), {"cmd": "pong"})
    assert check(Filters.Fields(), {})
    assert not check(Filters.Fields(), {"a": 1})
    assert "Filters.Fields" in repr(f)


def test_fields_refuses_bad_patterns() -> None:
    with pytest.raises(ConfigurationError, match="invalid regular expression"):
        Filters.Fields(cmd="(")
    with pytest.raises(ConfigurationError, match="must be None"):
        Filters.Fields(cmd=5)  # type: ignore[arg-type]


# -- Ip -------------------------------------------------------------------------------------------


def test_ip_v4_v6_cidr_and_mapped_addresses() -> None:
    f = Filters.Ip(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])
    assert check(f, {}, "127.0.0.1")
    assert check(f, {}, "10.200.3.4")
    assert check(f, {}, "::1")
    assert check(f, {}, "fd12::5")
    assert not check(f, {}, "192.168.1.1")
    assert not check(f, {}, "fe80::1")
    assert "::ffff:127.0.0.1" in f  # IPv4-mapped IPv6 is the IPv4 address
    assert "10.1.2.3" in f
    assert "not an ip" not in f
    assert 42 not in f
    assert Filters.Ip("::ffff:10.0.0.0/104").ips == frozenset({"10.0.0.0/8"})
    assert Filters.Ip("192.168.1.7/32").ips == frozenset({"192.168.1.7"})


def test_ip_is_updatable_at_runtime() -> None:
    f = Filters.Ip("127.0.0.1")
    assert not check(f, {}, "192.168.0.9")
    f.add("192.168.0.0/16")
    assert check(f, {}, "192.168.0.9")
    f.remove("192.168.0.0/16")
    assert not check(f, {}, "192.168.0.9")
    with pytest.raises(KeyError):
        f.remove("1.2.3.4")
    f.discard("1.2.3.4")  # no error
    f.ips = ["8.8.8.8"]
    assert f.ips == frozenset({"8.8.8.8"})
    assert not check(f, {}, "127.0.0.1")
    assert repr(f) == "Filters.Ip(['8.8.8.8'])"


@pytest.mark.parametrize("bad", ["300.1.1.1", "hello", "10.0.0.0/99", ""])
def test_ip_refuses_invalid_entries(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid IP"):
        Filters.Ip(bad)
    with pytest.raises(ConfigurationError):
        Filters.Ip(["127.0.0.1", bad])


def test_ip_refuses_non_strings() -> None:
    with pytest.raises(ConfigurationError):
        Filters.Ip(5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Filters.Ip([5])  # type: ignore[list-item]


# -- composition ----------------------------------------------------------------------------------


def test_and_or_not() -> None:
    local = Filters.Ip("127.0.0.1")
    ping = Filters.Fields(cmd="ping$")
    assert check(local & ping, {"cmd": "ping"})
    assert not check(local & ping, {"cmd": "ping"}, "10.0.0.1")
    assert check(local | ping, {"cmd": "ping"}, "10.0.0.1")
    assert check(local | ping, {"x": 1})
    assert not check(local | ping, {"x": 1}, "10.0.0.1")
    assert check(~local, {}, "10.0.0.1")
    assert not check(~local, {})
    assert check(~(local & ping) | ping, {"cmd": "ping"})
    assert "&" in repr(local & ping) and "|" in repr(local | ping) and "~" in repr(~local)
    with pytest.raises(TypeError, match="only with filters"):
        local & "x"  # type: ignore[operator]


def test_custom_filter_subclass() -> None:
    class HasToken(Filter):
        def check(self, client: HandlerClient, packet: Packet) -> bool:
            return "token" in packet

    assert check(HasToken(), {"token": 1})
    assert check(HasToken() & Filters.Fields(token=None), {"token": 1})
    with pytest.raises(TypeError):
        Filter()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="namespace"):
        Filters()


# -- API keys -------------------------------------------------------------------------------------


def test_keys_are_random_letters_and_digits_of_the_given_size() -> None:
    factory = APIKeyFactory(size=40)
    keys = {factory.issue() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert len(key) == 40
        assert set(key) <= set(string.ascii_letters + string.digits)
    assert len(factory) == 200


def test_issue_get_update_revoke() -> None:
    factory = APIKeyFactory()
    key = factory.issue({"user": "ann"})
    assert key in factory
    assert factory.check(key)
    assert factory.get(key) == {"user": "ann"}
    factory.update(key, {"user": "bob"})
    assert factory.get(key) == {"user": "bob"}
    factory.revoke(key)
    assert key not in factory
    with pytest.raises(KeyError):
        factory.get(key)
    with pytest.raises(KeyError):
        factory.revoke(key)
    with pytest.raises(KeyError):
        factory.update(key, {})
    assert not factory.check(None)
    assert not factory.check(b"bytes")


def test_reissue_revokes_the_old_key_and_keeps_metadata() -> None:
    factory = APIKeyFactory()
    old = factory.issue({"plan": "pro"})
    new = factory.reissue(old)
    assert new != old
    assert old not in factory
    assert factory.get(new) == {"plan": "pro"}
    with pytest.raises(KeyError):
        factory.reissue(old)


def test_keys_are_stored_hashed() -> None:
    storage = MemoryKeyStorage()
    factory = APIKeyFactory(storage=storage)
    key = factory.issue("meta")
    assert key not in repr(storage._records)
    # A key that shares the selector but not the verifier is refused (constant-time compare).
    selector = next(iter(storage._records))
    storage.save(selector, "0" * 32, "forged")
    assert key not in factory


def test_key_size_must_be_secure() -> None:
    with pytest.raises(ConfigurationError, match="size"):
        APIKeyFactory(size=8)
    with pytest.raises(ConfigurationError, match="size"):
        APIKeyFactory(size="32")  # type: ignore[arg-type]


def test_sqlite_storage_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    with SQLiteKeyStorage(path) as storage:
        factory = APIKeyFactory(storage=storage)
        key = factory.issue({"user": "ann"})
        revoked = factory.issue()
        factory.revoke(revoked)
    with SQLiteKeyStorage(path) as storage:
        factory = APIKeyFactory(storage=storage)
        assert factory.get(key) == {"user": "ann"}
        assert revoked not in factory
        assert len(factory) == 1
        new = factory.reissue(key)
        assert key not in factory and new in factory
        with pytest.raises(ConfigurationError, match="JSON"):
            factory.issue(object())
    with pytest.raises(ConfigurationError, match="table"):
        SQLiteKeyStorage(path, table="x; DROP TABLE y")


async def test_api_key_filter_behind_a_server(nursery: trio.Nursery) -> None:
    factory = APIKeyFactory()
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler(Filters.APIFactory(factory, "key"))
    async def private(client: HandlerClient, packet: Packet) -> None:
        await client.send({"hello": factory.get(packet["key"])})

    @server.add_handler(group=0)
    async def denied(client: HandlerClient, packet: Packet) -> None:
        await client.send({"status": "failure", "error": "ERR_FORBIDDEN"})

    port = await start(nursery, server)
    key = factory.issue("ann")
    conn = await RawConn.open(port)

    async def ask(value: Any) -> dict[str, Any]:
        await conn.send_fields({"key": value})
        return await conn.reply()

    assert await ask(key) == {"hello": "ann"}
    assert (await ask("wrong"))["status"] == "failure"
    assert (await ask(123))["status"] == "failure"
    new = factory.reissue(key)
    assert (await ask(key))["status"] == "failure"  # the reissued (old) key is refused
    assert await ask(new) == {"hello": "ann"}
    factory.revoke(new)
    assert (await ask(new))["status"] == "failure"  # the revoked key is refused
    await conn.aclose()


async def test_ip_filter_behind_a_server_sees_the_peer(nursery: trio.Nursery) -> None:
    allow = Filters.Ip("10.0.0.0/8")
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler(allow)
    async def inside(client: HandlerClient, packet: Packet) -> None:
        await client.send({"who": "inside"})

    @server.add_handler(~allow)
    async def outside(client: HandlerClient, packet: Packet) -> None:
        await client.send({"who": "outside"})

    port = await start(nursery, server)
    conn = await RawConn.open(port)
    await conn.send_fields({})
    assert await conn.reply() == {"who": "outside"}
    allow.add("127.0.0.0/8")  # updated while serving
    await conn.send_fields({})
    assert await conn.reply() == {"who": "inside"}
    await conn.aclose()


# -- API keys of any shape (issue 15, defect 9) ---------------------------------------------------

#: Bad API key values as raw JSON text: valid JSON that is not a usable key.
BAD_KEYS_JSON = [
    r'"\ud800"',  # a lone surrogate: valid JSON, not encodable as UTF-8
    r'"\udfff"',
    r'"abc\ud83d"',  # half of a surrogate pair at the end
    r'"\ud83dabcdefghijklmnopqrstuvwxyz012345"',
    '"' + "k" * (MAX_KEY_SIZE + 1) + '"',  # longer than any key
    '"' + "k" * 1_000_000 + '"',  # huge
    '""',
    "123",
    "1.5e300",
    "-1",
    "true",
    "null",
    "[]",
    r'["\ud800"]',
    '{"nested": {"key": "value"}}',
    r'{"a": [{"b": "\ud800"}]}',
    "[" * 20 + "]" * 20,
]


def test_api_key_check_refuses_every_shape_without_raising() -> None:
    factory = APIKeyFactory()
    key = factory.issue("ann")
    for text in BAD_KEYS_JSON:
        value = json.loads(text)
        assert not factory.check(value), text[:40]
        assert value not in factory if isinstance(value, str) else True
        with pytest.raises(KeyError):
            factory.get(value)
        with pytest.raises(KeyError):
            factory.revoke(value)
    assert factory.check(key) and len(factory) == 1
    with pytest.raises(ConfigurationError, match="size"):
        APIKeyFactory(size=MAX_KEY_SIZE + 1)  # its keys could never be checked


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(st.characters(codec=None))  # surrogates included
        | st.text(st.characters(categories=["Cs"]), min_size=1)
        | st.binary(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=20,
    )
)
def test_api_key_check_never_raises(value: Any) -> None:
    assert APIKeyFactory().check(value) is False


async def test_bad_api_keys_get_the_refusal_reply_and_the_server_goes_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    factory = APIKeyFactory()
    server = Server("127.0.0.1", 0)
    refusal = {"status": "failure", "error": "ERR_FORBIDDEN"}

    @server.add_handler(Filters.APIFactory(factory, "key"))
    async def private(client: HandlerClient, packet: Packet) -> None:
        await client.send({"hello": factory.get(packet["key"])})

    @server.add_handler()
    async def denied(client: HandlerClient, packet: Packet) -> None:
        await client.send(refusal)

    port = await start(nursery, server)
    key = factory.issue("ann")
    conn = await RawConn.open(port)
    try:
        for text in BAD_KEYS_JSON:
            await conn.send(raw_packet(b"\x16\x00" + b'{"key": ' + text.encode() + b"}"))
            assert await conn.reply() == refusal, text[:40]
            await conn.send_fields({"key": key})  # the same connection is still served
            assert await conn.reply() == {"hello": "ann"}
        # ZiProto: a key that is not valid UTF-8 (a surrogate's bytes) is a malformed payload.
        await conn.send(raw_packet(b"\x16\x01" + b"\x81\xa3key\xa3\xed\xa0\x80"))
        assert await conn.reply() == error_reply("ERR_REQUEST_MALFORMED")
        await conn.send_fields({"key": key}, "ziproto")
        assert await conn.reply() == {"hello": "ann"}
    finally:
        await conn.aclose()
    stats = server.statistics()
    assert stats.handler_errors == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_bad_api_keys_without_a_fallback_get_no_reply_and_keep_the_connection(
    nursery: trio.Nursery,
) -> None:
    factory = APIKeyFactory()
    server = Server("127.0.0.1", 0, logging_level=100)

    @server.add_handler(Filters.APIFactory(factory, "key"))
    async def private(client: HandlerClient, packet: Packet) -> None:
        await client.send({"hello": factory.get(packet["key"])})

    port = await start(nursery, server)
    key = factory.issue("ann")
    conn = await RawConn.open(port)
    try:
        # No handler matches a bad key: nothing is sent, and the next packet is answered.
        await conn.send(raw_packet(b'\x16\x00{"key": "\\ud800"}'))
        await conn.send_fields({"key": key})
        assert await conn.reply() == {"hello": "ann"}
        assert server.statistics().handler_errors == 0
    finally:
        await conn.aclose()
