"""Request/response over MQTT: MQTT 5 properties, the 3.1.1 envelope, deadlines, late replies."""

from __future__ import annotations

import pytest
import trio
from mqtt_helpers import BACKENDS, TEST_DEADLINE, Backend, connected, unique, wait_for

from trionet.errors import MQTTError
from trionet.mqtt import MessageProperties, MQTTClient, MQTTMessage
from trionet.testing import MosquittoServer


async def _serve(responder: MQTTClient, topic: str, *,
                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer "add a b" requests; "slow ..." requests are answered after a delay."""
    async with responder.subscription(topic, qos=1) as requests:
        task_status.started()
        async for request in requests:
            text = request.payload.decode()
            if text.startswith("slow"):
                await trio.sleep(0.5)
                await responder.reply(request, b"slow answer")
                continue
            _, a, b = text.split()
            props = request.properties
            assert props is not None and props.response_topic is not None
            user = props.user_properties
            await responder.reply(request, str(int(a) + int(b)),
                                  properties=MessageProperties(user_properties=user)
                                  if responder.protocol == 5 else None)


@BACKENDS
@pytest.mark.parametrize("protocol", [4, 5])
async def test_request_reply(
    shared_mosquitto: MosquittoServer, protocol: int, backend: Backend
) -> None:
    info = shared_mosquitto.info
    topic = unique("rpc")
    with trio.fail_after(TEST_DEADLINE):
        async with (
            connected(info, protocol=protocol, backend=backend) as responder,
            connected(info, protocol=protocol, backend=backend) as requester,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(_serve, responder, topic)
            reply = await requester.request(topic, "add 2 3")
            assert reply.payload == b"5"
            assert reply.topic == requester.reply_topic
            # many concurrent requests share one reply subscription and are told apart
            results: dict[int, bytes] = {}

            async def ask(i: int) -> None:
                results[i] = (await requester.request(topic, f"add {i} {i}")).payload

            async with trio.open_nursery() as askers:
                for i in range(30):
                    askers.start_soon(ask, i)
            assert results == {i: str(2 * i).encode() for i in range(30)}
            if protocol == 5:
                props = MessageProperties(user_properties=(("trace", "t-1"),))
                reply = await requester.request(topic, "add 1 1", properties=props)
                assert reply.properties is not None
                assert reply.properties.user_properties == (("trace", "t-1"),)
            nursery.cancel_scope.cancel()


async def test_request_deadline_and_late_reply(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    topic = unique("rpc-slow")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as responder, connected(info) as requester, \
                trio.open_nursery() as nursery:
            await nursery.start(_serve, responder, topic)
            with pytest.raises(trio.TooSlowError), trio.fail_after(0.1):
                await requester.request(topic, "slow please")
            # the answer still comes, and is dropped
            await wait_for(lambda: requester.statistics().late_replies == 1)
            assert (await requester.request(topic, "add 20 22")).payload == b"42"
            # nobody answers this one: the caller's deadline is the only limit
            with trio.move_on_after(0.2) as scope:
                await requester.request(unique("nobody"), "hello?")
            assert scope.cancelled_caught
            nursery.cancel_scope.cancel()


async def test_reply_needs_a_request(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info) as client:
            with pytest.raises(MQTTError, match="not a request"):
                await client.reply(MQTTMessage("some/topic", b"x"), b"answer")


async def test_a_raw_mqtt5_request_is_answered(shared_mosquitto: MosquittoServer) -> None:
    """The responder side also works for MQTT 5 requests that trionet did not make."""
    info = shared_mosquitto.info
    topic = unique("raw-rpc")
    answers = unique("answers")
    with trio.fail_after(TEST_DEADLINE):
        async with connected(info, protocol=5) as responder, \
                connected(info, protocol=5) as asker, trio.open_nursery() as nursery:
            await nursery.start(_serve, responder, topic)
            async with asker.subscription(answers, qos=1) as inbox:
                props = MessageProperties(response_topic=answers, correlation_data=b"c-1")
                await asker.publish(topic, "add 40 2", qos=1, properties=props)
                answer = await inbox.receive()
            assert answer.payload == b"42"
            assert answer.properties is not None
            assert answer.properties.correlation_data == b"c-1"
            nursery.cancel_scope.cancel()
