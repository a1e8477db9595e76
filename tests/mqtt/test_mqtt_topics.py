"""Topic names, filters, wildcards and shared subscriptions: the pure rules, no broker."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from trionet.mqtt import (
    InvalidTopic,
    TopicMatcher,
    parse_filter,
    topic_matches,
    validate_filter,
    validate_topic,
)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+", "a", False),
        ("a/+", "a/", True),  # "+" matches an empty level
        ("+/+", "/x", True),
        ("+", "/x", False),
        ("a/#", "a", True),  # "#" also matches the parent level
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("+/b/#", "x/b", True),
        ("#", "$SYS/uptime", False),  # a leading wildcard never matches a "$" topic
        ("+/uptime", "$SYS/uptime", False),
        ("$SYS/#", "$SYS/uptime", True),
        ("$SYS/+", "$SYS/uptime", True),
        ("a/#", "a/$x", True),  # "$" matters only for the first level
        ("$share/group/a/+", "a/b", True),
        ("$share/group/a/+", "x/b", False),
        ("$share/g/#", "anything/at/all", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected
    matcher: TopicMatcher[str] = TopicMatcher()
    matcher.add(topic_filter, "v")
    assert (list(matcher.match(topic)) == ["v"]) is expected


@pytest.mark.parametrize(
    "bad", ["", "a/+", "a/#", "+", "#", "a\x00b", "x" * 65536, "\ud800"]
)
def test_invalid_topic_names(bad: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        validate_topic(bad)
    assert isinstance(info.value, ValueError)
    assert info.value.fault == "local"


@pytest.mark.parametrize("good", ["a", "a/b", "/", "a//b", "$SYS/x", "é/ü", "x" * 65535])
def test_valid_topic_names(good: str) -> None:
    validate_topic(good)


@pytest.mark.parametrize(
    "bad",
    ["", "a/#/b", "a#", "a/b#", "a+/b", "a/+b", "$share", "$share/", "$share/g",
     "$share/g/", "$share//a", "$share/g+/a", "$share/g#/a", "$share/g/a/#/b", "a\x00"],
)
def test_invalid_filters(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        validate_filter(bad)


@pytest.mark.parametrize("good", ["#", "+", "a/+/b", "a/#", "+/+/#", "$SYS/#", "$share/g/a/+"])
def test_valid_filters(good: str) -> None:
    validate_filter(good)


def test_parse_shared_filter() -> None:
    assert parse_filter("$share/workers/jobs/+") == ("workers", "jobs/+")
    assert parse_filter("jobs/+") == (None, "jobs/+")
    assert parse_filter("$share/g/#").filter == "#"


def test_wrong_type_is_a_clear_error() -> None:
    with pytest.raises(InvalidTopic, match="must be a str"):
        validate_topic(b"bytes")  # type: ignore[arg-type]


def test_matcher_add_remove_and_multiple_values() -> None:
    matcher: TopicMatcher[int] = TopicMatcher()
    matcher.add("a/+", 1)
    matcher.add("a/+", 2)
    matcher.add("a/#", 3)
    matcher.add("$share/g/a/b", 4)
    assert sorted(matcher.match("a/b")) == [1, 2, 3, 4]
    assert len(matcher) == 4
    matcher.remove("a/+", 1)
    assert sorted(matcher.match("a/b")) == [2, 3, 4]
    matcher.remove("a/+", 2)
    matcher.remove("a/#", 3)
    matcher.remove("$share/g/a/b", 4)
    assert list(matcher.match("a/b")) == []
    assert len(matcher) == 0
    with pytest.raises(KeyError):
        matcher.remove("a/+", 1)
    with pytest.raises(KeyError):
        matcher.remove("never/added", 1)


_level = st.sampled_from(["a", "b", "c", "", "$x"])
_topic = st.lists(_level, min_size=1, max_size=4).map("/".join)
_filter = (
    st.lists(st.sampled_from(["a", "b", "c", "", "+", "$x"]), min_size=1, max_size=4)
    .flatmap(lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"]))
    .filter(bool)
)


@given(filters=st.lists(_filter, min_size=1, max_size=8), topic=_topic)
def test_matcher_agrees_with_topic_matches(filters: list[str], topic: str) -> None:
    matcher: TopicMatcher[int] = TopicMatcher()
    for i, topic_filter in enumerate(filters):
        matcher.add(topic_filter, i)
    expected = sorted(i for i, f in enumerate(filters) if topic_matches(f, topic))
    assert sorted(matcher.match(topic)) == expected


@given(topic=_topic)
def test_every_topic_matches_itself_and_hash(topic: str) -> None:
    assert topic_matches(topic, topic)
    assert topic_matches("#", topic) is not topic.startswith("$")
