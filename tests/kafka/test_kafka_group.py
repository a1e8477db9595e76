"""Consumer groups: two members splitting partitions, a member leaving, rebalance listeners."""

from __future__ import annotations

import contextlib

import pytest
import trio
from kafka_support import CONSUMER, new_topic, produce, unique

from trionet.kafka import (
    ConsumerRebalanceListener,
    KafkaAdmin,
    KafkaCommitError,
    KafkaConsumer,
    KafkaError,
    NewTopic,
    TopicPartition,
)


class CommitOnRevoke(ConsumerRebalanceListener):
    """Commits what was handed out before partitions go (the rebalance-safe pattern).

    Brokers may refuse a commit from the generation that is ending (noida-db always does,
    Apache Kafka sometimes); the records are then read again by their next owner.
    """

    def __init__(self) -> None:
        self.consumer: KafkaConsumer | None = None
        self.events: list[tuple[str, frozenset[TopicPartition]]] = []
        self.changed = trio.Event()

    async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        self.events.append(("revoked", revoked))
        assert self.consumer is not None
        assert await self.consumer.assignment() >= revoked
        with contextlib.suppress(KafkaCommitError):
            await self.consumer.commit()  # runs while kafka-python waits for this listener

    async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        self.events.append(("assigned", assigned))
        self.changed.set()
        self.changed = trio.Event()


async def test_two_members_split_partitions_then_one_leaves_without_loss(servers: str) -> None:
    async with new_topic(servers, "group", partitions=3) as topic:
        everything = frozenset(TopicPartition(topic, p) for p in range(3))
        group = unique("group")
        batch = [[b"%d-%02d" % (round_, n) for n in range(30)] for round_ in range(3)]
        await produce(servers, topic, batch[0])

        got_a: list[bytes] = []
        got_b: list[bytes] = []
        listener_a = CommitOnRevoke()
        a_started = trio.Event()
        b_reading = trio.Event()
        b_may_leave = trio.Event()

        async def member_a() -> None:
            async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=group,
                                     listener=listener_a, **CONSUMER) as consumer:
                listener_a.consumer = consumer
                async for record in consumer:
                    got_a.append(record.value)
                    a_started.set()
                    # After processing; refused if the group is rebalancing right now.
                    with contextlib.suppress(KafkaCommitError):
                        await consumer.commit()
                    if len(set(got_a) | set(got_b)) == 90:
                        break

        async def member_b() -> None:
            async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=group,
                                     **CONSUMER) as consumer:
                async for record in consumer:
                    got_b.append(record.value)
                    with contextlib.suppress(KafkaCommitError):
                        await consumer.commit()
                    b_reading.set()
                    if b_may_leave.is_set():
                        break  # leaves the group: A takes its partitions over
                    if len(got_b) >= 5:
                        b_may_leave.set()

        with trio.fail_after(45):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(member_a)
                await a_started.wait()
                nursery.start_soon(member_b)
                while not listener_a.events or listener_a.events[-1][1] == everything:
                    await listener_a.changed.wait()  # B joined: A now owns fewer partitions
                await produce(servers, topic, batch[1])
                await b_reading.wait()
                await b_may_leave.wait()
                while listener_a.events[-1] != ("assigned", everything):
                    await listener_a.changed.wait()  # B left: A owns everything again
                await produce(servers, topic, batch[2])

    assigned = [tps for kind, tps in listener_a.events if kind == "assigned"]
    assert assigned[0] == everything
    assert any(tps < everything for tps in assigned)  # shared with B for a while
    assert listener_a.events[-1] == ("revoked", everything)  # on close, before leaving
    assert got_b, "the second member never got a partition"
    assert set(got_a) | set(got_b) == {value for values in batch for value in values}  # no loss


async def test_listener_errors_surface_from_the_read(servers: str) -> None:
    class Broken(ConsumerRebalanceListener):
        async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
            raise ValueError("listener bug")

    async with new_topic(servers, "badlistener", partitions=1) as topic:
        await produce(servers, topic, [b"x"])
        async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=unique("bad"),
                                 listener=Broken(), **CONSUMER) as consumer:
            with trio.fail_after(20), pytest.raises(KafkaError) as info:
                await consumer.getone()
            assert isinstance(info.value.__cause__, Exception)


