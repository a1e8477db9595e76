"""The mtaio seed's MQTT example, on trionet.

Run: ``python mqtt_seed.py [URL]``; without a broker URL it starts a private mosquitto.
"""

import sys

import trio

from trionet.mqtt import MQTTClient, QoS, parse_mqtt_url


async def main(url: str) -> None:
    host, port, _ = parse_mqtt_url(url)

    # Create client
    client = MQTTClient()

    # Set up message handler
    @client.on_message
    async def handle_message(message):
        print(f"Received: {message.payload}")

    # Connect and subscribe
    async with client:
        await client.connect(host, port or 1883)
        await client.subscribe("test/topic", qos=QoS.AT_LEAST_ONCE)

        # Publish message
        await client.publish("test/topic", "Hello MQTT", qos=QoS.AT_LEAST_ONCE)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:  # no broker given: use a private, throwaway mosquitto (needs the mosquitto program)
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(main, f"mqtt://{broker.info.host}:{broker.info.port}")
