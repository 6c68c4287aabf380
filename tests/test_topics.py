"""The iot-2 topic grammar: publishing and subscribing (W8-W14 in docs/platform/rules.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker import topics
from worker.errors import TopicError

NAME_CHARS = "abcXYZ019._-"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=36)
levels = st.text(
    alphabet=st.characters(exclude_characters="/+#\x00", exclude_categories=["Cs"]),
    min_size=1,
    max_size=12,
)


def test_builders_produce_the_documented_shapes() -> None:
    assert str(topics.device_event("t", "d", "e", "json")) == "iot-2/type/t/id/d/evt/e/fmt/json"
    assert str(topics.device_command("t", "d", "c", "f")) == "iot-2/type/t/id/d/cmd/c/fmt/f"
    assert str(topics.device_status("t", "d")) == "iot-2/type/t/id/d/mon"
    assert str(topics.app_status("app")) == "iot-2/app/app/mon"
    assert str(topics.own_event("e", "json")) == "iot-2/evt/e/fmt/json"
    assert str(topics.own_command("c", "bin")) == "iot-2/cmd/c/fmt/bin"


def test_parse_returns_components() -> None:
    parsed = topics.parse("iot-2/type/sensor/id/s-01/evt/reading/fmt/json")
    assert parsed == topics.DeviceEventTopic("sensor", "s-01", "reading", "json")
    assert topics.parse("iot-2/app/my.app/mon") == topics.AppStatusTopic("my.app")
    assert topics.parse_device("iot-2/cmd/reboot/fmt/json") == topics.OwnCommandTopic(
        "reboot", "json"
    )


@pytest.mark.parametrize(
    "topic",
    [
        "iot-2/type/t/id/a/b/mon",  # greedy parsing would call this device 'a/b'
        "iot-2/type/t/id/d/evt/e/fmt/json/extra",
        "iot-2/type/t/id/d/evt/e/fmt",
        "iot-2/type/t/id/d/xyz/e/fmt/json",
        "iot-2/type//id/d/mon",
        "iot-2/app//mon",
        "iot-3/type/t/id/d/mon",
        "iot-2/type/t/id/d/evt//fmt/json",
        "iot-2/type/t/id/d/evt/e/fmt/",
        "",
        "iot-2",
    ],
)
def test_malformed_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        topics.parse(topic)


def test_wildcards_only_in_filters() -> None:
    """W13: publish topics are concrete; filters may use '+' for a whole component (W8)."""
    with pytest.raises(TopicError, match="device type"):
        topics.parse("iot-2/type/+/id/d/evt/e/fmt/json")
    parsed = topics.parse_filter("iot-2/type/+/id/+/evt/+/fmt/+")
    assert parsed == topics.DeviceEventTopic("+", "+", "+", "+")
    with pytest.raises(TopicError):
        topics.parse_filter("iot-2/type/a+/id/d/mon")


def test_hash_refused_for_applications() -> None:
    """W9: applications may not use '#'."""
    with pytest.raises(TopicError, match="'#' is not allowed"):
        topics.parse_filter("iot-2/type/t/id/#")


def test_error_names_component_and_rule() -> None:
    with pytest.raises(TopicError) as info:
        topics.device_event("my type", "d", "e", "json")
    assert "device type 'my type'" in str(info.value)
    assert "1-36 of letters, digits" in str(info.value)


def test_name_length_limit() -> None:
    """W3: names are at most 36 characters."""
    topics.check_name("x" * 36, "device ID")
    with pytest.raises(TopicError):
        topics.check_name("x" * 37, "device ID")


@given(names, names, levels, levels)
def test_event_round_trip(t: str, d: str, e: str, f: str) -> None:
    built = topics.device_event(t, d, e, f)
    assert topics.parse(str(built)) == built


@given(names, names, levels, levels)
def test_command_round_trip(t: str, d: str, c: str, f: str) -> None:
    built = topics.device_command(t, d, c, f)
    assert topics.parse(str(built)) == built


@given(names, names)
def test_status_round_trip(t: str, d: str) -> None:
    assert topics.parse(str(topics.device_status(t, d))) == topics.device_status(t, d)


@given(levels, levels)
def test_device_side_round_trip(e: str, f: str) -> None:
    assert topics.parse_device(str(topics.own_event(e, f))) == topics.own_event(e, f)
    assert topics.parse_device(str(topics.own_command(e, f))) == topics.own_command(e, f)


TOKENS = ["iot-2", "type", "id", "evt", "cmd", "fmt", "mon", "app", "t", "d", "+", "#", "", "a/b"]


@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=11), st.booleans())
def test_parse_accepts_exactly_what_build_produces(parts: list[str], wildcard: bool) -> None:
    """Whatever parse accepts is rebuilt byte for byte; so parse never guesses."""
    topic = "/".join(parts)
    try:
        parsed = topics.parse(topic, wildcard=wildcard)
    except TopicError:
        return
    assert str(parsed) == topic


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("+", "", True),
    ],
)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topics.matches(topic_filter, topic) is expected


def test_validate_filter() -> None:
    assert topics.validate_filter("a/+/#") == "a/+/#"
    for bad in ("a/#/b", "a/b+", "", "a/#x"):
        with pytest.raises(TopicError):
            topics.validate_filter(bad)


def test_shared_filters() -> None:
    """S1: $share/{ShareName}/{filter}."""
    shared = topics.shared_filter("abc123:app", "iot-2/type/+/id/+/evt/+/fmt/+")
    assert shared == "$share/abc123:app/iot-2/type/+/id/+/evt/+/fmt/+"
    assert topics.split_shared(shared) == ("abc123:app", "iot-2/type/+/id/+/evt/+/fmt/+")
    assert topics.split_shared("a/b") == (None, "a/b")
    for bad_group in ("", "a/b", "a+", "#"):
        with pytest.raises(TopicError):
            topics.shared_filter(bad_group, "a")
    with pytest.raises(TopicError):
        topics.split_shared("$share/g")


def test_validate_topic_name() -> None:
    assert topics.validate_topic_name("a/b") == "a/b"
    for bad in ("", "a/+", "a/#", "a\x00"):
        with pytest.raises(TopicError):
            topics.validate_topic_name(bad)


def _near(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(valid, st.sampled_from(TOKENS))


near_valid_topics = st.one_of(
    st.tuples(
        _near(st.just("iot-2")),
        _near(st.just("type")),
        _near(names),
        _near(st.just("id")),
        _near(names),
        _near(st.sampled_from(["evt", "cmd"])),
        _near(levels),
        _near(st.just("fmt")),
        _near(levels),
    ),
    st.tuples(_near(st.just("iot-2")), _near(st.just("app")), _near(names), _near(st.just("mon"))),
).map("/".join)


def _build(topic: str) -> str | None:
    """An oracle made of the builders alone: the string build would produce, or None."""
    lv = topic.split("/")
    try:
        if len(lv) == 9 and lv[:2] == ["iot-2", "type"] and lv[3] == "id" and lv[7] == "fmt":
            if lv[5] == "evt":
                return str(topics.device_event(lv[2], lv[4], lv[6], lv[8]))
            if lv[5] == "cmd":
                return str(topics.device_command(lv[2], lv[4], lv[6], lv[8]))
        if len(lv) == 6 and lv[:2] == ["iot-2", "type"] and lv[3] == "id" and lv[5] == "mon":
            return str(topics.device_status(lv[2], lv[4]))
        if len(lv) == 4 and lv[:2] == ["iot-2", "app"] and lv[3] == "mon":
            return str(topics.app_status(lv[2]))
    except TopicError:
        return None
    return None


@given(near_valid_topics)
def test_parse_accepts_exactly_the_builders_output(topic: str) -> None:
    """parse(s) succeeds exactly when the builders, given s's levels, produce s itself."""
    try:
        parsed = topics.parse(topic)
    except TopicError:
        assert _build(topic) != topic
        return
    assert str(parsed) == topic == _build(topic)
