"""Shared helpers for the MQTT tests (imported as ``mqtt_helpers``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest
import trio

from trionet.mqtt import MQTTClient
from trionet.testing import MosquittoInfo

# Every test that waits on the network does so under this cap (a hang fails instead of
# stalling the run); no test asserts a duration.
TEST_DEADLINE = 20.0


def unique(prefix: str = "t") -> str:
    """A fresh topic prefix, so tests sharing one broker never see each other's messages."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def mqtt_threads() -> list[str]:
    """Names of the running threads that belong to trionet MQTT clients."""
    return [t.name for t in threading.enumerate() if t.name.startswith("trionet-mqtt-")]


@asynccontextmanager
async def connected(info: MosquittoInfo, **options: Any) -> AsyncIterator[MQTTClient]:
    """An MQTTClient connected to the plain listener of *info*'s broker."""
    client = MQTTClient(**options)
    async with client:
        await client.connect(info.host, info.port)
        yield client


async def wait_for(predicate: Any, *, interval: float = 0.01) -> None:
    """Poll *predicate* until it is true (callers put a deadline around it).

    Only for conditions nothing signals: counters, buffer sizes, a file the broker writes.
    """
    while not predicate():  # noqa: ASYNC110 - nothing signals these conditions
        await trio.sleep(interval)


async def wait_state(client: MQTTClient, state: Any) -> None:
    """Wait until *client* reaches the ConnectionState *state* (no polling)."""
    async with client.connection_events() as events:
        if client.state is state:
            return
        async for event in events:
            if event.state is state:
                return


class PahoPeer:
    """A plain paho-mqtt client driven with ``loop()``: the independent peer of many tests.

    Every method blocks; call them through ``trio.to_thread.run_sync``. Each has its own
    timeout, so a thread never outlives a failed test for long.
    """

    def __init__(self, info: MosquittoInfo, *, protocol: int = 4) -> None:
        import time

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        version = MQTTProtocolVersion.MQTTv5 if protocol == 5 else MQTTProtocolVersion.MQTTv311
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex[:8]}",
            protocol=version,
        )
        self.messages: list[Any] = []
        self.client.on_message = lambda client, userdata, message: self.messages.append(message)
        self.client.connect(info.host, info.port)
        deadline = time.monotonic() + TEST_DEADLINE
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError("paho peer could not connect")
            self.client.loop(0.05)

    def subscribe(self, topic: str, qos: int) -> None:
        import time

        granted: list[Any] = []
        self.client.on_subscribe = lambda *args: granted.append(args)
        self.client.subscribe(topic, qos)
        deadline = time.monotonic() + TEST_DEADLINE
        while not granted:
            if time.monotonic() > deadline:
                raise TimeoutError("no SUBACK")
            self.client.loop(0.05)

    def collect(self, count: int, grace: float = 0.3) -> list[Any]:
        """Loop until *count* messages arrived, then *grace* seconds more (to see duplicates)."""
        import time

        deadline = time.monotonic() + TEST_DEADLINE
        while len(self.messages) < count and time.monotonic() < deadline:
            self.client.loop(0.05)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            self.client.loop(0.05)
        return list(self.messages)

    def publish(self, topic: str, payloads: list[bytes], qos: int, retain: bool = False) -> None:
        import time

        infos = [self.client.publish(topic, payload, qos, retain) for payload in payloads]
        deadline = time.monotonic() + TEST_DEADLINE
        while not all(info.is_published() for info in infos):
            if time.monotonic() > deadline:
                raise TimeoutError("paho peer could not publish")
            self.client.loop(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop(0.05)


#: A client backend (the ``backend=`` option of MQTTClient).
Backend = Literal["thread", "trio"]

#: Run a test once per client backend (paho on a network thread, or driven by trio).
BACKENDS = pytest.mark.parametrize("backend", ["thread", "trio"])
