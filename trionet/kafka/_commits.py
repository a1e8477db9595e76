"""Commit after processing, the same for every engine: what to commit, rejoining, revocations.

A commit commits, per partition, the offset after the last record handed out (the fetch
buffer's books), for the partitions the consumer still owns. When the group's coordinator
refuses it because the member must rejoin first (a rebalance, or a broker that restarted and
forgot the generation), the commit drives the rejoin, in short slices so that the caller's
cancellation is seen between them, up to the caller's deadline; then it commits what is still
the consumer's. Offsets of partitions a rebalance took away after their records were handed out
are never committed (the new owner's commits must not be overwritten):
:exc:`~trionet.kafka.KafkaPartitionsRevokedError` reports them once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import trio

from ._engine import ConsumerEngine
from ._errors import KafkaCommitError, KafkaPartitionsRevokedError
from ._fetch import FetchBuffer
from ._records import TopicPartition

__all__ = ["commit_offsets"]

#: A commit waiting for the group rejoin drives it in calls of at most this long (ms) on the
#: engine, so that its caller's cancellation is seen between them.
REJOIN_SLICE_MS: Final = 500


async def commit_offsets(engine: ConsumerEngine, buffer: FetchBuffer,
                         wanted: Mapping[TopicPartition, int], *, only_assigned: bool,
                         timeout_ms: int | None, in_listener: bool,
                         default_timeout: float) -> dict[TopicPartition, int]:
    """Commit *wanted* (next offset to read, per partition) through *engine*.

    Args:
        only_assigned: leave out partitions the consumer no longer owns (for the default
            offsets, which may be older than another owner's commits).
        timeout_ms: the engine's own bound (when closing); then no rejoin is attempted.
        in_listener: called from the rebalance listener: the engine commits from where it
            waits for the listener, with no rejoin.
        default_timeout: seconds the rejoin may take when the caller has no deadline.

    Raises:
        KafkaPartitionsRevokedError: partitions were taken away after *wanted* was computed;
            the others were committed.
        KafkaCommitError: refused, or the rejoin did not finish in time.
    """
    if not wanted:
        await trio.lowlevel.checkpoint()
        return {}
    start = buffer.revocations
    revoked: frozenset[TopicPartition] = frozenset()

    def select() -> dict[TopicPartition, int]:
        # Where the engine commits: leave out the partitions a rebalance took since *start*.
        nonlocal revoked
        keep, revoked = buffer.split_revoked(wanted, start)
        return keep

    if in_listener:
        return await engine.commit(select, only_assigned=False, timeout_ms=None)
    deadline = trio.current_effective_deadline()
    if math.isinf(deadline):
        deadline = trio.current_time() + default_timeout
    while True:
        try:
            committed = await engine.commit(select, only_assigned=only_assigned,
                                            timeout_ms=timeout_ms)
        except KafkaCommitError as exc:
            # Not a member of the current generation: rejoin (a revocation is then counted
            # and those offsets are left out), then commit what is still ours. Not while
            # closing (timeout_ms given): the records will simply be read again.
            if timeout_ms is not None or not engine.is_membership_error(exc.__cause__):
                raise
            await _await_rejoin(engine, exc, deadline)
            continue
        break
    if revoked:
        names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(revoked))
        raise KafkaPartitionsRevokedError(
            f"committing offsets: a group rebalance took {names} from this consumer after "
            "their records were handed out; their offsets were not committed and the "
            "records will be read again", partitions=revoked, committed=committed)
    return committed


async def _await_rejoin(engine: ConsumerEngine, cause: KafkaCommitError, deadline: float
                        ) -> None:
    """Drive the group rejoin on *engine* until it is done or *deadline*."""
    while True:
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            raise KafkaCommitError(
                f"{cause} (the consumer did not rejoin its group before the commit's "
                "deadline; the records will be read again)", fault="remote") from cause
        slice_ms = max(1, min(REJOIN_SLICE_MS, int(remaining * 1000)))
        if await engine.rejoin(slice_ms):
            return
