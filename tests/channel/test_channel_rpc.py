"""RPC on top of channels: routers, services, proxies, calls, errors, cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trionet import rpc
from trionet.channel import open_channel
from trionet.errors import RemoteException


class Calculator:
    router = rpc.Service()

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.first_started = trio.Event()

    @rpc.expose
    def add(self, a: int, b: int = 0) -> int:
        return a + b

    @rpc.expose
    async def slow(self, seconds: float, value: Any) -> Any:
        self.started += 1
        self.first_started.set()
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        return value

    @rpc.Service.expose
    def divide(self, a: int, b: int) -> float:
        return a / b

    def not_exposed(self) -> str:
        return "secret"

    @rpc.expose
    def _private(self) -> str:
        return "secret"


class Root:
    router = rpc.Service(["calc"])

    def __init__(self) -> None:
        self.calc = Calculator()

    @rpc.expose
    def hello(self, name: str) -> str:
        return f"hello {name}"


@asynccontextmanager
async def rpc_pair(service: Any, **kwargs: Any) -> AsyncIterator[rpc.RpcClient]:
    left, right = trio.testing.memory_stream_pair()
    async with (
        open_channel(left) as client_side,
        open_channel(right) as server_side,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(partial(rpc.serve_rpc, server_side, service, **kwargs))
        yield rpc.RpcClient(client_side)
        nursery.cancel_scope.cancel()


def test_expose_marks_and_returns_the_function() -> None:
    def f() -> None:
        pass

    assert rpc.expose(f) is f
    with pytest.raises(TypeError):
        rpc.expose(42)  # type: ignore[type-var]


def test_router_resolves_nested_paths() -> None:
    root = Root()
    router = root.router
    assert isinstance(router, rpc.Router)
    assert rpc.Service in type(Root.__dict__["router"]).__mro__
    assert router.resolve("hello")("x") == "hello x"
    assert router.resolve("calc/add")(1, 2) == 3
    assert router.resolve("calc/add") is router.resolve("calc/add")  # cached
    assert root.calc.router.path == "calc"
    assert root.calc.router.parent is router
    assert router.path == ""
    assert "calc" in repr(root.calc.router)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("nope", "no exposed function 'nope'"),
        ("calc/not_exposed", "no exposed function 'not_exposed' in 'calc'"),
        ("calc/_private", "no exposed function '_private'"),
        ("calc/router", "no exposed function 'router'"),
        ("missing/add", "no service 'missing'"),
        ("", "invalid RPC path"),
    ],
)
def test_router_lookup_errors(path: str, match: str) -> None:
    with pytest.raises(LookupError, match=match):
        Root().router.resolve(path)


def test_router_add_errors() -> None:
    root = Root()
    with pytest.raises(ValueError, match="already attached"):
        root.router.add("calc")
    with pytest.raises(ValueError, match="invalid sub-service name"):
        root.router.add("a/b", Calculator())
    with pytest.raises(TypeError, match="not an RPC service"):
        root.router.add("plain", object())  # type: ignore[arg-type]
    other = Root()
    with pytest.raises(ValueError, match="already a sub-service"):
        other.router.add("again", root.calc)
    with pytest.raises(AttributeError):
        root.router = rpc.Router(root)


def test_service_dict() -> None:
    calc = Calculator()
    service = rpc.ServiceDict({"twice": rpc.expose(lambda x: 2 * x), "calc": calc})
    assert service.router.resolve("twice")(4) == 8
    assert service.router.resolve("calc/add")(1, 1) == 2
    with pytest.raises(LookupError):
        service.router.resolve("absent")


async def test_calls_through_proxies() -> None:
    async with rpc_pair(Root()) as client:
        assert await client.remote.hello("trio") == "hello trio"
        assert await client.remote.calc.add(1, 2) == 3
        assert await client.remote.calc.add(1, b=5) == 6
        assert await client.remote.calc.slow(0, {"nested": [1]}) == {"nested": [1]}
        assert await client.call("calc/add", 7) == 7
        assert client.remote.calc.add is client.remote.calc.add
        assert client.remote.calc == client.remote.calc
        assert hash(client.remote.calc.add) == hash(client.remote.calc.add)
        assert client.remote.calc != client.remote.hello
        assert "calc/add" in repr(client.remote.calc.add)
        assert client.channel.statistics().requests_sent == 5


async def test_remote_errors() -> None:
    async with rpc_pair(Root()) as client:
        with pytest.raises(RemoteException) as info:
            await client.remote.calc.divide(1, 0)
        assert info.value.remote_type == "ZeroDivisionError"
        with pytest.raises(RemoteException) as info:
            await client.remote.calc.not_exposed()
        assert info.value.remote_type == "LookupError"
        with pytest.raises(RemoteException) as info:
            await client.remote.calc.add()  # missing argument
        assert info.value.remote_type == "TypeError"
        with pytest.raises(RemoteException) as info:
            await client.channel.send("not a [path, args, kwargs] list")
        assert info.value.remote_type == "TypeError"
        with pytest.raises(AttributeError):
            await client.remote()
        with pytest.raises(AttributeError):
            client.remote.__wrapped__  # noqa: B018
        assert await client.remote.calc.add(2, 2) == 4  # still serving


async def test_per_call_cancellation(autojump_clock: trio.testing.MockClock) -> None:
    root = Root()
    async with rpc_pair(root) as client:
        with trio.move_on_after(1) as scope:
            await client.remote.calc.slow(10, "too late")
        assert scope.cancelled_caught
        assert await client.remote.calc.add(1, 1) == 2
        await trio.sleep(20)
        assert await client.remote.calc.add(2, 2) == 4
        assert client.channel.statistics().late_replies == 1


async def test_concurrency_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    root = Root()
    async with rpc_pair(root, max_concurrency=4) as client, trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(client.remote.calc.slow, 1, i)
        await trio.sleep(0.5)
        assert root.calc.started == 4
        await trio.sleep(1)
        assert root.calc.started == 8


async def test_tcp_server_bidirectional_and_shutdown() -> None:
    class Client:
        router = rpc.Service()

        @rpc.expose
        def whoami(self) -> str:
            return "the client"

    answers: list[Any] = []
    root = Root()
    called_back = trio.Event()

    async def on_connect(peer: rpc.RpcClient) -> None:
        answers.append(await peer.remote.whoami())
        called_back.set()

    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(
            partial(rpc.start_server, ("127.0.0.1", 0), root, on_connect)
        )
        async with rpc.open_connection(address, rpc_service=Client()) as client:
            await called_back.wait()
            assert await client.remote.hello("server") == "hello server"

            async def slow_call() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await client.remote.calc.slow(100, "never")

            async with trio.open_nursery() as calls:
                calls.start_soon(slow_call)
                await root.calc.first_started.wait()
                nursery.cancel_scope.cancel()  # stop the server while the call runs
    assert answers == ["the client"]
    assert root.calc.cancelled == 1


async def test_body_exception_comes_out_unwrapped_with_a_service() -> None:
    class Client:
        router = rpc.Service()

    async with trio.open_nursery() as nursery:
        (address,) = await nursery.start(rpc.start_server, ("127.0.0.1", 0), Root())
        with pytest.raises(KeyError):
            async with rpc.open_connection(address, rpc_service=Client()) as client:
                assert await client.remote.hello("x") == "hello x"
                raise KeyError("from the body")
        nursery.cancel_scope.cancel()


async def test_bad_services_are_refused() -> None:
    with pytest.raises(TypeError, match="not an RPC service"):
        await rpc.start_server(("127.0.0.1", 0), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an RPC service"):
        async with rpc.open_connection(("127.0.0.1", 1), rpc_service=object()):  # type: ignore[arg-type]
            pass  # pragma: no cover
