"""Helpers shared by the bus tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from trionet.bus import DistributedApplication


def unique(prefix: str = "t") -> str:
    """A topic level (or name) no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


#: Upper bound for any one wait in a test (generous: Kafka group joins take seconds).
PATIENCE = 20.0


@asynccontextmanager
async def serving(app: DistributedApplication) -> AsyncIterator[trio.Nursery]:
    """Run *app* in a nursery; on exit stop it gracefully and wait for it."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(PATIENCE):
            await nursery.start(app.serve)
        yield nursery
        app.stop()


async def wait_until(predicate: Callable[[], bool], *, what: str = "condition") -> None:
    """Poll *predicate* until it holds (fails the test after :data:`PATIENCE` seconds)."""
    with trio.fail_after(PATIENCE):
        while not predicate():  # noqa: ASYNC110 - polls counters that have no event
            await trio.sleep(0.01)
