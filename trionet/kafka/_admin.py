"""The Kafka admin client: topics and consumer-group offsets.

Every call goes to the admin engine (:mod:`._engine`; kafka-python's runs each call on a worker
thread) and is bounded by the engine's request timeout. Nothing is ever deleted unless asked:
creating topics is idempotent and there is no clean-up on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import trio

from .._util import EnterOnce
from ..errors import ConfigurationError
from ._engine import AdminEngine, load_engine
from ._options import with_tls
from ._records import TopicPartition
from ._url import parse_kafka_url
from ._util import check_servers, servers_text

__all__ = ["KafkaAdmin", "NewTopic", "PartitionDescription", "TopicDescription"]


@dataclass(frozen=True)
class NewTopic:
    """A topic to create."""

    name: str
    num_partitions: int = 1
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)
    """Topic-level settings such as ``{"retention.ms": "60000"}``."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"a topic name must be a non-empty string, not {self.name!r}")
        for what in ("num_partitions", "replication_factor"):
            value = getattr(self, what)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{self.name}: {what} must be an int >= 1, not {value!r}")


@dataclass(frozen=True)
class PartitionDescription:
    """One partition of a described topic."""

    partition: int
    leader: int
    """The broker id of the leader (-1: none)."""
    replicas: tuple[int, ...]
    in_sync_replicas: tuple[int, ...]


@dataclass(frozen=True)
class TopicDescription:
    """What the cluster knows about a topic."""

    name: str
    partitions: tuple[PartitionDescription, ...]
    internal: bool = False

    @property
    def num_partitions(self) -> int:
        """The number of partitions."""
        return len(self.partitions)


class KafkaAdmin(EnterOnce):
    """Kafka administration for trio: ``async with KafkaAdmin(...) as admin``.

    Example::

        async with KafkaAdmin("127.0.0.1:9092") as admin:
            await admin.create_topics([NewTopic("orders", num_partitions=3)])  # idempotent
            print(await admin.list_consumer_group_offsets("billing"))

    Args:
        bootstrap_servers: ``"host:port"`` or a list of them.
        backend: the engine (``"kafka-python"`` by default).
        **config: any other option of the engine's admin client; for kafka-python, its
            ``KafkaAdminClient`` options (``security_protocol``,
            ``sasl_*``, ``ssl_*`` (or ``tls=`` in the :mod:`trionet.tls`
            vocabulary, which sets them), ``client_id``...). trionet's defaults differ in
            ``bootstrap_timeout_ms`` and ``request_timeout_ms`` (10 s each).

    Raises:
        ConfigurationError: an unknown option.
    """

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092", *,
                 backend: str | None = None, **config: Any) -> None:
        engine = load_engine(backend)
        servers = check_servers(bootstrap_servers)
        self._servers_text = servers_text(servers)
        self._engine: AdminEngine = engine.admin(
            engine.configure("admin", with_tls(config), servers=servers))
        self._open = False

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> KafkaAdmin:
        """An admin client for a ``kafka://host:port?option=value`` URL (``group`` ignored)."""
        parsed = parse_kafka_url(url)
        options = parsed.client_options()
        options.update(overrides)
        return cls(parsed.bootstrap_servers, **options)

    def __repr__(self) -> str:
        return f"<trionet.kafka.KafkaAdmin {self._servers_text}>"

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Self]:
        await self._engine.start()
        self._open = True
        try:
            yield self
        finally:
            self._open = False
            with trio.CancelScope(shield=True):
                await self._engine.close()

    def _engine_open(self) -> AdminEngine:
        if not self._open:
            raise trio.ClosedResourceError("the Kafka admin client is not open")
        return self._engine

    # -- topics -----------------------------------------------------------------------------------

    async def create_topics(self, topics: Iterable[NewTopic | str]) -> list[str]:
        """Create topics; topics that already exist are left as they are (not an error).

        Plain names get one partition and replication factor 1. Returns once the new topics'
        partitions have leaders.

        Returns:
            The names of the topics created by this call.

        Raises:
            KafkaError: the broker refused a topic (invalid name, too many replicas...).
        """
        specs: dict[str, dict[str, Any]] = {}
        for topic in topics:
            new = NewTopic(topic) if isinstance(topic, str) else topic
            if not isinstance(new, NewTopic):
                raise ConfigurationError(f"expected a NewTopic or a name, not {topic!r}")
            specs[new.name] = {
                "num_partitions": new.num_partitions,
                "replication_factor": new.replication_factor,
                "configs": dict(new.config),
            }
        if not specs:
            await trio.lowlevel.checkpoint()
            return []
        return await self._engine_open().create_topics(specs)

    async def create_topic(self, name: str, num_partitions: int = 1,
                           replication_factor: int = 1,
                           config: Mapping[str, str] | None = None) -> bool:
        """Create one topic if it does not exist; True if this call created it."""
        created = await self.create_topics(
            [NewTopic(name, num_partitions, replication_factor, dict(config or {}))])
        return bool(created)

    async def delete_topics(self, names: Iterable[str], *, missing_ok: bool = False
                            ) -> list[str]:
        """Delete topics, records and all. Only ever called explicitly.

        Returns:
            The names deleted.

        Raises:
            UnknownTopicError: a topic does not exist (unless *missing_ok*).
        """
        wanted = list(names)
        if not wanted:
            await trio.lowlevel.checkpoint()
            return []
        return await self._engine_open().delete_topics(wanted, missing_ok=missing_ok)

    async def list_topics(self) -> set[str]:
        """The names of every topic in the cluster."""
        return set(await self._engine_open().list_topics())

    async def describe_topics(self, names: Iterable[str] | None = None
                              ) -> list[TopicDescription]:
        """Partitions, leaders and replicas of the given topics (all topics by default).

        Raises:
            UnknownTopicError: a named topic does not exist.
        """
        wanted = None if names is None else list(names)
        found = await self._engine_open().describe_topics(wanted)
        return [_topic_description(topic) for topic in found]

    async def describe_topic(self, name: str) -> TopicDescription:
        """One topic's description.

        Raises:
            UnknownTopicError: it does not exist.
        """
        (found,) = await self.describe_topics([name])
        return found

    # -- consumer groups --------------------------------------------------------------------------

    async def list_consumer_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The offsets committed by a consumer group (empty for an unknown group)."""
        if not isinstance(group_id, str) or not group_id:
            raise ConfigurationError(f"group_id must be a non-empty string, not {group_id!r}")
        return await self._engine_open().list_group_offsets(group_id)

    async def list_consumer_groups(self) -> list[str]:
        """The ids of the consumer groups the cluster knows."""
        return await self._engine_open().list_groups()

    async def delete_consumer_groups(self, group_ids: Iterable[str]) -> dict[str, str]:
        """Delete consumer groups (their committed offsets); per group ``"OK"`` or the error."""
        wanted = list(group_ids)
        if not wanted:
            await trio.lowlevel.checkpoint()
            return {}
        return await self._engine_open().delete_groups(wanted)


def _topic_description(raw: Mapping[str, Any]) -> TopicDescription:
    partitions = tuple(sorted(
        (
            PartitionDescription(
                partition=int(p["partition_index"]),
                leader=int(p.get("leader_id", -1)),
                replicas=tuple(p.get("replica_nodes") or ()),
                in_sync_replicas=tuple(p.get("isr_nodes") or ()),
            )
            for p in raw.get("partitions") or ()
        ),
        key=lambda p: p.partition,
    ))
    return TopicDescription(name=str(raw["name"]), partitions=partitions,
                            internal=bool(raw.get("is_internal", False)))
