"""Concurrency with order per key, deadlines that travel, Kafka partitions and commits."""

from __future__ import annotations

import collections

import msgpack
import pytest
import trio
from bus_support import PATIENCE, kafka_url, read_again, serving, unique, wait_until

from trionet.bus import (
    BusMessage,
    BusSocket,
    DistributedApplication,
    EnvelopeError,
    KafkaConfig,
    RequestTimeout,
    decode_envelope,
    encode_envelope,
    from_url,
)
from trionet.bus._message import MAX_TIMEOUT_MS
from trionet.errors import ConfigurationError
from trionet.kafka import KafkaAdmin
from trionet.testing import KafkaBroker

# -- envelopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_key_and_deadline_travel_in_the_envelope(codec: str) -> None:
    message = BusMessage(b"x", "t", key="order-7", deadline=110.25)
    data = encode_envelope(message, codec, now=100.0)  # type: ignore[arg-type]
    back = decode_envelope(data, now=500.0)
    assert back.key == "order-7"
    assert back.deadline == pytest.approx(510.25)  # the time left, counted from arrival
    assert back == message  # the key is compared, the deadline is not
    assert decode_envelope(data).deadline is None  # no clock, no deadline
    assert decode_envelope(encode_envelope(message, codec)).deadline is None  # type: ignore[arg-type]
    past = encode_envelope(message, codec, now=200.0)  # type: ignore[arg-type]
    assert decode_envelope(past, now=7.0).deadline == 7.0


