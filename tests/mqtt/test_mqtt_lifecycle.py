"""Structured concurrency: no thread outlives the client, cancellation is prompt, errors come out
unwrapped, and losing the broker for good fails the ``async with`` block."""

from __future__ import annotations

import threading
from functools import partial

import pytest
import trio
from mqtt_helpers import (
    BACKENDS,
    TEST_DEADLINE,
    Backend,
    connected,
    mqtt_threads,
    unique,
    wait_state,
)
from mqtt_scripted_broker import Packet, Session, serve_script

from trionet.errors import MQTTConnectError, MQTTNotConnected
from trionet.mqtt import ConnectionState, MQTTClient, ReconnectPolicy
from trionet.testing import MosquittoServer


async def _never_acks(session: Session, connect: Packet) -> None:
    await session.connack()
    while await session.read() is not None:
        pass  # swallow PUBLISH, SUBSCRIBE, ...: no acknowledgement ever comes


async def _silent(session: Session, connect: Packet) -> None:
    await trio.sleep_forever()


@BACKENDS
async def test_cancelled_publish_leaves_no_thread_and_the_client_usable(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    before = threading.active_count()
    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, _never_acks)
            async with MQTTClient(backend=backend) as client:
                await client.connect("127.0.0.1", port)
                assert len(mqtt_threads()) == (1 if backend == "thread" else 0)
                with trio.move_on_after(0.2) as scope:
                    await client.publish("t", "never acknowledged", qos=1)
                assert scope.cancelled_caught
                with trio.move_on_after(0.2) as scope:
                    await client.subscribe("t", qos=1)
                assert scope.cancelled_caught
                assert client.is_connected
                await client.publish("t", "qos 0 still works")
            nursery.cancel_scope.cancel()
    assert mqtt_threads() == []
    assert threading.active_count() <= before + 1  # trio may cache one idle worker thread


@BACKENDS
async def test_cancelling_the_whole_client_leaves_no_thread(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    info = shared_mosquitto.info
    before = threading.active_count()
    with trio.fail_after(TEST_DEADLINE):
        # cancelled while connected, with traffic in flight
        with trio.move_on_after(0.3) as scope:
            async with (
                connected(info, backend=backend) as client,
                client.subscription(unique("c")) as inbox,
            ):
                await client.publish(inbox.topic_filter, "x", qos=2)
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert client.state is ConnectionState.CLOSED
        # cancelled while waiting for a CONNACK that never comes
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_script, _silent)
            with trio.move_on_after(0.3) as scope:
                async with MQTTClient(backend=backend) as client:
                    await client.connect("127.0.0.1", port)
            assert scope.cancelled_caught
            nursery.cancel_scope.cancel()
    assert mqtt_threads() == []
    assert threading.active_count() <= before + 1


