"""An event stream and a websocket fed by an MQTT topic, served by Hypercorn; a client reads both.

Run: ``python bridges_live.py [URL]``; without a broker URL it starts a private mosquitto.
"""

import json
import sys

import trio

from trionet.asgi import ASGIApplication, Router, connect_websocket, serve
from trionet.bridges import Bridge, mqtt_source
from trionet.mqtt import open_mqtt_client


async def read_events(host: str, port: int, wanted: int, *, task_status) -> None:
    """A tiny event-stream reader (a browser would use ``new EventSource("/events")``)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(b"GET /events HTTP/1.0\r\nHost: example\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        task_status.started()  # the response started: the bridge has subscribed
        while data.count(b"\ndata: ") < wanted:
            data += await stream.receive_some(4096)
    for line in data.split(b"\n"):
        if line.startswith(b"data: "):
            print("event stream:", json.loads(line[6:]))


async def main(url: str) -> None:
    async with open_mqtt_client(url) as client, trio.open_nursery() as nursery:
        # One subscription per browser, 64 messages at most between it and the browser.
        live = Bridge(mqtt_source(client, "home/+/temperature"), max_buffer_size=64)
        router = Router()
        router.add_route("/events", live.event_stream)
        router.add_websocket_route("/ws/events", live.websocket)
        address = await nursery.start(serve, ASGIApplication(router), "127.0.0.1:0")

        async with connect_websocket(f"{address.ws_url}/ws/events") as websocket:
            # The websocket is open: the bridge has subscribed for it.
            await client.publish("home/kitchen/temperature", "21.5", qos=1)
            print("websocket:", json.loads(await websocket.receive()))

        async with trio.open_nursery() as readers:
            await readers.start(read_events, address.host, address.port, 2)
            for room in ("kitchen", "hall"):
                await client.publish(f"home/{room}/temperature", "20.0", qos=1)
        print("statistics:", live.statistics)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:  # no broker given: use a private, throwaway mosquitto (needs the mosquitto program)
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(main, f"mqtt://{broker.info.host}:{broker.info.port}")
