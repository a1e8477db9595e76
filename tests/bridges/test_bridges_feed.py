"""The bounded feed between a subscription and a response: both overflow policies, ending,
closing, and bad options (no server involved: the subscription is a memory channel)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trionet.bridges import Bridge, Feed, open_feed
from trionet.errors import ConfigurationError


@asynccontextmanager
async def channel_subscription(
    receive: trio.MemoryReceiveChannel[int],
) -> AsyncIterator[trio.MemoryReceiveChannel[int]]:
    async with receive:
        yield receive


async def test_drop_oldest_keeps_the_newest_and_counts_the_dropped() -> None:
    feed: Feed[int] = Feed(3, "drop-oldest")
    for n in range(10):
        await feed.put(n)
    assert [feed.receive_nowait() for _ in range(3)] == [7, 8, 9]
    stats = feed.statistics
    assert (stats.received, stats.dropped, stats.delivered, stats.high_water) == (10, 7, 3, 3)
    with pytest.raises(trio.WouldBlock):
        feed.receive_nowait()
    feed.end()
    with pytest.raises(trio.EndOfChannel):
        await feed.receive()


async def test_pause_stops_the_producer_until_there_is_room() -> None:
    feed: Feed[int] = Feed(2, "pause")
    put: list[int] = []

    async def producer() -> None:
        for n in range(5):
            await feed.put(n)
            put.append(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert put == [0, 1]  # waiting to put 2
        assert feed.statistics.paused == 1
        assert await feed.receive() == 0
        await trio.testing.wait_all_tasks_blocked()
        assert put == [0, 1, 2]
        got = [await feed.receive() for _ in range(4)]
    assert got == [1, 2, 3, 4]
    stats = feed.statistics
    assert stats.dropped == 0 and stats.high_water == 2 and stats.delivered == 5


async def test_open_feed_pumps_until_the_subscription_ends() -> None:
    send, receive = trio.open_memory_channel[int](0)
    async with open_feed(channel_subscription(receive), max_buffer_size=4) as feed:
        async with send:
            for n in range(3):
                await send.send(n)
        got = [n async for n in feed]
    assert got == [0, 1, 2]
    assert feed.error is None


async def test_a_failing_subscription_ends_the_stream_and_is_kept() -> None:
    @asynccontextmanager
    async def failing() -> AsyncIterator[AsyncIterator[int]]:
        async def messages() -> AsyncIterator[int]:
            yield 1
            raise OSError("connection lost")

        yield messages()

    async with open_feed(failing(), max_buffer_size=4) as feed:
        assert [n async for n in feed] == [1]
    assert isinstance(feed.error, OSError)


async def test_leaving_the_block_stops_a_paused_pump_and_leaves_the_subscription() -> None:
    send, receive = trio.open_memory_channel[int](100)
    for n in range(10):
        send.send_nowait(n)
    async with open_feed(channel_subscription(receive), max_buffer_size=2,
                         overflow="pause") as feed:
        assert await feed.receive() == 0
        await trio.testing.wait_all_tasks_blocked()
        assert feed.statistics.paused >= 1  # the pump waits for room
    with pytest.raises(trio.BrokenResourceError):
        send.send_nowait(99)  # the subscription was left (its channel closed)
    with pytest.raises(trio.ClosedResourceError):
        feed.receive_nowait()


@pytest.mark.parametrize("kwargs", [{"max_buffer_size": 0}, {"max_buffer_size": True},
                                    {"overflow": "grow"}, {"max_streams": 0},
                                    {"ping": 0}])
def test_bad_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Bridge(lambda connection: channel_subscription(trio.open_memory_channel[int](0)[1]),
               **kwargs)  # type: ignore[arg-type]


async def test_websocket_closes_1001_when_the_subscription_ends_1011_when_it_fails() -> None:
    from trionet.asgi import ASGIApplication, Router, TestClient, WebSocketDisconnect

    @asynccontextmanager
    async def source(connection: object, fail: bool) -> AsyncIterator[AsyncIterator[bytes]]:
        async def messages() -> AsyncIterator[bytes]:
            yield b"one"
            if fail:
                raise OSError("the broker went away")

        yield messages()

    for fail, code in ((False, 1001), (True, 1011)):
        bridge = Bridge(lambda connection, fail=fail: source(connection, fail))  # type: ignore[misc]
        router = Router()
        router.add_websocket_route("/ws", bridge.websocket)
        async with TestClient(ASGIApplication(router)).websocket_connect("/ws") as websocket:
            assert await websocket.receive_json() == {"payload": "one"}
            with pytest.raises(WebSocketDisconnect) as closed:
                await websocket.receive()
        assert closed.value.code == code
