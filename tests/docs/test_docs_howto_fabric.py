"""The examples of docs/howto/testing.rst, "Testing your bus application without brokers".

The page includes parts of this file; keep the ``# [name]`` markers where they are.
"""

from __future__ import annotations

import json

import pytest

from trionet.bus import BusMessage, BusSocket, DistributedApplication
from trionet.testing import Fabric, TestBus

# [fabric-app]
# shop.py: the application as it runs in production, brokers and all
app = DistributedApplication("kafka://kafka.internal:9092?group=shop&offset_reset=earliest")
MQTT = "mqtt://mqtt.internal:1883?client_id=shop&clean_start=false"

charged: dict[str, int] = {}  # order id -> amount (a database, in real life)
limits: dict[str, int] = {}


@app.application("orders/created", name="billing")
async def bill(message: BusMessage, socket: BusSocket) -> None:
    order = json.loads(message.payload)
    if order["id"] in charged:  # delivery is at-least-once: skip what was done
        return
    if order["amount"] > limits.get("max", 1000):
        raise ValueError(f"order {order['id']} is over the limit")
    charged[order["id"]] = order["amount"]
    await socket.publish(BusMessage(message.payload, "orders/billed"))


@app.application("config/+", socket_provider=MQTT, name="config")
async def configure(message: BusMessage) -> None:
    limits[message.topic.rpartition("/")[2]] = int(message.payload)
# [/fabric-app]


@pytest.fixture(autouse=True)
def fresh_state() -> None:
    charged.clear()
    limits.clear()


def order(order_id: str, amount: int) -> BusMessage:
    return BusMessage(json.dumps({"id": order_id, "amount": amount}), "orders/created")


# [fabric-basic]
async def test_an_order_is_billed_once() -> None:
    async with TestBus(app) as bus:  # Kafka and MQTT, in memory
        await bus.publish(order("o-1", 30), key="o-1")
        await bus.drain()  # until every delivered message is handled
        assert charged == {"o-1": 30}
        [call] = bus.handled("billing")  # what the handler was given, returned or raised
        assert call.error is None and json.loads(call.message.payload)["id"] == "o-1"
        billed = bus.messages("orders/billed")  # what the app published
        assert [json.loads(m.payload)["id"] for m in billed] == ["o-1"]
# [/fabric-basic]


# [fabric-faults]
async def test_duplicates_and_a_broker_restart_do_not_bill_twice() -> None:
    async with TestBus(app, seed=1) as bus:
        bus.faults.duplicate("orders/created", copies=2)  # a producer's retries
        await bus.publish(order("o-2", 50), key="o-2")
        await bus.restart()  # Kafka: what was not committed is read again
        await bus.publish(order("o-3", 70), key="o-3")
        await bus.drain()
    assert charged == {"o-2": 50, "o-3": 70}
    assert len(bus.messages("orders/billed")) == 2


async def test_a_lost_message_is_not_billed() -> None:
    async with TestBus(app) as bus:
        lost = bus.faults.drop("orders/created", count=1)
        await bus.publish(order("o-4", 10))
        await bus.publish(order("o-5", 20))
        await bus.drain()
    assert lost.hits == 1
    assert charged == {"o-5": 20}
# [/fabric-faults]


# [fabric-retained]
async def test_the_limit_comes_from_a_retained_mqtt_message() -> None:
    fabric = Fabric()  # shared by both blocks: the broker keeps its state between them
    async with TestBus(fabric=fabric) as bus:  # no application: publish before it starts
        await bus.publish(b"100", "config/max", retain=True, url=MQTT)
    async with TestBus(app, fabric=fabric) as bus:
        await bus.drain()  # the retained limit arrived when "config" subscribed
        assert limits == {"max": 100}
        await bus.publish(order("o-6", 500))  # the handler raises: logged, skipped
        await bus.publish(order("o-7", 90))
        await bus.drain()
    assert charged == {"o-7": 90}
# [/fabric-retained]