def test_a_peer_cannot_give_a_huge_or_negative_deadline() -> None:
    def envelope(timeout_ms: object) -> bytes:
        return msgpack.packb({"payload": b"", "topic": "t", "timeout_ms": timeout_ms})

    assert decode_envelope(envelope(10**30 // 10**12), now=0.0).deadline == MAX_TIMEOUT_MS / 1000
    assert decode_envelope(envelope(2**63), now=0.0).deadline == MAX_TIMEOUT_MS / 1000
    assert decode_envelope(envelope(-5), now=3.0).deadline == 3.0
    for bad in ("10", 1.5, True, [1]):
        with pytest.raises(EnvelopeError, match="timeout_ms"):
            decode_envelope(envelope(bad), now=0.0)
    with pytest.raises(TypeError, match="key"):
        BusMessage(b"", "t", key=b"bytes")  # type: ignore[arg-type]


def test_kafka_topic_settings_from_url_and_config() -> None:
    config = from_url("kafka://h:1?partitions=6&replication_factor=3&backend=confluent").config
    assert isinstance(config, KafkaConfig)
    assert (config.partitions, config.replication_factor, config.backend) == (6, 3, "confluent")
    assert from_url(config.to_url()).config == config
    assert KafkaConfig().partitions == KafkaConfig().replication_factor == 1
    for bad in ("partitions=0", "replication_factor=-1", "partitions=x", "partitions=20000"):
        with pytest.raises(ConfigurationError):
            from_url(f"kafka://h:1?{bad}")


# -- order per key ------------------------------------------------------------------------------


async def test_concurrent_handlers_keep_order_per_key() -> None:
    url = f"memory://{unique()}"
    app = DistributedApplication(url)
    seen: dict[str, list[int]] = collections.defaultdict(list)
    running: collections.Counter[str] = collections.Counter()
    overlaps: list[str] = []
    b_started = trio.Event()

    @app.application("t/keys", max_concurrency=4)
    async def handler(message: BusMessage) -> None:
        key = message.key
        assert key is not None
        running[key] += 1
        if running[key] > 1:
            overlaps.append(key)
        if message.payload == b"0" and key == "a":
            await b_started.wait()  # only returns if key b runs while a's first message does
        if key == "b":
            b_started.set()
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        seen[key].append(int(message.payload))
        running[key] -= 1

    async with serving(app), from_url(url).create_socket(name="publisher") as socket:
        for i in range(10):
            for key in "abc":
                await socket.publish(BusMessage(str(i), "t/keys", key=key))
        await wait_until(lambda: sum(map(len, seen.values())) == 30)
    assert overlaps == []
    assert seen == {key: list(range(10)) for key in "abc"}


async def test_keys_keep_their_order_on_every_broker(provider_url: str) -> None:
    topic = f"{unique()}/keyed"
    app = DistributedApplication(provider_url)
    seen: dict[str, list[int]] = collections.defaultdict(list)
    running: collections.Counter[str] = collections.Counter()
    overlaps: list[str] = []

    @app.application(topic, max_concurrency=3)
    async def handler(message: BusMessage) -> None:
        key = message.key or "?"
        running[key] += 1
        if running[key] > 1:
            overlaps.append(key)
        await trio.sleep(0.001)  # the handler's work; the other keys run meanwhile
        seen[key].append(int(message.payload))
        running[key] -= 1

    async with serving(app), from_url(provider_url).create_socket(name="publisher") as socket:
        for i in range(8):
            for key in ("x", "y"):
                await socket.publish(BusMessage(str(i), topic, key=key))
        await wait_until(lambda: sum(map(len, seen.values())) == 16)
    assert overlaps == []
    assert seen == {"x": list(range(8)), "y": list(range(8))}


# -- deadlines ------------------------------------------------------------------------------------


async def test_request_deadline_cancels_the_responder(provider_url: str) -> None:
    topic = f"{unique()}/slow"
    app = DistributedApplication(provider_url)
    outcome: list[str] = []

    @app.application(topic, name="responder")
    async def responder(message: BusMessage, socket: BusSocket) -> None:
        if message.payload == b"quick":
            await socket.reply(message, b"quick")
            return
        assert message.deadline is not None
        try:
            await trio.sleep(PATIENCE)  # the work: longer than the caller waits
            outcome.append("finished")
            await socket.reply(message, b"too late")
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    async with serving(app), from_url(provider_url).create_socket(name="caller") as socket:
        with pytest.raises(RequestTimeout):
            await socket.request(BusMessage(b"slow", topic), timeout=1.0)
        await wait_until(lambda: app.statistics["responder"].expired == 1)
        reply = await socket.request(BusMessage(b"quick", topic))
        assert reply.payload == b"quick"
        assert socket.statistics.late_replies == 0
    # Cancelled while working, or (a slow transport) not called at all: never completed.
    assert outcome in (["cancelled"], [])
    if provider_url.startswith("memory"):
        assert outcome == ["cancelled"]
    assert app.statistics["responder"].handled == 1


@pytest.mark.parametrize("key", [None, "k"])
async def test_deadlines_apply_to_concurrent_handlers(key: str | None) -> None:
    url = f"memory://{unique()}"
    app = DistributedApplication(url)
    outcome: list[str] = []

    @app.application("t/conc", name="worker", max_concurrency=4)
    async def worker(message: BusMessage, socket: BusSocket) -> None:
        if message.payload == b"quick":
            await socket.reply(message, b"quick")
            return
        try:
            await trio.sleep(PATIENCE)
            outcome.append("finished")
        except trio.Cancelled:
            outcome.append("cancelled")
            raise

    async with serving(app), from_url(url).create_socket(name="caller") as socket:
        with pytest.raises(RequestTimeout):
            await socket.request(BusMessage(b"slow", "t/conc", key=key), timeout=0.2)
        await wait_until(lambda: app.statistics["worker"].expired == 1)
        reply = await socket.request(BusMessage(b"quick", "t/conc", key=key))
        assert reply.payload == b"quick"
    assert outcome == ["cancelled"]


async def test_a_caller_deadline_travels_and_an_expired_request_is_not_handled() -> None:
    url = f"memory://{unique()}?codec=msgpack"  # the deadline crosses as envelope bytes
    app = DistributedApplication(url)
    release = trio.Event()
    handled: list[bytes] = []
    deadlines: list[float | None] = []

    @app.application("t/queue", name="worker")
    async def worker(message: BusMessage) -> None:
        deadlines.append(message.deadline)
        if message.payload == b"block":
            await release.wait()
        handled.append(message.payload)

    async with serving(app), from_url(url).create_socket(name="caller") as socket:
        await socket.publish(BusMessage(b"block", "t/queue"))  # no deadline: runs to the end
        await wait_until(lambda: deadlines == [None])
        with trio.move_on_after(0.2):  # the caller's own deadline, tighter than the timeout
            await socket.request(BusMessage(b"queued", "t/queue"), timeout=PATIENCE)
        release.set()
        await wait_until(lambda: app.statistics["worker"].expired == 1)
    assert handled == [b"block"]  # the request expired in the queue: never handled


# -- Kafka: partitions of the topics the bus creates, commits ---------------------------------


async def test_two_instances_share_the_partitions_of_a_bus_created_topic(
        kafka_broker: KafkaBroker) -> None:
    topic = f"{unique()}/work"
    url = kafka_url(kafka_broker, unique("g"), "&partitions=2")
    got: dict[str, list[str]] = {"one": [], "two": []}

    def instance(which: str) -> DistributedApplication:
        app = DistributedApplication(url)

        @app.application(topic, name="worker")
        async def worker(message: BusMessage) -> None:
            got[which].append(message.text)

        return app

    async with serving(instance("one")), serving(instance("two")):
        async with KafkaAdmin(kafka_broker.info.bootstrap_servers) as admin:
            described = await admin.describe_topic(topic.replace("/", "."))
        assert described.num_partitions == 2
        async with from_url(url).create_socket(name="publisher") as socket:
            for i in range(40):
                await socket.publish(BusMessage(str(i), topic, key=f"k{i}"))
            await wait_until(lambda: len(set(got["one"]) | set(got["two"])) == 40)
    # Each instance had a partition. (A record may reach both, at-least-once, if a late
    # rebalance moves a partition while its records are in flight: not asserted.)
    assert got["one"] and got["two"]


async def test_a_slow_record_holds_back_the_commit_until_a_crash(
        kafka_broker: KafkaBroker) -> None:
    """Record 2 is slow and then crashes; 3..7 finished meanwhile but are not committed past
    it, so the next instance reads 2..7 again (at-least-once) and nothing is lost."""
    topic = f"{unique()}/jobs"
    url = kafka_url(kafka_broker, unique("g"))
    async with from_url(url).create_socket(name="publisher") as socket:
        for i in range(8):
            await socket.publish(BusMessage(str(i), topic))

    first = DistributedApplication(url)
    finished: list[int] = []
    others_done = trio.Event()

    @first.application(topic, name="worker", max_concurrency=8, on_error="raise")
    async def worker(message: BusMessage) -> None:
        number = int(message.payload)
        if number == 2:
            await others_done.wait()
            await trio.sleep(0.5)  # a few commit intervals pass while 2 is still running
            raise RuntimeError("crash while handling record 2")
        finished.append(number)
        if len(finished) == 7:
            others_done.set()

    with pytest.raises(RuntimeError, match="record 2"), trio.fail_after(PATIENCE):
        await first.start_async(handle_signals=False)
    assert sorted(finished) == [0, 1, 3, 4, 5, 6, 7]

    assert await read_again(url, topic, "worker", 6) == [b"2", b"3", b"4", b"5", b"6", b"7"]


async def test_the_bus_runs_on_the_confluent_engine(kafka_broker: KafkaBroker) -> None:
    """backend=confluent: consumer groups, and replies (the reply reader seeks to the end
    before the first request; reading the position alone let librdkafka skip the reply)."""
    pytest.importorskip("confluent_kafka")
    topic = f"{unique()}/ck"
    url = kafka_url(kafka_broker, unique("g"), "&backend=confluent")
    app = DistributedApplication(url)
    got: list[bytes] = []

    @app.application(topic, name="echo")
    async def echo(message: BusMessage, socket: BusSocket) -> None:
        if message.response_topic:
            await socket.reply(message, message.payload.upper())
        else:
            got.append(message.payload)

    async with serving(app), from_url(url).create_socket(name="caller") as socket:
        reply = await socket.request(BusMessage(b"ping", topic, key="k"), timeout=PATIENCE)
        assert reply.payload == b"PING"
        await socket.publish(BusMessage(b"event", topic))
        await wait_until(lambda: got == [b"event"])
