"""DistributedApplication behaviour on the in-memory broker: registration, policies, lifecycle."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from bus_support import PATIENCE, serving, unique, wait_until

from trionet.bus import (
    AckPolicy,
    Backoff,
    BusClosed,
    BusError,
    BusMessage,
    BusSocket,
    DistributedApplication,
    ErrorPolicy,
    MemoryBroker,
    MemoryConfig,
    NoResponseTopic,
    RestartPolicy,
    SocketProviderFactory,
    SpaMessage,
)
from trionet.bus.testing import serving as bus_serving
from trionet.errors import ConfigurationError

FAST = Backoff(initial=0.01, maximum=0.01, jitter=0)


def running(app: DistributedApplication) -> bool:
    return app.running


# -- spa_dat compatibility --------------------------------------------------------------------


async def test_seed_example_runs_unchanged() -> None:
    """spa_dat's request example: callbacks declare only what they use; str payloads."""
    socket_provider = SocketProviderFactory.from_config(MemoryConfig(name=unique()))
    app = DistributedApplication(default_socket_provider=socket_provider)
    responses: list[bytes] = []

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        for i in range(3):
            response = await socket.request(
                SpaMessage(payload=f"Producer Message {i}", topic="test/spa-dat-producer")
            )
            responses.append(response.payload)
        app.stop()

    @app.application("test/spa-dat-producer")
    async def consumer(message: SpaMessage, socket: BusSocket) -> None:
        await socket.publish(SpaMessage(payload=f"Response Message for {message.text}",
                                        topic=message.response_topic or ""))

    with trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert responses == [f"Response Message for Producer Message {i}".encode() for i in range(3)]
    assert producer.__name__ == "producer"  # the decorators return the function


async def test_kwargs_callbacks_get_everything() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def resource() -> Iterator[str]:
        yield "the resource"

    @app.application("t/kw", state="S", ressources={"res": resource()})
    async def consumer(**kwargs: Any) -> None:
        seen.update(kwargs)
        app.stop()

    @app.producer()
    async def producer(socket: BusSocket, **kwargs: Any) -> None:
        assert kwargs == {"state": None}
        await socket.publish(BusMessage(b"x", "t/kw"))

    with trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert sorted(seen) == ["message", "res", "socket", "state"]
    assert seen["state"] == "S" and seen["res"] == "the resource"


async def test_each_app_keeps_its_own_topics() -> None:
    """spa_dat 0.2 let the last decorator's topics win for every app sharing a provider."""
    provider = SocketProviderFactory.from_url(f"memory://{unique()}")
    app = DistributedApplication(provider)
    got: dict[str, list[str]] = {"a": [], "b": []}

    @app.application("topic/a")
    async def a(message: BusMessage) -> None:
        got["a"].append(message.topic)

    @app.application("topic/b")
    async def b(message: BusMessage) -> None:
        got["b"].append(message.topic)

    async with serving(app), provider.create_socket() as socket:
        await socket.publish(BusMessage(b"1", "topic/a"))
        await socket.publish(BusMessage(b"2", "topic/b"))
        await wait_until(lambda: bool(got["a"] and got["b"]))
    assert got == {"a": ["topic/a"], "b": ["topic/b"]}
    assert provider.config.default_subscription_topics is None


async def test_default_provider_is_memory() -> None:
    app = DistributedApplication()
    topic = f"{unique()}/x"
    got: list[bytes] = []

    @app.application(topic)
    async def consumer(message: BusMessage) -> None:
        got.append(message.payload)
        app.stop()

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        await socket.publish(BusMessage(b"hi", topic))

    with trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert got == [b"hi"]


# -- registration errors ----------------------------------------------------------------------


def test_registration_errors() -> None:
    app = DistributedApplication("memory://")

    def not_async(message: BusMessage) -> None:
        pass  # pragma: no cover

    async def needs_db(message: BusMessage, db: object) -> None:
        pass  # pragma: no cover

    async def ok(message: BusMessage) -> None:
        pass  # pragma: no cover

    with pytest.raises(ConfigurationError, match="async"):
        app.application("t")(not_async)  # type: ignore[type-var]
    with pytest.raises(ConfigurationError, match="'db'"):
        app.application("t")(needs_db)
    with pytest.raises(ConfigurationError, match="'#' must be"):
        app.application("a/#/b")
    with pytest.raises(ConfigurationError, match="at least one topic"):
        app.application([])
    with pytest.raises(ConfigurationError, match="clashes"):
        app.application("t", ressources={"socket": contextlib.nullcontext()})(ok)
    with pytest.raises(ConfigurationError, match="context manager"):
        app.application("t", ressources={"x": 42})(ok)  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="not both"):
        app.application("t", ressources={}, resources={})(ok)
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        app.application("t", max_concurrency=0)(ok)
    with pytest.raises(ConfigurationError, match="ack policy"):
        app.application("t", ack="sometimes")(ok)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="dead_letter"):
        app.application("t", on_error="dead_letter")(ok)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unsupported"):
        DistributedApplication("amqp://host")
    app.application("t", name="same")(ok)
    with pytest.raises(ConfigurationError, match="already registered"):
        app.application("t", name="same")(ok)
    app.application("t")(ok)
    app.application("t")(ok)
    assert [spec.name for spec in app.applications] == ["same", "ok", "ok-2"]


