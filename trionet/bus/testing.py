"""Helpers for testing bus applications: the in-memory broker and a background runner.

:class:`MemoryBroker` is a real broker with MQTT topic semantics, bounded queues and the same
envelope validation as the network brokers, so tests exercise the code that runs in
production::

    from trionet.bus import BusMessage, DistributedApplication
    from trionet.bus.testing import MemoryBroker, serving

    async def test_greeter():
        broker = MemoryBroker()
        app = build_app(broker.provider())        # your application factory
        async with serving(app):
            async with broker.provider().create_socket() as socket:
                reply = await socket.request(BusMessage(b"trio", "greetings/en"), timeout=5)
        assert reply.payload == b"hello trio"
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._util import reraise_single
from ._app import DistributedApplication
from ._memory import (
    MemoryBroker as MemoryBroker,
    MemoryBrokerStatistics as MemoryBrokerStatistics,
    MemorySocketProvider as MemorySocketProvider,
)

__all__ = ["MemoryBroker", "MemoryBrokerStatistics", "MemorySocketProvider", "serving"]


@asynccontextmanager
async def serving(app: DistributedApplication) -> AsyncIterator[DistributedApplication]:
    """Run *app* in the background for the duration of the ``async with`` block.

    The block starts once every consumer is subscribed; leaving it stops the application
    gracefully and waits for it. An application failure cancels the block and is raised.
    """
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.serve)
            try:
                yield app
            finally:
                app.stop()
    except BaseExceptionGroup as group:
        reraise_single(group)
