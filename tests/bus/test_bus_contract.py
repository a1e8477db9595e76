"""The bus contract: every test runs on memory://, on a real mosquitto and on a Kafka broker.

The ``provider_url`` fixture (tests/bus/conftest.py) is parametrized over the three brokers, so
each test below runs three times with the same code: only the URL differs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
from bus_support import PATIENCE, serving, unique, wait_until

from trionet.bus import (
    BusMessage,
    BusSocket,
    DistributedApplication,
    RequestTimeout,
    RestartPolicy,
    SpaMessage,
    from_url,
)


async def test_producer_to_consumer(provider_url: str) -> None:
    topic = f"{unique()}/orders"
    app = DistributedApplication(provider_url)
    received: list[BusMessage] = []

    @app.application(topic)
    async def consumer(message: BusMessage) -> None:
        received.append(message)
        if len(received) == 5:
            app.stop()

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        for i in range(5):
            await socket.publish(BusMessage(
                f"order {i}", topic, content_type="text/plain", client_name="shop",
                headers={"n": str(i)}, correlation_id=f"c{i}",
            ))

    with trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert [m.payload for m in received] == [f"order {i}".encode() for i in range(5)]
    first = received[0]
    assert first.topic == topic
    assert first.content_type == "text/plain"
    assert first.client_name == "shop"
    assert first.headers == {"n": "0"}
    assert first.correlation_id == "c0"
    assert first.timestamp > 0


async def test_request_response(provider_url: str) -> None:
    base = unique()
    app = DistributedApplication(provider_url)

    @app.application(f"{base}/upper")
    async def upper(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, message.payload.upper(), content_type="text/plain")

    @app.application(f"{base}/seed-style")
    async def seed_style(message: SpaMessage, socket: BusSocket) -> None:
        # spa_dat's examples copy only the response topic: the reply still finds its request.
        assert message.response_topic is not None
        await socket.publish(SpaMessage(payload=b"seen " + message.payload,
                                        topic=message.response_topic))

    async with serving(app):
        provider = from_url(provider_url)
        async with provider.create_socket(name="requester") as socket:
            for word in ("alpha", "beta", "gamma"):
                reply = await socket.request(BusMessage(word, f"{base}/upper"))
                assert reply.payload == word.upper().encode()
                assert reply.content_type == "text/plain"
            reply = await socket.request(SpaMessage(payload="x", topic=f"{base}/seed-style"))
            assert reply.payload == b"seen x"
            async with trio.open_nursery() as nursery:  # concurrent requests on one socket
                answers: dict[int, bytes] = {}

                async def ask(i: int) -> None:
                    answers[i] = (await socket.request(BusMessage(f"m{i}", f"{base}/upper"))
                                  ).payload

                for i in range(4):
                    nursery.start_soon(ask, i)
            assert answers == {i: f"M{i}".encode() for i in range(4)}
            assert socket.statistics.replies == 8
            assert socket.statistics.pending_requests == 0


async def test_request_without_responder_times_out(provider_url: str) -> None:
    topic = f"{unique()}/nobody"
    provider = from_url(provider_url)
    async with provider.create_socket(name="lonely") as socket:
        with pytest.raises(RequestTimeout) as caught:
            await socket.request(BusMessage(b"anyone?", topic), timeout=0.3)
        assert isinstance(caught.value, trio.TooSlowError)
        assert caught.value.topic == topic
        with pytest.raises(trio.TooSlowError), trio.fail_after(0.3):
            await socket.request(BusMessage(b"anyone?", topic), timeout=None)
        assert socket.statistics.pending_requests == 0


async def test_late_replies_are_dropped(provider_url: str) -> None:
    base = unique()
    app = DistributedApplication(provider_url)
    replied = trio.Event()

    @app.application(f"{base}/slow")
    async def slow(message: BusMessage, socket: BusSocket) -> None:
        # The request's deadline cancels its handler; one that shields itself from it still
        # replies, late.
        with trio.CancelScope(shield=True):
            await trio.sleep(0.5)
            await socket.reply(message, b"too late")
        replied.set()

    @app.application(f"{base}/fast")
    async def fast(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, b"in time")

    async with serving(app), from_url(provider_url).create_socket(name="impatient") as socket:
        with pytest.raises(RequestTimeout):
            await socket.request(BusMessage(b"?", f"{base}/slow"), timeout=0.1)
        with trio.fail_after(PATIENCE):
            await replied.wait()
        reply = await socket.request(BusMessage(b"?", f"{base}/fast"))
        assert reply.payload == b"in time"
        await wait_until(lambda: socket.statistics.late_replies == 1)


async def test_wildcards(provider_url: str) -> None:
    base = unique()
    app = DistributedApplication(provider_url)
    seen: dict[str, set[str]] = {"one_level": set(), "subtree": set()}
    topics = [f"{base}/a/temp", f"{base}/b/temp", f"{base}/a/humidity",
              f"{base}/all", f"{base}/all/x/y"]

    @app.application(f"{base}/+/temp")
    async def one_level(message: BusMessage) -> None:
        seen["one_level"].add(message.topic)

    @app.application([f"{base}/all/#"])
    async def subtree(message: BusMessage) -> None:
        seen["subtree"].add(message.topic)

    async with from_url(provider_url).create_socket(name="publisher") as socket:
        # Make the topics exist first: a Kafka group then starts with all of them assigned.
        # (The other brokers keep nothing for absent subscribers: these are simply dropped.)
        for topic in topics:
            await socket.publish(BusMessage(b"before", topic))
        async with serving(app):
            for topic in topics:
                await socket.publish(BusMessage(b"x", topic))
            await wait_until(lambda: len(seen["one_level"]) == 2 and len(seen["subtree"]) == 2)
    assert seen["one_level"] == {f"{base}/a/temp", f"{base}/b/temp"}
    assert seen["subtree"] == {f"{base}/all", f"{base}/all/x/y"}


class Counted:
    """A resource that counts how often it is entered and exited (sync and async)."""

    def __init__(self) -> None:
        self.entered = 0
        self.exited = 0

    def __enter__(self) -> Counted:
        self.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.exited += 1


async def test_resources_entered_once_and_state_shared(provider_url: str) -> None:
    topic = f"{unique()}/count"
    app = DistributedApplication(provider_url)
    sync_resource = Counted()
    async_events: list[str] = []

    @contextlib.asynccontextmanager
    async def connection_pool() -> AsyncIterator[dict[str, int]]:
        async_events.append("enter")
        yield {"connections": 4}
        async_events.append("exit")

    class State:
        count = 0

    state = State()

    @app.application(topic, state=state,
                     ressources={"db": sync_resource, "pool": connection_pool})
    async def consumer(message: BusMessage, state: State, db: Counted,
                       pool: dict[str, int]) -> None:
        assert db is sync_resource
        assert pool == {"connections": 4}
        state.count += 1
        if state.count == 10:
            app.stop()

    @app.producer(resources={"db": sync_resource})
    async def producer(socket: BusSocket, db: Counted) -> None:
        for i in range(10):
            await socket.publish(BusMessage(str(i), topic))

    with trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert state.count == 10
    assert (sync_resource.entered, sync_resource.exited) == (2, 2)  # one per application
    assert async_events == ["enter", "exit"]


async def test_a_failing_app_cancels_its_siblings(provider_url: str) -> None:
    topic = f"{unique()}/fail"
    app = DistributedApplication(provider_url, shutdown_timeout=1)
    sibling_resource = Counted()
    sibling_cancelled = trio.Event()

    @app.application(topic, on_error="raise")
    async def failing(message: BusMessage) -> None:
        raise ValueError(f"cannot handle {message.payload!r}")

    @app.application(f"{topic}-other", ressources={"r": sibling_resource})
    async def sibling(message: BusMessage) -> None:
        pass  # pragma: no cover - never gets a message

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        try:
            await socket.publish(BusMessage(b"poison", topic))
            await trio.sleep_forever()
        finally:
            sibling_cancelled.set()

    with pytest.raises(ValueError, match="poison") as caught, trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert "in bus application 'failing'" in caught.value.__notes__
    assert sibling_cancelled.is_set()
    assert (sibling_resource.entered, sibling_resource.exited) == (1, 1)
    assert not app.running


async def test_a_failing_handler_is_logged_and_the_app_goes_on(
    provider_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The default error policy: log with the ids, acknowledge, handle the next message."""
    topic = f"{unique()}/jobs"
    app = DistributedApplication(provider_url)
    handled: list[bytes] = []
    seen_ids: dict[bytes, str | None] = {}
    other: list[bytes] = []

    @app.application(topic)
    async def worker(message: BusMessage) -> None:
        seen_ids[message.payload] = message.message_id
        if message.payload.startswith(b"bad"):
            raise ValueError(f"cannot do {message.payload!r}")
        handled.append(message.payload)

    @app.application(f"{topic}-other")
    async def sibling(message: BusMessage) -> None:
        other.append(message.payload)

    with caplog.at_level(logging.ERROR, logger="trionet.bus"):
        async with serving(app), from_url(provider_url).create_socket(name="pub") as socket:
            await socket.publish(BusMessage(b"1", topic))
            await socket.publish(BusMessage(b"bad-a", topic, correlation_id="corr-a",
                                            message_id="msg-a"))
            await socket.publish(BusMessage(b"2", topic))
            await socket.publish(BusMessage(b"bad-b", topic))  # the socket gives it an id
            await socket.publish(BusMessage(b"3", topic))
            await socket.publish(BusMessage(b"x", f"{topic}-other"))
            await wait_until(lambda: handled == [b"1", b"2", b"3"] and other == [b"x"])
            assert app.running
    assert app.statistics["worker"].failed == 2
    assert app.statistics["worker"].handled == 3
    failures = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 2
    assert "message msg-a" in failures[0] and "correlation id corr-a" in failures[0]
    assert "ValueError" in failures[0]
    generated = seen_ids[b"bad-b"]
    assert generated is not None and f"message {generated}" in failures[1]
    assert len(set(seen_ids.values())) == len(seen_ids)  # every message got its own id


