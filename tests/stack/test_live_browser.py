"""The demo's live page in a real browser: headless Chromium, driven over the DevTools protocol
(``tests/browser_support.py``), shows messages published on an MQTT topic, streamed by the
stack's bridge over server-sent events. Chromium comes from Debian's ``chromium`` package
(``scripts/test.sh`` installs it)."""

from __future__ import annotations

from pathlib import Path

import trio
from browser_support import browser_tab

from trionet.demo._live import LIVE_TOPIC
from trionet.demo._stack import Stack
from trionet.mqtt import open_mqtt_client
from trionet.testing import MosquittoServer


async def test_live_page_shows_mqtt_messages_in_headless_chromium(
    shared_mosquitto: MosquittoServer, tmp_path: Path,
) -> None:
    info = shared_mosquitto.info
    broker = f"mqtt://{info.host}:{info.port}"
    stack = Stack(broker=broker)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(stack.serve)
        with trio.fail_after(60):
            async with browser_tab(tmp_path) as tab:
                await tab.command("Page.navigate", url=f"{addresses.http}/live")
                await tab.until_event("Page.loadEventFired")
                # The EventSource is open: the bridge subscribed before answering.
                assert await tab.evaluate("window.trionetLive.opened") is True
                async with open_mqtt_client(broker) as publisher:
                    for room, value in (("kitchen", "21.5"), ("hall", "19.0"),
                                        ("attic", "<b>hot</b>")):
                        await publisher.publish(f"{LIVE_TOPIC}/{room}", value, qos=1)
                shown = await tab.evaluate("window.trionetLive.atLeast(3)")
                state = await tab.evaluate("document.getElementById('state').textContent")
        assert shown == [f"{LIVE_TOPIC}/kitchen: 21.5", f"{LIVE_TOPIC}/hall: 19.0",
                         f"{LIVE_TOPIC}/attic: <b>hot</b>"]  # text, never markup
        assert state == "connected"
        assert stack.statistics()["live"]["delivered"] == 3
        stack.begin_shutdown()
    assert set(stack.states.values()) == {"stopped"}
