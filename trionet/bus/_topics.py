"""Topic names and MQTT-style topic filters (sans-I/O, no trio).

A topic is a ``/``-separated list of levels (``sensors/kitchen/temp``). A filter may use two
wildcards, as in MQTT: ``+`` matches exactly one level, ``#`` (only as the last level) matches
the parent level and any number of levels below it. Topics starting with ``$`` are not matched
by a filter whose first level is a wildcard (MQTT 3.1.1 §4.7.2). A shared subscription
``$share/{group}/{filter}`` matches what *filter* matches (MQTT 5 §4.8.2).

Matching is the MQTT client's own (:mod:`trionet._topics`, which imports no MQTT library, so
``memory://`` works without one); only the validation, and its error type, are the bus's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .._topics import filter_matcher, topic_matches as _topic_matches
from ..errors import ConfigurationError

__all__ = [
    "TopicFilter",
    "check_topic",
    "check_topic_filter",
    "normalize_topics",
    "topic_matches",
]

_MAX_TOPIC_BYTES = 65535


def check_topic(topic: str) -> str:
    """Return *topic* if it is a valid topic to publish to.

    Raises:
        ConfigurationError: for an empty topic, a wildcard, a NUL character, or a topic longer
            than 65535 UTF-8 bytes.
    """
    if not isinstance(topic, str):
        raise ConfigurationError(f"a topic must be a str, not {type(topic).__name__}")
    if not topic:
        raise ConfigurationError("a topic must not be empty")
    if "+" in topic or "#" in topic:
        raise ConfigurationError(f"cannot publish to {topic!r}: wildcards are only for filters")
    if "\x00" in topic:
        raise ConfigurationError(f"a topic must not contain NUL: {topic!r}")
    if len(topic) * 4 > _MAX_TOPIC_BYTES and len(topic.encode("utf-8")) > _MAX_TOPIC_BYTES:
        raise ConfigurationError("a topic must not be longer than 65535 UTF-8 bytes")
    return topic


def check_topic_filter(topic_filter: str) -> str:
    """Return *topic_filter* if it is a valid subscription filter.

    Raises:
        ConfigurationError: if a wildcard shares a level with other characters, ``#`` is not
            the last level, or the filter is empty or contains NUL.
    """
    if not isinstance(topic_filter, str):
        raise ConfigurationError(
            f"a topic filter must be a str, not {type(topic_filter).__name__}"
        )
    if not topic_filter:
        raise ConfigurationError("a topic filter must not be empty")
    if "\x00" in topic_filter:
        raise ConfigurationError(f"a topic filter must not contain NUL: {topic_filter!r}")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ConfigurationError(
                f"invalid topic filter {topic_filter!r}: '#' must be a whole, last level"
            )
        if "+" in level and level != "+":
            raise ConfigurationError(
                f"invalid topic filter {topic_filter!r}: '+' must be a whole level"
            )
    return topic_filter


def normalize_topics(topics: str | Iterable[str] | None) -> tuple[str, ...]:
    """Turn ``"a"``, ``["a", "b"]`` or ``None`` into a tuple of checked, distinct filters."""
    if topics is None:
        return ()
    if isinstance(topics, str):
        topics = [topics]
    seen: dict[str, None] = {}
    for topic in topics:
        seen[check_topic_filter(topic)] = None
    return tuple(seen)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether *topic* matches *topic_filter* (MQTT rules; both are assumed valid)."""
    return _topic_matches(topic_filter, topic)


class TopicFilter:
    """A parsed topic filter, for matching many topics against it.

    Args:
        topic_filter: a valid filter (see :func:`check_topic_filter`).
    """

    __slots__ = ("_matches", "text")

    def __init__(self, topic_filter: str) -> None:
        self.text = check_topic_filter(topic_filter)
        self._matches: Callable[[str], bool] = filter_matcher(topic_filter)

    def matches(self, topic: str) -> bool:
        """Whether *topic* matches this filter."""
        return self._matches(topic)

    def __repr__(self) -> str:
        return f"TopicFilter({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicFilter) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)
