"""Typed handlers, injection, publishers and middleware (issue 22), on memory:// and, for
the contract test, on mosquitto and Kafka."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated, Any, TypedDict

import msgspec
import pydantic
import pytest
import trio
from bus_support import PATIENCE, serving, unique, wait_until

from trionet.bus import (
    Backoff,
    BusClosed,
    BusMessage,
    BusSocket,
    CorrelationId,
    DistributedApplication,
    ErrorPolicy,
    Header,
    Headers,
    InvalidPayload,
    LoggingMiddleware,
    MessageId,
    Middleware,
    RetryMiddleware,
    State,
    decode_payload,
    encode_payload,
    from_url,
)
from trionet.errors import ConfigurationError

FAST = Backoff(initial=0.001, maximum=0.001, jitter=0)


@dataclasses.dataclass
class Order:
    item: str
    qty: int


@dataclasses.dataclass
class Receipt:
    item: str
    total: int


class Point(msgspec.Struct):
    x: int
    y: int


class Pair(TypedDict):
    a: int
    b: str


class User(pydantic.BaseModel):
    name: str
    age: int


class Tree(msgspec.Struct):
    children: list[Any]


def test_the_spec_records_payload_result_and_publishers() -> None:
    app = DistributedApplication("memory://")

    @app.application("orders")
    @app.publisher("receipts")
    async def below(order: Order) -> Receipt:
        return Receipt(order.item, order.qty)  # pragma: no cover

    @app.publisher("receipts")
    @app.publisher("audit")
    @app.application("orders")
    async def above(order: Order, tenant: Annotated[str, Header("x-tenant")]) -> Receipt:
        return Receipt(order.item, order.qty)  # pragma: no cover

    @app.application("raw")
    async def raw(message: BusMessage, socket: BusSocket) -> None:
        pass  # pragma: no cover

    @app.application("nothing")
    async def no_publisher(point: Point) -> int:
        return 1  # pragma: no cover

    specs = {spec.name: spec for spec in app.applications}
    assert specs["below"].payload_type is Order
    assert specs["below"].result_type is Receipt
    assert specs["below"].publishes == ("receipts",)
    assert specs["above"].payload_type is Order
    assert specs["above"].result_type is Receipt
    assert set(specs["above"].publishes) == {"receipts", "audit"}
    assert specs["raw"].payload_type is None and specs["raw"].binding is None
    assert specs["raw"].publishes == () and specs["raw"].result_type is None
    assert specs["no_publisher"].payload_type is Point
    assert specs["no_publisher"].result_type is None


def test_registration_errors_of_typed_handlers() -> None:
    app = DistributedApplication("memory://")

    async def two_payloads(a: Order, b: Point) -> None:
        pass  # pragma: no cover

    async def undecodable(a: trio.Lock) -> None:
        pass  # pragma: no cover

    async def unresolved(a: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass  # pragma: no cover

    async def producer() -> None:
        pass  # pragma: no cover

    with pytest.raises(ConfigurationError, match="one payload parameter"):
        app.application("t")(two_payloads)
    with pytest.raises(ConfigurationError, match="cannot decode payloads into"):
        app.application("t")(undecodable)
    with pytest.raises(ConfigurationError, match="cannot resolve"):
        app.application("t")(unresolved)
    app.producer()(producer)
    with pytest.raises(ConfigurationError, match="not a producer"):
        app.publisher("out")(producer)
    with pytest.raises(ConfigurationError, match="wildcards"):
        app.publisher("out/#")
    with pytest.raises(ConfigurationError, match="not middleware"):
        DistributedApplication("memory://", middleware=[object()])


def test_payload_helpers() -> None:
    assert encode_payload(b"raw") == (b"raw", None)
    assert encode_payload("text", "text/plain") == (b"text", "text/plain")
    assert encode_payload(Order("a", 2)) == (b'{"item":"a","qty":2}', "application/json")
    data, kind = encode_payload(Point(1, 2), "application/msgpack")
    assert kind == "application/msgpack" and msgspec.msgpack.decode(data) == {"x": 1, "y": 2}
    assert encode_payload(User(name="u", age=3))[0] == b'{"name":"u","age":3}'
    with pytest.raises(TypeError):
        encode_payload(trio.Lock())
    message = BusMessage(data, "t", content_type="application/msgpack")
    assert decode_payload(message, Point) == Point(1, 2)
    with pytest.raises(InvalidPayload, match="invalid payload for Order") as caught:
        decode_payload(BusMessage(b'{"item":"a"}', "t", correlation_id="c1",
                                  message_id="m1"), Order)
    assert (caught.value.message_id, caught.value.correlation_id) == ("m1", "c1")
    assert isinstance(caught.value, ValueError)


def test_deeply_nested_payloads_are_invalid_not_fatal() -> None:
    for depth in (10_000, 1_000_000):
        nested = b'{"children":[' + b"[" * depth + b"]" * depth + b"]}"
        with pytest.raises(InvalidPayload, match="nested too deeply"):
            decode_payload(BusMessage(nested, "t"), Tree)
        packed = b"\x81\xa8children\x91" + b"\x91" * depth + b"\x90"
        with pytest.raises(InvalidPayload, match="nested too deeply"):
            decode_payload(BusMessage(packed, "t", content_type="application/msgpack"), Tree)
        with pytest.raises(InvalidPayload):
            decode_payload(BusMessage(nested, "t"), User)
    shallow = b'{"children":[[[]]]}'
    assert decode_payload(BusMessage(shallow, "t"), Tree) == Tree([[[]]])


async def test_typed_payloads_of_every_kind() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    got: dict[str, Any] = {}

    @app.application("k/order")
    async def order(order: Order) -> None:
        got["order"] = order

    @app.application("k/point")
    async def point(p: Point) -> None:
        got["point"] = p

    @app.application("k/pair")
    async def pair(p: Pair) -> None:
        got["pair"] = p

    @app.application("k/user")
    async def user(u: User) -> None:
        got["user"] = u

    @app.application("k/dict")
    async def as_dict(d: dict[str, int]) -> None:
        got["dict"] = d

    @app.application("k/bytes")
    async def as_bytes(body: bytes) -> None:
        got["bytes"] = body

    @app.application("k/str")
    async def as_str(body: str) -> None:
        got["str"] = body

    @app.application("k/named")
    async def named(message: Point) -> None:  # "message" annotated with a type: the payload
        got["named"] = message

    async with serving(app):
        await app.publish(Order("tea", 2), "k/order")
        await app.publish(Point(1, 2), "k/point", content_type="application/msgpack")
        await app.publish({"a": 1, "b": "x"}, "k/pair")
        await app.publish(User(name="ann", age=7), "k/user")
        await app.publish({"n": 3}, "k/dict")
        await app.publish(b"\xff\x00", "k/bytes")
        await app.publish("héllo", "k/str")
        await app.publish(BusMessage(b'{"x":5,"y":6}', "k/named"))
        await wait_until(lambda: len(got) == 8, what="every handler")
    assert got == {
        "order": Order("tea", 2), "point": Point(1, 2), "pair": {"a": 1, "b": "x"},
        "user": User(name="ann", age=7), "dict": {"n": 3}, "bytes": b"\xff\x00",
        "str": "héllo", "named": Point(5, 6),
    }


async def test_injection_by_annotation() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    seen: list[tuple[Any, ...]] = []
    marker = object()

    @app.application("inject", state=marker)
    async def handler(
        order: Order,
        raw: BusMessage,
        sock: BusSocket,
        tenant: Annotated[str, Header("x-tenant")],
        region: Annotated[str, Header("x-region")] = "eu",
        everything: Headers = {},  # noqa: B006 - never used: the bus passes the headers
        correlation: CorrelationId = None,
        message_id: MessageId = None,
        st: State = None,
    ) -> None:
        seen.append((order, raw.topic, isinstance(sock, BusSocket), tenant, region,
                     everything, correlation, message_id, st is marker))

    async with serving(app):
        await app.publish(Order("a", 1), "inject", headers={"x-tenant": "t1"},
                          correlation_id="c-7")
        await app.publish(Order("b", 2), "inject", headers={"x-region": "us"})  # no tenant
        await wait_until(lambda: app.statistics["handler"].invalid == 1, what="invalid")
    assert len(seen) == 1
    order, topic, is_socket, tenant, region, headers, correlation, message_id, state = seen[0]
    assert (order, topic, is_socket, tenant, region) == (Order("a", 1), "inject", True, "t1", "eu")
    assert headers == {"x-tenant": "t1"}
    assert correlation == "c-7" and message_id is not None and state


async def test_invalid_payloads_go_to_the_dead_letter_topic_without_retries(
        caplog: pytest.LogCaptureFixture) -> None:
    app = DistributedApplication(f"memory://{unique()}")
    calls: list[Order] = []
    dead: list[BusMessage] = []

    @app.application("shop", on_error=ErrorPolicy.dead_letter("shop.dlq", retries=3,
                                                              backoff=FAST))
    async def shop(order: Order) -> None:
        calls.append(order)

    @app.application("shop.dlq")
    async def dlq(message: BusMessage) -> None:
        dead.append(message)

    caplog.set_level(logging.WARNING, "trionet.bus")
    async with serving(app):
        await app.publish(BusMessage(b'{"item":"x","qty":"many"}', "shop",
                                     correlation_id="corr-1", message_id="id-1"))
        await app.publish(BusMessage(b"\x80 not json", "shop"))
        await app.publish(Order("ok", 1), "shop")
        await wait_until(lambda: len(dead) == 2 and len(calls) == 1, what="dead letters")
    stats = app.statistics["shop"]
    assert (stats.failed, stats.invalid, stats.dead_lettered, stats.handled) == (2, 2, 2, 1)
    assert calls == [Order("ok", 1)]
    assert dead[0].payload == b'{"item":"x","qty":"many"}'
    assert dead[0].headers["x-error"].startswith("InvalidPayload: invalid payload for Order")
    assert dead[0].headers["x-original-topic"] == "shop"
    logged = [r.getMessage() for r in caplog.records if "sent to 'shop.dlq'" in r.getMessage()]
    assert any("id-1" in text and "corr-1" in text for text in logged)
    assert not any("retry" in r.getMessage() for r in caplog.records)


async def test_publisher_results_requests_and_none() -> None:
    app = DistributedApplication(f"memory://{unique()}")
    receipts: list[BusMessage] = []
    audit: list[BusMessage] = []

    @app.application("buy")
    @app.publisher("receipts")
    async def buy(order: Order) -> Receipt | None:
        return None if order.qty == 0 else Receipt(order.item, order.qty * 10)

    @app.publisher("audit")
    @app.application("legacy")
    async def legacy(message: BusMessage) -> bytes:  # spa_dat style, with a publisher
        return b"seen " + message.payload

    @app.application("receipts")
    async def on_receipt(message: BusMessage) -> None:
        receipts.append(message)

    @app.application("audit")
    async def on_audit(message: BusMessage) -> None:
        audit.append(message)

    @app.application("ask")
    async def answer(p: Point) -> Point:  # no publisher: the return value is the reply
        return Point(p.y, p.x)

    async with serving(app), from_url(app.default_socket_provider.url  # type: ignore[union-attr]
                                      ).create_socket(name="client") as client:
        await app.publish(Order("tea", 0), "buy")  # None: nothing published
        await app.publish(Order("tea", 3), "buy", correlation_id="c-buy")
        await app.publish(b"x", "legacy")
        reply = await client.request(Point(1, 2), "ask")
        assert decode_payload(reply, Point) == Point(2, 1)
        assert reply.content_type == "application/json"
        reply = await client.request(BusMessage(b'{"item":"pot","qty":1}', "buy"))
        assert decode_payload(reply, Receipt) == Receipt("pot", 10)
        await wait_until(lambda: len(receipts) == 2 and len(audit) == 1, what="results")
    assert decode_payload(receipts[0], Receipt) == Receipt("tea", 30)
    assert receipts[0].correlation_id == "c-buy"
    assert audit[0].payload == b"seen x"


async def test_app_publish_needs_a_running_application() -> None:
    app = DistributedApplication("memory://")
    with pytest.raises(BusClosed):
        await app.publish(Order("a", 1), "t")
    provider = from_url(f"memory://{unique()}")
    async with provider.create_socket(["t"], name="s") as socket:
        with pytest.raises(TypeError, match="topic"):
            await socket.publish(Order("a", 1))
        with pytest.raises(TypeError, match="topic"):
            await socket.request(Order("a", 1))
        await socket.publish(Order("a", 1), "t", headers={"h": "1"})
        await socket.publish(BusMessage(b"m", "elsewhere"), "t")
        first, second = await socket.receive(), await socket.receive()
    assert (first.payload, first.content_type, first.headers) == (
        b'{"item":"a","qty":1}', "application/json", {"h": "1"})
    assert (second.payload, second.topic) == (b"m", "t")


class Recorder(Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def consume_scope(self, call_next: Any, message: BusMessage) -> Any:
        self.log.append(f"{self.name}>")
        try:
            return await call_next(message)
        finally:
            self.log.append(f"<{self.name}")

    async def publish_scope(self, call_next: Any, message: BusMessage) -> Any:
        self.log.append(f"{self.name}:pub:{message.topic}")
        return await call_next(message.copy(headers={**message.headers, self.name: "1"}))


async def test_middleware_order_and_exceptions() -> None:
    log: list[str] = []
    app = DistributedApplication(f"memory://{unique()}",
                                 middleware=[Recorder("outer", log), Recorder("inner", log)])
    out: list[BusMessage] = []
    failures: list[str] = []

    class Guard(Middleware):
        async def consume_scope(self, call_next: Any, message: BusMessage) -> Any:
            try:
                return await call_next(message)
            except ZeroDivisionError as exc:
                failures.append(type(exc).__name__)
                raise

    @app.application("mw", middleware=[Recorder("own", log), Guard])
    @app.publisher("mw.out")
    async def handler(p: Point) -> Point:
        log.append("handler")
        if p.x == 0:
            raise ZeroDivisionError
        return p

    @app.application("mw.out")
    async def sink(message: BusMessage) -> None:
        out.append(message)

    async with serving(app):
        await app.publish(Point(1, 1), "mw")
        await wait_until(lambda: len(out) == 1, what="the result")
        await app.publish(Point(0, 1), "mw")
        await wait_until(lambda: app.statistics["handler"].failed == 1, what="the failure")
    handled = log[log.index("outer>"):]
    assert handled[:7] == ["outer>", "inner>", "own>", "handler", "<own", "<inner", "<outer"]
    assert handled[7:10] == ["outer:pub:mw.out", "inner:pub:mw.out", "own:pub:mw.out"]
    assert out[0].headers == {"outer": "1", "inner": "1", "own": "1"}
    assert failures == ["ZeroDivisionError"]
    assert log[-3:] == ["<own", "<inner", "<outer"]


async def test_retry_and_logging_middleware(caplog: pytest.LogCaptureFixture) -> None:
    app = DistributedApplication(f"memory://{unique()}", middleware=[
        LoggingMiddleware(), RetryMiddleware(2, backoff=FAST)])
    attempts: list[int] = []

    @app.application("flaky")
    async def flaky(p: Point) -> None:
        attempts.append(p.x)
        if len(attempts) < 3:
            raise ConnectionError("try again")

    caplog.set_level(logging.INFO, "trionet.bus")
    async with serving(app):
        await app.publish(Point(7, 0), "flaky", correlation_id="c-r")
        await wait_until(lambda: app.statistics["flaky"].handled == 1, what="success")
        await app.publish(b"not json", "flaky")  # invalid: never retried
        await wait_until(lambda: app.statistics["flaky"].invalid == 1, what="invalid")
    assert attempts == [7, 7, 7]
    texts = [r.getMessage() for r in caplog.records]
    assert sum("retry" in t for t in texts) == 2
    assert any(t.startswith("handled message") and "c-r" in t for t in texts)
    assert any(t.startswith("failed message") and "InvalidPayload" in t for t in texts)
    assert any(t.startswith("published message") for t in texts)


async def test_typed_contract(provider_url: str) -> None:
    """Typed handler, msgpack, injection, publisher, request reply, dead letter and
    middleware, on every transport."""
    base = unique()
    log: list[str] = []
    app = DistributedApplication(provider_url, middleware=[Recorder("mw", log)])
    results: list[Receipt] = []
    dead: list[BusMessage] = []

    @app.publisher(f"{base}/receipts")
    @app.application(f"{base}/orders",
                     on_error=ErrorPolicy.dead_letter(f"{base}/dlq", retries=2, backoff=FAST))
    async def orders(order: Order, tenant: Annotated[str, Header("x-tenant")] = "-"
                     ) -> Receipt:
        return Receipt(f"{tenant}:{order.item}", order.qty * 2)

    @app.application(f"{base}/receipts")
    async def receipts(receipt: Receipt) -> None:
        results.append(receipt)

    @app.application(f"{base}/dlq")
    async def dlq(message: BusMessage) -> None:
        dead.append(message)

    async with serving(app), from_url(provider_url).create_socket(name="client") as client:
        await app.publish(Order("tea", 2), f"{base}/orders", headers={"x-tenant": "t"})
        await app.publish(Order("pot", 1), f"{base}/orders",
                          content_type="application/msgpack")
        await app.publish(b"{}", f"{base}/orders")
        reply = await client.request(BusMessage(b'{"item":"cup","qty":5}', f"{base}/orders"))
        assert decode_payload(reply, Receipt) == Receipt("-:cup", 10)
        with trio.fail_after(PATIENCE):
            await wait_until(lambda: len(results) == 3 and len(dead) == 1, what="all")
    assert sorted(results, key=lambda r: r.item) == [
        Receipt("-:cup", 10), Receipt("-:pot", 2), Receipt("t:tea", 4)]
    assert dead[0].headers["x-error"].startswith("InvalidPayload")
    assert app.statistics["orders"].invalid == 1
    assert f"mw:pub:{base}/receipts" in log


async def test_middleware_that_raises_goes_to_the_error_policy() -> None:
    calls: list[str] = []

    class Refuse(Middleware):
        async def consume_scope(self, call_next: Any, message: BusMessage) -> Any:
            if message.headers.get("refuse"):
                raise PermissionError("refused by middleware")
            return await call_next(message)

        async def publish_scope(self, call_next: Any, message: BusMessage) -> Any:
            if message.topic == "forbidden":
                raise PermissionError("no publishing there")
            return await call_next(message)

    app = DistributedApplication(f"memory://{unique()}", middleware=[Refuse])

    @app.application("guarded", on_error=ErrorPolicy.retry(2, backoff=FAST))
    @app.publisher("forbidden")
    async def guarded(body: str) -> str | None:
        calls.append(body)
        return body if body == "publish" else None

    async with serving(app):
        await app.publish("a", "guarded", headers={"refuse": "1"})  # never reaches the handler
        await app.publish("publish", "guarded")  # handler runs; publishing its result fails
        await app.publish("b", "guarded")
        await wait_until(lambda: app.statistics["guarded"].handled == 1, what="b")
        with pytest.raises(PermissionError):
            await app.publish("x", "forbidden")
    stats = app.statistics["guarded"]
    assert calls == ["publish"] * 3 + ["b"]  # retried as the policy says
    assert (stats.failed, stats.invalid) == (6, 0)


async def test_retry_middleware_retries_publishes() -> None:
    attempts: list[str] = []

    class FlakyBroker(Middleware):  # inside the retry: the first publish of each topic fails
        async def publish_scope(self, call_next: Any, message: BusMessage) -> Any:
            attempts.append(message.topic)
            if attempts.count(message.topic) == 1:
                raise ConnectionError("broker away")
            return await call_next(message)

    app = DistributedApplication(f"memory://{unique()}", middleware=[
        RetryMiddleware(1, backoff=FAST, consume=False), FlakyBroker()])
    out: list[BusMessage] = []

    @app.application("in")
    @app.publisher("out")
    async def relay(body: bytes) -> bytes:
        return body

    @app.application("out")
    async def sink(message: BusMessage) -> None:
        out.append(message)

    async with serving(app):
        await app.publish(b"x", "in")
        await wait_until(lambda: len(out) == 1, what="the relayed message")
    assert attempts == ["in", "in", "out", "out"]
    assert app.statistics["relay"].failed == 0


def test_without_msgspec_the_bus_imports_and_typed_handlers_say_what_to_install() -> None:
    program = """
import sys
sys.modules["msgspec"] = None  # as if not installed
from dataclasses import dataclass
import trio
from trionet.bus import BusMessage, DistributedApplication
from trionet.errors import ConfigurationError

@dataclass
class Order:
    item: str

app = DistributedApplication("memory://no-msgspec")
got = []

@app.application("raw")
async def raw(message, body: bytes):
    got.append((message.payload, body))
    if len(got) == 2:
        app.stop()

@app.application("raw")
async def text(body: str):
    got.append(body)
    if len(got) == 2:
        app.stop()

@app.producer()
async def send(socket):
    await socket.publish(BusMessage(b"hi", "raw"))

try:
    async def typed(order: Order): pass
    app.application("typed")(typed)
except ConfigurationError as exc:
    assert "pip install 'trionet[bus]'" in str(exc), exc
else:
    raise AssertionError("no ConfigurationError")
app.start()
assert sorted(map(str, got)) == ["(b'hi', b'hi')", "hi"], got
assert "pydantic" not in sys.modules
print("ok")
"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
