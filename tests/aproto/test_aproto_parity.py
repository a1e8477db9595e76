"""AsyncAPY parity: options from environment variables, and API keys in an asynchronous store
(awaited by the server's filter, bounded by check_timeout), behind a real server."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from aproto_helpers import RawConn, start

from trionet.aproto import (
    AsyncAPIKeyFactory,
    AsyncAPIKeyStorage,
    AsyncFilter,
    Filter,
    Filters,
    HandlerClient,
    Packet,
    Server,
    SQLiteKeyStorage,
    ThreadedKeyStorage,
    read_env,
)
from trionet.errors import ConfigurationError


def test_read_env_converts_like_an_ini_file() -> None:
    environ = {
        "ASYNCAPY_PORT": "9100", "ASYNCAPY_TIMEOUT": "none", "ASYNCAPY_KEEP_ALIVE": "no",
        "ASYNCAPY_LOGGING_LEVEL": "warning", "OTHER_PORT": "1", "PATH": "/bin",
    }
    assert read_env(environ) == {"port": 9100, "timeout": None, "keep_alive": False,
                                 "logging_level": 30}
    assert read_env({"APP_BYTEORDER": "little"}, prefix="APP_") == {"byteorder": "little"}
    with pytest.raises(ConfigurationError, match="ASYNCAPY_PROT"):
        read_env({"ASYNCAPY_PROT": "1"})  # a typo is an error, not ignored
    with pytest.raises(ConfigurationError, match="ASYNCAPY_PORT"):
        read_env({"ASYNCAPY_PORT": "70000"})
    with pytest.raises(ConfigurationError, match="longer"):
        read_env({"ASYNCAPY_DATEFMT": "x" * 5000})


def test_server_reads_the_environment_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TNTEST_PORT", "9123")
    monkeypatch.setenv("TNTEST_SESSION_LIMIT", "3")
    assert Server("127.0.0.1", 0).port == 0
    server = Server("127.0.0.1", 0, env_prefix="TNTEST_")
    assert (server.port, server.session_limit) == (9123, 3)
    monkeypatch.setenv("TNTEST_HEADER_SIZE", "9")
    with pytest.raises(ConfigurationError, match="TNTEST_HEADER_SIZE"):
        Server("127.0.0.1", 0, env_prefix="TNTEST_")


class SlowStore(AsyncAPIKeyStorage):
    """An asynchronous store; *hang* makes every lookup wait forever (a dead database)."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, Any]] = {}
        self.hang = False

    async def load(self, selector: str) -> tuple[str, Any] | None:
        await trio.sleep(0.001)  # a round trip
        if self.hang:
            await trio.sleep_forever()
        return self.records.get(selector)

    async def save(self, selector: str, verifier: str, metadata: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.records[selector] = (verifier, metadata)

    async def delete(self, selector: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self.records.pop(selector, None) is not None

    async def count(self) -> int:
        await trio.lowlevel.checkpoint()
        return len(self.records)


async def test_async_key_storage_behind_a_real_server(nursery: trio.Nursery) -> None:
    store = SlowStore()
    factory = AsyncAPIKeyFactory(store, check_timeout=0.5)
    server = Server("127.0.0.1", 0, logging_level=100)
    gate = Filters.APIFactory(factory, "key")
    assert gate.is_async and isinstance(gate, Filters.APIFactory)
    with pytest.raises(TypeError, match="await"):
        gate.check(None, None)  # type: ignore[arg-type]

    @server.add_handler(gate & Filters.Fields(key=None, ask=None))
    async def private(client: HandlerClient, packet: Packet) -> None:
        await client.send({"hello": await factory.get(packet["key"])})

    @server.add_handler()
    async def denied(client: HandlerClient, packet: Packet) -> None:
        await client.send({"status": "failure", "error": "ERR_FORBIDDEN"})

    port = await start(nursery, server)
    key = await factory.issue("ann")
    assert await factory.count() == 1
    conn = await RawConn.open(port)

    async def ask(value: Any) -> dict[str, Any]:
        await conn.send_fields({"key": value, "ask": 1})
        return await conn.reply()

    with trio.fail_after(20):
        assert await ask(key) == {"hello": "ann"}
        assert (await ask("wrong" * 5))["status"] == "failure"
        assert (await ask(123))["status"] == "failure"
        new = await factory.reissue(key)
        assert (await ask(key))["status"] == "failure"
        assert await ask(new) == {"hello": "ann"}
        store.hang = True  # the store stops answering: keys are refused after check_timeout
        assert (await ask(new))["status"] == "failure"
        store.hang = False  # and the connection is still served
        assert await ask(new) == {"hello": "ann"}
        await factory.revoke(new)
        assert (await ask(new))["status"] == "failure"
    await conn.aclose()


async def test_threaded_storage_wraps_a_synchronous_store() -> None:
    with SQLiteKeyStorage(":memory:") as sqlite:
        factory = AsyncAPIKeyFactory(ThreadedKeyStorage(sqlite))
        key = await factory.issue({"plan": "pro"})
        assert await factory.check(key) and await factory.get(key) == {"plan": "pro"}
        await factory.update(key, {"plan": "free"})
        assert await factory.get(key) == {"plan": "free"}
        assert not await factory.check("x" * 2000)
        assert len(sqlite) == 1
    with pytest.raises(ConfigurationError, match="ThreadedKeyStorage"):
        AsyncAPIKeyFactory(sqlite)  # type: ignore[arg-type]


async def test_composed_async_filters() -> None:
    class Even(AsyncFilter):
        async def check_async(self, client: Any, packet: Any) -> bool:
            await trio.lowlevel.checkpoint()
            return packet % 2 == 0

    class Big(Filter):  # a plain synchronous filter
        def check(self, client: Any, packet: Any) -> bool:
            return packet > 10

    even, big = Even(), Big()
    assert (even & big).is_async and (even | big).is_async and (~even).is_async
    assert not (big & big).is_async
    assert await (even & big).check_async(None, 12)
    assert not await (even & big).check_async(None, 8)
    assert await (even | big).check_async(None, 11)
    assert await (~even).check_async(None, 3)