def test_add_application_uses_the_provider_topics() -> None:
    provider = SocketProviderFactory.from_url("memory://?topics=a/b,c/%23")
    app = DistributedApplication(provider)

    async def handler(message: BusMessage) -> None:
        pass  # pragma: no cover

    spec = app.add_application(handler, provider)
    assert spec.topics == ("a/b", "c/#")
    with pytest.raises(ConfigurationError):
        DistributedApplication("memory://").add_application(handler)
    async def produce(socket: BusSocket) -> None:
        pass  # pragma: no cover

    producer = app.add_producer_application(produce, None, None, {"r": contextlib.nullcontext})
    assert producer.kind == "producer" and "r" in producer.resources


# -- error policies ---------------------------------------------------------------------------


async def test_error_policy_log_and_continue(caplog: pytest.LogCaptureFixture) -> None:
    app = DistributedApplication(f"memory://{unique()}")
    handled: list[bytes] = []

    @app.application("t/log", on_error="log")
    async def consumer(message: BusMessage) -> None:
        if message.payload == b"bad":
            raise ValueError("bad message")
        handled.append(message.payload)

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        for payload in (b"1", b"bad", b"2"):
            await socket.publish(BusMessage(payload, "t/log"))

    with caplog.at_level(logging.ERROR, logger="trionet.bus"):
        async with serving(app):
            await wait_until(lambda: handled == [b"1", b"2"])
    assert app.statistics["consumer"].failed == 1
    assert any("acknowledged and skipped" in r.getMessage() for r in caplog.records)


async def test_error_policy_retry_then_succeed() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    attempts = 0

    @app.application("t/retry", on_error=ErrorPolicy.retry(3, backoff=FAST))
    async def consumer(message: BusMessage) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("flaky downstream")
        app.stop()

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        await socket.publish(BusMessage(b"x", "t/retry"))

    with trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert attempts == 3
    assert app.statistics["consumer"].failed == 2
    assert app.statistics["consumer"].handled == 1


async def test_error_policy_retry_exhausted_raises() -> None:
    app = DistributedApplication(f"memory://{unique()}")

    @app.application("t/retry", on_error=ErrorPolicy.retry(2, backoff=FAST, then="raise"))
    async def consumer(message: BusMessage) -> None:
        raise ConnectionError("always down")

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        await socket.publish(BusMessage(b"x", "t/retry"))

    with pytest.raises(ConnectionError), trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert app.statistics["consumer"].failed == 3


async def test_error_policy_dead_letter() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    dead: list[BusMessage] = []

    @app.application("orders/new", on_error=ErrorPolicy.dead_letter("orders/dead", retries=1,
                                                                      backoff=FAST))
    async def consumer(message: BusMessage) -> None:
        raise KeyError("no such customer")

    @app.application("orders/dead")
    async def dead_letters(message: BusMessage) -> None:
        dead.append(message)

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        await socket.publish(BusMessage(b"order 1", "orders/new", headers={"k": "v"}))

    async with serving(app):
        await wait_until(lambda: len(dead) == 1)
    assert dead[0].payload == b"order 1"
    assert dead[0].headers["x-error"] == "KeyError: 'no such customer'"
    assert dead[0].headers["x-original-topic"] == "orders/new"
    assert dead[0].headers["k"] == "v"
    assert app.statistics["consumer"].dead_lettered == 1


# -- ack policy, concurrency, backpressure ----------------------------------------------------


@pytest.mark.parametrize("ack", [AckPolicy.AFTER, AckPolicy.BEFORE])
async def test_ack_policy(ack: AckPolicy) -> None:
    broker = MemoryBroker()
    app = DistributedApplication(broker.provider())
    acked_during_handler: list[int] = []

    @app.application("t/ack", ack=ack)
    async def consumer(message: BusMessage) -> None:
        acked_during_handler.append(broker.statistics.acked)
        app.stop()

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        await socket.publish(BusMessage(b"x", "t/ack"))

    with trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert acked_during_handler == [1 if ack is AckPolicy.BEFORE else 0]
    assert broker.statistics.acked == 1


