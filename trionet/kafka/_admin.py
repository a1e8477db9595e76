"""The Kafka admin client: topics and consumer-group offsets.

kafka-python's admin client is thread-safe (it runs its own I/O thread and each call blocks on
an event), so every call runs on a worker thread from trio's pool through
:func:`trionet._threads.run_blocking`. Each call is bounded by kafka-python's
``request_timeout_ms``. Nothing is ever deleted unless asked: creating topics is idempotent
and there is no clean-up on exit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar

import trio

from .._threads import run_blocking
from ..errors import ConfigurationError
from . import _kafka_python as kp
from ._common import DEFAULT_BOOTSTRAP_TIMEOUT_MS, check_servers, servers_text, with_defaults
from ._records import TopicPartition
from ._url import parse_kafka_url

__all__ = ["KafkaAdmin", "NewTopic", "PartitionDescription", "TopicDescription"]

T = TypeVar("T")

_DEFAULT_REQUEST_TIMEOUT_MS: Final = 10_000


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


class KafkaAdmin:
    """Kafka administration for trio: ``async with KafkaAdmin(...) as admin``.

    Example::

        async with KafkaAdmin("127.0.0.1:9092") as admin:
            await admin.create_topics([NewTopic("orders", num_partitions=3)])  # idempotent
            print(await admin.list_consumer_group_offsets("billing"))

    Args:
        bootstrap_servers: ``"host:port"`` or a list of them.
        **config: any other kafka-python ``KafkaAdminClient`` option (``security_protocol``,
            ``sasl_*``, ``ssl_*``, ``client_id``...). trionet's defaults differ in
            ``bootstrap_timeout_ms`` and ``request_timeout_ms`` (10 s each).

    Raises:
        ConfigurationError: an unknown option.
    """

    def __init__(self, bootstrap_servers: str | Sequence[str] = "localhost:9092",
                 **config: Any) -> None:
        kp.check_options("admin", config, kp.ADMIN_OPTIONS)
        self._servers = check_servers(bootstrap_servers)
        self._servers_text = servers_text(self._servers)
        settings = with_defaults(config, bootstrap_timeout_ms=DEFAULT_BOOTSTRAP_TIMEOUT_MS,
                                 request_timeout_ms=_DEFAULT_REQUEST_TIMEOUT_MS)
        settings["bootstrap_servers"] = self._servers
        self._config = settings
        self._admin: Any = None
        self._cm: Any = None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> KafkaAdmin:
        """An admin client for a ``kafka://host:port?option=value`` URL (``group`` ignored)."""
        parsed = parse_kafka_url(url)
        options = dict(parsed.options)
        options.update(overrides)
        return cls(parsed.bootstrap_servers, **options)

    def __repr__(self) -> str:
        return f"<trionet.kafka.KafkaAdmin {self._servers_text}>"

    async def __aenter__(self) -> KafkaAdmin:
        if self._cm is not None:
            raise RuntimeError("a KafkaAdmin can be entered only once")
        self._cm = self._lifetime()
        return await self._cm.__aenter__()  # type: ignore[no-any-return]

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        return await self._cm.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[KafkaAdmin]:
        trap = kp.ClientTrap()
        self._admin = await run_blocking(self._build, trap, on_cancel=trap.abort)
        try:
            yield self
        finally:
            admin, self._admin = self._admin, None
            with trio.CancelScope(shield=True):
                await run_blocking(kp.close_admin, admin)

    def _build(self, trap: kp.ClientTrap) -> Any:
        return kp.build_admin(self._config, trap, servers=self._servers_text)

    async def _call(self, operation: str, fn: Any, *args: Any, topic: str | None = None,
                    **kwargs: Any) -> Any:
        admin = self._admin
        if admin is None:
            raise trio.ClosedResourceError("the Kafka admin client is not open")

        def call() -> Any:
            try:
                return fn(admin, *args, **kwargs)
            except BaseException as exc:
                raise kp.translated(  # noqa: B904 (translated() sets the cause)
                    exc, servers=self._servers_text, topic=topic, operation=operation
                )

        return await run_blocking(call)

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
        created: list[str] = await self._call("creating topics", kp.create_topics, specs)
        return created

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
        deleted: list[str] = await self._call("deleting topics", kp.delete_topics, wanted,
                                              missing_ok=missing_ok)
        return deleted

    async def list_topics(self) -> set[str]:
        """The names of every topic in the cluster."""
        return set(await self._call("listing topics", kp.list_topics))

    async def describe_topics(self, names: Iterable[str] | None = None
                              ) -> list[TopicDescription]:
        """Partitions, leaders and replicas of the given topics (all topics by default).

        Raises:
            UnknownTopicError: a named topic does not exist.
        """
        wanted = None if names is None else list(names)
        found = await self._call("describing topics", kp.describe_topics, wanted)
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
        offsets: dict[TopicPartition, int] = await self._call(
            "listing group offsets", kp.list_group_offsets, group_id)
        return offsets

    async def list_consumer_groups(self) -> list[str]:
        """The ids of the consumer groups the cluster knows."""
        groups: list[str] = await self._call("listing groups", kp.list_groups)
        return groups

    async def delete_consumer_groups(self, group_ids: Iterable[str]) -> dict[str, str]:
        """Delete consumer groups (their committed offsets); per group ``"OK"`` or the error."""
        wanted = list(group_ids)
        if not wanted:
            await trio.lowlevel.checkpoint()
            return {}
        results: dict[str, str] = await self._call("deleting groups", kp.delete_groups, wanted)
        return results


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
