"""The topic trie shared by the worker's routes and the platform's subscriptions."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from worker import topics
from worker.errors import TopicError
from worker.routing import TopicTrie


def test_match_finds_every_matching_filter_once() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("iot-2/type/+/id/+/evt/+/fmt/+", "all")
    trie.add("iot-2/type/sensor/id/+/evt/reading/fmt/json", "readings")
    trie.add("iot-2/type/other/id/+/evt/+/fmt/+", "other")
    trie.add("iot-2/#", "everything")
    found = trie.match("iot-2/type/sensor/id/s1/evt/reading/fmt/json")
    assert sorted(found) == ["all", "everything", "readings"]
    assert trie.match("iot-2") == ["everything"]
    assert trie.match("elsewhere/x") == []


def test_dollar_topics_skip_leading_wildcards() -> None:
    trie: TopicTrie[int] = TopicTrie()
    trie.add("#", 1)
    trie.add("+/x", 2)
    trie.add("$SYS/x", 3)
    assert trie.match("$SYS/x") == [3]


def test_add_remove_and_prune() -> None:
    trie: TopicTrie[str] = TopicTrie()
    assert trie.add("a/+/c", "v")
    assert not trie.add("a/+/c", "v")
    assert trie.add("a/+/c", "w")
    assert len(trie) == 2
    assert trie.values_at("a/+/c") == ["v", "w"]
    assert trie.remove("a/+/c", "v")
    assert not trie.remove("a/+/c", "v")
    assert not trie.remove("a/b/c", "w")
    assert trie.remove("a/+/c", "w")
    assert len(trie) == 0
    assert list(trie.filters()) == []
    assert trie._root.children == {}


def test_invalid_filter_refused() -> None:
    with pytest.raises(TopicError):
        TopicTrie[str]().add("a/#/b", "v")


segments = st.sampled_from(["a", "b", "c", "+", "#"])
topic_levels = st.lists(st.sampled_from(["a", "b", "c", "$x"]), min_size=1, max_size=4)


@given(st.lists(st.lists(segments, min_size=1, max_size=4), max_size=8), topic_levels)
def test_trie_agrees_with_matches(filters: list[list[str]], levels: list[str]) -> None:
    """The trie returns exactly the filters that topics.matches accepts."""
    trie: TopicTrie[str] = TopicTrie()
    valid = set()
    for parts in filters:
        f = "/".join(parts)
        try:
            trie.add(f, f)
        except TopicError:
            continue
        valid.add(f)
    topic = "/".join(levels)
    assert set(trie.match(topic)) == {f for f in valid if topics.matches(f, topic)}


def _levels_universe() -> list[str]:
    """Every topic of 1-5 levels over {a, b}: enough to tell any two small filters apart."""
    out: list[str] = []
    frontier = [""]
    for _ in range(5):
        frontier = [f"{p}/{x}" if p else x for p in frontier for x in "ab"]
        out.extend(frontier)
    return out


UNIVERSE = _levels_universe()
small_filters = st.lists(st.sampled_from(["a", "b", "+", "#"]), min_size=1, max_size=4).map(
    "/".join
)


def _matched(f: str) -> set[str]:
    return {t for t in UNIVERSE if topics.matches(f, t)}


@given(st.lists(small_filters, max_size=6), small_filters)
@example(stored=["+/#"], probe="#")  # a topic has a level, so '+/#' covers '#'
def test_covering_and_overlapping_agree_with_the_topics_they_match(
    stored: list[str], probe: str
) -> None:
    """covering: every topic the probe matches is matched; overlapping: some topic is."""
    trie: TopicTrie[str] = TopicTrie()
    valid = []
    for f in stored:
        try:
            trie.add(f, f)
        except TopicError:
            continue
        valid.append(f)
    try:
        topics.validate_filter(probe)
    except TopicError:
        return
    probe_topics = _matched(probe)
    assert set(trie.covering(probe)) == {f for f in valid if probe_topics <= _matched(f)}
    assert set(trie.overlapping(probe)) == {f for f in valid if probe_topics & _matched(f)}
