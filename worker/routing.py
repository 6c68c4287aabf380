"""A trie over topic levels: which values subscribed with a filter that matches a topic.

The worker compiles its routes into one at start-up; the local platform keeps its
subscriptions in one and adds and removes as clients come and go. A lookup walks one path
per topic level (plus the ``+`` and ``#`` branches), so its cost depends on the topic's depth
and on how many filters actually match, not on how many filters are stored.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from worker.topics import MULTI, SINGLE, validate_filter

V = TypeVar("V", bound=Hashable)


class _Node(Generic[V]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        # dict as an insertion-ordered set: lookups return values in subscription order
        self.values: dict[V, None] = {}


class TopicTrie(Generic[V]):
    """Maps MQTT topic filters to sets of values; ``match`` finds every value for a topic."""

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._size = 0

    def __len__(self) -> int:
        """The number of (filter, value) pairs stored."""
        return self._size

    def add(self, topic_filter: str, value: V) -> bool:
        """Store ``value`` under ``topic_filter``; False when it was already there."""
        node = self._root
        for level in validate_filter(topic_filter).split("/"):
            # get before making a node: most levels exist, and a throwaway node per level made
            # each subscription allocate (and the collector trace) nine of them for nothing
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if value in node.values:
            return False
        node.values[value] = None
        self._size += 1
        return True

    def remove(self, topic_filter: str, value: V) -> bool:
        """Remove ``value`` from ``topic_filter``; False when it was not there."""
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if value not in node.values:
            return False
        del node.values[value]
        self._size -= 1
        # Prune empty branches so that churn (clients subscribing and leaving) cannot grow it.
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.values or child.children:
                break
            del parent.children[level]
        return True

    def values_at(self, topic_filter: str) -> list[V]:
        """The values stored under exactly ``topic_filter`` (no wildcard matching)."""
        node: _Node[V] | None = self._root
        for level in topic_filter.split("/"):
            node = node.children.get(level) if node is not None else None
        return list(node.values) if node is not None else []

    def match(self, topic: str) -> list[V]:
        """Every value whose filter matches ``topic``, each once, in a stable order."""
        found: dict[V, None] = {}
        levels = topic.split("/")
        # MQTT 4.7.2: a topic starting with '$' is not matched by a leading wildcard.
        self._walk(self._root, levels, 0, found, skip_wild=topic.startswith("$"))
        return list(found)

    def _walk(
        self, node: _Node[V], levels: list[str], i: int, found: dict[V, None], skip_wild: bool
    ) -> None:
        children = node.children
        if not skip_wild:
            multi = children.get(MULTI)
            if multi is not None:
                # 'a/#' also matches 'a' itself (MQTT 4.7.1.2).
                found.update(multi.values)
        if i == len(levels):
            found.update(node.values)
            return
        exact = children.get(levels[i])
        if exact is not None:
            self._walk(exact, levels, i + 1, found, False)
        if not skip_wild:
            single = children.get(SINGLE)
            if single is not None:
                self._walk(single, levels, i + 1, found, False)

    def covering(self, topic_filter: str) -> list[V]:
        """Every value whose filter matches every topic that ``topic_filter`` matches.

        ``a/+`` covers ``a/b`` and ``a/+``; ``a/#`` covers ``a`` and ``a/+/c``. (Topics that
        start with ``$`` are not special here: filters of this project never match them.)
        """
        found: dict[V, None] = {}
        self._cover(self._root, topic_filter.split("/"), 0, found)
        return list(found)

    def _cover(self, node: _Node[V], levels: list[str], i: int, found: dict[V, None]) -> None:
        multi = node.children.get(MULTI)
        if multi is not None:
            found.update(multi.values)  # '#' here covers whatever the rest of the filter is
        if i == len(levels):
            found.update(node.values)
            return
        level = levels[i]
        if level == MULTI:
            # Only a '#' at the same place (above) covers a '#' - and, for a leading '#', '+/#':
            # a topic has at least one level, so '+/#' matches every topic '#' matches.
            if i == 0:
                single = node.children.get(SINGLE)
                below = single.children.get(MULTI) if single is not None else None
                if below is not None:
                    found.update(below.values)
            return
        for key in (SINGLE,) if level == SINGLE else (level, SINGLE):
            child = node.children.get(key)
            if child is not None:
                self._cover(child, levels, i + 1, found)

    def overlapping(self, topic_filter: str) -> list[V]:
        """Every value whose filter matches at least one topic that ``topic_filter`` matches."""
        found: dict[V, None] = {}
        self._overlap(self._root, topic_filter.split("/"), 0, found)
        return list(found)

    def _overlap(self, node: _Node[V], levels: list[str], i: int, found: dict[V, None]) -> None:
        multi = node.children.get(MULTI)
        if multi is not None:
            found.update(multi.values)
        if i == len(levels):
            found.update(node.values)
            return
        level = levels[i]
        if level == MULTI:
            # 'a/#' matches 'a' itself and everything below it
            stack = [node]
            while stack:
                below = stack.pop()
                found.update(below.values)
                stack.extend(below.children.values())
            return
        if level == SINGLE:
            children = [c for key, c in node.children.items() if key != MULTI]
        else:
            children = [c for c in (node.children.get(level), node.children.get(SINGLE)) if c]
        for child in children:
            self._overlap(child, levels, i + 1, found)

    def filters(self) -> Iterator[tuple[str, list[V]]]:
        """Every stored filter with its values, depth first."""
        stack: list[tuple[_Node[V], tuple[str, ...]]] = [(self._root, ())]
        while stack:
            node, prefix = stack.pop()
            if node.values:
                yield "/".join(prefix), list(node.values)
            for level, child in node.children.items():
                stack.append((child, (*prefix, level)))
