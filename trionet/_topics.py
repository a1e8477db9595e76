"""The one topic-filter matcher (MQTT 5 §4.7, §4.8.2): ``trionet.mqtt``'s and ``trionet.bus``'s.

Pure functions, no I/O and no third-party import, so that ``trionet.bus`` (``memory://`` above
all) matches topics exactly as the MQTT client does without needing paho-mqtt. Validation (what
is a legal filter, and which error says so) stays with each user: ``trionet.mqtt._topics``
raises :exc:`~trionet.mqtt.InvalidTopic`, ``trionet.bus._topics`` raises
:exc:`~trionet.errors.ConfigurationError`.

The rules, as MQTT 5 states them:

* levels are separated by ``/``; ``+`` matches exactly one level (possibly empty); ``#`` is the
  last level and matches its parent level and any number of levels below it (``a/#`` matches
  ``a``);
* a filter whose first level is ``+`` or ``#`` does not match a topic name that starts with
  ``$`` (``$SYS/...``; §4.7.2);
* a shared subscription ``$share/{ShareName}/{filter}`` (§4.8.2) matches what *filter* matches:
  the ``$share/{ShareName}/`` prefix only says which group shares the messages.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["SHARE_PREFIX", "filter_matcher", "split_shared", "topic_matches"]

#: The prefix of a shared subscription's filter.
SHARE_PREFIX = "$share/"


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """``(share name, filter proper)`` of ``$share/{name}/{filter}``; ``(None, topic_filter)``
    for an ordinary filter. Not validated: a malformed share gives an empty part."""
    if topic_filter.startswith(SHARE_PREFIX):
        group, _, inner = topic_filter[len(SHARE_PREFIX):].partition("/")
        return group, inner
    return None, topic_filter


def _levels_match(topic_filter: str, topic: str) -> bool:
    # (topic_filter without a $share prefix)
    if topic_filter == topic:
        return True
    if topic[:1] == "$" and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    n = len(t_levels)
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= n:
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == n


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether the topic name *topic* matches *topic_filter* (the rules above).

    The filter is not validated; an invalid one simply matches what its levels say.
    """
    return _levels_match(split_shared(topic_filter)[1], topic)


def filter_matcher(topic_filter: str) -> Callable[[str], bool]:
    """A function telling whether a topic name matches *topic_filter*, for matching many names.

    The usual shapes get a fast path: a filter without wildcards compares strings, and
    ``prefix/#`` (no other wildcard) tests a prefix.
    """
    bare = split_shared(topic_filter)[1]
    if "+" not in bare and "#" not in bare:
        return bare.__eq__
    if bare.endswith("/#") and "+" not in bare and "#" not in bare[:-2]:
        prefix = bare[:-2]
        start = prefix + "/"
        return lambda topic: topic == prefix or topic.startswith(start)
    return lambda topic: _levels_match(bare, topic)
