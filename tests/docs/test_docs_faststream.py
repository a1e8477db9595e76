"""docs/howto/migrating.rst's FastStream section: a FastStream program (typed handler,
publisher, middleware) becomes a trionet one by renaming its imports, its broker and its
decorators, and the result runs on memory:// and on mosquitto.

Both programs below are what the page shows (``literalinclude`` between the markers); the
test derives the trionet one from the FastStream one with the page's renames, so the page
cannot claim more than the renames do.
"""

from __future__ import annotations

import uuid

import trio

from trionet.bus import BusMessage, from_url

FASTSTREAM = """
# faststream-program-start
from dataclasses import dataclass

from faststream import BaseMiddleware, FastStream
from faststream.mqtt import MQTTBroker

audited = []


@dataclass
class Order:
    item: str
    qty: int


@dataclass
class Receipt:
    item: str
    total: int


class Audit(BaseMiddleware):
    async def consume_scope(self, call_next, msg):
        audited.append(msg.correlation_id)
        return await call_next(msg)


broker = MQTTBroker("localhost:1883", middlewares=[Audit])
app = FastStream(broker)


@broker.subscriber("orders")
@broker.publisher("receipts")
async def handle(order: Order) -> Receipt:
    return Receipt(order.item, order.qty * 3)
# faststream-program-end
"""

#: (FastStream line, trionet line): the imports, the broker and the decorators.
RENAMES = [
    ("from faststream import BaseMiddleware, FastStream",
     "from trionet.bus import DistributedApplication, Middleware as BaseMiddleware"),
    ("from faststream.mqtt import MQTTBroker\n", ""),
    ('broker = MQTTBroker("localhost:1883", middlewares=[Audit])\napp = FastStream(broker)',
     'broker = DistributedApplication("mqtt://localhost:1883", middleware=[Audit])'),
    ("@broker.subscriber(", "@broker.application("),
]

TRIONET = """
# trionet-program-start
from dataclasses import dataclass

from trionet.bus import DistributedApplication, Middleware as BaseMiddleware

audited = []


@dataclass
class Order:
    item: str
    qty: int


@dataclass
class Receipt:
    item: str
    total: int


class Audit(BaseMiddleware):
    async def consume_scope(self, call_next, msg):
        audited.append(msg.correlation_id)
        return await call_next(msg)


broker = DistributedApplication("mqtt://localhost:1883", middleware=[Audit])


@broker.application("orders")
@broker.publisher("receipts")
async def handle(order: Order) -> Receipt:
    return Receipt(order.item, order.qty * 3)
# trionet-program-end
"""


def test_the_trionet_program_is_the_faststream_one_renamed() -> None:
    program = FASTSTREAM
    for old, new in RENAMES:
        assert old in program, old
        program = program.replace(old, new)
    program = program.replace("faststream-program", "trionet-program")
    assert program == TRIONET


async def _run(url: str) -> None:
    namespace: dict[str, object] = {"__name__": "faststream_port"}
    tag = uuid.uuid4().hex[:8]
    orders, receipts_topic = f"orders-{tag}", f"receipts-{tag}"
    source = (TRIONET.replace('"mqtt://localhost:1883"', repr(url))
              .replace('"orders"', repr(orders)).replace('"receipts"', repr(receipts_topic)))
    exec(compile(source, "faststream_port", "exec", dont_inherit=True), namespace)
    broker = namespace["broker"]
    audited = namespace["audited"]
    assert isinstance(audited, list)
    receipts: list[BusMessage] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve)  # type: ignore[attr-defined]
        async with from_url(url).create_socket([receipts_topic], name="client") as client:
            order = namespace["Order"]("tea", 2)  # type: ignore[operator]
            await broker.publish(order, orders, correlation_id="c-1")  # type: ignore[attr-defined]
            with trio.fail_after(20):
                receipts.append(await client.receive())
            reply = await client.request(BusMessage(b'{"item": "cup", "qty": 1}', orders))
        broker.stop()  # type: ignore[attr-defined]
    assert receipts[0].payload == b'{"item":"tea","total":6}'
    assert reply.payload == b'{"item":"cup","total":3}'
    assert audited[0] == "c-1" and len(audited) == 2


async def test_the_trionet_program_runs_on_memory() -> None:
    await _run("memory://faststream-port")


async def test_the_trionet_program_runs_on_mqtt(shared_mosquitto: object) -> None:
    info = shared_mosquitto.info  # type: ignore[attr-defined]
    await _run(f"mqtt://{info.host}:{info.port}?client_id=fsport")
