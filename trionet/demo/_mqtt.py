"""The MQTT part of ``trionet demo --broker mqtt://...``: a short tour against a real broker."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import trio

from ..mqtt import MQTTClient, QoS, open_mqtt_client

__all__ = ["demo"]


async def demo(report: Callable[[str], None], url: str) -> None:
    """Connect to the broker at *url*, subscribe, publish at each QoS, make a request, leave.

    Args:
        report: called with one line of text per event.
        url: the broker, e.g. ``mqtt://localhost:1883`` (``mqtts://``, ``ws://``, ``wss://``
            and ``user:password@`` work too).
    """
    base = f"trionet-demo/{secrets.token_hex(4)}"
    async with open_mqtt_client(url) as client, trio.open_nursery() as nursery:
        report(f"mqtt: connected to {url} as {client.client_id}")
        await nursery.start(_responder, client, f"{base}/rpc/double")
        async with client.subscription(f"{base}/sensors/+", qos=QoS.EXACTLY_ONCE) as readings:
            report(f"mqtt: subscribed to {readings.topic_filter} "
                   f"(granted QoS {int(readings.granted_qos or 0)})")
            for qos in QoS:
                await client.publish(f"{base}/sensors/{qos.name.lower()}", f"{20 + qos}.5 C",
                                     qos=qos)
                message = await readings.receive()
                report(f"mqtt: QoS {int(qos)} publish completed; received {message.topic} "
                       f"= {message.text!r} (QoS {int(message.qos)})")
        with trio.fail_after(5):
            reply = await client.request(f"{base}/rpc/double", "21")
        report(f"mqtt: request 'double 21' answered {reply.text!r}")
        nursery.cancel_scope.cancel()
    report("mqtt: disconnected")


async def _responder(
    client: MQTTClient,
    topic: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer requests on *topic* with twice the number they carry."""
    async with client.subscription(topic, qos=QoS.AT_LEAST_ONCE) as requests:
        task_status.started()
        async for request in requests:
            await client.reply(request, str(2 * int(request.payload)))
