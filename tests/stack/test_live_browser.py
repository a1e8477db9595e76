"""The demo's live page in a real browser: headless Chromium, driven over the DevTools protocol
(``tests/browser_support.py``), shows messages published on an MQTT topic, streamed by the
stack's bridge over server-sent events. Chromium comes from Debian's ``chromium`` package
(``scripts/test.sh`` installs it)."""

from __future__ import annotations

import json
from pathlib import Path

import trio
from browser_support import DevTools, headless_chromium
from trio_websocket import open_websocket_url

from trionet.demo._asgi import http_request
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
            async with headless_chromium(tmp_path) as devtools_address:
                host, port = devtools_address.rsplit(":", 1)
                status, _, body = await http_request(host, int(port), "GET", "/json/list")
                assert status == 200
                page = next(t for t in json.loads(body) if t["type"] == "page")
                async with open_websocket_url(page["webSocketDebuggerUrl"]) as connection:
                    tab = DevTools(connection)
                    await tab.command("Page.enable")
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
