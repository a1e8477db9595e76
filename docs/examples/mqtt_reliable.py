"""The seed's ReliableMQTTClient, with trio.sleep instead of asyncio.sleep.

Run: ``python mqtt_reliable.py [URL]``; without a broker URL it starts a private mosquitto.
"""

import sys

import trio

from trionet.mqtt import MQTTClient, MQTTError, QoS, parse_mqtt_url


class ReliableMQTTClient(MQTTClient):
    async def reliable_publish(self, topic: str, payload: str, retries: int = 3):
        for attempt in range(retries):
            try:
                await self.publish(topic, payload, qos=QoS.EXACTLY_ONCE)
                return
            except MQTTError:
                if attempt == retries - 1:
                    raise
                await trio.sleep(1)


async def main(url: str) -> None:
    host, port, _ = parse_mqtt_url(url)
    async with ReliableMQTTClient() as client:
        await client.connect(host, port or 1883)
        await client.reliable_publish("reports/daily", "all systems nominal")
        print("published exactly once")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:  # no broker given: use a private, throwaway mosquitto (needs the mosquitto program)
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(main, f"mqtt://{broker.info.host}:{broker.info.port}")
