"""aiomas parity: retry-connect (``timeout=``, ``retry=``), ``extra_serializers`` with the
standard-library serializers, and RPC's ``on_connection_reset``, over real TCP sockets."""

from __future__ import annotations

import datetime
import decimal
import socket
import uuid
from typing import Any

import pytest
import trio

import trionet.rpc
from trionet.channel import Channel, open_channel, open_connection, start_server
from trionet.codecs import STANDARD_SERIALIZERS
from trionet.errors import ChannelClosed, CircuitOpenError
from trionet.supervision import Backoff, CircuitBreaker, RetryPolicy

PATIENCE = 20


def _bound_not_listening() -> tuple[socket.socket, int]:
    """A port that refuses connections (bound, not listening) until we call listen()."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


async def _echo(channel: Channel) -> None:
    async for request in channel:
        await request.reply(request.content)


async def test_timeout_zero_tries_once_and_timeout_waits_for_the_server() -> None:
    raw, port = _bound_not_listening()
    with raw, trio.fail_after(PATIENCE):
        with pytest.raises(OSError):  # aiomas's default: one attempt
            async with open_connection(("127.0.0.1", port)):
                pass  # pragma: no cover
        with pytest.raises(OSError):  # retried for 0.3 s, then the last error
            async with open_connection(("127.0.0.1", port), timeout=0.3):
                pass  # pragma: no cover

        replies: list[Any] = []

        async def client() -> None:
            async with open_connection(("127.0.0.1", port), timeout=PATIENCE) as channel:
                replies.append(await channel.send(["started", "before", "the server"]))

        listener: trio.SocketListener | None = None

        async def serve_one() -> None:
            assert listener is not None
            stream = await listener.accept()
            async with open_channel(stream) as channel:
                await _echo(channel)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            # the client is refused at first; then the server comes up on that port
            await trio.sleep(0.3)
            raw.listen()
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw.dup()))
            nursery.start_soon(serve_one)
        await listener.aclose()
        assert replies == [["started", "before", "the server"]]


async def test_retry_policy_with_a_shared_breaker_fails_fast() -> None:
    raw, port = _bound_not_listening()
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=60)
    policy = RetryPolicy(Backoff(initial=0.01, maximum=0.01), max_attempts=5, breaker=breaker)
    with raw, trio.fail_after(PATIENCE):
        with pytest.raises(CircuitOpenError):  # two refusals opened it, the third was refused
            async with open_connection(("127.0.0.1", port), retry=policy):
                pass  # pragma: no cover
        assert breaker.state == "open"
        with pytest.raises(CircuitOpenError):  # another client of that service: no attempt
            async with trionet.rpc.open_connection(("127.0.0.1", port), retry=policy):
                pass  # pragma: no cover
        with pytest.raises(TypeError, match="not both"):
            async with open_connection(("127.0.0.1", port), timeout=1, retry=policy):
                pass  # pragma: no cover


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_standard_serializers_round_trip(codec: str) -> None:
    value = {
        "when": datetime.datetime(2026, 12, 7, 21, 30, 5, 123, tzinfo=datetime.UTC),
        "naive": datetime.datetime(2026, 12, 7, 21, 30),
        "day": datetime.date(2026, 12, 7),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "price": decimal.Decimal("19.90"),
    }
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(partial_server(codec))
            async with open_connection(addresses[0], codec=codec,
                                       extra_serializers=STANDARD_SERIALIZERS) as channel:
                assert await channel.send(value) == value
            nursery.cancel_scope.cancel()


def partial_server(codec: str) -> Any:
    async def run(task_status: trio.TaskStatus[list[Any]] = trio.TASK_STATUS_IGNORED) -> None:
        await start_server(("127.0.0.1", 0), _echo, codec=codec,
                           extra_serializers=STANDARD_SERIALIZERS, task_status=task_status)
    return run


async def test_an_oversized_or_wrongly_typed_datetime_from_a_peer_is_refused() -> None:
    from trionet.codecs import JSON

    codec = JSON()
    for factory in STANDARD_SERIALIZERS:
        codec.add_serializer(*factory())
    from trionet.errors import CodecError

    with pytest.raises(CodecError, match="at most 64"):
        codec.decode(b'{"__type__":["datetime.datetime","' + b"9" * 10_000 + b'"]}')
    with pytest.raises(CodecError):
        codec.decode(b'{"__type__":["uuid.UUID",12]}')


class Greeter:
    router = trionet.rpc.Service()

    @trionet.rpc.expose
    def hello(self, name: str) -> str:
        return f"hello {name}"


async def test_on_connection_reset_on_both_sides() -> None:
    server_side: list[BaseException] = []
    client_side: list[BaseException] = []
    connected = trio.Event()
    server_client: list[trionet.rpc.RpcClient] = []
    server_heard, client_heard = trio.Event(), trio.Event()

    def on_server_reset(exc: BaseException) -> None:
        server_side.append(exc)
        server_heard.set()

    def on_client_reset(exc: BaseException) -> None:
        client_side.append(exc)
        client_heard.set()

    async def on_client(client: trionet.rpc.RpcClient) -> None:
        client.on_connection_reset(on_server_reset)
        server_client.append(client)
        connected.set()
        await trio.sleep_forever()

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                trionet.rpc.start_server, ("127.0.0.1", 0), Greeter(), on_client
            )
            # the client closes: the server's callback hears of it
            async with trionet.rpc.open_connection(addresses[0]) as client:
                assert await client.remote.hello("a") == "hello a"
                await connected.wait()
            await server_heard.wait()
            assert isinstance(server_side[0], ChannelClosed)
            assert isinstance(server_side[0], ConnectionResetError)

            # the server side closes: the client's callback hears of it (it serves a service)
            connected = trio.Event()
            async with trionet.rpc.open_connection(addresses[0],
                                                   rpc_service=Greeter()) as client:
                client.on_connection_reset(on_client_reset)
                await connected.wait()
                await server_client[-1].channel.aclose()
                await client_heard.wait()
            assert isinstance(client_side[0], ChannelClosed)

            # our own close does not call it
            quiet: list[BaseException] = []
            async with trionet.rpc.open_connection(addresses[0],
                                                   rpc_service=Greeter()) as client:
                client.on_connection_reset(quiet.append)
                assert await client.remote.hello("b") == "hello b"
            assert quiet == []
            nursery.cancel_scope.cancel()


def test_on_connection_reset_rejects_a_non_callable() -> None:
    _left, _right = trio.testing.memory_stream_pair()
    client = trionet.rpc.RpcClient.__new__(trionet.rpc.RpcClient)
    client._reset_callback = None
    with pytest.raises(ValueError, match="callable"):
        client.on_connection_reset(42)  # type: ignore[arg-type]
    client.on_connection_reset(None)
