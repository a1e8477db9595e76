"""The engine's subscription bookkeeping (mqtt/_paho_subs.py) without paho or a broker."""

from __future__ import annotations

from typing import Any

from trionet.mqtt._events import Event, Failed, ResubscribeFailed, SubAck, UnsubAck
from trionet.mqtt._paho_subs import Spec, SubscriptionBook

SPEC: Spec = (1, False, False, 0, None)


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.events: list[Event] = []
        self.mid = 0
        self.up = True

    def subscribe(self, topic_filter: str, spec: Spec) -> int | None:
        return self._send("SUBSCRIBE", topic_filter)

    def unsubscribe(self, topic_filter: str) -> int | None:
        return self._send("UNSUBSCRIBE", topic_filter)

    def _send(self, kind: str, topic_filter: str) -> int | None:
        if not self.up:
            return None
        self.mid += 1
        self.sent.append((kind, topic_filter))
        return self.mid


def make() -> tuple[SubscriptionBook, Wire]:
    wire = Wire()
    return SubscriptionBook(wire.subscribe, wire.unsubscribe, wire.events.append), wire


def test_subscriptions_wait_for_the_connection_and_come_back_after_a_loss() -> None:
    book, wire = make()
    waiter: Any = object()
    book.subscribe(False, [waiter], "a/#", SPEC)
    assert wire.sent == []
    book.restore(session_present=False)
    assert wire.sent == [("SUBSCRIBE", "a/#")]
    book.requeue_after_loss()  # lost before the SUBACK: sent again, same waiter
    book.restore(session_present=True)
    assert wire.sent == [("SUBSCRIBE", "a/#")] * 2
    book.on_suback(2, 1, "granted qos 1")
    assert wire.events == [SubAck([waiter], "a/#", 1, "granted qos 1")]
    book.restore(session_present=True)  # the broker kept it: nothing to send
    assert len(wire.sent) == 2
    book.restore(session_present=False)  # a fresh session: subscribe again, nobody waits
    book.on_suback(3, 0x80, "refused")
    assert wire.events[-1] == ResubscribeFailed("a/#", 0x80, "refused")


def test_unsubscribing_answers_at_once_when_not_connected_and_fails_orphans() -> None:
    book, wire = make()
    sub_waiter: Any = object()
    unsub_waiter: Any = object()
    book.subscribe(False, [sub_waiter], "a", SPEC)
    book.unsubscribe(False, unsub_waiter, "a")
    assert wire.events == [
        Failed([sub_waiter], "unsubscribed before the broker confirmed"),
        UnsubAck([unsub_waiter], "a", 0, "not connected"),
    ]
    book.restore(session_present=True)  # the kept session still has it: unsubscribe now
    assert wire.sent == [("UNSUBSCRIBE", "a")]
    book.subscribe(True, [sub_waiter], "b", SPEC)
    assert book.take_waiters() == [sub_waiter]
    wire.up = False
    book.subscribe(True, [sub_waiter], "c", SPEC)  # could not be sent: deferred
    assert book.take_waiters() == [sub_waiter]
