"""A persistent session and its connection events.

Run: ``python mqtt_events.py [URL]``; without a broker URL it starts a private mosquitto.
"""

import sys

import trio

from trionet.mqtt import (
    MQTTV5,
    ConnectionState,
    ReconnectPolicy,
    Will,
    open_mqtt_client,
    parse_mqtt_url,
)


async def watch(client, back: trio.Event) -> None:
    async with client.connection_events() as events:
        async for event in events:
            print(f"connection: {event.state.value} ({event.reason})")
            if event.state is ConnectionState.CONNECTED:
                back.set()


async def main(url: str) -> None:
    host, port, _ = parse_mqtt_url(url)
    async with (
        open_mqtt_client(
            url,
            client_id="inventory-service",  # stable id: the broker keeps the session
            clean_start=False,
            protocol=MQTTV5,
            session_expiry=3600,  # for an hour after a disconnect
            will=Will("services/inventory/status", "offline", qos=1, retain=True),
            reconnect=ReconnectPolicy(initial_delay=0.5, max_delay=30.0),
        ) as client,
        trio.open_nursery() as nursery,
    ):
        back = trio.Event()
        nursery.start_soon(watch, client, back)
        await client.publish("services/inventory/status", "online", qos=1, retain=True)
        await client.disconnect()
        await client.connect(host, port)  # resumes the session the broker kept
        await back.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:  # no broker given: use a private, throwaway mosquitto (needs the mosquitto program)
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(main, f"mqtt://{broker.info.host}:{broker.info.port}")
