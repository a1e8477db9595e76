"""How a consumer application takes its messages: order per key, deadlines, contiguous commits.

:class:`ConsumeLoop` takes deliveries from an application's socket and runs the application's
handler on each:

* ``max_concurrency=1``: one after the other, in arrival order.
* ``max_concurrency=N``: up to *N* handlers at once. Messages with the same
  :attr:`~trionet.bus.BusMessage.key` are handled one at a time, in arrival order (each key has
  a *lane*: a queue worked by one task); messages without a key are not ordered against any
  other. At most :data:`BACKLOG_FACTOR` × *N* messages are taken from the socket and not yet
  finished (running, or waiting in their lane behind an earlier message with the same key):
  the rest wait in the socket's queue, and the transport waits when that is full.
* A message with a :attr:`~trionet.bus.BusMessage.deadline` (a request, whose requester stops
  waiting then) is handled under :func:`trio.move_on_at` with it: the handler is cancelled when
  the deadline passes, and not called at all when it has passed already. Either way the message
  is acknowledged (nobody waits for its outcome) and counted as ``expired``.

What "in order" means on each broker: on Kafka, the records of a key are in one partition, in
offset order, and handled in that order; on MQTT, the broker keeps the order of one publisher's
messages on one topic (at one QoS), and the bus keeps the order of arrival per key; on
``memory://``, the order of publishing.

:class:`ContiguousOffsets` is the Kafka side of at-least-once with concurrent handlers: the
offset committed for a partition never passes a record that is still being handled, so a slow
record blocks the commits of the later ones (already handled or not), and after a crash the
group reads again from the first unfinished record.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, Generic, Protocol, TypeVar

import trio

from ._socket import BusSocket, Delivery

__all__ = ["BACKLOG_FACTOR", "ConsumeLoop", "ContiguousOffsets"]

logger = logging.getLogger("trionet.bus")

#: While messages are queued, a consumer lets other tasks run at least this often.
YIELD_EVERY: Final = 16
#: With ``max_concurrency=N``, at most this many × *N* messages are taken from the socket and
#: not yet finished (running, or waiting behind an earlier message with the same key).
BACKLOG_FACTOR: Final = 4

PartitionT = TypeVar("PartitionT")


class _Counters(Protocol):
    expired: int


class ConsumeLoop:
    """Runs *process* on each delivery of *socket*, *limit* at a time, in order per key.

    Args:
        socket: the application's open socket.
        process: handles one delivery and acknowledges it.
        limit: the application's ``max_concurrency``.
        stopping: tells whether the application is shutting down (then no new message is
            started; the ones running finish).
        statistics: where expired messages are counted.
        name: the application's name, for logs.
    """

    def __init__(self, socket: BusSocket, process: Callable[[Delivery], Awaitable[None]],
                 limit: int, stopping: Callable[[], bool], statistics: _Counters,
                 name: str) -> None:
        self._socket = socket
        self._process = process
        self._limit = limit
        self._stopping = stopping
        self._statistics = statistics
        self._name = name
        self._since_yield = 0
        self._wait_scope: trio.CancelScope | None = None
        self._lanes: dict[str, collections.deque[Delivery]] = {}

    def wake(self) -> None:
        """Stop waiting for room to take a message (called when shutdown begins)."""
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def _next(self) -> Delivery | None:
        """The next delivery, or ``None`` once the application is shutting down.

        Shutdown wakes a waiting call by queueing the socket's wake-up item. While messages
        are queued, other tasks get to run at least every :data:`YIELD_EVERY` messages (a
        scheduling round per message would cost as much as the rest of the bus together).
        """
        socket = self._socket
        while not self._stopping():
            item = socket._receive_nowait()
            if item is None:
                item = await socket._receive_inbound()
                self._since_yield = 0
            else:
                self._since_yield += 1
                if self._since_yield >= YIELD_EVERY:
                    self._since_yield = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
            delivery = await socket._accept(item)
            if delivery is not None:
                return delivery
        return None

    async def run(self) -> None:
        """Take and handle messages until the application shuts down."""
        if self._limit == 1:
            await self._run_sequentially()
        else:
            await self._run_concurrently()

    async def _run_sequentially(self) -> None:
        # One cancel scope carries the deadline of each message in turn (entering a scope per
        # message costs more than the rest of a memory:// round trip); it is made anew once a
        # deadline has fired.
        while True:
            current: Delivery | None = None
            with trio.CancelScope() as scope:
                while not scope.cancel_called:
                    delivery = await self._next()
                    if delivery is None:
                        return
                    deadline = delivery.message.deadline
                    if deadline is None or math.isnan(deadline):
                        await self._process(delivery)
                    elif trio.current_time() >= deadline:
                        await self._expired(delivery, "was not handled")
                    else:
                        current = delivery
                        scope.deadline = deadline
                        await self._process(delivery)
                        scope.deadline = math.inf
                        current = None
            if scope.cancelled_caught and current is not None:
                await self._expired(current, "cancelled its handler")

    async def _before_deadline(self, delivery: Delivery) -> None:
        deadline = delivery.message.deadline
        if deadline is None or math.isnan(deadline):
            await self._process(delivery)
            return
        if trio.current_time() < deadline:
            with trio.move_on_at(deadline) as scope:
                await self._process(delivery)
            if scope.cancelled_caught:
                await self._expired(delivery, "cancelled its handler")
        else:
            await self._expired(delivery, "was not handled")

    async def _expired(self, delivery: Delivery, what: str) -> None:
        message = delivery.message
        self._statistics.expired += 1
        logger.info(
            "bus application %r: message %s (topic %r, correlation id %s) %s: its deadline "
            "passed (the requester stopped waiting)", self._name, message.message_id or "-",
            message.topic, message.correlation_id or "-", what,
        )
        await delivery.ack()

    async def _run_concurrently(self) -> None:
        slots = trio.Semaphore(self._limit)
        taken = trio.Semaphore(self._limit * BACKLOG_FACTOR)
        lanes = self._lanes

        async def handle(delivery: Delivery) -> None:
            async with slots:
                if not self._stopping():  # else: shutting down, not started, not acknowledged
                    await self._before_deadline(delivery)

        async def unordered(delivery: Delivery) -> None:
            try:
                await handle(delivery)
            finally:
                taken.release()

        async def lane(key: str, lane_queue: collections.deque[Delivery]) -> None:
            try:
                while lane_queue and not self._stopping():
                    try:
                        await handle(lane_queue[0])
                    finally:
                        lane_queue.popleft()
                        taken.release()
            finally:
                # Shutting down or failed: what waits is not handled (nor acknowledged).
                while lane_queue:
                    lane_queue.popleft()
                    taken.release()
                del lanes[key]

        async with trio.open_nursery() as handlers:
            while True:
                with trio.CancelScope() as scope:
                    self._wait_scope = scope
                    try:
                        await taken.acquire()
                    finally:
                        self._wait_scope = None
                if scope.cancelled_caught or self._stopping():
                    if not scope.cancelled_caught:
                        taken.release()
                    return
                delivery = await self._next()
                if delivery is None:
                    taken.release()
                    return
                key = delivery.message.key
                if key is None:
                    handlers.start_soon(unordered, delivery)
                    continue
                queue = lanes.get(key)
                if queue is not None:
                    queue.append(delivery)  # behind the key's earlier messages
                else:
                    lanes[key] = queue = collections.deque((delivery,))
                    handlers.start_soon(lane, key, queue)


class ContiguousOffsets(Generic[PartitionT]):
    """Per partition: offsets handed out, which are still unacknowledged, what to commit.

    The committable offset of a partition is one past the last record of its longest
    acknowledged prefix: acknowledging records out of order (concurrent handlers) never lets
    the commit pass a record still being handled.
    """

    def __init__(self) -> None:
        self.handed_out: dict[PartitionT, collections.deque[int]] = {}
        self.unacked: dict[PartitionT, set[int]] = {}
        self.committable: dict[PartitionT, int] = {}
        self.dirty: set[PartitionT] = set()

    def handed(self, tp: PartitionT, offset: int) -> None:
        queue = self.handed_out.get(tp)
        if queue is None:
            queue = self.handed_out[tp] = collections.deque()
            self.unacked[tp] = set()
        queue.append(offset)
        self.unacked[tp].add(offset)

    def acked(self, tp: PartitionT, offset: int) -> None:
        unacked = self.unacked.get(tp)
        if unacked is None or offset not in unacked:
            return  # the partition was revoked meanwhile
        unacked.discard(offset)
        queue = self.handed_out[tp]
        while queue and queue[0] not in unacked:
            self.committable[tp] = queue.popleft() + 1
            self.dirty.add(tp)

    def take(self, only: frozenset[PartitionT] | None = None) -> dict[PartitionT, int]:
        chosen = self.dirty if only is None else self.dirty & only
        offsets = {tp: self.committable[tp] for tp in chosen}
        self.dirty -= set(offsets)
        return offsets

    def restore(self, offsets: dict[PartitionT, int]) -> None:
        """Mark offsets whose commit failed as to be committed again."""
        for tp, offset in offsets.items():
            if tp in self.handed_out and self.committable.get(tp) == offset:
                self.dirty.add(tp)

    def forget(self, partitions: frozenset[PartitionT]) -> None:
        for tp in partitions:
            self.handed_out.pop(tp, None)
            self.unacked.pop(tp, None)
            self.committable.pop(tp, None)
            self.dirty.discard(tp)
