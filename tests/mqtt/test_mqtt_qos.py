"""QoS 0/1/2 in both directions with exact counts, retained messages, publish_many, the seed."""

from __future__ import annotations

import logging

import pytest
import trio
from mqtt_helpers import BACKENDS, TEST_DEADLINE, Backend, PahoPeer, connected, unique

from trionet.errors import MQTTError
from trionet.mqtt import MQTTClient, MQTTMessage, QoS
from trionet.testing import MosquittoServer

N = 150


@BACKENDS
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_trionet_publishes_paho_receives_each_message_once(
    shared_mosquitto: MosquittoServer, qos: int, backend: Backend
) -> None:
    info = shared_mosquitto.info
    topic = unique("qos-out")
    peer = await trio.to_thread.run_sync(PahoPeer, info)
    try:
        await trio.to_thread.run_sync(peer.subscribe, topic, 2)
        with trio.fail_after(TEST_DEADLINE):
            async with connected(info, backend=backend) as client:
                for i in range(N):
                    await client.publish(topic, f"m{i}", qos=qos)
        received = await trio.to_thread.run_sync(peer.collect, N)
    finally:
        await trio.to_thread.run_sync(peer.close)
    assert sorted(m.payload for m in received) == sorted(f"m{i}".encode() for i in range(N))
    assert {m.qos for m in received} == {qos}


@BACKENDS
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_paho_publishes_trionet_receives_each_message_once(
    shared_mosquitto: MosquittoServer, qos: int, backend: Backend
) -> None:
    info = shared_mosquitto.info
    topic = unique("qos-in")
    peer = await trio.to_thread.run_sync(PahoPeer, info)
    try:
        with trio.fail_after(TEST_DEADLINE):
            async with (
                connected(info, backend=backend) as client,
                client.subscription(topic, qos=2) as messages,
            ):
                payloads = [f"m{i}".encode() for i in range(N)]
                await trio.to_thread.run_sync(peer.publish, topic, payloads, qos)
                got = [await messages.receive() for _ in range(N)]
                await trio.sleep(0.3)  # anything extra (a duplicate) would arrive meanwhile
                with pytest.raises(trio.WouldBlock):
                    messages.receive_nowait()
    finally:
        await trio.to_thread.run_sync(peer.close)
    assert [m.payload for m in got] == payloads  # one publisher: in order
    assert {m.qos for m in got} == {QoS(qos)}
    assert all((m.message_id is None) == (qos == 0) for m in got)


@BACKENDS
async def test_publish_many_all_qos_and_counts(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    info = shared_mosquitto.info
    topic = unique("many")
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info, backend=backend) as sender,
            connected(info, backend=backend) as receiver,
            receiver.subscription(f"{topic}/#", qos=2, max_buffer_size=2000) as inbox,
        ):
            batch: list[MQTTMessage | tuple[str, bytes]] = [
                MQTTMessage(f"{topic}/{i % 3}", f"{i}", QoS(i % 3)) for i in range(600)
            ]
            batch += [(f"{topic}/pairs", b"pair") for _ in range(100)]
            assert await sender.publish_many(batch, qos=1) == 700
            got = [await inbox.receive() for _ in range(700)]
    assert sorted(int(m.payload) for m in got if m.topic != f"{topic}/pairs") == list(range(600))
    assert all(m.qos == int(m.topic[-1]) for m in got if m.topic != f"{topic}/pairs")
    assert [m.qos for m in got if m.topic == f"{topic}/pairs"] == [QoS.AT_LEAST_ONCE] * 100
    assert sender.statistics().messages_published == 700
    assert receiver.statistics().messages_received == 700


