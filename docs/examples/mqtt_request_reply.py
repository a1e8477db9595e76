"""Request/response over MQTT with a deadline.

Run: ``python mqtt_request_reply.py [URL]``; without a broker URL it starts a private mosquitto.
"""

import sys

import trio

from trionet.mqtt import open_mqtt_client


async def adder(client, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with client.subscription("rpc/add", qos=1) as requests:
        task_status.started()
        async for request in requests:
            a, b = map(int, request.payload.split())
            await client.reply(request, str(a + b))


async def main(url: str) -> None:
    async with (
        open_mqtt_client(url) as server,
        open_mqtt_client(url) as caller,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(adder, server)
        with trio.fail_after(5):
            reply = await caller.request("rpc/add", "2 40")
        print("2 + 40 =", reply.text)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:  # no broker given: use a private, throwaway mosquitto (needs the mosquitto program)
        from trionet.testing import MosquittoServer

        with MosquittoServer() as broker:
            trio.run(main, f"mqtt://{broker.info.host}:{broker.info.port}")
