"""Every MQTT example in docs/examples runs against the test broker."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import trio
from mqtt_helpers import TEST_DEADLINE, mqtt_threads

from trionet.testing import MosquittoServer

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mqtt_seed.py", "Received: b'Hello MQTT'\n"),
        ("mqtt_subscription.py", "°C"),
        ("mqtt_messages.py", "weather/berlin: 3 °C\nweather/paris: 7 °C\n"),
        ("mqtt_request_reply.py", "2 + 40 = 42\n"),
        ("mqtt_reliable.py", "published exactly once\n"),
        ("mqtt_events.py", "connection: disconnected (disconnect() was called)\n"
                           "connection: connecting ()\nconnection: connected (connected)\n"),
    ],
)
async def test_example(
    mosquitto: MosquittoServer, capsys: pytest.CaptureFixture[str], name: str, expected: str
) -> None:
    info = mosquitto.info
    with trio.fail_after(TEST_DEADLINE):
        await _load(name).main(f"mqtt://{info.host}:{info.port}")
    out = capsys.readouterr().out
    assert expected in out
    if name == "mqtt_subscription.py":
        assert sorted(line.split(":")[0] for line in out.splitlines()) == ["hall"] * 3 + [
            "kitchen"] * 3
    assert mqtt_threads() == []
