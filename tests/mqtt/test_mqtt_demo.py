"""The MQTT part of ``trionet demo`` against the test broker."""

from __future__ import annotations

import trio
from mqtt_helpers import TEST_DEADLINE, mqtt_threads

from trionet.demo._mqtt import demo
from trionet.testing import MosquittoServer


async def test_demo_runs_against_a_broker(shared_mosquitto: MosquittoServer) -> None:
    info = shared_mosquitto.info
    lines: list[str] = []
    with trio.fail_after(TEST_DEADLINE):
        await demo(lines.append, f"mqtt://{info.host}:{info.port}")
    text = "\n".join(lines)
    assert "connected to mqtt://" in text
    for qos in (0, 1, 2):
        assert f"QoS {qos} publish completed" in text
    assert "answered '42'" in text
    assert lines[-1] == "mqtt: disconnected"
    assert mqtt_threads() == []