async def test_a_producer_request_timeout_ends_only_that_producer(
    provider_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"{unique()}/work"
    app = DistributedApplication(provider_url)
    handled: list[bytes] = []
    gave_up = trio.Event()

    @app.application(topic)
    async def worker(message: BusMessage) -> None:
        handled.append(message.payload)

    @app.producer()
    async def asker(socket: BusSocket) -> None:
        try:
            await socket.request(BusMessage(b"?", f"{topic}-nobody", correlation_id="ask-1"),
                                 timeout=0.3)
        finally:
            gave_up.set()

    with caplog.at_level(logging.ERROR, logger="trionet.bus"):
        async with serving(app), from_url(provider_url).create_socket(name="pub") as socket:
            with trio.fail_after(PATIENCE):
                await gave_up.wait()
            await wait_until(lambda: any("asker" in r.getMessage() for r in caplog.records))
            await socket.publish(BusMessage(b"after", topic))
            await wait_until(lambda: handled == [b"after"])
            assert app.running
    logged = [r.getMessage() for r in caplog.records if "asker" in r.getMessage()]
    assert len(logged) == 1
    assert "RequestTimeout" in logged[0] and "correlation id ask-1" in logged[0]


async def test_on_error_raise_still_ends_the_bus(provider_url: str) -> None:
    topic = f"{unique()}/work"
    app = DistributedApplication(provider_url)

    @app.application(topic)
    async def worker(message: BusMessage) -> None:
        pass  # pragma: no cover - nothing is published

    @app.producer(on_error="raise")
    async def asker(socket: BusSocket) -> None:
        await socket.request(BusMessage(b"?", f"{topic}-nobody"), timeout=0.3)

    with pytest.raises(RequestTimeout) as caught, trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert "in bus application 'asker'" in caught.value.__notes__
    assert not app.running


async def test_restart_policy_restarts_a_failing_app(provider_url: str) -> None:
    topic = f"{unique()}/flaky"
    app = DistributedApplication(provider_url)
    handled: list[bytes] = []
    failures = 0

    @app.application(topic, restart=RestartPolicy(max_restarts=2), on_error="raise")
    async def flaky(message: BusMessage) -> None:
        nonlocal failures
        if message.payload == b"boom" and failures == 0:
            failures += 1
            raise RuntimeError("first time only")
        handled.append(message.payload)

    async with serving(app), from_url(provider_url).create_socket(name="publisher") as socket:
        await socket.publish(BusMessage(b"boom", topic))
        await wait_until(lambda: app.statistics["flaky"].restarts == 1)
        # The app is back once a message published now is handled.
        with trio.fail_after(PATIENCE):
            while b"ok" not in handled:
                await socket.publish(BusMessage(b"ok", topic))
                await trio.sleep(0.2)
    assert failures == 1
    assert app.statistics["flaky"].restarts == 1


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_shutdown_drains_in_flight_messages(provider_url: str, how: str) -> None:
    topic = f"{unique()}/slow"
    app = DistributedApplication(provider_url, shutdown_timeout=PATIENCE)
    started: list[bytes] = []
    finished: list[bytes] = []

    @app.application(topic, max_concurrency=3)
    async def slow(message: BusMessage) -> None:
        started.append(message.payload)
        await trio.sleep(0.3)
        finished.append(message.payload)

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            await nursery.start(app.serve)
            async with from_url(provider_url).create_socket(name="publisher") as socket:
                for i in range(3):
                    await socket.publish(BusMessage(str(i), topic))
                await wait_until(lambda: len(started) == 3)
            if how == "stop":
                app.stop()
            else:
                nursery.cancel_scope.cancel()
    assert sorted(finished) == [b"0", b"1", b"2"]
    assert app.statistics["slow"].handled == 3
    assert app.statistics["slow"].in_flight == 0


async def test_shutdown_deadline_cancels_stuck_handlers(provider_url: str) -> None:
    topic = f"{unique()}/stuck"
    app = DistributedApplication(provider_url, shutdown_timeout=0.2)
    outcome: list[str] = []

    @app.application(topic)
    async def stuck(message: BusMessage) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    with trio.fail_after(PATIENCE):
        async with serving(app), from_url(provider_url).create_socket(name="publisher") as socket:
            await socket.publish(BusMessage(b"x", topic))
            await wait_until(lambda: app.statistics["stuck"].in_flight == 1)
    assert outcome == ["cancelled"]


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_binary_payloads(provider_url: str, codec: str) -> None:
    topic = f"{unique()}/bin"
    url = f"{provider_url}{'&' if '?' in provider_url else '?'}codec={codec}"
    payloads = [bytes(range(256)), b"", b"\xff\xfe\x00\x80" * 1000, "ünïcödé ✓".encode()]
    app = DistributedApplication(url)
    received: list[bytes] = []

    @app.application(topic)
    async def consumer(message: BusMessage, socket: BusSocket) -> None:
        received.append(message.payload)
        if message.response_topic:
            await socket.reply(message, message.payload[::-1])

    async with serving(app), from_url(url).create_socket(name="publisher") as socket:
        for payload in payloads:
            await socket.publish(BusMessage(payload, topic))
        reply = await socket.request(BusMessage(b"\x00\x01\xff", topic))
        assert reply.payload == b"\xff\x01\x00"
        await wait_until(lambda: len(received) == len(payloads) + 1)
    assert received[: len(payloads)] == payloads


@contextlib.contextmanager
def captured_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    with caplog.at_level(logging.WARNING, logger="trionet.bus"):
        yield records
        records.extend(r for r in caplog.records if "malformed" in r.getMessage())


async def test_malformed_envelopes_are_logged_and_skipped(
    provider_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"{unique()}/mixed"
    app = DistributedApplication(provider_url)
    received: list[bytes] = []
    junk: list[Any] = [b"\xc1 not msgpack", b"{not json", b'{"payload": 42}', b"\x93\x01\x02\x03",
                       b"", b'{"topic": "x", "payload": "y", "headers": [1]}']

    @app.application(topic)
    async def consumer(message: BusMessage) -> None:
        received.append(message.payload)

    with captured_warnings(caplog) as warnings:
        async with serving(app), from_url(provider_url).create_socket(name="foreign") as socket:
            for data in junk:
                await socket.publish_raw(topic, data)
            await socket.publish(BusMessage(b"valid", topic))
            await wait_until(lambda: received == [b"valid"])
    assert len(warnings) == len(junk)
