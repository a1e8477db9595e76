"""Fault injection for the test fabric: rules that drop, delay, duplicate or reorder messages.

A rule is chosen by a topic filter (MQTT syntax; on Kafka, ``.`` separates levels too), an
optional predicate on the decoded message, how many messages it may act on (``count``) and a
probability drawn from the fabric's seeded random generator, so that a test with a fixed seed
sees the same faults on every run. Rules act where a message enters the broker, in the order
they were added: a message dropped by one rule reaches no later rule.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ...bus._errors import EnvelopeError
from ...bus._message import BusMessage, decode_envelope
from ...bus._topics import TopicFilter
from ...errors import ConfigurationError

__all__ = ["FaultRule", "Faults", "Item"]

#: What travels through the fabric: envelope bytes, or a message object (``memory://``).
Data = bytes | BusMessage


@dataclass(slots=True)
class Item:
    """One message on its way into a broker (what the rules see and change)."""

    topic: str
    data: Data
    key: bytes | None = None
    retain: bool = False
    qos: int = 1
    delay: float = 0.0
    #: The broker it is on its way into (held messages go back to it).
    origin: Any = None

    def copy(self) -> Item:
        data = self.data._clone() if isinstance(self.data, BusMessage) else self.data
        return Item(self.topic, data, self.key, self.retain, self.qos, self.delay, self.origin)


def _decoded(data: Data) -> BusMessage | None:
    if isinstance(data, BusMessage):
        return data
    try:
        return decode_envelope(data)
    except EnvelopeError:
        return None


@dataclass(eq=False)
class FaultRule:
    """One fault, as returned by the :class:`Faults` methods.

    Attributes:
        kind: ``"drop"``, ``"delay"``, ``"duplicate"`` or ``"reorder"``.
        topic: the topic filter it applies to.
        hits: how many messages it has acted on so far.
        count: how many messages it may act on (``None``: no limit).
    """

    kind: Literal["drop", "delay", "duplicate", "reorder"]
    topic: str
    where: Callable[[BusMessage], bool] | None = None
    count: int | None = None
    probability: float = 1.0
    seconds: float = 0.0
    copies: int = 1
    window: int = 2
    shuffle: bool = False
    hits: int = 0
    _filter: TopicFilter = field(init=False, repr=False)
    _kafka_filter: TopicFilter = field(init=False, repr=False)
    _held: list[Item] = field(default_factory=list, init=False, repr=False)
    _owner: Faults | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._filter = TopicFilter(self.topic)
        # On Kafka, '.' separates levels too (a bus topic a/b is the Kafka topic a.b).
        self._kafka_filter = TopicFilter(self.topic.replace(".", "/"))
        if self.count is not None and self.count < 0:
            raise ConfigurationError("count must be >= 0 (or None)")
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigurationError("probability must be between 0 and 1")

    @property
    def exhausted(self) -> bool:
        """Whether the rule has acted on ``count`` messages (it then does nothing more)."""
        return self.count is not None and self.hits >= self.count

    def remove(self) -> None:
        """Stop applying this rule; messages a reorder rule still held are delivered now, in
        the order they came."""
        held, self._held = self._held, []
        if self._owner is not None and self in self._owner._rules:
            self._owner._rules.remove(self)
        for item in held:
            if item.origin is not None:
                item.origin._schedule(item)

    def _matches(self, item: Item, rng: random.Random) -> bool:
        if self.exhausted:
            return False
        topic = item.topic
        if topic.startswith("_trionet/") and not self.topic.startswith("_trionet"):
            return False  # replies only when asked for by name
        if getattr(item.origin, "scheme", "") == "kafka":
            if not self._kafka_filter.matches(topic.replace(".", "/")):
                return False
        elif not self._filter.matches(topic):
            return False
        if self.where is not None:
            message = _decoded(item.data)
            if message is None or not self.where(message):
                return False
        return self.probability >= 1.0 or rng.random() < self.probability

    def _apply(self, item: Item, rng: random.Random) -> list[Item]:
        self.hits += 1
        if self.kind == "drop":
            return []
        if self.kind == "delay":
            item.delay += self.seconds
            return [item]
        if self.kind == "duplicate":
            return [item] + [item.copy() for _ in range(self.copies)]
        self._held.append(item)
        if len(self._held) < self.window and not self.exhausted:
            return []
        released, self._held = self._held, []
        if self.shuffle:
            original = list(released)
            while len(released) > 1 and released == original:
                rng.shuffle(released)
        else:
            released.reverse()
        return released


class Faults:
    """The fault rules of a fabric, and the seeded generator they draw from.

    Each method adds a rule and returns it (:class:`FaultRule`; ``rule.remove()`` ends it,
    ``rule.hits`` counts what it did). *topic* is a topic filter (``+``/``#`` allowed; bus
    replies are left alone unless the filter starts with ``_trionet``); *where* a predicate on
    the decoded :class:`~trionet.bus.BusMessage`; *count* how many messages the rule may act
    on; *probability* the chance that it acts on a matching message.

    Args:
        seed: seed of the random generator (``None``: random).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.random = random.Random(seed)
        self._rules: list[FaultRule] = []

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        """The active rules, in the order they apply."""
        return tuple(self._rules)

    def _add(self, rule: FaultRule) -> FaultRule:
        rule._owner = self
        self._rules.append(rule)
        return rule

    def drop(self, topic: str = "#", *, where: Callable[[BusMessage], bool] | None = None,
             count: int | None = None, probability: float = 1.0) -> FaultRule:
        """Lose matching messages (no subscriber gets them)."""
        return self._add(FaultRule("drop", topic, where, count, probability))

    def delay(self, seconds: float, topic: str = "#", *,
              where: Callable[[BusMessage], bool] | None = None, count: int | None = None,
              probability: float = 1.0) -> FaultRule:
        """Deliver matching messages *seconds* later (later messages may overtake them)."""
        if not seconds >= 0:
            raise ConfigurationError("a delay must be >= 0 seconds")
        return self._add(FaultRule("delay", topic, where, count, probability, seconds=seconds))

    def duplicate(self, topic: str = "#", *, copies: int = 1,
                  where: Callable[[BusMessage], bool] | None = None, count: int | None = None,
                  probability: float = 1.0) -> FaultRule:
        """Deliver matching messages ``1 + copies`` times (a publisher's retry, say)."""
        if copies < 1:
            raise ConfigurationError("copies must be >= 1")
        return self._add(FaultRule("duplicate", topic, where, count, probability,
                                   copies=copies))

    def reorder(self, topic: str = "#", *, window: int = 2, shuffle: bool = False,
                where: Callable[[BusMessage], bool] | None = None,
                count: int | None = None) -> FaultRule:
        """Hold matching messages until *window* of them are there, then deliver them in
        reverse order (``shuffle=True``: a seeded permutation that differs from the original
        order). With *count*, the last group is released when the count is reached."""
        if window < 2:
            raise ConfigurationError("a reorder window must be >= 2")
        return self._add(FaultRule("reorder", topic, where, count, window=window,
                                   shuffle=shuffle))

    def clear(self) -> None:
        """End every rule (messages held by reorder rules are delivered now)."""
        for rule in list(self._rules):
            rule.remove()

    def _apply(self, item: Item) -> list[Item]:
        """What becomes of *item*: the messages to deliver (none, it, copies, held ones)."""
        items = [item]
        for rule in list(self._rules):
            out: list[Item] = []
            for one in items:
                if rule._matches(one, self.random):
                    out.extend(rule._apply(one, self.random))
                else:
                    out.append(one)
            items = out
            if not items:
                break
        return items
