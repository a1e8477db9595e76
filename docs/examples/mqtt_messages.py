"""aiomqtt's shape: subscribe, then one ``async for`` over ``client.messages``.

Run: ``python mqtt_messages.py [URL]``; without a broker URL it starts a private mosquitto.
"""

import sys

import trio

from trionet.mqtt import open_mqtt_client


async def main(url: str) -> None:
    async with open_mqtt_client(url) as client:
        await client.publish("weather/berlin", "3 °C", qos=1, retain=True)
        await client.subscribe("weather/#", qos=1)
        await client.publish("weather/paris", "7 °C", qos=1)
        seen = 0
        async for message in client.messages:  # the retained one first, then the live one
            print(f"{message.topic}: {message.text}")
            seen += 1
            if seen == 2:
                break
        await client.publish("weather/berlin", b"", qos=1, retain=True)  # clear it


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:  # no broker given: use a private, throwaway mosquitto (needs the mosquitto program)
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(main, f"mqtt://{broker.info.host}:{broker.info.port}")
