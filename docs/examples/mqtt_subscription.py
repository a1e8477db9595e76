"""Sensors and a monitor in one nursery.

Run: ``python mqtt_subscription.py [URL]``; without a broker URL it starts a private mosquitto.
"""

import sys

import trio

from trionet.mqtt import QoS, open_mqtt_client


async def sensor(client, room: str, readings: int) -> None:
    for i in range(readings):
        await client.publish(f"home/{room}/temperature", f"{20 + i}.5", qos=QoS.AT_LEAST_ONCE)


async def main(url: str) -> None:
    async with (
        open_mqtt_client(url) as client,
        client.subscription("home/+/temperature", qos=1, max_buffer_size=50) as inbox,
    ):
        async with trio.open_nursery() as nursery:
            for room in ("kitchen", "hall"):
                nursery.start_soon(sensor, client, room, 3)
        for _ in range(6):
            message = await inbox.receive()
            room = message.topic.split("/")[1]
            print(f"{room}: {message.text} °C")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:  # no broker given: use a private, throwaway mosquitto (needs the mosquitto program)
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(main, f"mqtt://{broker.info.host}:{broker.info.port}")
