"""The engine's subscriptions: what to (re)subscribe, and who waits for which SUBACK/UNSUBACK.

Owned by :class:`~trionet.mqtt._paho.PahoEngine` and used on its owner only. No paho here: the
engine gives the book two functions that send a SUBSCRIBE or an UNSUBSCRIBE and return its
packet id (None when it could not be sent), says whether it is connected, and passes
SUBACK/UNSUBACK answers on; results go out as events (:mod:`trionet.mqtt._events`).

Rules: a subscription made while disconnected is sent as soon as the connection is up; after a
reconnect every subscription is sent again unless the broker kept the session (then only those
still waiting for their SUBACK); an UNSUBSCRIBE interrupted by a lost connection counts as done
(the broker drops the subscription with the session, or gets the UNSUBSCRIBE again when it kept
it).
"""

from __future__ import annotations

from collections.abc import Callable

from ._events import Event, Failed, ResubscribeFailed, SubAck, UnsubAck, Waiter

__all__ = ["Spec", "SubscriptionBook"]

#: ``(qos, no_local, retain_as_published, retain_handling, subscription identifier)``
Spec = tuple[int, bool, bool, int, int | None]

_ORPHANED = "unsubscribed before the broker confirmed"


class SubscriptionBook:
    """Subscriptions of one engine (see the module docstring).

    Args:
        send_subscribe: sends a SUBSCRIBE for ``(topic_filter, spec)``; its packet id or None.
        send_unsubscribe: sends an UNSUBSCRIBE for a filter; its packet id or None.
        emit: records an event for trio.
    """

    def __init__(
        self,
        send_subscribe: Callable[[str, Spec], int | None],
        send_unsubscribe: Callable[[str], int | None],
        emit: Callable[[Event], None],
    ) -> None:
        self._send_subscribe = send_subscribe
        self._send_unsubscribe = send_unsubscribe
        self._emit = emit
        self._subs: dict[str, Spec] = {}
        self._deferred_subs: dict[str, list[Waiter]] = {}
        self._deferred_unsubs: set[str] = set()
        self._sub_waiters: dict[int, tuple[str, list[Waiter]]] = {}
        self._unsub_waiters: dict[int, tuple[str, list[Waiter]]] = {}

    def _send(self, topic_filter: str, spec: Spec, waiters: list[Waiter]) -> None:
        mid = self._send_subscribe(topic_filter, spec)
        if mid is not None:
            self._sub_waiters[mid] = (topic_filter, waiters)
        else:
            self._deferred_subs.setdefault(topic_filter, []).extend(waiters)

    def subscribe(self, connected: bool, waiters: list[Waiter], topic_filter: str,
                  spec: Spec) -> None:
        """Subscribe now (when *connected*) or as soon as connected."""
        self._subs[topic_filter] = spec
        self._deferred_unsubs.discard(topic_filter)
        if connected:
            self._send(topic_filter, spec, waiters)
        else:
            self._deferred_subs.setdefault(topic_filter, []).extend(waiters)

    def unsubscribe(self, connected: bool, waiter: Waiter, topic_filter: str) -> None:
        """Unsubscribe now (when *connected*); when not connected, answer at once."""
        self._subs.pop(topic_filter, None)
        orphans = self._deferred_subs.pop(topic_filter, None)
        if orphans:
            self._emit(Failed(orphans, _ORPHANED))
        if connected:
            mid = self._send_unsubscribe(topic_filter)
            if mid is not None:
                self._unsub_waiters[mid] = (topic_filter, [waiter])
                return
        self._deferred_unsubs.add(topic_filter)
        self._emit(UnsubAck([waiter], topic_filter, 0, "not connected"))

    def restore(self, session_present: bool) -> None:
        """A connection is up: send what is due (see the module docstring)."""
        deferred = self._deferred_subs
        self._deferred_subs = {}
        for topic_filter, spec in self._subs.items():
            waiters = deferred.pop(topic_filter, [])
            if session_present and not waiters:
                continue  # the broker kept it (and re-subscribing would resend retained messages)
            self._send(topic_filter, spec, waiters)
        for waiters in deferred.values():
            self._emit(Failed(waiters, _ORPHANED))
        if session_present:
            for topic_filter in self._deferred_unsubs:
                self._send_unsubscribe(topic_filter)
        self._deferred_unsubs.clear()

    def requeue_after_loss(self) -> None:
        """The connection is gone: SUBSCRIBEs without SUBACK go again after reconnecting;
        UNSUBSCRIBEs count as done."""
        for topic_filter, waiters in self._sub_waiters.values():
            if topic_filter in self._subs:
                self._deferred_subs.setdefault(topic_filter, []).extend(waiters)
            elif waiters:
                self._emit(Failed(waiters, _ORPHANED))
        self._sub_waiters.clear()
        for topic_filter, waiters in self._unsub_waiters.values():
            self._deferred_unsubs.add(topic_filter)
            if waiters:
                self._emit(UnsubAck(waiters, topic_filter, 0, "connection lost"))
        self._unsub_waiters.clear()

    def on_suback(self, mid: int, code: int, reason: str) -> None:
        """The SUBACK for packet *mid* (its first reason code)."""
        entry = self._sub_waiters.pop(mid, None)
        if entry is None:
            return
        topic_filter, waiters = entry
        if waiters:
            self._emit(SubAck(waiters, topic_filter, code, reason))
        elif code >= 0x80:
            self._emit(ResubscribeFailed(topic_filter, code, reason))

    def on_unsuback(self, mid: int, code: int, reason: str) -> None:
        """The UNSUBACK for packet *mid*."""
        entry = self._unsub_waiters.pop(mid, None)
        if entry is not None and entry[1]:
            self._emit(UnsubAck(entry[1], entry[0], code, reason))

    def take_waiters(self) -> list[Waiter]:
        """Remove and return every waiter (the operations will not complete)."""
        waiters: list[Waiter] = []
        for _, sub_waiters in self._sub_waiters.values():
            waiters.extend(sub_waiters)
        for sub_waiters in self._deferred_subs.values():
            waiters.extend(sub_waiters)
        for _, unsub_waiters in self._unsub_waiters.values():
            waiters.extend(unsub_waiters)
        self._sub_waiters.clear()
        self._deferred_subs.clear()
        self._unsub_waiters.clear()
        return waiters
