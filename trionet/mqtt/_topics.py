"""Topic names, filters, wildcards and shared subscriptions (MQTT 3.1.1 §4.7, MQTT 5 §4.7-4.8).

Pure functions and one data structure, no I/O:

* :func:`validate_topic` / :func:`validate_filter` enforce the rules on what may be published to
  and subscribed to;
* :func:`parse_filter` splits a shared subscription ``$share/<group>/<filter>`` into its group and
  the filter that messages are matched against;
* :func:`topic_matches` tells whether a topic name matches a filter (the one matcher of
  :mod:`trionet._topics`, shared with ``trionet.bus``);
* :class:`TopicMatcher` finds every value registered under a filter that matches a topic, walking
  a trie of filter levels, so routing costs the depth of the topic rather than the number of
  subscriptions.

Matching rules: ``+`` matches exactly one level (possibly empty), ``#`` matches the parent level
and any number of levels below it and must be last; a filter that starts with a wildcard does not
match a topic that starts with ``$`` (``$SYS/...``); ``$share/<group>/`` is not part of the
matched filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, NamedTuple, TypeVar

from .._topics import SHARE_PREFIX as _SHARE_PREFIX, topic_matches as _topic_matches
from ._errors import InvalidTopic

__all__ = [
    "SharedFilter",
    "TopicMatcher",
    "parse_filter",
    "topic_matches",
    "validate_filter",
    "validate_topic",
]

T = TypeVar("T")

_MAX_TOPIC_BYTES = 65535


def _check_common(topic: str, what: str) -> None:
    if not isinstance(topic, str):
        raise InvalidTopic(repr(topic), f"a {what} must be a str, not {type(topic).__name__}")
    if not topic:
        raise InvalidTopic(topic, f"a {what} must not be empty")
    if "\x00" in topic:
        raise InvalidTopic(topic, f"a {what} must not contain U+0000")
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTopic(topic, f"a {what} must be valid UTF-8 (no lone surrogates)") from None
    if size > _MAX_TOPIC_BYTES:
        raise InvalidTopic(topic, f"a {what} is at most 65535 bytes of UTF-8, got {size}")


def validate_topic(topic: str) -> None:
    """Check a topic name that a message is published to.

    Raises:
        InvalidTopic: empty, too long, contains U+0000, or contains a wildcard (``+`` or ``#``).
    """
    _check_common(topic, "topic name")
    if "+" in topic or "#" in topic:
        raise InvalidTopic(topic, "a topic name to publish to must not contain '+' or '#'")


class SharedFilter(NamedTuple):
    """A topic filter split into its shared-subscription group and the filter proper.

    Attributes:
        group: the share name of ``$share/<group>/<filter>``, or None for an ordinary filter.
        filter: the filter that topic names are matched against.
    """

    group: str | None
    filter: str


def _check_filter_levels(original: str, topic_filter: str) -> None:
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if level == "#":
            if i != last:
                raise InvalidTopic(original, "'#' must be the last level of a filter")
        elif level == "+":
            continue
        elif "#" in level or "+" in level:
            raise InvalidTopic(original, "a wildcard must occupy a whole level ('a/+/b', 'a/#')")


def parse_filter(topic_filter: str) -> SharedFilter:
    """Validate a topic filter and split off a ``$share/<group>/`` prefix.

    Raises:
        InvalidTopic: the filter breaks the rules (misplaced wildcard, empty or malformed share
            group, ...).
    """
    _check_common(topic_filter, "topic filter")
    if topic_filter.startswith(_SHARE_PREFIX):
        rest = topic_filter[len(_SHARE_PREFIX) :]
        group, sep, inner = rest.partition("/")
        if not group or "+" in group or "#" in group:
            raise InvalidTopic(
                topic_filter, "a shared subscription needs a share name without wildcards"
            )
        if not sep or not inner:
            raise InvalidTopic(topic_filter, "a shared subscription is '$share/<group>/<filter>'")
        _check_filter_levels(topic_filter, inner)
        return SharedFilter(group, inner)
    if topic_filter == "$share":
        raise InvalidTopic(topic_filter, "a shared subscription is '$share/<group>/<filter>'")
    _check_filter_levels(topic_filter, topic_filter)
    return SharedFilter(None, topic_filter)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether the topic name *topic* matches *topic_filter*.

    A ``$share/<group>/`` prefix on the filter is ignored, as the broker does when it delivers.
    The filter is not validated; an invalid one simply matches what its levels say.

    Examples::

        topic_matches("sensors/+/temp", "sensors/kitchen/temp")   # True
        topic_matches("sensors/#", "sensors")                     # True
        topic_matches("#", "$SYS/broker/uptime")                  # False
        topic_matches("$share/g/a/+", "a/b")                      # True
    """
    return _topic_matches(topic_filter, topic)


def validate_filter(topic_filter: str) -> None:
    """Check a topic filter (wildcards and ``$share/<group>/...`` allowed).

    Raises:
        InvalidTopic: the filter breaks the rules.
    """
    parse_filter(topic_filter)


class _Node(Generic[T]):
    __slots__ = ("children", "hash_values", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.values: list[T] = []
        self.hash_values: list[T] = []  # values of "<this level>/#"

    def empty(self) -> bool:
        return not (self.children or self.values or self.hash_values)


class TopicMatcher(Generic[T]):
    """Values registered under topic filters, found by topic name.

    ``add(filter, value)`` registers a value (the same filter may hold several values);
    ``match(topic)`` yields every value whose filter matches the topic, each value once per
    registration. Shared-subscription prefixes are stripped before matching.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @staticmethod
    def _levels(topic_filter: str) -> list[str]:
        shared = parse_filter(topic_filter)
        return shared.filter.split("/")

    def add(self, topic_filter: str, value: T) -> None:
        """Register *value* under *topic_filter* (validated; raises :exc:`InvalidTopic`)."""
        levels = self._levels(topic_filter)
        node = self._root
        if levels[-1] == "#":
            for level in levels[:-1]:
                node = node.children.setdefault(level, _Node())
            node.hash_values.append(value)
        else:
            for level in levels:
                node = node.children.setdefault(level, _Node())
            node.values.append(value)
        self._size += 1

    def remove(self, topic_filter: str, value: T) -> None:
        """Remove one registration of *value* under *topic_filter*.

        Raises:
            KeyError: it was not registered.
        """
        levels = self._levels(topic_filter)
        hashed = levels[-1] == "#"
        path = levels[:-1] if hashed else levels
        node = self._root
        trail: list[tuple[_Node[T], str]] = []
        for level in path:
            child = node.children.get(level)
            if child is None:
                raise KeyError(topic_filter)
            trail.append((node, level))
            node = child
        bucket = node.hash_values if hashed else node.values
        for i, existing in enumerate(bucket):
            if existing is value:
                del bucket[i]
                break
        else:
            raise KeyError(topic_filter)
        self._size -= 1
        # prune empty branches
        for parent, level in reversed(trail):
            child = parent.children[level]
            if not child.empty():
                break
            del parent.children[level]

    def match(self, topic: str) -> Iterator[T]:
        """Yield the values of every registered filter that matches *topic*."""
        levels = topic.split("/")
        n = len(levels)
        dollar = topic.startswith("$")
        # iterative depth-first walk: (node, index of the next level to match)
        stack: list[tuple[_Node[T], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            # "#" at this depth matches the rest, including nothing ("a/#" matches "a"), but a
            # leading wildcard never matches a "$" topic
            if node.hash_values and not (dollar and i == 0):
                yield from node.hash_values
            if i == n:
                yield from node.values
                continue
            child = node.children.get(levels[i])
            if child is not None:
                stack.append((child, i + 1))
            if not (dollar and i == 0):
                plus = node.children.get("+")
                if plus is not None:
                    stack.append((plus, i + 1))
