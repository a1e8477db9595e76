"""The fabric cannot drift: each scenario runs on the test fabric AND on the real broker.

Every test takes a *world*: ``fabric`` runs the applications with :class:`TestBus` on fabric
brokers; ``mosquitto`` / ``kafka`` runs the very same applications, with the same code, on the
real broker from the fixtures. Only the world's few verbs differ (publish as an outside client,
restart the broker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from bus_support import PATIENCE, unique, wait_until

from trionet.bus import BusMessage, DistributedApplication, encode_envelope, from_url
from trionet.bus.testing import serving
from trionet.testing import Fabric, KafkaBroker, MosquittoServer, TestBus, partition_for


class World:
    """Where the applications run: the fabric, or a real broker."""

    url: str

    def __init__(self, url: str) -> None:
        self.url = url
        self.fabric = Fabric(seed=1)

    def with_options(self, **options: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"{self.url}{'&' if '?' in self.url else '?'}{query}" if query else self.url

    @asynccontextmanager
    async def running(self, *apps: DistributedApplication) -> AsyncIterator[None]:
        async with TestBus(*apps, fabric=self.fabric):
            yield

    async def publish(self, topic: str, data: bytes, **options: Any) -> Any:
        async with TestBus(fabric=self.fabric) as bus:
            if data:
                return await bus.publish(BusMessage(data, topic), url=self.url, **options)
            return await bus.publish(b"", topic, url=self.url, **options)

    async def restart(self) -> None:
        await self.fabric.broker(self.url).restart()

    async def publish_on_the_bus(self, message: BusMessage) -> None:
        """Publish through a bus socket (as an application does)."""
        async with TestBus(fabric=self.fabric) as bus, bus.socket(url=self.url) as socket:
            await socket.publish(message)


class RealWorld(World):
    @asynccontextmanager
    async def running(self, *apps: DistributedApplication) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(serving(app))
            yield


    async def publish_on_the_bus(self, message: BusMessage) -> None:
        async with from_url(self.url).create_socket(name="publisher") as socket:
            await socket.publish(message)


class Mosquitto(RealWorld):
    def __init__(self, server: MosquittoServer) -> None:
        super().__init__(f"mqtt://{server.info.host}:{server.info.port}")
        self.server = server

    async def publish(self, topic: str, data: bytes, **options: Any) -> Any:
        from trionet.mqtt import MQTTClient

        payload = encode_envelope(BusMessage(data, topic)) if data else b""
        async with MQTTClient() as client:
            await client.connect(self.server.info.host, self.server.info.port)
            await client.publish(topic, payload, qos=1, retain=options.get("retain", False))

    async def restart(self) -> None:
        await trio.to_thread.run_sync(self.server.restart)


class Kafka(RealWorld):
    def __init__(self, broker: KafkaBroker) -> None:
        super().__init__(f"kafka://{broker.info.bootstrap_servers}")
        self.servers = broker.info.bootstrap_servers

    async def publish(self, topic: str, data: bytes, **options: Any) -> Any:
        from trionet.kafka import KafkaProducer

        async with KafkaProducer(self.servers) as producer:
            metadata = await producer.send(topic.replace("/", "."),
                                           encode_envelope(BusMessage(data, topic)),
                                           key=options.get("key"))
            return metadata.partition


async def create_topic(world: World, topic: str, partitions: int) -> None:
    if isinstance(world, Kafka):
        from trionet.kafka import KafkaAdmin, NewTopic

        async with KafkaAdmin(world.servers) as admin:
            await admin.create_topics([NewTopic(topic.replace("/", "."), partitions)])
    else:
        broker = world.fabric.broker(world.url)
        broker.create_topic(topic, partitions)  # type: ignore[attr-defined]


@pytest.fixture(params=["fabric", "real"])
def mqtt_world(request: pytest.FixtureRequest) -> World:
    if request.param == "fabric":
        return World("mqtt://fabric.invalid:1883")
    return Mosquitto(request.getfixturevalue("shared_mosquitto"))


@pytest.fixture(params=["fabric", "real"])
def restartable_mqtt_world(request: pytest.FixtureRequest) -> World:
    if request.param == "fabric":
        return World("mqtt://fabric.invalid:1883")
    return Mosquitto(request.getfixturevalue("mosquitto"))


@pytest.fixture(params=["fabric", "real"])
def kafka_world(request: pytest.FixtureRequest) -> World:
    if request.param == "fabric":
        return World("kafka://fabric.invalid:9092")
    return Kafka(request.getfixturevalue("kafka_broker"))


# -- MQTT -----------------------------------------------------------------------------------


async def test_wildcards_and_dollar_topics(mqtt_world: World) -> None:
    base = unique()
    app = DistributedApplication(mqtt_world.url)
    seen: dict[str, list[str]] = {"plus": [], "hash": [], "dollar": []}

    @app.application(f"+/{base}/temp")
    async def plus(message: BusMessage) -> None:
        seen["plus"].append(message.topic)

    @app.application(f"+/{base}/#")
    async def hash_(message: BusMessage) -> None:
        seen["hash"].append(message.topic)

    @app.application(f"$x{base}/#")
    async def dollar(message: BusMessage) -> None:
        seen["dollar"].append(message.topic)

    async with mqtt_world.running(app):
        for topic in (f"$x{base}/{base}/temp", f"a/{base}/temp", f"a/{base}/temp/deep",
                      f"b/{base}", f"a/b/{base}/temp"):
            await mqtt_world.publish(topic, b"v")
        await mqtt_world.publish(f"end/{base}/temp", b"end")
        await wait_until(lambda: f"end/{base}/temp" in seen["plus"]
                         and f"end/{base}/temp" in seen["hash"] and seen["dollar"])
    assert seen["plus"] == [f"a/{base}/temp", f"end/{base}/temp"]
    assert seen["hash"] == [f"a/{base}/temp", f"a/{base}/temp/deep", f"b/{base}",
                            f"end/{base}/temp"]
    assert seen["dollar"] == [f"$x{base}/{base}/temp"]


async def test_retained_messages(mqtt_world: World) -> None:
    base = unique()
    received: list[bytes] = []

    def make_app() -> DistributedApplication:
        app = DistributedApplication(mqtt_world.url)

        @app.application(f"{base}/+")
        async def reader(message: BusMessage) -> None:
            received.append(message.payload)

        return app

    await mqtt_world.publish(f"{base}/state", b"on", retain=True)
    await mqtt_world.publish(f"{base}/event", b"not kept")
    async with mqtt_world.running(make_app()):
        await wait_until(lambda: received == [b"on"])  # delivered on subscribe
    await mqtt_world.publish(f"{base}/state", b"", retain=True)  # clears it
    received.clear()
    async with mqtt_world.running(make_app()):
        await mqtt_world.publish(f"{base}/marker", b"marker")
        await wait_until(lambda: b"marker" in received)
    assert received == [b"marker"]


async def test_shared_subscriptions_deliver_each_message_once(mqtt_world: World) -> None:
    base = unique()
    app = DistributedApplication(mqtt_world.url)
    got: dict[str, list[bytes]] = {"one": [], "two": []}

    for name in got:
        def make(name: str) -> None:
            @app.application(f"$share/g{base}/{base}/jobs", name=name)
            async def member(message: BusMessage) -> None:
                got[name].append(message.payload)

        make(name)

    async with mqtt_world.running(app):
        for i in range(10):
            await mqtt_world.publish(f"{base}/jobs", str(i).encode())
        await wait_until(lambda: len(got["one"]) + len(got["two"]) == 10)
    assert sorted(got["one"] + got["two"]) == sorted(str(i).encode() for i in range(10))
    assert got["one"] and got["two"]


async def test_qos1_unacknowledged_message_comes_again_after_a_broker_restart(
    restartable_mqtt_world: World,
) -> None:
    world = restartable_mqtt_world
    url = world.with_options(client_id=unique("persist"), clean_start="false", qos=1)
    topic = f"{unique()}/work"
    app = DistributedApplication(url)
    seen: list[bytes] = []
    release = trio.Event()

    @app.application(topic, name="worker")
    async def worker(message: BusMessage) -> None:
        seen.append(message.payload)
        await release.wait()  # not acknowledged while the broker goes down

    async with world.running(app):
        await world.publish(topic, b"job")
        await wait_until(lambda: seen == [b"job"])
        await world.restart()
        release.set()
        await wait_until(lambda: len(seen) == 2)
    assert seen == [b"job", b"job"]


# -- Kafka ----------------------------------------------------------------------------------


def keys_for_partitions(partitions: int) -> list[bytes]:
    """One key per partition (by Kafka's default partitioner)."""
    keys: dict[int, bytes] = {}
    for i in range(1000):
        key = f"key-{i}".encode()
        keys.setdefault(partition_for(key, partitions), key)
        if len(keys) == partitions:
            break
    return [keys[p] for p in range(partitions)]


async def test_keys_partitions_order_and_a_shared_group(kafka_world: World) -> None:
    topic = f"{unique()}/orders"
    group = unique("g")
    await create_topic(kafka_world, topic, 3)
    url = kafka_world.with_options(group=group, offset_reset="earliest", commit_interval=0.2,
                                   **{"consumer.session_timeout_ms": 6000,
                                      "consumer.heartbeat_interval_ms": 500})
    handled: dict[int, list[tuple[bytes, int]]] = {1: [], 2: []}
    instances = []
    for number in handled:
        app = DistributedApplication(url)

        def make(app: DistributedApplication, number: int) -> None:
            @app.application(topic, name="billing")  # the same service twice: one group
            async def bill(message: BusMessage) -> None:
                key, _, seq = message.payload.partition(b":")
                handled[number].append((key, int(seq)))

        make(app, number)
        instances.append(app)

    keys = keys_for_partitions(3)
    async with kafka_world.running(*instances):
        for seq in range(2):  # with a key by a Kafka client: the partition of Kafka's hash
            for key in keys:
                partition = await kafka_world.publish(topic, key + b":%d" % seq, key=key)
                assert partition in (None, partition_for(key, 3))
        for seq in range(2, 4):  # the bus's key is the record key: the same partitions
            for key in keys:
                await kafka_world.publish_on_the_bus(
                    BusMessage(key + b":%d" % seq, topic, key=key.decode()))
        expected = {(key, seq) for key in keys for seq in range(4)}
        await wait_until(lambda: set(handled[1]) | set(handled[2]) == expected)
    assert handled[1] and handled[2], handled  # the group shares the partitions
    for records in handled.values():
        for key in keys:  # per key (= per partition) in order; at-least-once: a record
            # handed out but not committed when a rebalance moved its partition comes again
            seqs = [seq for k, seq in records if k == key]
            assert seqs == sorted(set(seqs)), handled


async def test_a_restarted_group_member_resumes_after_the_last_commit(
    kafka_world: World,
) -> None:
    topic = f"{unique()}/jobs"
    url = kafka_world.with_options(group=unique("g"), offset_reset="earliest",
                                   commit_interval=0.2)
    for i in range(5):
        await kafka_world.publish(topic, str(i).encode())
    first: list[bytes] = []
    second: list[bytes] = []

    crashing = DistributedApplication(url)

    @crashing.application(topic, name="worker", on_error="raise")
    async def crash_on_three(message: BusMessage) -> None:
        if message.payload == b"3":
            raise RuntimeError("crash")
        first.append(message.payload)

    with pytest.raises(RuntimeError, match="crash"), trio.fail_after(PATIENCE):
        async with kafka_world.running(crashing):
            await trio.sleep_forever()
    assert first == [b"0", b"1", b"2"]

    resumed = DistributedApplication(url)

    @resumed.application(topic, name="worker")
    async def worker(message: BusMessage) -> None:
        second.append(message.payload)

    async with kafka_world.running(resumed):
        await wait_until(lambda: len(second) >= 2)
    assert second == [b"3", b"4"]  # "3" again (never acknowledged), nothing before it
