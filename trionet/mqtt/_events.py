"""What the engine tells the trio side: typed events, handed over in batches (no paho, no I/O).

The engine (:mod:`trionet.mqtt._paho`) runs paho's callbacks on its owner (the network thread,
or trio with ``backend="trio"``) and records what happened as the frozen dataclasses below;
once per loop round the list goes to the client in one batch (one wake-up of trio per round,
not one thread hop per message). Each event is one fact; the client's ``_on_events`` decides
what it means for the waiting tasks.

Received messages are the hot path: consecutive ones share one :class:`Messages` event (a
list of ``(message, ack token)`` pairs), so a message costs a tuple, not an event object.

*Waiters* are the trio-side objects a task waits on (:class:`~trionet.mqtt._subscription._Box`);
the engine only carries them back, it never calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from ._message import BrokerLimits, MQTTMessage

__all__ = [
    "AckToken",
    "Acked",
    "AckedMany",
    "AuthDone",
    "Connack",
    "ConnectFailed",
    "Credit",
    "Done",
    "Event",
    "Failed",
    "Lost",
    "Messages",
    "NotSent",
    "ResubscribeFailed",
    "SubAck",
    "UnsubAck",
    "Waiter",
]

#: Identifies a received QoS 1/2 message for its acknowledgement: ``(connection generation,
#: packet id, qos)``. A token of an earlier connection is stale (the broker resends).
AckToken: TypeAlias = tuple[int, int, int]


class Waiter(Protocol):
    """What a task waits on; resolved or failed by the client on the trio thread."""

    def resolve(self, value: Any = None, count: int = 1) -> None: ...

    def fail(self, error: BaseException) -> None: ...


@dataclass(frozen=True, slots=True)
class Connack:
    """The broker answered connection attempt *attempt* (accepted when *ok*)."""

    attempt: int | None
    ok: bool
    reason_code: int
    reason: str
    session_present: bool
    limits: BrokerLimits


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """Attempt *attempt* got no CONNACK (network, TLS, WebSocket, or the broker hung up)."""

    attempt: int | None
    error: BaseException | None
    reason: str


@dataclass(frozen=True, slots=True)
class Lost:
    """An established connection ended (*intentional*: our own DISCONNECT)."""

    reason_code: int
    reason: str
    intentional: bool


@dataclass(frozen=True, slots=True)
class Acked:
    """One QoS 1/2 publish completed (refused when *reason_code* >= 0x80)."""

    waiter: Waiter
    reason_code: int
    reason: str
    topic: str


@dataclass(frozen=True, slots=True)
class AckedMany:
    """*count* QoS 0 publishes of one ``publish_many`` batch were written."""

    waiter: Waiter
    count: int


@dataclass(frozen=True, slots=True)
class SubAck:
    """The SUBACK for *topic_filter*."""

    waiters: list[Waiter]
    topic_filter: str
    reason_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """The UNSUBACK for *topic_filter* (or its stand-in when not connected)."""

    waiters: list[Waiter]
    topic_filter: str
    reason_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Messages:
    """Messages received in a row: ``(message, ack token or None for QoS 0)`` pairs.

    The engine appends to the list of the batch's last event while it is a :class:`Messages`;
    once the batch is handed over, nobody changes it.
    """

    received: list[tuple[MQTTMessage, AckToken | None]]


@dataclass(frozen=True, slots=True)
class Credit:
    """*count* QoS 0 publishes queued for the owner left its queue (trio's credit returns)."""

    count: int


@dataclass(frozen=True, slots=True)
class Failed:
    """These operations can no longer complete."""

    waiters: list[Waiter]
    reason: str


@dataclass(frozen=True, slots=True)
class ResubscribeFailed:
    """The broker refused a subscription restored after a reconnect."""

    topic_filter: str
    reason_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """An operation without a packet of its own finished (a disconnect)."""

    waiter: Waiter
    value: Any


@dataclass(frozen=True, slots=True)
class AuthDone:
    """A re-authentication ended: it succeeded (*error* None) or failed with *error*."""

    waiter: Waiter
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class NotSent:
    """A QoS 1/2 publish breaks a limit the broker announced: dropped unsent."""

    waiter: Waiter
    reason_code: int
    reason: str
    topic: str


#: Any event.
Event: TypeAlias = (
    Connack | ConnectFailed | Lost | Acked | AckedMany | SubAck | UnsubAck | Messages | Credit
    | Failed | ResubscribeFailed | Done | NotSent | AuthDone
)
