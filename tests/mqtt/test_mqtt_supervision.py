"""MQTT reconnects under the shared RetryPolicy and a circuit breaker, against a real mosquitto
that is killed and started again."""

from __future__ import annotations

import pytest
import trio
from mqtt_helpers import TEST_DEADLINE, unique, wait_for, wait_state

from trionet.errors import ConfigurationError
from trionet.mqtt import ConnectionState, MQTTClient, ReconnectPolicy
from trionet.supervision import Backoff, CircuitBreaker, RetryPolicy
from trionet.testing import MosquittoServer


def test_a_retry_policy_becomes_the_same_reconnect_policy() -> None:
    breaker = CircuitBreaker()
    retry = RetryPolicy(Backoff(initial=0.2, factor=3, maximum=5, jitter=0.25),
                        max_attempts=7, reset_after=4, breaker=breaker)
    policy = ReconnectPolicy.from_retry(retry)
    assert (policy.initial_delay, policy.multiplier, policy.max_delay, policy.jitter) == (
        0.2, 3, 5, 0.25)
    assert (policy.max_attempts, policy.stable_after, policy.breaker) == (7, 4, breaker)
    assert policy.retry == retry  # and back
    classic = ReconnectPolicy(initial_delay=1, max_delay=1, jitter=0)
    assert classic.delay(0) == classic.backoff.delay(1) == 1
    with pytest.raises(ConfigurationError, match="deadline"):
        MQTTClient(reconnect=RetryPolicy(deadline=5))
    with pytest.raises(ConfigurationError, match="RetryPolicy"):
        MQTTClient(reconnect="often")  # type: ignore[arg-type]


async def test_reconnect_waits_for_the_breaker_then_comes_back(
    mosquitto: MosquittoServer,
) -> None:
    info = mosquitto.info
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=0.5)
    policy = RetryPolicy(Backoff(initial=0.05, maximum=0.1, jitter=0), breaker=breaker)
    topic = unique("breaker")
    with trio.fail_after(TEST_DEADLINE):
        async with MQTTClient(reconnect=policy) as client:
            await client.connect(info.host, info.port)
            await trio.to_thread.run_sync(mosquitto.kill)
            await wait_state(client, ConnectionState.RECONNECTING)
            await wait_for(lambda: breaker.opened >= 1)  # refused attempts opened it
            await trio.to_thread.run_sync(mosquitto.start)
            await wait_state(client, ConnectionState.CONNECTED)
            assert breaker.state == "closed"  # the trial that reconnected closed it
            async with client.subscription(topic, qos=1) as inbox:
                await client.publish(topic, "back", qos=1)
                assert (await inbox.receive()).payload == b"back"