async def test_max_concurrency_runs_handlers_in_parallel() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    release = trio.Event()
    running = 0
    peak = 0

    @app.application("t/par", max_concurrency=3)
    async def consumer(message: BusMessage) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        for i in range(6):
            await socket.publish(BusMessage(str(i), "t/par"))

    async with serving(app):
        await wait_until(lambda: running == 3)
        await trio.testing.wait_all_tasks_blocked()
        assert running == 3  # the fourth message waits for a free slot
        release.set()
        await wait_until(lambda: app.statistics["consumer"].handled == 6)
    assert peak == 3


async def test_sequential_app_keeps_order() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    got: list[int] = []

    @app.application("t/seq")
    async def consumer(message: BusMessage) -> None:
        await trio.lowlevel.checkpoint()
        got.append(int(message.payload))

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        for i in range(200):
            await socket.publish(BusMessage(str(i), "t/seq"))

    async with serving(app):
        await wait_until(lambda: len(got) == 200)
    assert got == list(range(200))


async def test_full_queue_blocks_or_drops() -> None:
    broker = MemoryBroker()
    blocking = broker.provider(max_queue=2)
    dropping = broker.provider(max_queue=2, overflow="drop")
    async with blocking.create_socket("q/block") as slow, \
            dropping.create_socket("q/drop") as lossy, \
            broker.provider().create_socket() as publisher:
        for i in range(5):
            await publisher.publish(BusMessage(str(i), "q/drop"))
        assert broker.statistics.dropped == 3
        assert [(await lossy.receive()).payload for _ in range(2)] == [b"0", b"1"]

        async with trio.open_nursery() as nursery:
            sent = 0

            async def publish_three() -> None:
                nonlocal sent
                for i in range(3):
                    await publisher.publish(BusMessage(str(i), "q/block"))
                    sent += 1

            nursery.start_soon(publish_three)
            await trio.testing.wait_all_tasks_blocked()
            assert sent == 2  # the third publish waits for room
            assert (await slow.receive()).payload == b"0"
        assert sent == 3


# -- restarts and lifecycle -------------------------------------------------------------------


async def test_restart_policy_gives_up_after_max_restarts() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    starts = 0

    @app.producer(restart=RestartPolicy(max_restarts=2, backoff=FAST), on_error="raise")
    async def producer(socket: BusSocket) -> None:
        nonlocal starts
        starts += 1
        raise RuntimeError(f"start {starts}")

    with pytest.raises(RuntimeError, match="start 3"), trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert app.statistics["producer"].restarts == 2


async def test_restart_re_enters_resource_factories() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def connection() -> Any:
        events.append("open")
        try:
            yield len(events)
        finally:
            events.append("close")

    @app.producer(restart=RestartPolicy(max_restarts=1, backoff=FAST),
                  resources={"conn": connection})
    async def producer(conn: int) -> None:
        if conn == 1:
            raise RuntimeError("first connection is bad")

    with trio.fail_after(PATIENCE):
        await app.start_async(handle_signals=False)
    assert events == ["open", "close", "open", "close"]


async def test_serve_lifecycle_errors() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    app.stop()  # not running: nothing happens

    @app.application("t/life")
    async def consumer(message: BusMessage) -> None:
        pass  # pragma: no cover

    async with bus_serving(app):
        assert running(app)
        with pytest.raises(BusError, match="already running"):
            await app.serve()
    assert not running(app)
    async with trio.open_nursery() as nursery:  # it can run again
        await nursery.start(app.serve)
        app.stop()


async def test_stop_during_startup_and_empty_app() -> None:
    await DistributedApplication().serve()  # nothing registered: returns at once
    app = DistributedApplication(f"memory://{unique()}")
    entering = trio.Event()
    exited = False

    @contextlib.asynccontextmanager
    async def slow_resource() -> Any:
        nonlocal exited
        entering.set()
        try:
            await trio.sleep_forever()
            yield  # type: ignore[unreachable]  # pragma: no cover
        finally:
            exited = True

    @app.application("t/x", resources={"slow": slow_resource})
    async def consumer(message: BusMessage, slow: None) -> None:
        pass  # pragma: no cover

    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.serve)
            await entering.wait()
            app.stop()  # the consumer is not up yet: it is cancelled at once
    assert exited and not app.running


