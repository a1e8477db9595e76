"""The channel:// transport: bus handlers answering Channel (aiomas-style) clients.

Everything a client sends is untrusted: each malformed request gets a failure, and the
connection and the server keep working for the next request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trionet.bus import (
    BusError,
    BusMessage,
    BusSocket,
    ChannelConfig,
    ChannelSocketProvider,
    DistributedApplication,
    channel_request,
    from_url,
    parse_url,
)
from trionet.channel import open_connection
from trionet.errors import ChannelClosed, ConfigurationError, RemoteException


@asynccontextmanager
async def serving(app: DistributedApplication) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        yield
        app.stop()


def echo_app(provider: ChannelSocketProvider, topics: str = "orders/+") -> DistributedApplication:
    app = DistributedApplication(provider)

    @app.application(topics)
    async def orders(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, b"accepted " + message.payload,
                           headers={"seen": message.headers.get("x", "-")},
                           content_type="text/plain")

    return app


def test_urls() -> None:
    config = parse_url("channel://127.0.0.1:5555?channel_codec=msgpack&max_pending=8"
                       "&request_timeout=2")
    assert isinstance(config, ChannelConfig)
    assert (config.host, config.port, config.channel_codec, config.max_pending) == (
        "127.0.0.1", 5555, "msgpack", 8)
    assert parse_url(config.to_url()) == config
    assert isinstance(from_url("channel://[::1]:0"), ChannelSocketProvider)
    for bad in ("channel://127.0.0.1:5555/path", "channel://u:p@127.0.0.1:1",
                "channel://127.0.0.1:1?channel_codec=pickle", "channel://127.0.0.1:1?max_pending=0",
                "channel://127.0.0.1:99999", "channel://127.0.0.1:1?request_timeout=none"):
        with pytest.raises(ConfigurationError):
            parse_url(bad)


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_a_request_is_answered_by_the_handler(codec: str) -> None:
    provider = ChannelSocketProvider(ChannelConfig(channel_codec=codec))  # type: ignore[arg-type]
    async with serving(echo_app(provider)), open_connection(provider.addresses[0],
                                                            codec=codec) as channel:
        reply = await channel_request(channel, b"2 apples", "orders/new", headers={"x": "1"})
        assert reply.payload == b"accepted 2 apples"
        assert reply.headers["seen"] == "1"
        assert reply.content_type == "text/plain"
        # the raw wire, as an aiomas client writes it
        raw = await channel.send({"topic": "orders/old", "payload": "3 pears"})
        assert raw["payload"] in ("accepted 3 pears", b"accepted 3 pears")


async def test_untrusted_requests_fail_and_the_connection_survives() -> None:
    provider = ChannelSocketProvider()
    bad: list[Any] = [
        "not a mapping",
        ["orders/new", "x"],
        {"payload": "no topic"},
        {"topic": "orders/new", "extra": 1},
        {"topic": 5},
        {"topic": "orders/#"},                  # a filter, not a topic
        {"topic": "_trionet/reply/x/1"},        # reserved
        {"topic": "elsewhere/new"},             # no handler subscribed to it
        {"topic": "orders/new", "payload": 5},
        {"topic": "orders/new", "headers": ["a"]},
        {"topic": "orders/new", "headers": {"a": 1}},
        {"topic": "orders/new", "headers": {str(i): "v" for i in range(65)}},
        {"topic": "orders/new", "headers": {"a": "v" * 8193}},
        {"topic": "orders/new", "content_type": "x" * 256},
        {"topic": "orders/" + "x" * 70_000},
    ]
    async with serving(echo_app(provider)), open_connection(provider.addresses[0]) as channel:
        for content in bad:
            with pytest.raises(RemoteException):
                await channel.send(content)
        reply = await channel_request(channel, "ok", "orders/new")
        assert reply.payload == b"accepted ok"


async def test_binary_replies_need_msgpack() -> None:
    provider = ChannelSocketProvider()
    app = DistributedApplication(provider)

    @app.application("blobs")
    async def blobs(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, b"\xff\xfe")

    async with serving(app), open_connection(provider.addresses[0]) as channel:
        with pytest.raises(RemoteException, match="binary"):
            await channel_request(channel, "x", "blobs")
        with pytest.raises(TypeError):
            await channel_request(channel, b"\xff", "blobs")


async def test_a_handler_that_never_replies_times_out_and_is_cancelled() -> None:
    provider = ChannelSocketProvider(ChannelConfig(request_timeout=0.2))
    app = DistributedApplication(provider)
    cancelled = trio.Event()

    @app.application("slow")
    async def slow(message: BusMessage) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with serving(app), open_connection(provider.addresses[0]) as channel:
        with pytest.raises(RemoteException) as caught:
            await channel_request(channel, "x", "slow")
        assert caught.value.remote_type is not None
        assert "RequestTimeout" in caught.value.remote_type
        await cancelled.wait()  # the deadline travelled with the request
    assert app.statistics["slow"].expired >= 1


async def test_it_cannot_publish_elsewhere_or_send_requests() -> None:
    provider = ChannelSocketProvider()
    app = DistributedApplication(provider)

    @app.application("ask")
    async def ask(message: BusMessage, socket: BusSocket) -> None:
        errors = []
        for attempt in (socket.publish(b"x", "other/topic"),
                        socket.request(b"x", "other/topic", timeout=1)):
            try:
                await attempt
            except BusError as exc:
                errors.append(type(exc).__name__)
        await socket.reply(message, ",".join(errors))

    async with serving(app), open_connection(provider.addresses[0]) as channel:
        reply = await channel_request(channel, "x", "ask")
    assert reply.payload == b"BusError,BusError"


async def test_connections_are_limited() -> None:
    provider = ChannelSocketProvider(ChannelConfig(max_connections=1))
    async with serving(echo_app(provider)), open_connection(provider.addresses[0]) as first:
        assert (await channel_request(first, "a", "orders/x")).payload == b"accepted a"
        async with open_connection(provider.addresses[0]) as second:
            with pytest.raises(ChannelClosed):
                await channel_request(second, "b", "orders/x")
        assert (await channel_request(first, "c", "orders/x")).payload == b"accepted c"


async def test_closing_the_application_fails_waiting_requests() -> None:
    provider = ChannelSocketProvider()
    app = DistributedApplication(provider, shutdown_timeout=0.1)
    started = trio.Event()

    @app.application("wait")
    async def wait(message: BusMessage) -> None:
        started.set()
        await trio.sleep_forever()

    async with open_connection_after_start(app, provider) as channel:
        async with trio.open_nursery() as nursery:
            failures: list[BaseException] = []

            async def call() -> None:
                try:
                    await channel_request(channel, "x", "wait")
                except (RemoteException, ChannelClosed) as exc:
                    failures.append(exc)

            nursery.start_soon(call)
            await started.wait()
            app.stop()
        assert len(failures) == 1


@asynccontextmanager
async def open_connection_after_start(app: DistributedApplication,
                                      provider: ChannelSocketProvider
                                      ) -> AsyncIterator[Any]:
    async with trio.open_nursery() as nursery:
        await nursery.start(app.serve)
        async with open_connection(provider.addresses[0]) as channel:
            yield channel
