"""FastStream, the peer of trionet.bus in bench/bus.py, in its own process (it runs on asyncio).
Nothing here imports trionet.

``python bench/_bus_peers.py KIND`` (KIND: ``mqtt``, ``kafka`` or ``memory``) reads one JSON
job a line on stdin and answers one JSON line on stdout:

* ``{"op": "setup", "url" (mqtt) or "servers" (kafka), "topic", "group", "typed"}``: a FastStream
  broker (``MQTTBroker``, MQTT 5 on zmqtt; ``KafkaBroker`` on aiokafka; for ``memory``, an
  ``MQTTBroker`` inside FastStream's in-memory ``TestMQTTBroker``, the only broker FastStream
  runs without a server) with two subscribers:
  a consumer on ``topic`` that counts messages, and (MQTT only: FastStream 0.7's ``KafkaBroker``
  raises ``FeatureNotSupportedException`` for ``request()`` outside its test client) a responder
  on ``<topic>-rpc`` that returns the request's body (FastStream publishes a handler's return
  value to the request's reply address). It is started, then one message is sent through each
  before answering. With ``"typed": true`` the subscribers take a pydantic model
  (``body: Sample``, validated by FastStream, as its documentation recommends) and the messages
  are ``Sample`` objects (FastStream encodes them as JSON); otherwise bytes. The Kafka consumer
  is then paused, and resumed only while measured (an idle
  aiokafka consumer spins against noida-db, which answers an empty fetch at once);
* ``{"op": "throughput", "n"}``: ``n`` messages of 100 bytes published one after the other
  with ``await broker.publish(...)`` (MQTT: QoS 1, which returns on the PUBACK; Kafka: waits for
  the broker's acknowledgement, FastStream's default), timed until the consumer has counted all
  of them. Answer: ``{"count", "received", "elapsed"}``; fewer received than sent within
  ``SETTLE`` seconds after the last publish is reported, not hidden;
* ``{"op": "round_trips", "n"}`` (MQTT): ``n`` sequential ``await broker.request(...)`` at
  QoS 1. Answer: ``{"count", "elapsed"}``;
* ``{"op": "close"}`` (or end of input).

This is FastStream as its documentation shows it: decorated subscribers, ``broker.publish`` and
``broker.request``, default settings otherwise (Kafka consumers join their group with a 6 s
session like trionet's contenders, so set-up is quick).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any

import pydantic

PAYLOAD = b"x" * 100


class Sample(pydantic.BaseModel):
    """The typed rows' message (its JSON is about 100 bytes, as bench/bus.py's ``Sample``)."""

    id: int
    name: str
    tags: list[str]
    value: float


SAMPLE = Sample(id=12345, name="sensor-kitchen-temperature-probe", tags=["home", "kitchen"],
                value=21.5)
SETTLE = 10.0
TIMEOUT = 30.0
RESUME_WAIT = 0.3


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    def reset(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


def _broker(kind: str, job: dict[str, Any], counter: Counter
            ) -> tuple[Any, Any, dict[str, Any]]:
    """The broker, its counting subscriber, and the keyword arguments for publish/request."""
    quiet = logging.getLogger("bench.faststream")
    quiet.setLevel(logging.WARNING)
    topic = job["topic"]
    if kind in ("mqtt", "memory"):
        import zmqtt
        from faststream.mqtt import MQTTBroker

        broker: Any = MQTTBroker(job.get("url", "mqtt://127.0.0.1:1"), logger=quiet)
        sub_options: dict[str, Any] = {"qos": zmqtt.QoS.AT_LEAST_ONCE}
        pub_options: dict[str, Any] = {"qos": zmqtt.QoS.AT_LEAST_ONCE}
        rpc_sub_options = sub_options
    else:
        from faststream.kafka import KafkaBroker

        broker = KafkaBroker(job["servers"], logger=quiet)
        group = {"auto_offset_reset": "earliest", "session_timeout_ms": 6000,
                 "heartbeat_interval_ms": 1000}
        sub_options = {"group_id": job["group"], **group}
        rpc_sub_options = {}
        pub_options = {}

    subscriber = broker.subscriber(topic, **sub_options)

    # FastStream 0.7's KafkaBroker has no request() (outside its tests)
    rpc = None if kind == "kafka" else broker.subscriber(f"{topic}-rpc", **rpc_sub_options)
    if job.get("typed"):

        @subscriber
        async def consume_typed(body: Sample) -> None:
            counter.hit()

        if rpc is not None:

            @rpc
            async def respond_typed(body: Sample) -> Sample:
                return body
    else:

        @subscriber
        async def consume(body: bytes) -> None:
            counter.hit()

        if rpc is not None:

            @rpc
            async def respond(body: bytes) -> bytes:
                return body

    return broker, subscriber, pub_options


def _pause(kind: str, subscriber: Any, paused: bool) -> bool:
    """Kafka: pause the counting consumer's partitions between measurements, or resume them.

    noida-db answers a fetch with no records at once, so an idle aiokafka consumer spins against
    it (most of a core here) and would slow the contenders measured meanwhile in other processes.
    """
    if kind != "kafka":
        return False
    consumer = subscriber.consumer
    if paused:
        consumer.pause(*consumer.assignment())
    else:
        consumer.resume(*consumer.paused())
    return True


async def main(kind: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    counter = Counter()
    broker: Any = None
    subscriber: Any = None
    topic = ""
    options: dict[str, Any] = {}
    message: Any = PAYLOAD
    async with contextlib.AsyncExitStack() as stack:
        while line := await reader.readline():
            job = json.loads(line)
            op = job["op"]
            if op == "close":
                break
            if op == "setup":
                topic = job["topic"]
                message = SAMPLE if job.get("typed") else PAYLOAD
                broker, subscriber, options = _broker(kind, job, counter)
                if kind == "memory":
                    from faststream.mqtt import TestMQTTBroker

                    broker = await stack.enter_async_context(TestMQTTBroker(broker))
                else:
                    await broker.start()
                    stack.push_async_callback(broker.stop)
                async with asyncio.timeout(60):  # the first message waits for group joins
                    counter.reset(1)
                    await broker.publish(message, topic, **options)
                    await counter.done.wait()
                    if kind != "kafka":
                        await broker.request(message, f"{topic}-rpc", timeout=60, **options)
                _pause(kind, subscriber, True)
                answer: dict[str, Any] = {"count": 0}
            elif op == "throughput":
                n = job["n"]
                counter.reset(n)
                if _pause(kind, subscriber, False):
                    # aiokafka's fetcher, idle while everything was paused, notices a resume
                    # only at its next wake-up (fetcher_timeout, 0.2 s): not FastStream's cost.
                    await asyncio.sleep(RESUME_WAIT)
                start = time.perf_counter()
                async with asyncio.timeout(TIMEOUT):
                    for _ in range(n):
                        await broker.publish(message, topic, **options)
                try:
                    async with asyncio.timeout(SETTLE):
                        await counter.done.wait()
                except TimeoutError:
                    pass  # reported: received < count
                answer = {"count": n, "received": counter.count,
                          "elapsed": time.perf_counter() - start}
                _pause(kind, subscriber, True)
            else:
                n = job["n"]
                start = time.perf_counter()
                async with asyncio.timeout(TIMEOUT):
                    for _ in range(n):
                        reply = await broker.request(message, f"{topic}-rpc", timeout=TIMEOUT,
                                                     **options)
                        if job.get("typed"):  # what a caller does with a typed reply
                            Sample.model_validate_json(reply.body)
                answer = {"count": n, "elapsed": time.perf_counter() - start}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    from _bounds import forbid_trionet

    forbid_trionet()  # a peer's process: checked, not just claimed
    asyncio.run(main(sys.argv[1]))