async def test_pattern_subscription_and_revoke_on_close(servers: str) -> None:
    class Recorder(ConsumerRebalanceListener):
        def __init__(self) -> None:
            self.revoked: list[frozenset[TopicPartition]] = []

        async def on_partitions_revoked(self, revoked: frozenset[TopicPartition]) -> None:
            self.revoked.append(revoked)

    async with new_topic(servers, "pattern", partitions=2) as topic:
        await produce(servers, topic, [b"p1", b"p2"])
        recorder = Recorder()
        group = unique("pattern")
        async with KafkaConsumer(bootstrap_servers=servers, group_id=group,
                                 pattern=f"^{topic}$", listener=recorder,
                                 **CONSUMER) as consumer:
            with trio.fail_after(20):
                values = {(await consumer.getone()).value for _ in range(2)}
            assert values == {b"p1", b"p2"}
            assert await consumer.subscription() == frozenset({topic})
        # Closing revoked the partitions (listener ran) before leaving the group, and the
        # clean exit committed what was read.
        assert recorder.revoked == [frozenset({TopicPartition(topic, 0), TopicPartition(topic, 1)})]
        async with KafkaAdmin(servers) as admin:
            committed = await admin.list_consumer_group_offsets(group)
        assert sum(committed.values()) == 2


async def test_listener_can_seek_but_not_read(servers: str, kafka_backend: str) -> None:
    problems: list[BaseException] = []

    class SeekOnAssign(ConsumerRebalanceListener):
        consumer: KafkaConsumer

        async def on_partitions_assigned(self, assigned: frozenset[TopicPartition]) -> None:
            for tp in assigned:
                await self.consumer.seek(tp, 2)  # e.g. offsets kept in an external store
            for attempt in (self.consumer.getone(), self.consumer.committed(next(iter(assigned)))):
                try:
                    await attempt
                except KafkaError as exc:
                    problems.append(exc)

    async with new_topic(servers, "seekassign", partitions=1) as topic:
        await produce(servers, topic, [b"r0", b"r1", b"r2", b"r3"])
        listener = SeekOnAssign()
        async with KafkaConsumer(topic, bootstrap_servers=servers, group_id=unique("seek"),
                                 listener=listener, **CONSUMER) as consumer:
            listener.consumer = consumer
            with trio.fail_after(20):
                assert (await consumer.getone()).value == b"r2"
    assert "rebalance listener" in str(problems[0])
    if kafka_backend == "kafka-python":  # its I/O loop waits for the listener
        assert len(problems) == 2
        assert "rebalance listener" in str(problems[1])
    else:  # the confluent engine reads the committed offset inside the listener (docs)
        assert len(problems) == 1


async def test_pattern_subscription_picks_up_new_topics_with_short_polls(servers: str,
                                                                         kafka_backend: str
                                                                         ) -> None:
    """A topic created later joins a pattern subscription even when every poll is shorter than
    the group rejoin it triggers. kafka-python 3.0.12, as group leader, marked the new metadata
    as assigned while the rejoin was under way, so the next poll saw nothing left to do: the
    finished SyncGroup was never applied and the new topic never read."""
    base = unique("grow")
    names = [f"{base}.{n}" for n in range(4)]
    try:
        async with KafkaAdmin(servers) as admin:
            await admin.create_topics([NewTopic(names[0], num_partitions=1)])
        await produce(servers, names[0], [b"0"])
        async with KafkaConsumer(bootstrap_servers=servers, group_id=unique("grow"),
                                 pattern=rf"^{base}\..*", poll_interval=0.001,
                                 **{**CONSUMER, "metadata_max_age_ms": 300}) as consumer:
            with trio.fail_after(20):
                assert (await consumer.getone()).value == b"0"
            for n, name in enumerate(names[1:], 1):  # each new topic: one more rebalance
                async with KafkaAdmin(servers) as admin:
                    await admin.create_topics([NewTopic(name, num_partitions=1)])
                await produce(servers, name, [str(n).encode()])
                with trio.fail_after(20):
                    record = await consumer.getone()
                    if kafka_backend == "confluent":
                        # librdkafka's rebalance gives every partition out again, read from
                        # its committed offset (none here): the earlier topics come again
                        # first (docs/kafka.rst, Engines).
                        while record.topic != name:
                            assert record.topic in names[:n]
                            record = await consumer.getone()
                assert (record.topic, record.value) == (name, str(n).encode())
    finally:
        with trio.CancelScope(shield=True):
            async with KafkaAdmin(servers) as admin:
                await admin.delete_topics(names, missing_ok=True)
