"""The Channel driver over in-memory stream pairs: requests, replies, concurrency, cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trionet.channel import Channel, ChannelClosed, Request, open_channel
from trionet.errors import ChannelError, CodecError, FrameTooLarge, RemoteException


@asynccontextmanager
async def channel_pair(**kwargs: Any) -> AsyncIterator[tuple[Channel, Channel]]:
    left, right = trio.testing.memory_stream_pair()
    async with open_channel(left, **kwargs) as a, open_channel(right, **kwargs) as b:
        yield a, b


async def echo(channel: Channel) -> None:
    async for request in channel:
        await request.reply(request.content)


async def test_send_and_reply() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(echo, server)
        assert await client.send(["ping", 42]) == ["ping", 42]
        assert await client.request({"héllo": "wörld ✓"}) == {"héllo": "wörld ✓"}
        stats = client.statistics()
        assert stats.requests_sent == 2
        assert stats.pending_requests == 0
        assert server.statistics().requests_received == 2
        nursery.cancel_scope.cancel()


async def test_request_attributes() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:
        nursery.start_soon(client.send, "first")
        request = await server.recv()
        assert isinstance(request, Request)
        assert request.content == "first"
        assert request.msg_id == 0
        assert request.channel is server
        answered_before = request.answered
        assert answered_before is False
        assert "first" in repr(request)
        await request.reply(None)
        assert request.answered
        with pytest.raises(RuntimeError, match="already answered"):
            await request.reply(1)
        with pytest.raises(RuntimeError, match="already answered"):
            await request.fail(ValueError())


async def test_many_concurrent_sends_are_matched_by_id() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:
        results: dict[int, Any] = {}

        async def ask(i: int) -> None:
            results[i] = await client.send(i)

        for i in range(100):
            nursery.start_soon(ask, i)
        # Answer in reverse order of arrival.
        requests = [await server.recv() for _ in range(100)]
        for request in reversed(requests):
            await request.reply(request.content * 10)
    assert results == {i: i * 10 for i in range(100)}


async def test_several_receivers_get_one_request_each() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:
        got: list[Any] = []

        async def receive_one() -> None:
            request = await server.recv()
            got.append(request.content)
            await request.reply("ok")

        for _ in range(3):
            nursery.start_soon(receive_one)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            assert await client.send(i) == "ok"
    assert sorted(got) == [0, 1, 2]


async def test_remote_exception_carries_type_and_traceback() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:

        async def failing() -> None:
            request = await server.recv()
            try:
                dict[str, int]()["missing"]
            except KeyError as exc:
                await request.fail(exc)

        nursery.start_soon(failing)
        with pytest.raises(RemoteException) as info:
            await client.send("anything")
    exc = info.value
    assert isinstance(exc, ChannelError)
    assert exc.remote_type == "KeyError"
    assert "Traceback (most recent call last):" in exc.remote_traceback
    assert "KeyError: 'missing'" in exc.remote_traceback
    assert exc.origin == "<StapledStream>"
    assert "KeyError raised by" in str(exc)


async def test_cancelled_send_leaves_the_channel_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:

        async def slow_then_fast() -> None:
            slow = await server.recv()
            await trio.sleep(10)
            await slow.reply("late")  # arrives after the caller gave up
            async for request in server:
                await request.reply(request.content)

        nursery.start_soon(slow_then_fast)
        with trio.move_on_after(1) as scope:
            await client.send("slow")
        assert scope.cancelled_caught
        assert client.statistics().pending_requests == 0
        await trio.sleep(20)
        assert client.statistics().late_replies == 0  # nobody read it yet
        assert await client.send("next") == "next"
        assert client.statistics().late_replies == 1
        results = []
        for i in range(5):
            results.append(await client.send(i))
        assert results == list(range(5))
        nursery.cancel_scope.cancel()


async def test_cancelled_recv_loses_no_request() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:
        with trio.move_on_after(0.01):
            await server.recv()
        nursery.start_soon(echo, server)
        assert await client.send("still delivered") == "still delivered"
        nursery.cancel_scope.cancel()


async def test_cancelling_the_reader_hands_reading_to_another_waiter() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:
        results: list[Any] = []
        answered = trio.Event()

        async def ask(value: int) -> None:
            results.append(await client.send(value))
            answered.set()

        async with trio.open_nursery() as first:
            first.start_soon(ask, 1)  # becomes the reader
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, 2)  # parks behind the reader
            await trio.testing.wait_all_tasks_blocked()
            first.cancel_scope.cancel()
        nursery.start_soon(echo, server)
        with trio.fail_after(5):
            await answered.wait()
        assert results == [2]
        assert client.statistics().pending_requests == 0
        nursery.cancel_scope.cancel()


async def test_unencodable_reply_is_reported_to_both_sides() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:

        async def answer() -> None:
            request = await server.recv()
            with pytest.raises(CodecError):
                await request.reply(object())
            assert request.answered
            async for more in server:
                await more.reply("fine")

        nursery.start_soon(answer)
        with pytest.raises(RemoteException) as info:
            await client.send("give me something odd")
        assert info.value.remote_type == "trionet.errors.CodecError"
        assert await client.send("next") == "fine"
        nursery.cancel_scope.cancel()


async def test_too_large_request_fails_locally_only() -> None:
    async with channel_pair(max_frame_size=1000) as (client, server), trio.open_nursery() as n:
        n.start_soon(echo, server)
        with pytest.raises(FrameTooLarge) as info:
            await client.send("x" * 2000)
        assert info.value.fault == "local"
        assert await client.send("small") == "small"
        assert client.statistics().pending_requests == 0
        n.cancel_scope.cancel()


async def test_too_large_reply_becomes_a_failure() -> None:
    async with channel_pair(max_frame_size=1000) as (client, server), trio.open_nursery() as n:

        async def answer() -> None:
            request = await server.recv()
            with pytest.raises(FrameTooLarge):
                await request.reply("y" * 5000)

        n.start_soon(answer)
        with pytest.raises(RemoteException) as info:
            await client.send("big one please")
        assert info.value.remote_type == "trionet.errors.FrameTooLarge"


async def test_peer_close_fails_pending_sends_and_ends_iteration() -> None:
    left, right = trio.testing.memory_stream_pair()
    async with open_channel(left) as client, trio.open_nursery() as nursery:
        seen: list[Any] = []

        async def serve_one_then_close() -> None:
            async with open_channel(right) as server:
                request = await server.recv()
                seen.append(request.content)
                # Close without replying.

        nursery.start_soon(serve_one_then_close)
        with pytest.raises(ChannelClosed) as info:
            await client.send("never answered")
        assert isinstance(info.value, trio.BrokenResourceError)
        assert isinstance(info.value, ConnectionResetError)
        assert "closed by the peer" in str(info.value)
        assert client.close_reason is None
        with pytest.raises(ChannelClosed):
            await client.send("after close")
        with pytest.raises(ChannelClosed):
            await client.recv()
        assert [request async for request in client] == []
    assert seen == ["never answered"]


async def test_requests_queued_before_eof_are_still_delivered() -> None:
    left, right = trio.testing.memory_stream_pair()
    async with open_channel(left) as server:
        async with open_channel(right) as client, trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(client.send, i)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        got = [request.content async for request in server]
    assert sorted(got) == [0, 1, 2]


async def test_local_close_wakes_waiters_with_closed_resource_error() -> None:
    async with channel_pair() as (client, _server):
        errors: list[BaseException] = []

        async def wait_for_reply() -> None:
            try:
                await client.send("no answer coming")
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        async def wait_for_request() -> None:
            try:
                await client.recv()
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_reply)
            nursery.start_soon(wait_for_request)
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose()
        assert len(errors) == 2
        assert client.closed
        with pytest.raises(trio.ClosedResourceError):
            await client.send("after close")
        await client.aclose()  # twice is fine


async def test_serve_with_an_async_handler_bounds_concurrency() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:
        running = 0
        most = 0
        release = trio.Event()

        async def handler(content: Any) -> Any:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1
            if content == "boom":
                raise ValueError("handler failed")
            return content + 1

        nursery.start_soon(lambda: server.serve(handler, max_concurrency=3))
        results: list[Any] = []

        async def ask(value: Any) -> None:
            try:
                results.append(await client.send(value))
            except RemoteException as exc:
                results.append(exc.remote_type)

        async with trio.open_nursery() as asks:
            for i in range(10):
                asks.start_soon(ask, i)
            asks.start_soon(ask, "boom")
            await trio.testing.wait_all_tasks_blocked()
            assert running == 3
            release.set()
        assert most == 3
        assert sorted(map(str, results)) == sorted([*(str(i + 1) for i in range(10)), "ValueError"])
        nursery.cancel_scope.cancel()


async def test_serve_with_a_sync_handler_and_failures() -> None:
    async with channel_pair() as (client, server), trio.open_nursery() as nursery:

        def handler(content: Any) -> Any:
            return 10 // content

        nursery.start_soon(server.serve, handler)
        assert await client.send(5) == 2
        with pytest.raises(RemoteException) as info:
            await client.send(0)
        assert info.value.remote_type == "ZeroDivisionError"
        assert await client.send(2) == 5  # the connection keeps serving
        nursery.cancel_scope.cancel()


async def test_serve_returns_after_the_peer_closes_and_handlers_finish() -> None:
    left, right = trio.testing.memory_stream_pair()
    finished: list[Any] = []

    async def handler(content: Any) -> Any:
        await trio.sleep(0.01)
        finished.append(content)
        return content

    # Exits in reverse order: the client closes first; serve() still lets the running handler
    # finish, then returns, and the nursery is done.
    async with (
        open_channel(right) as server,
        trio.open_nursery() as nursery,
        open_channel(left) as client,
    ):
        nursery.start_soon(server.serve, handler)
        assert await client.send("a") == "a"

        async def send_b() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await client.send("b")

        nursery.start_soon(send_b)
        await trio.testing.wait_all_tasks_blocked()
    assert finished == ["a", "b"]


async def test_serve_rejects_bad_limits() -> None:
    async with channel_pair() as (_client, server):
        with pytest.raises(ValueError, match="max_concurrency"):
            await server.serve(lambda c: c, max_concurrency=0)


async def test_both_ends_send_and_serve() -> None:
    async with channel_pair() as (a, b), trio.open_nursery() as nursery:
        nursery.start_soon(a.serve, lambda c: ("a", c))
        nursery.start_soon(b.serve, lambda c: ("b", c))
        assert await a.send(1) == ["b", 1]
        assert await b.send(2) == ["a", 2]

        async def ask(channel: Channel, value: int) -> None:
            assert (await channel.send(value))[1] == value

        async with trio.open_nursery() as asks:
            for i in range(50):
                asks.start_soon(ask, a, i)
                asks.start_soon(ask, b, i)
        nursery.cancel_scope.cancel()


async def test_one_mebibyte_payload_and_msgpack_bytes() -> None:
    payload = bytes(range(256)) * 4096
    async with channel_pair(codec="msgpack") as (client, server), trio.open_nursery() as n:
        n.start_soon(echo, server)
        assert await client.send(payload) == payload
        n.cancel_scope.cancel()


async def test_extra_info_on_a_memory_stream() -> None:
    async with channel_pair() as (client, _server):
        assert client.get_extra_info("peername") is None
        assert client.get_extra_info("peername", "fallback") == "fallback"
        assert client.get_extra_info("no such thing", 3) == 3
        assert client.peername is None
        assert client.sockname is None
        assert client.origin == "<StapledStream>"
        assert client.codec.name == "json"
        assert client.max_frame_size > 0
        assert isinstance(client.stream, trio.abc.Stream)
        assert "open" in repr(client)
