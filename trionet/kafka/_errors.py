"""Kafka error classes: every failure of the Kafka layer is a :class:`~trionet.errors.KafkaError`.

kafka-python's own exceptions never reach trionet users: :mod:`trionet.kafka._kafka_python`
translates them into these classes (with the original as ``__cause__``) in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import trio

from ..errors import CodecError, ConnectionFailure, Fault, KafkaError, PeerFailure

if TYPE_CHECKING:
    from ._records import KafkaRecord, TopicPartition

__all__ = [
    "KafkaCommitError",
    "KafkaConnectionError",
    "KafkaDeliveryError",
    "KafkaError",
    "KafkaPartitionsRevokedError",
    "KafkaRemoteError",
    "KafkaTimeout",
    "RecordDecodeError",
    "UnknownTopicError",
]


class KafkaConnectionError(KafkaError, ConnectionFailure, trio.BrokenResourceError):
    """The Kafka brokers cannot be reached: at start-up, or they went away mid-stream.

    Attributes:
        bootstrap_servers: the bootstrap servers the client was given (``"host:port,..."``).
    """

    def __init__(self, message: str, *, bootstrap_servers: str) -> None:
        super().__init__(message, fault="remote")
        self.bootstrap_servers = bootstrap_servers


class KafkaTimeout(KafkaError, trio.TooSlowError):
    """A Kafka request did not complete within kafka-python's configured timeout."""


class UnknownTopicError(KafkaError):
    """A topic, or a partition of it, does not exist.

    Attributes:
        topic: the topic's name.
        partition: the partition asked for, or ``None`` when the whole topic is unknown.
    """

    def __init__(self, topic: str, partition: int | None = None, *, detail: str = "") -> None:
        what = f"topic {topic!r}" if partition is None else f"partition {partition} of {topic!r}"
        message = f"unknown {what}"
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message, fault="local")
        self.topic = topic
        self.partition = partition


class KafkaDeliveryError(KafkaError):
    """A produced record was not acknowledged by the broker.

    Attributes:
        topic: the record's topic.
        partition: its partition, when one had been chosen.
    """

    def __init__(self, message: str, *, topic: str, partition: int | None = None,
                 fault: Fault = "remote") -> None:
        super().__init__(message, fault=fault)
        self.topic = topic
        self.partition = partition


class KafkaCommitError(KafkaError):
    """Committing consumer offsets failed (for example the group rebalanced meanwhile).

    The records whose offsets were not committed will be delivered again (at-least-once).
    """


class KafkaPartitionsRevokedError(KafkaCommitError):
    """The offsets to commit belong to partitions a group rebalance took from this consumer.

    Between handing the records out and the commit, the group rebalanced (a member came or
    went, or the broker restarted and the consumer had to rejoin) and the consumer lost these
    partitions, even if the new assignment gave them back. Their offsets were not committed,
    and never will be: the partitions' next owner, possibly this consumer again, reads those
    records again from the last committed offset (at-least-once). Offsets of partitions the
    consumer kept were committed (:attr:`committed`).

    It comes once per rebalance: after it, :meth:`KafkaConsumer.commit` commits what was handed
    out since.

    Attributes:
        partitions: the revoked partitions whose offsets were not committed.
        committed: what was committed, for the partitions the consumer kept.
    """

    def __init__(self, message: str, *, partitions: frozenset[TopicPartition],
                 committed: Mapping[TopicPartition, int]) -> None:
        super().__init__(message, fault="remote")
        self.partitions = partitions
        self.committed = dict(committed)


class KafkaRemoteError(KafkaError, PeerFailure):
    """The responder's handler failed while answering a Kafka request.

    Attributes:
        remote_type: the exception type name the responder reported.
        topic: the request topic.
    """

    def __init__(self, message: str, *, remote_type: str, topic: str) -> None:
        super().__init__(f"{remote_type} raised by the responder on {topic!r}: {message}",
                         fault="remote")
        self.remote_type = remote_type
        self.topic = topic


class RecordDecodeError(CodecError):
    """A consumer's deserializer failed on a record.

    The record counts as handed out (a commit goes past it); iterate again to go on.

    Attributes:
        record: the record with its key and value still as bytes.
    """

    def __init__(self, message: str, *, record: KafkaRecord) -> None:
        super().__init__(message, codec="deserializer", fault="remote")
        self.record = record


def describe_servers(servers: str | Sequence[str]) -> str:
    """``"host:port,host:port"`` for error messages."""
    if isinstance(servers, str):
        return servers
    return ",".join(servers)
