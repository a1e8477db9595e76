"""ack="processed": QoS 1 messages are acknowledged after processing, so the broker sends a
message whose handler crashed (or whose consumer never acknowledged it) again on the next
connection of a persistent session."""

from __future__ import annotations

import pytest
import trio
from mqtt_helpers import BACKENDS, TEST_DEADLINE, Backend, connected, unique, wait_for

from trionet.errors import ConfigurationError
from trionet.mqtt import MQTTClient, MQTTMessage
from trionet.testing import MosquittoServer


def _session(client_id: str, backend: Backend, ack: str) -> dict[str, object]:
    return {"client_id": client_id, "clean_start": False, "backend": backend, "ack": ack}


async def _forget(info: object, client_id: str) -> None:
    async with connected(info, client_id=client_id):  # type: ignore[arg-type]
        pass  # clean session: the broker drops the persistent one


@BACKENDS
@pytest.mark.parametrize("ack", ["processed", "received"])
async def test_a_message_whose_handler_crashed_is_delivered_again(
    shared_mosquitto: MosquittoServer, backend: Backend, ack: str
) -> None:
    info = shared_mosquitto.info
    topic = unique("crash")
    client_id = "ack" + topic.rpartition("/")[2]
    handled: list[bytes] = []
    first = MQTTClient(**_session(client_id, backend, ack))  # type: ignore[arg-type]

    @first.on_message
    async def crashes_on_boom(message: MQTTMessage) -> None:
        handled.append(message.payload)
        if message.payload == b"boom":
            raise RuntimeError("the handler crashed")

    with trio.fail_after(TEST_DEADLINE):
        async with first:
            await first.connect(info.host, info.port)
            await first.subscribe(topic, qos=1)
            await first.publish(topic, "fine", qos=1)
            await first.publish(topic, "boom", qos=1)
            await wait_for(lambda: len(handled) == 2)
        assert first.statistics().handler_errors == 1

        again: list[MQTTMessage] = []
        second = MQTTClient(**_session(client_id, backend, ack))  # type: ignore[arg-type]

        @second.on_message
        async def collect(message: MQTTMessage) -> None:
            again.append(message)

        async with second:
            await second.connect(info.host, info.port)
            await second.publish(topic, "marker", qos=1)  # arrives after any redelivery
            await wait_for(lambda: any(m.payload == b"marker" for m in again))
        await _forget(info, client_id)
    redelivered = [m.payload for m in again if m.payload != b"marker"]
    if ack == "processed":
        assert redelivered == [b"boom"]  # "fine" was acknowledged after its handler returned
    else:
        assert redelivered == []  # acknowledged on arrival: the crash lost it


@BACKENDS
async def test_a_subscription_block_acknowledges_what_its_consumer_acks(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    # the consumer acknowledges "one" and dies (the block ends) while handling "two"
    info = shared_mosquitto.info
    topic = unique("block")
    client_id = "blk" + topic.rpartition("/")[2]
    session = _session(client_id, backend, "processed")
    with trio.fail_after(TEST_DEADLINE):
        with pytest.raises(RuntimeError, match="died"):
            async with (
                connected(info, **session) as client,
                client.subscription(topic, qos=1) as messages,
            ):
                await client.subscribe(topic, qos=1)  # keeps the subscription after the block
                await client.publish(topic, "one", qos=1)
                await client.publish(topic, "two", qos=1)
                first = await messages.receive()
                messages.ack(first)
                messages.ack(first)  # twice: a no-op
                await messages.receive()
                raise RuntimeError("the consumer died before acknowledging 'two'")
        again: list[MQTTMessage] = []
        second = MQTTClient(**session)  # type: ignore[arg-type]

        @second.on_message
        async def collect(message: MQTTMessage) -> None:
            again.append(message)

        async with second:
            await second.connect(info.host, info.port)
            await second.publish(topic, "marker", qos=1)
            await wait_for(lambda: any(m.payload == b"marker" for m in again))
        await _forget(info, client_id)
    assert [m.payload for m in again] == [b"two", b"marker"]


def test_the_ack_option_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="ack"):
        MQTTClient(ack="sometimes")  # type: ignore[arg-type]


# -- the message bus's mqtt:// transport acknowledges as its AckPolicy says ----------------------


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_the_bus_gets_back_the_message_its_crashed_handler_did_not_finish(
    shared_mosquitto: MosquittoServer, version: str
) -> None:
    from trionet.bus import BusMessage, DistributedApplication, from_url

    info = shared_mosquitto.info
    topic = unique("jobs")
    client_id = "bus" + topic.rpartition("/")[2]
    url = (f"mqtt://{info.host}:{info.port}?client_id={client_id}&clean_start=false&qos=1"
           f"&version={version}")
    handled: list[bytes] = []

    def make_app(crash: bool) -> DistributedApplication:
        app = DistributedApplication(url)

        @app.application(topic, name="worker", on_error="raise")
        async def worker(message: BusMessage) -> None:
            if crash and message.payload == b"2":
                raise RuntimeError("crash on job 2")
            handled.append(message.payload)

        return app

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:  # first run: the broker learns the filter
            await nursery.start(make_app(crash=True).serve)
            nursery.cancel_scope.cancel()
        async with from_url(f"mqtt://{info.host}:{info.port}").create_socket() as publisher:
            for i in range(5):
                await publisher.publish(BusMessage(str(i), topic))
        with pytest.raises(RuntimeError, match="crash on job 2"):
            await make_app(crash=True).start_async(handle_signals=False)
        assert handled == [b"0", b"1"]
        handled.clear()
        async with trio.open_nursery() as nursery:
            await nursery.start(make_app(crash=False).serve)
            await wait_for(lambda: len(handled) >= 3)
            nursery.cancel_scope.cancel()
        await _forget(info, f"{client_id}-worker")
    assert handled == [b"2", b"3", b"4"]