async def test_retained_messages(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = unique("retained")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as client:
            await client.publish(topic, "last known value", qos=1, retain=True)
            await client.publish(f"{topic}/live", "not retained", qos=1)
            async with client.subscription(f"{topic}/#", qos=1) as messages:
                # "a/#" also matches "a": the retained message arrives on subscribing
                message = await messages.receive()
                assert (message.topic, message.payload, message.retain) == (
                    topic, b"last known value", True)
                await client.publish(topic, "fresh", qos=1, retain=True)
                live = await messages.receive()
                assert (live.payload, live.retain) == (b"fresh", False)  # live delivery
            await client.publish(topic, b"", qos=1, retain=True)  # clears the retained message
            async with client.subscription(topic, qos=1) as messages:
                await trio.sleep(0.2)
                with pytest.raises(trio.WouldBlock):
                    messages.receive_nowait()


async def test_the_seed_example_runs_as_written(
    shared_mosquitto: MosquittoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    info = shared_mosquitto.info
    topic = unique("test/topic")

    # -- the seed page, with the broker's address and a unique topic ------------------------
    client = MQTTClient()

    @client.on_message
    async def handle_message(message: MQTTMessage) -> None:
        print(f"Received: {message.payload}")  # type: ignore[str-bytes-safe]  # as in the seed

    with trio.fail_after(TEST_DEADLINE):
        async with client:
            await client.connect(info.host, info.port)
            await client.subscribe(topic, qos=QoS.AT_LEAST_ONCE)
            await client.publish(topic, "Hello MQTT", qos=QoS.AT_LEAST_ONCE)
    # ------------------------------------------------------------------------------------------
    # The broker sends the subscriber's copy before the PUBACK on the same connection, so the
    # handler has the message before publish() returns; the block's end lets it finish.
    assert capsys.readouterr().out == "Received: b'Hello MQTT'\n"


async def test_the_seed_reliable_publish_example(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = unique("reliable")

    # The seed's ReliableMQTTClient, with trio.sleep where the asyncio original had
    # asyncio.sleep (trionet never uses asyncio).
    class ReliableMQTTClient(MQTTClient):
        async def reliable_publish(self, topic: str, payload: str, retries: int = 3) -> None:
            for attempt in range(retries):
                try:
                    await self.publish(topic, payload, qos=QoS.EXACTLY_ONCE)
                    return
                except MQTTError:
                    if attempt == retries - 1:
                        raise
                    await trio.sleep(1)

    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info) as observer,
            observer.subscription(topic, qos=2) as inbox,
            ReliableMQTTClient() as reliable,
        ):
            # not connected yet: the first attempt fails, the retry after connecting succeeds
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reliable.reliable_publish, topic, "eventually")
                await trio.sleep(0.2)
                await reliable.connect(info.host, info.port)
            message = await inbox.receive()
            assert (message.payload, message.qos) == (b"eventually", QoS.EXACTLY_ONCE)
            # out of retries: the last error is raised
            await reliable.disconnect()
            with pytest.raises(MQTTError):
                await reliable.reliable_publish(topic, "never", retries=1)


async def test_handlers_get_messages_of_subscribe_and_errors_are_logged(
    shared_mosquitto: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    info = shared_mosquitto.info
    topic = unique("handlers")
    seen: list[tuple[str, bytes]] = []
    done = trio.Event()
    client = MQTTClient(max_concurrency=4)

    @client.on_message
    async def everything(message: MQTTMessage) -> None:
        seen.append(("all", message.payload))
        if len(seen) == 4:
            done.set()
        if message.payload == b"boom":
            raise RuntimeError("handler failed")

    @client.on_message(f"{topic}/only/#")
    async def only(message: MQTTMessage) -> None:
        seen.append(("only", message.payload))
        if len(seen) == 4:
            done.set()

    caplog.set_level(logging.ERROR, "trionet.mqtt")
    with trio.fail_after(TEST_DEADLINE):
        async with client:
            await client.connect(info.host, info.port)
            assert await client.subscribe(f"{topic}/#", qos=1) is QoS.AT_LEAST_ONCE
            await client.publish(f"{topic}/a", "boom", qos=1)
            await client.publish(f"{topic}/only/x", "x", qos=1)
            await client.publish(f"{topic}/b", "b", qos=1)
            await done.wait()
            assert client.statistics().handler_errors == 1
    assert sorted(seen) == [("all", b"b"), ("all", b"boom"), ("all", b"x"), ("only", b"x")]
    assert "handler failed" in caplog.text
    assert "boom" in caplog.text  # the message is in the log record


async def test_handler_error_can_fail_the_client(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = unique("raise")
    client = MQTTClient(on_handler_error="raise")

    @client.on_message
    async def handler(message: MQTTMessage) -> None:
        raise KeyError(message.topic)

    with trio.fail_after(TEST_DEADLINE), pytest.raises(KeyError):
        async with client:
            await client.connect(info.host, info.port)
            await client.subscribe(topic)
            await client.publish(topic, "x")
            await trio.sleep_forever()


async def test_a_slow_handler_blocks_neither_acks_nor_other_work(
    shared_mosquitto: MosquittoServer,
) -> None:
    info = shared_mosquitto.info
    topic = unique("slow")
    release = trio.Event()
    two_started = trio.Event()
    started = 0
    client = MQTTClient(max_concurrency=2)

    @client.on_message(f"{topic}/slow")
    async def slow(message: MQTTMessage) -> None:
        nonlocal started
        started += 1
        if started == 2:
            two_started.set()
        await release.wait()

    with trio.fail_after(TEST_DEADLINE):
        async with client:
            await client.connect(info.host, info.port)
            await client.subscribe(f"{topic}/slow", qos=1)
            for _ in range(4):
                await client.publish(f"{topic}/slow", "x", qos=1)
            await two_started.wait()
            # two handlers hang; publishing, subscriptions and acknowledgements carry on
            async with client.subscription(f"{topic}/fast", qos=2) as fast:
                for i in range(20):
                    await client.publish(f"{topic}/fast", str(i), qos=2)
                assert [int((await fast.receive()).payload) for _ in range(20)] == list(range(20))
            assert started == 2  # max_concurrency
            release.set()