async def test_errors_in_the_block_come_out_unwrapped(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        with pytest.raises(KeyError) as raised:
            async with connected(info):
                raise KeyError("mine")
        assert raised.value.__context__ is None
        client = MQTTClient()
        async with client:
            pass
        with pytest.raises(RuntimeError, match="one 'async with'"):
            async with client:
                pass
        with pytest.raises(MQTTNotConnected):
            await client.publish("t", "after close")
    assert mqtt_threads() == []


@BACKENDS
async def test_connection_lost_without_reconnect_fails_the_block(
    mosquitto: MosquittoServer, backend: Backend
) -> None:
    info = mosquitto.info
    with trio.fail_after(TEST_DEADLINE), pytest.raises(MQTTNotConnected, match="reconnect"):
        async with connected(info, reconnect=False, backend=backend):
            await trio.to_thread.run_sync(mosquitto.kill)
            await trio.sleep_forever()
    assert mqtt_threads() == []


async def _publish_until_it_fails(client: MQTTClient, qos: int) -> None:
    topic = unique("lost")
    while True:
        await client.publish(topic, b"x", qos=qos)


@BACKENDS
async def test_a_lost_connection_is_one_mqtt_not_connected_not_a_group(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    # The body's publish and the client's supervisor both fail with MQTTNotConnected when a
    # reconnect=False connection is lost; the block used to raise them as an ExceptionGroup
    # (25-30 times in 30 here). The broker drops the connection: another client takes over our
    # client id.
    info = shared_mosquitto.info
    outcomes: list[str] = []
    for i in range(30):
        client_id = f"lost{i}{unique('')[1:]}".replace("/", "")
        started = trio.Event()

        async def take_over(client_id: str = client_id, started: trio.Event = started) -> None:
            await started.wait()
            async with MQTTClient(client_id, reconnect=False) as usurper:
                await usurper.connect(info.host, info.port)

        with trio.fail_after(TEST_DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(take_over)
                try:
                    async with MQTTClient(client_id, reconnect=False, backend=backend) as client:
                        await client.connect(info.host, info.port)
                        started.set()
                        await _publish_until_it_fails(client, i % 3)
                except MQTTNotConnected:
                    outcomes.append("MQTTNotConnected")
                except BaseExceptionGroup as group:
                    outcomes.append(repr(group))
    assert outcomes == ["MQTTNotConnected"] * 30


@BACKENDS
async def test_a_broker_stop_is_one_mqtt_not_connected_not_a_group(
    mosquitto: MosquittoServer, backend: Backend
) -> None:
    info = mosquitto.info
    for i in range(3):
        with trio.fail_after(TEST_DEADLINE), pytest.raises(MQTTNotConnected):
            async with (
                connected(info, reconnect=False, backend=backend) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(trio.to_thread.run_sync, mosquitto.stop)
                await _publish_until_it_fails(client, 1 + i % 2)
        await trio.to_thread.run_sync(mosquitto.start)


async def test_giving_up_reconnecting_fails_the_block_and_pending_publishes(
    mosquitto: MosquittoServer,
) -> None:
    info = mosquitto.info
    policy = ReconnectPolicy(initial_delay=0.01, max_delay=0.02, max_attempts=3)
    failures: list[BaseException] = []

    async def doomed_publish(client: MQTTClient) -> None:
        try:
            await client.publish("t", "lost", qos=1)
        except MQTTNotConnected as exc:
            failures.append(exc)

    with trio.fail_after(TEST_DEADLINE), pytest.raises(MQTTConnectError, match="gave up") as gave:
        async with connected(info, reconnect=policy) as client:
            await trio.to_thread.run_sync(mosquitto.kill)
            await wait_state(client, ConnectionState.RECONNECTING)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(doomed_publish, client)
                await trio.sleep_forever()
    assert isinstance(gave.value.__cause__, MQTTConnectError)
    assert len(failures) == 1 or not failures  # failed, or cancelled with the block


async def test_closing_while_reconnecting_is_prompt(mosquitto: MosquittoServer) -> None:
    info = mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info, reconnect=ReconnectPolicy(initial_delay=0.05)) as client:
            await trio.to_thread.run_sync(mosquitto.kill)
            await wait_state(client, ConnectionState.RECONNECTING)
        assert client.state is ConnectionState.CLOSED
    assert mqtt_threads() == []


@BACKENDS
async def test_cancelling_a_stalled_tls_handshake_is_prompt(backend: Backend) -> None:
    """A server that accepts TCP but never answers the TLS ClientHello: cancelling the
    connect (or closing the client) ends the blocked handshake at once, not after
    connect_timeout."""
    accepted: list[trio.SocketStream] = []

    async def mute(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    with trio.fail_after(TEST_DEADLINE):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with MQTTClient(tls=True, connect_timeout=60, backend=backend) as client:
                with trio.move_on_after(0.3) as scope:
                    await client.connect("127.0.0.1", port)
                assert scope.cancelled_caught
                assert client.state is ConnectionState.DISCONNECTED
            with trio.move_on_after(0.3) as scope:
                async with MQTTClient(tls=True, connect_timeout=60, backend=backend) as client:
                    await client.connect("127.0.0.1", port)
            assert scope.cancelled_caught
            nursery.cancel_scope.cancel()
    assert len(accepted) == 2
    assert mqtt_threads() == []


class _CancelAsTheDriverStarts(trio.abc.Instrument):
    """Cancels *scope* in the scheduling step in which the client's driver task reports that
    it has started: the task entering ``async with client`` then resumes with the driver
    already told to stop (whether the driver's stop or the resumed task runs first is up to
    trio's scheduling order, so a test repeats it)."""

    def __init__(self, client: MQTTClient, scope: trio.CancelScope) -> None:
        self.client = client
        self.scope = scope

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        driver = self.client._driver
        if driver is None or self.scope.cancel_called:
            return
        if getattr(task.coro, "cr_code", None) is not type(driver).run.__code__:
            return
        loop = getattr(driver, "_loop", None)  # the thread driver starts its thread first
        if loop is None or loop._running:
            self.scope.cancel()


@BACKENDS
async def test_connect_cancelled_as_the_client_starts_is_cancelled_not_not_connected(
    shared_mosquitto: MosquittoServer, backend: Backend
) -> None:
    # A bus producer stopped (SIGTERM) while its socket was still opening failed 'trionet run'
    # with MQTTNotConnected("the MQTT client is closed"): connect() found the driver stopped by
    # the cancellation and reported that instead of the cancellation itself.
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        for _ in range(16):  # each round loses the race with probability 1/2 on the old code
            client = MQTTClient(unique("cancel-start"), backend=backend)
            with trio.CancelScope() as scope:
                instrument = _CancelAsTheDriverStarts(client, scope)
                trio.lowlevel.add_instrument(instrument)
                try:
                    async with client:
                        await client.connect(info.host, info.port)
                finally:
                    trio.lowlevel.remove_instrument(instrument)
            assert scope.cancelled_caught
