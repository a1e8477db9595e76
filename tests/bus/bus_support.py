"""Helpers shared by the bus tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from trionet.bus import BusMessage, DistributedApplication
from trionet.testing import KafkaBroker


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


def kafka_url(broker: KafkaBroker, group: str, extra: str = "") -> str:
    """A ``kafka://`` URL of *broker* for the consumer-group prefix *group* (quick joins and
    commits), with *extra* query parameters (``"&partitions=2"``)."""
    return (f"kafka://{broker.info.bootstrap_servers}?offset_reset=earliest&group={group}"
            "&commit_interval=0.2&consumer.session_timeout_ms=6000"
            f"&consumer.heartbeat_interval_ms=1000{extra}")


async def read_again(url: str, topic: str, name: str, count: int) -> list[bytes]:
    """The payloads a fresh application *name* on *url* reads from *topic*: at least *count*
    of them (what the group had not committed)."""
    app = DistributedApplication(url)
    again: list[bytes] = []

    @app.application(topic, name=name)
    async def worker_again(message: BusMessage) -> None:
        again.append(message.payload)

    async with serving(app):
        await wait_until(lambda: len(again) >= count)
    return again
