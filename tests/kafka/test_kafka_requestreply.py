"""Request/reply over Kafka: correlation, concurrency, errors, deadlines, late replies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from kafka_support import CONSUMER, new_topic, unique

from trionet.errors import ConfigurationError
from trionet.kafka import (
    CORRELATION_ID_HEADER,
    DEADLINE_HEADER,
    REPLY_TO_HEADER,
    KafkaAdmin,
    KafkaConsumer,
    KafkaProducer,
    KafkaRecord,
    KafkaRemoteError,
    KafkaRequester,
    NewTopic,
    reply,
    serve_requests,
)


@asynccontextmanager
async def responder(servers: str, topic: str,
                    handler: Callable[[KafkaRecord], Awaitable[object]]) -> AsyncIterator[None]:
    """serve_requests on *topic* in a nursery, for the duration of the block."""
    async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=unique("responder"),
                             **CONSUMER) as consumer, \
            KafkaProducer(servers, value_serializer="json") as producer, \
            trio.open_nursery() as nursery:
        await nursery.start(partial(serve_requests, consumer, producer, handler))
        yield
        nursery.cancel_scope.cancel()


async def test_request_reply_round_trips_and_concurrency(servers: str) -> None:
    seen_deadlines: list[float] = []

    async def handle(record: KafkaRecord) -> object:
        seen_deadlines.append(trio.current_effective_deadline())
        assert record.header(REPLY_TO_HEADER) is not None
        if record.value == b"fail":
            raise ValueError("bad request")
        if record.value == b"nothing":
            return None
        await trio.sleep(0.01)
        return {"echo": record.value.decode(), "key": record.key and record.key.decode()}

    async with new_topic(servers, "rpc") as topic, responder(servers, topic, handle), \
            KafkaRequester(servers, value_deserializer="json") as requester:
        with trio.fail_after(20):
            answer = await requester.request(topic, b"hello", key=b"k1")
            assert answer.value == {"echo": "hello", "key": "k1"}
            assert answer.header(CORRELATION_ID_HEADER) is not None

            results: dict[int, object] = {}

            async def ask(n: int) -> None:
                record = await requester.request(topic, b"n%d" % n)
                results[n] = record.value

            async with trio.open_nursery() as nursery:
                for n in range(12):
                    nursery.start_soon(ask, n)
            assert results == {n: {"echo": f"n{n}", "key": None} for n in range(12)}

            with pytest.raises(KafkaRemoteError) as info:
                await requester.request(topic, b"fail")
            assert info.value.remote_type == "ValueError"
            assert "bad request" in str(info.value)
            assert (await requester.request(topic, b"nothing")).value is None
        # The caller's deadline travelled with every request.
        assert seen_deadlines and all(d != float("inf") for d in seen_deadlines)
        stats = requester.statistics()
        assert stats.pending == 0
        assert stats.replies == 15


async def test_timeouts_and_late_replies_are_dropped(servers: str) -> None:
    release = trio.Event()

    async with new_topic(servers, "late") as topic, \
            KafkaConsumer(topic, bootstrap_servers=servers, group_id=unique("late"),
                          **CONSUMER) as consumer, \
            KafkaProducer(servers) as producer, \
            KafkaRequester(servers) as requester, trio.open_nursery() as nursery:

        async def slow_responder() -> None:
            # Ignores deadlines on purpose, to answer after the requester gave up.
            async for record in consumer:
                assert record.header(DEADLINE_HEADER) is not None or record.value == b"fast"
                if record.value == b"slow":
                    await release.wait()
                await reply(producer, record, record.value.upper())

        nursery.start_soon(slow_responder)
        with trio.fail_after(20):
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.5):
                    await requester.request(topic, b"slow", partition=0)
            assert requester.statistics().pending == 0
            release.set()
            # The next request on the same partition is answered after the late reply,
            # which nobody waits for any more: it is dropped and counted.
            answer = await requester.request(topic, b"fast", partition=0)
            assert answer.value == b"FAST"
            assert requester.statistics().late_replies == 1
        nursery.cancel_scope.cancel()


async def test_expired_requests_are_skipped_and_named_reply_topics_kept(servers: str) -> None:
    handled: list[bytes] = []

    async def handle(record: KafkaRecord) -> object:
        handled.append(record.value)
        return "ok"

    reply_topic = unique("replies")
    async with KafkaAdmin(servers) as admin:
        await admin.create_topics([NewTopic(reply_topic, num_partitions=2)])
    try:
        async with new_topic(servers, "expired") as topic:
            async with KafkaProducer(servers) as producer:
                # A request whose deadline passed before anyone read it.
                await producer.send(topic, b"stale", headers=[
                    (CORRELATION_ID_HEADER, b"0" * 32), (REPLY_TO_HEADER, reply_topic.encode()),
                    (DEADLINE_HEADER, b"1000")])
            async with responder(servers, topic, handle), \
                    KafkaRequester(servers, reply_topic=reply_topic, reply_partition=1,
                                   value_deserializer="json") as requester:
                with trio.fail_after(20):
                    assert (await requester.request(topic, b"fresh")).value == "ok"
                    assert (await requester.request(topic, b"fresh")).partition == 1
            assert handled == [b"fresh", b"fresh"]
        async with KafkaAdmin(servers) as admin:
            assert reply_topic in await admin.list_topics()  # a named reply topic stays
    finally:
        async with KafkaAdmin(servers) as admin:
            await admin.delete_topics([reply_topic], missing_ok=True)


async def test_private_reply_topic_is_removed(servers: str) -> None:
    async with KafkaRequester(servers) as requester:
        name = requester.reply_topic
        async with KafkaAdmin(servers) as admin:
            assert name in await admin.list_topics()
        with pytest.raises(ConfigurationError, match="reserved"):
            await requester.request("anything", b"x", headers={REPLY_TO_HEADER: b"elsewhere"})
    async with KafkaAdmin(servers) as admin:
        assert name not in await admin.list_topics()
    with pytest.raises(trio.ClosedResourceError):
        await requester.request("anything", b"x")
