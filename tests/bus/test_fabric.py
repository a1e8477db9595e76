"""The test fabric (trionet.testing.TestBus) on its own: swapping, inspection, fault injection.

What the fabric shares with the real brokers (wildcards, retained messages, shared
subscriptions, QoS 1 redelivery, Kafka partitions and group commits) is checked against
mosquitto and Kafka in test_fabric_contract.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import trio
import trio.testing
from bus_support import PATIENCE, wait_until

from trionet.bus import (
    BusMessage,
    BusSocket,
    DistributedApplication,
    InvalidPayload,
    LoggingMiddleware,
    MemoryBroker,
    decode_payload,
    from_config,
    from_url,
)
from trionet.errors import ConfigurationError
from trionet.testing import (
    Fabric,
    FabricProvider,
    KafkaFabric,
    MqttFabric,
    TestBus,
    murmur2,
    partition_for,
)

URLS = ["memory://fabric-test", "mqtt://broker.invalid:1883", "kafka://kafka.invalid:9092"]


def echo_app(url: str, *, topic: str = "jobs/+") -> tuple[DistributedApplication, list[bytes]]:
    app = DistributedApplication(url)
    handled: list[bytes] = []

    @app.application(topic)
    async def worker(message: BusMessage, socket: BusSocket) -> None:
        handled.append(message.payload)
        if message.response_topic:
            await socket.reply(message, b"done " + message.payload)

    return app, handled


@pytest.mark.parametrize("url", URLS)
async def test_the_app_runs_unchanged_and_gets_its_providers_back(url: str) -> None:
    app, handled = echo_app(url)
    original = app.default_socket_provider
    async with TestBus(app) as bus:
        assert app.default_socket_provider is not original
        assert app.default_socket_provider is not None
        assert app.default_socket_provider.url == original.url  # type: ignore[union-attr]
        await bus.publish(b"a", "jobs/1")
        await bus.publish(BusMessage(b"b", "jobs/2", headers={"h": "v"}))
        reply = await bus.request(BusMessage(b"c", "jobs/3"))
        assert reply.payload == b"done c"
        with trio.fail_after(PATIENCE):
            await bus.drain()
        assert handled == [b"a", b"b", b"c"]
        assert [m.payload for m in bus.messages("jobs/#")] == [b"a", b"b", b"c"]
        assert bus.messages("jobs/2")[0].headers == {"h": "v"}
        assert bus.messages("other") == []
    assert app.default_socket_provider is original
    assert not app.running


async def test_per_application_providers_are_swapped_too() -> None:
    app = DistributedApplication("kafka://kafka.invalid:9092")
    seen: dict[str, bytes] = {}
    private = MemoryBroker()

    @app.application("k/x")
    async def on_kafka(message: BusMessage) -> None:
        seen["kafka"] = message.payload

    @app.application("m/x", socket_provider="mqtt://broker.invalid?qos=1")
    async def on_mqtt(message: BusMessage) -> None:
        seen["mqtt"] = message.payload

    @app.application("p/x", socket_provider=private.provider())
    async def on_memory(message: BusMessage) -> None:
        seen["memory"] = message.payload

    specs = list(app.applications)
    async with TestBus(app) as bus:
        assert isinstance(bus.broker(), KafkaFabric)
        assert isinstance(bus.broker("mqtt://broker.invalid:1883"), MqttFabric)
        await bus.publish(b"1", "k/x")
        await bus.publish(b"2", "m/x", url="mqtt://broker.invalid")
        await bus.publish(b"3", "p/x", url=private.url)
        await wait_until(lambda: len(seen) == 3)
        assert private.statistics.published == 0  # the real in-process broker saw nothing
    assert seen == {"kafka": b"1", "mqtt": b"2", "memory": b"3"}
    assert app.applications == specs


async def test_an_app_failure_ends_the_block_with_its_exception() -> None:
    app = DistributedApplication("mqtt://broker.invalid")

    @app.application("boom", on_error="raise")
    async def fails(message: BusMessage) -> None:
        raise ValueError("handler failed")

    original = app.default_socket_provider
    with pytest.raises(ValueError, match="handler failed"), trio.fail_after(PATIENCE):
        async with TestBus(app) as bus:
            await bus.publish(b"x", "boom")
            await trio.sleep_forever()
    assert app.default_socket_provider is original


def test_a_test_bus_is_not_collected_by_pytest() -> None:
    assert TestBus.__test__ is False


def test_murmur2_is_kafkas() -> None:
    kafka = pytest.importorskip("kafka.partitioner.default")
    for key in (b"", b"a", b"ab", b"abc", b"abcd", b"order-17", bytes(range(256))):
        assert murmur2(key) & 0x7FFFFFFF == kafka.murmur2(key) & 0x7FFFFFFF
        assert partition_for(key, 7) == (kafka.murmur2(key) & 0x7FFFFFFF) % 7


# -- fault injection -------------------------------------------------------------------------


@pytest.mark.parametrize("url", URLS)
async def test_drop_duplicate_and_counts(url: str) -> None:
    app, handled = echo_app(url)
    async with TestBus(app, seed=1) as bus:
        drop = bus.faults.drop("jobs/+", count=1)
        twice = bus.faults.duplicate("jobs/2")
        for i in range(4):
            await bus.publish(str(i).encode(), f"jobs/{i}")
        with trio.fail_after(PATIENCE):
            await bus.drain()
        assert drop.hits == 1 and drop.exhausted
        assert twice.hits == 1
        assert sorted(handled) == [b"1", b"2", b"2", b"3"]
        assert len(bus.messages()) == 4  # what was published, before the faults
        twice.remove()
        await bus.publish(b"again", "jobs/2")
        await wait_until(lambda: handled.count(b"again") == 1)


@pytest.mark.parametrize("url", URLS)
async def test_reorder_and_predicates(url: str) -> None:
    app, handled = echo_app(url)
    async with TestBus(app, seed=7) as bus:
        bus.faults.reorder("jobs/#", window=3, count=3)
        bus.faults.drop(where=lambda m: m.headers.get("poison") == "yes")
        for i in range(5):
            await bus.publish(BusMessage(str(i), "jobs/x"))
        await bus.publish(BusMessage(b"p", "jobs/x", headers={"poison": "yes"}))
        with trio.fail_after(PATIENCE):
            await bus.drain()
    assert handled == [b"2", b"1", b"0", b"3", b"4"]


async def test_shuffled_reorder_is_deterministic_with_a_seed() -> None:
    orders = []
    for _ in range(2):
        app, handled = echo_app("memory://shuffle")
        async with TestBus(app, seed=42) as bus:
            bus.faults.reorder(window=6, shuffle=True, count=6)
            for i in range(6):
                await bus.publish(str(i), "jobs/x")
            with trio.fail_after(PATIENCE):
                await bus.drain()
        orders.append(handled)
    assert orders[0] == orders[1]
    assert orders[0] != [str(i).encode() for i in range(6)]
    assert sorted(orders[0]) == [str(i).encode() for i in range(6)]


async def test_removing_a_reorder_rule_delivers_what_it_held() -> None:
    app, handled = echo_app("mqtt://broker.invalid")
    async with TestBus(app) as bus:
        rule = bus.faults.reorder(window=10)
        await bus.publish(b"held", "jobs/x")
        with trio.fail_after(PATIENCE):
            await bus.drain()
        assert handled == []
        bus.faults.clear()
        assert rule not in bus.faults.rules
        await wait_until(lambda: handled == [b"held"])


async def test_delay_lets_later_messages_overtake(autojump_clock: trio.abc.Clock) -> None:
    app, handled = echo_app("kafka://kafka.invalid?offset_reset=earliest")
    async with TestBus(app, partitions=2) as bus:
        bus.faults.delay(5.0, where=lambda m: m.payload == b"slow")
        await bus.publish(b"slow", "jobs/x", key="k")
        await bus.publish(b"fast", "jobs/x", key="k")
        await wait_until(lambda: handled == [b"fast"])
        began = trio.current_time()
        with trio.fail_after(PATIENCE):
            await bus.drain()
        assert trio.current_time() - began >= 4.9  # the drain waited for the delayed one
        assert handled == [b"fast", b"slow"]


def test_rules_check_their_arguments() -> None:
    faults = Fabric().faults
    for bad in (lambda: faults.delay(-1), lambda: faults.duplicate(copies=0),
                lambda: faults.reorder(window=1), lambda: faults.drop(count=-1),
                lambda: faults.drop(probability=2), lambda: faults.drop("a/#/b")):
        with pytest.raises(ConfigurationError):
            bad()


async def test_probability_draws_from_the_seed() -> None:
    counts = []
    for _ in range(2):
        app, handled = echo_app("memory://prob")
        async with TestBus(app, seed=3) as bus:
            bus.faults.drop(probability=0.5)
            for i in range(40):
                await bus.publish(str(i), "jobs/x")
            with trio.fail_after(PATIENCE):
                await bus.drain()
        counts.append(list(handled))
    assert counts[0] == counts[1]
    assert 0 < len(counts[0]) < 40


# -- connections and restarts ----------------------------------------------------------------


@pytest.mark.parametrize("persistent", [True, False])
async def test_mqtt_disconnect_redelivers_only_to_persistent_sessions(persistent: bool) -> None:
    url = f"mqtt://broker.invalid?client_id=svc&clean_start={str(not persistent).lower()}"
    app = DistributedApplication(url)
    seen: list[bytes] = []
    release = trio.Event()

    @app.application("work", name="worker")
    async def worker(message: BusMessage) -> None:
        seen.append(message.payload)
        await release.wait()

    async with TestBus(app) as bus:
        await bus.publish(b"job", "work")
        await wait_until(lambda: seen == [b"job"])
        assert bus.disconnect("worker") == 1
        assert bus.disconnect("nobody") == 0
        release.set()
        with trio.fail_after(PATIENCE):
            await bus.drain()
        assert seen == ([b"job", b"job"] if persistent else [b"job"])


async def test_mqtt_persistent_session_queues_while_the_app_is_down() -> None:
    fabric = Fabric()
    url = "mqtt://broker.invalid?client_id=svc&clean_start=false"

    def make() -> tuple[DistributedApplication, list[bytes]]:
        return echo_app(url, topic="orders/#")

    app, _ = make()
    async with TestBus(app, fabric=fabric):
        pass
    async with TestBus(fabric=fabric) as bus:
        for i in range(3):
            await bus.publish(str(i), "orders/new", url=url)
        assert "svc-worker" in bus.broker(url).sessions()  # type: ignore[attr-defined]
    app, handled = make()
    async with TestBus(app, fabric=fabric) as bus:
        with trio.fail_after(PATIENCE):
            await bus.drain()
    assert handled == [b"0", b"1", b"2"]


async def test_kafka_restart_rereads_what_was_not_committed() -> None:
    app = DistributedApplication("kafka://kafka.invalid?offset_reset=earliest")
    seen: list[bytes] = []
    gate = trio.Event()

    @app.application("jobs", name="worker")
    async def worker(message: BusMessage) -> None:
        seen.append(message.payload)
        if message.payload == b"1":
            await gate.wait()

    async with TestBus(app) as bus:
        for i in range(3):
            await bus.publish(str(i), "jobs")
        await wait_until(lambda: seen == [b"0", b"1"])
        broker = bus.broker()
        assert isinstance(broker, KafkaFabric)
        assert broker.committed("trionet.worker", "jobs", 0) == 1
        async with bus.down():
            assert not broker.up
            gate.set()
        with trio.fail_after(PATIENCE):
            await bus.drain()
        # "1" was handed out but not committed: read again ("0" was committed: not again)
        assert seen[:2] == [b"0", b"1"]
        assert seen.count(b"0") == 1 and seen.count(b"1") == 2 and b"2" in seen
        assert broker.committed("trionet.worker", "jobs", 0) == 3
        assert broker.statistics.redelivered >= 1


async def test_publishers_wait_while_the_broker_is_down() -> None:
    app, handled = echo_app("mqtt://broker.invalid")
    async with TestBus(app) as bus, trio.open_nursery() as nursery:
        async with bus.down():
            nursery.start_soon(bus.publish, b"queued", "jobs/x")
            await trio.testing.wait_all_tasks_blocked()
            assert handled == []
        await wait_until(lambda: handled == [b"queued"])


async def test_memory_overflow_drop_is_bounded() -> None:
    app = DistributedApplication("memory://tiny?max_queue=1&overflow=drop")
    release = trio.Event()
    seen: list[bytes] = []

    @app.application("flood")
    async def slow(message: BusMessage) -> None:
        seen.append(message.payload)
        await release.wait()

    async with TestBus(app) as bus:
        broker = bus.broker()
        assert isinstance(broker, MqttFabric)
        broker.max_queued = 2
        for i in range(20):
            await bus.publish(str(i), "flood")
        assert broker.statistics.dropped > 0
        release.set()
        with trio.fail_after(PATIENCE):
            await bus.drain()
    assert len(seen) < 20


async def test_sockets_of_the_test_and_apps_run_by_the_test() -> None:
    app, handled = echo_app("mqtt://broker.invalid")
    async with TestBus(app, run=False) as bus:
        assert not app.running
        async with trio.open_nursery() as nursery:
            await nursery.start(app.serve)  # the test runs it (on the fabric)
            async with bus.socket("jobs/#", name="spy") as spy:
                await bus.publish(b"seen twice", "jobs/x")
                with trio.fail_after(PATIENCE):
                    assert (await spy.receive()).payload == b"seen twice"
                await wait_until(lambda: handled == [b"seen twice"])
            app.stop()


async def test_kafka_partitions_keys_and_records() -> None:
    app, handled = echo_app("kafka://kafka.invalid?offset_reset=earliest", topic="orders/+")
    async with TestBus(app, partitions={"orders.eu": 4, "*": 2}) as bus:
        broker = bus.broker()
        assert isinstance(broker, KafkaFabric)
        for i in range(8):
            await bus.publish(str(i), "orders/eu", key=f"customer-{i % 3}")
        await bus.publish(b"keyless", "orders/us")
        with trio.fail_after(PATIENCE):
            await bus.drain()
        assert (broker.partitions("orders/eu"), broker.partitions("orders.us")) == (4, 2)
        assert broker.partitions("nothing") == 0
        for partition in range(4):
            for _offset, key, _value in broker.records("orders/eu", partition):
                assert key is not None and partition_for(key, 4) == partition
        assert sorted(handled) == sorted([str(i).encode() for i in range(8)] + [b"keyless"])
        assert [m.payload for m in bus.messages("orders.eu")][:2] == [b"0", b"1"]
        for partition in range(4):  # everything handled: committed up to the end
            records = broker.records("orders/eu", partition)
            assert broker.committed("trionet.worker", "orders/eu", partition) == (
                len(records) if records else None)
        assert broker.committed("nobody", "orders/eu", 0) is None


async def test_kafka_group_members_share_partitions_and_take_over() -> None:
    fabric = Fabric()
    url = "kafka://kafka.invalid?offset_reset=earliest"
    first, one = echo_app(url)
    second, two = echo_app(url)
    async with TestBus(first, fabric=fabric) as bus:
        bus.broker().create_topic("jobs/a", partitions=2)  # type: ignore[attr-defined]
        async with TestBus(second, fabric=fabric):
            for i in range(20):
                await bus.publish(str(i), "jobs/a", key=str(i))
            with trio.fail_after(PATIENCE):
                await bus.drain()
            assert one and two and len(one) + len(two) == 20
        await bus.publish(b"after", "jobs/a", key=b"x")
        await wait_until(lambda: b"after" in one)  # the remaining member took over


async def test_a_rebalance_that_keeps_a_partition_keeps_its_acknowledgements() -> None:
    app = DistributedApplication("kafka://kafka.invalid?offset_reset=earliest")
    gate = trio.Event()
    handled: list[bytes] = []

    @app.application("jobs/+", name="worker")
    async def worker(message: BusMessage) -> None:
        await gate.wait()
        handled.append(message.payload)

    async with TestBus(app) as bus:
        await bus.publish(b"1", "jobs/a")
        await wait_until(lambda: app.statistics["worker"].in_flight == 1)
        await bus.publish(b"2", "jobs/b")  # a new topic: the group rebalances
        gate.set()
        with trio.fail_after(PATIENCE):
            await bus.drain()
        broker = bus.broker()
        assert isinstance(broker, KafkaFabric)
        assert broker.committed("trionet.worker", "jobs/a", 0) == 1
    assert handled == [b"1", b"2"]


@dataclass
class Order:
    item: str
    qty: int


@dataclass
class Receipt:
    item: str
    total: int


async def test_a_typed_app_with_publishers_and_middleware() -> None:
    """A FastStream-style application (typed handler, publisher, middleware) on Kafka URLs."""
    app = DistributedApplication("kafka://kafka.invalid?offset_reset=earliest",
                                 middleware=[LoggingMiddleware()])
    receipts: list[Receipt] = []

    @app.application("orders", max_concurrency=4)
    @app.publisher("receipts")
    async def on_order(order: Order) -> Receipt:
        return Receipt(order.item, order.qty * 3)

    @app.application("receipts")
    async def on_receipt(receipt: Receipt) -> None:
        receipts.append(receipt)

    async with TestBus(app, partitions=3) as bus:
        await bus.publish(Order("tea", 1), "orders", key="tea")
        await bus.publish(b'{"item": "cup", "qty": "two"}', "orders")  # invalid: not handled
        reply = await bus.request(Order("cup", 2), "orders")
        assert decode_payload(reply, Receipt) == Receipt("cup", 6)
        with trio.fail_after(PATIENCE):
            await bus.drain()
        assert sorted(receipts, key=str) == [Receipt("cup", 6), Receipt("tea", 3)]
        calls = bus.handled("on_order")
        assert [c.result for c in calls if c.error is None] == [Receipt("tea", 3),
                                                                Receipt("cup", 6)]
        assert [type(c.error) for c in calls if c.error] == [InvalidPayload]
        assert calls[0].message.key == "tea"
        assert len(bus.handled("on_receipt")) == 2
        with pytest.raises(KeyError):
            bus.handled("nobody")
        assert [m.content_type for m in bus.messages("receipts")] == ["application/json"] * 2


def test_intercept_makes_every_new_provider_the_fabrics() -> None:
    fabric = Fabric()
    before = from_url("mqtt://broker.invalid")
    with fabric.intercept():
        inside = from_url("mqtt://broker.invalid?qos=0")
        assert isinstance(inside, FabricProvider) and inside.broker is fabric.broker(before)
        assert inside.url == "mqtt://broker.invalid:1883?qos=0"
        assert from_config(before) is before  # providers made before are left alone
        app = DistributedApplication("kafka://kafka.invalid")
        assert isinstance(app.default_socket_provider, FabricProvider)
        with pytest.raises(ConfigurationError):
            from_url("nats://x")
    assert type(from_url("mqtt://broker.invalid")) is type(before)


async def test_memory_overflow_block_makes_the_publisher_wait() -> None:
    app = DistributedApplication("memory://tiny-block?max_queue=1")
    release = trio.Event()
    seen: list[bytes] = []

    @app.application("flood")
    async def slow(message: BusMessage) -> None:
        await release.wait()
        seen.append(message.payload)

    async with TestBus(app) as bus:
        broker = bus.broker()
        assert isinstance(broker, MqttFabric)
        broker.max_queued = 2
        published = 0

        async def flood() -> None:
            nonlocal published
            for i in range(10):
                await bus.publish(str(i), "flood")
                published += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()
            assert published < 10  # waiting for room, nothing dropped
            release.set()
        with trio.fail_after(PATIENCE):
            await bus.drain()
    assert seen == [str(i).encode() for i in range(10)]
    assert broker.statistics.dropped == 0


async def test_qos0_is_not_queued_for_an_offline_persistent_session() -> None:
    fabric = Fabric()
    url = "mqtt://broker.invalid?client_id=svc&clean_start=false&qos=0"
    app, _ = echo_app(url, topic="t")
    async with TestBus(app, fabric=fabric):
        pass
    async with TestBus(fabric=fabric) as bus:
        await bus.publish(b"lost", "t", url=url)
    app, handled = echo_app(url, topic="t")
    async with TestBus(app, fabric=fabric) as bus:
        await bus.publish(b"live", "t")
        await wait_until(lambda: handled == [b"live"])
    assert fabric.broker(url).statistics.dropped == 1


async def test_dots_separate_levels_on_kafka_only() -> None:
    for url, dropped in (("mqtt://broker.invalid", 0), ("kafka://kafka.invalid", 1)):
        async with TestBus(fabric=Fabric()) as bus:
            rule = bus.faults.drop("sensors/+")
            await bus.publish(b"x", "sensors.v1", url=url)  # one level on MQTT, two on Kafka
            assert rule.hits == dropped
            assert len(bus.messages("sensors/+", url=url)) == dropped
    with pytest.raises(ConfigurationError):
        TestBus(fabric=Fabric(), seed=1)
