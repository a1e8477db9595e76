"""The bus part of ``trionet demo``: producer → consumer → request/response, then shutdown."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import trio

from ..bus import BusMessage, BusSocket, DistributedApplication, from_url

__all__ = ["demo"]


async def demo(report: Callable[[str], None], broker_url: str = "memory://") -> None:
    """Run a small bus on *broker_url* and report each step.

    A producer publishes three greetings, a consumer receives them, then the producer asks a
    responder application to upper-case a text (request/response) and shuts the bus down.
    Topics get a random prefix, so the demo can run on a shared broker.
    """
    provider = from_url(broker_url)
    base = f"demo-{uuid.uuid4().hex[:8]}"
    app = DistributedApplication(provider, shutdown_timeout=5)
    greetings = [b"hello", b"bonjour", b"hallo"]
    received = trio.Event()
    count = 0

    @app.application(f"{base}/greetings")
    async def consumer(message: BusMessage) -> None:
        nonlocal count
        count += 1
        report(f"bus: consumer received {message.payload!r} on {message.topic}")
        if count == len(greetings):
            received.set()

    @app.application(f"{base}/rpc/upper")
    async def responder(message: BusMessage, socket: BusSocket) -> None:
        report(f"bus: responder got request {message.payload!r}")
        await socket.reply(message, message.payload.upper())

    @app.producer()
    async def producer(socket: BusSocket) -> None:
        for payload in greetings:
            await socket.publish(BusMessage(payload, f"{base}/greetings"))
            report(f"bus: producer published {payload!r}")
        await received.wait()
        reply = await socket.request(BusMessage(b"hello bus", f"{base}/rpc/upper"), timeout=10)
        report(f"bus: request b'hello bus' answered with {reply.payload!r}")
        app.stop()

    report(f"bus: starting a producer, a consumer and a responder on {provider.url}")
    await app.serve()
    report("bus: every application shut down")