async def test_app_failure_inside_bus_serving_is_raised() -> None:
    app = DistributedApplication(f"memory://{unique()}")

    @app.application("t/boom", on_error="raise")
    async def consumer(message: BusMessage) -> None:
        raise LookupError("boom")

    with pytest.raises(LookupError):
        provider = app.default_socket_provider
        assert provider is not None
        async with bus_serving(app), provider.create_socket() as socket:
            await socket.publish(BusMessage(b"x", "t/boom"))
            await trio.sleep_forever()


# -- sockets ----------------------------------------------------------------------------------


async def test_socket_lifecycle_and_subscriptions() -> None:
    broker = MemoryBroker()
    provider = broker.provider()
    socket = provider.create_socket(["a/#"], name="s")
    with pytest.raises(BusClosed, match="not open"):
        await socket.publish(BusMessage(b"x", "a/b"))
    async with socket, provider.create_socket() as publisher:
        with pytest.raises(BusError, match="once"):
            await socket.__aenter__()
        assert list(socket.subscriptions) == ["a/#"]
        await socket.subscribe(["b/+", "a/#"])
        assert list(socket.subscriptions) == ["a/#", "b/+"]
        assert broker.subscriptions()[socket.client_id] == ("a/#", "b/+")
        await publisher.publish(BusMessage(b"1", "b/x"))
        assert (await socket.receive()).payload == b"1"
        await socket.unsubscribe("b/+")
        await publisher.publish(BusMessage(b"2", "b/x"))  # nobody subscribed any more
        await publisher.publish(BusMessage(b"3", "a/x"))
        assert (await socket.receive()).payload == b"3"
        with pytest.raises(ConfigurationError, match="reserved"):
            await socket.subscribe("_trionet/reply/+")
        with pytest.raises(ConfigurationError, match="wildcards"):
            await publisher.publish(BusMessage(b"x", "a/+"))
        with pytest.raises(TypeError):
            await publisher.publish(b"not a message")  # type: ignore[arg-type,unused-ignore]
        with pytest.raises(NoResponseTopic):
            await publisher.reply(BusMessage(b"q", "a/b"), b"answer")
    assert socket.closed
    with pytest.raises(BusClosed, match="closed"):
        await socket.publish(BusMessage(b"x", "a/b"))
    with pytest.raises(BusClosed):
        await socket.receive()


async def test_socket_iteration_ends_when_closed() -> None:
    broker = MemoryBroker()
    got: list[bytes] = []
    async with broker.provider().create_socket() as publisher, trio.open_nursery() as nursery:
        socket = broker.provider().create_socket("it/x")

        async def consume() -> None:
            async with socket:
                async for message in socket:
                    got.append(message.payload)
                    if len(got) == 2:
                        break

        nursery.start_soon(consume)
        await wait_until(lambda: socket.subscriptions == ("it/x",))
        for payload in (b"a", b"b"):
            await publisher.publish(BusMessage(payload, "it/x"))
    assert got == [b"a", b"b"]
    async for _ in socket:  # a closed socket's iteration ends at once
        raise AssertionError("unreachable")  # pragma: no cover


async def test_dollar_topics_and_client_names() -> None:
    broker = MemoryBroker()
    async with broker.provider().create_socket("#") as everything, \
            broker.provider(client_name="svc").create_socket() as publisher:
        await publisher.publish(BusMessage(b"sys", "$SYS/x"))
        await publisher.publish(BusMessage(b"normal", "a"))
        message = await everything.receive()
        assert message.payload == b"normal"
        assert message.client_name == "svc"


async def test_request_options() -> None:
    broker = MemoryBroker()
    app = DistributedApplication(broker.provider())

    @app.application("rpc/echo")
    async def echo(message: BusMessage, socket: BusSocket) -> None:
        await socket.reply(message, message.payload, headers={"echo": "1"})

    async with serving(app), broker.provider(request_timeout=5).create_socket() as socket:
        reply = await socket.request(BusMessage(b"x", "rpc/echo", correlation_id="my-id"))
        assert reply.correlation_id == "my-id"
        # Published while handling the request: the reply carries its correlation id along.
        assert reply.headers == {"echo": "1", "x-correlation-id": "my-id"}
        with pytest.raises(ConfigurationError):
            await socket.request(BusMessage(b"x", "rpc/echo"), timeout=0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(socket.request, BusMessage(b"x", "nobody", correlation_id="c"))
            await wait_until(lambda: socket.statistics.pending_requests == 1)
            with pytest.raises(BusError, match="pending"):
                await socket.request(BusMessage(b"x", "nobody", correlation_id="c"))
            nursery.cancel_scope.cancel()
    assert broker.statistics.unroutable_replies == 0
