"""Services passed as RPC arguments or returned travel by reference and become proxies
(issue 23, aiomas parity), over loopback TCP."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trionet import rpc
from trionet.errors import CodecError, RemoteException


class Doubler:
    router = rpc.Service()

    def __init__(self) -> None:
        self.calls = 0

    @rpc.expose
    async def double(self, x: int) -> int:
        self.calls += 1
        return 2 * x


class Counter:
    router = rpc.Service()

    def __init__(self, start: int) -> None:
        self.value = start

    @rpc.expose
    def bump(self) -> int:
        self.value += 1
        return self.value


class Server:
    router = rpc.Service()

    def __init__(self) -> None:
        self.proxies: list[Any] = []

    @rpc.expose
    async def apply(self, callback: Any, x: int) -> int:
        self.proxies.append(callback)
        assert isinstance(callback, rpc.Proxy)
        return await callback.double(x) + 1  # calls the client back

    @rpc.expose
    def counter(self, start: int) -> Counter:
        return Counter(start)

    @rpc.expose
    def echo(self, value: Any) -> Any:
        return value


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_a_callback_service_becomes_a_proxy_calling_the_client_back(codec: str) -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            lambda task_status: rpc.start_server(("127.0.0.1", 0), server, codec=codec,
                                                 task_status=task_status))
        doubler = Doubler()
        async with rpc.open_connection(address, rpc_service=Doubler(), codec=codec) as client:
            assert await client.remote.apply(doubler, 20) == 41
            assert await client.remote.apply(doubler, 1) == 3
            assert doubler.calls == 2
            # The same service sent twice has one name on the connection.
            first, second = server.proxies
            assert first == second and first._path.startswith("~") and len(first._path) == 33
            # A service returned by the server becomes a proxy on the client's side too.
            counter = await client.remote.counter(10)
            assert isinstance(counter, rpc.Proxy)
            assert [await counter.bump(), await counter.bump()] == [11, 12]
            # A name nobody registered is not found.
            with pytest.raises(RemoteException) as info:
                await client.call("~" + "0" * 32 + "/double", 1)
            assert info.value.remote_type == "LookupError"
        # Another connection does not know this one's references.
        async with rpc.open_connection(address, codec=codec) as other:
            with pytest.raises(RemoteException) as info:
                await other.call(first._path + "/double", 1)
            assert info.value.remote_type == "LookupError"
        nursery.cancel_scope.cancel()


async def test_only_a_serving_side_sends_services_and_their_number_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rpc._rpc, "MAX_REFERENCES", 3)
    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(rpc.start_server, ("127.0.0.1", 0), Server())
        async with rpc.open_connection(address) as plain:  # serves nothing: cannot be called back
            with pytest.raises(CodecError, match="serves no RPC"):
                await plain.remote.apply(Doubler(), 1)
            with pytest.raises(CodecError, match="cannot encode an object of type object"):
                await plain.remote.echo(object())
            assert await plain.remote.echo([1, "a"]) == [1, "a"]  # the channel still works
        async with rpc.open_connection(address, rpc_service=Doubler()) as client:
            for n in range(3):
                assert await client.remote.apply(Doubler(), n) == 2 * n + 1
            with pytest.raises(CodecError, match="more than 3 services"):
                await client.remote.apply(Doubler(), 4)
        nursery.cancel_scope.cancel()
