"""The retained status messages, stored as a tree of topic levels (W30).

A new subscription is answered with the retained messages its filter matches. Checking the
filter against every stored topic made each SUBSCRIBE cost O(retained messages) of string
work on the event loop, so a client sending thousands of filters on a platform with
thousands of connected devices stalled every other client for tens of seconds. The tree is
split by topic depth first (a filter without ``#`` can only match topics of its own depth,
and every event filter is deeper than every status topic), then walked level by level: a
concrete level is one dict lookup, ``+`` visits the children, ``#`` everything below. The
cost of a lookup is the path plus what it returns.

The store is bounded (``limit``): one topic per client ever seen would otherwise grow without
end. Past the limit the message stored longest ago without an update goes, and ``on_evict`` is
told (the platform counts it). Sessions that end remove their own status (see the hub).

:meth:`RetainedStore.compact` rebuilds the store in new objects. The statuses a burst of
connections leaves behind were allocated among the burst's own objects, one or two in each
block of memory the burst had taken, and an allocator gives a block back only when nothing
in it is alive: those few hundred kilobytes of statuses kept tens of megabytes resident
after the burst had gone. The platform compacts once a burst is over (see
worker.platform.memory).
"""

from __future__ import annotations

import marshal
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.topics import MULTI, SINGLE

if TYPE_CHECKING:
    from worker.platform.router import Envelope


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Envelope | None = None


class RetainedStore:
    """Retained messages by internal topic; ``match`` finds those a filter matches."""

    __slots__ = ("_on_evict", "_order", "_roots", "_size", "limit")

    def __init__(self, limit: int = 10_000, on_evict: Callable[[], None] | None = None) -> None:
        #: topic depth -> the tree of the topics with that many levels
        self._roots: dict[int, _Node] = {}
        self._size = 0
        #: stored topics, least recently updated first
        self._order: dict[str, None] = {}
        self.limit = limit
        self._on_evict = on_evict

    def __len__(self) -> int:
        return self._size

    def put(self, msg: Envelope) -> None:
        """Keep ``msg`` as its topic's retained message (replacing the previous one)."""
        levels = msg.topic.split("/")
        node = self._roots.setdefault(len(levels), _Node())
        for level in levels:
            node = node.children.setdefault(level, _Node())
        if node.message is None:
            self._size += 1
        node.message = msg
        self._order.pop(msg.topic, None)
        self._order[msg.topic] = None
        while self._size > self.limit:
            self.remove(next(iter(self._order)))
            if self._on_evict is not None:
                self._on_evict()

    def compact(self, restore: Callable[[str, bytes, int], Envelope]) -> None:
        """Rebuild the store in new objects, in the same order of age.

        The messages are first written to one bytes object, which is allocated apart from the
        small objects, and all of the old ones are let go before the new ones are made: the
        new ones then fill fresh blocks of memory instead of the gaps next to the old ones.
        ``restore`` makes a message from its topic, payload and QoS (all that the platform's
        status messages have)."""
        blob = marshal.dumps([self._entry(topic) for topic in self._order])
        self._roots = {}
        self._order = {}
        self._size = 0
        for topic, payload, qos in marshal.loads(blob):
            self.put(restore(topic, payload, qos))

    def _entry(self, topic: str) -> tuple[str, bytes, int]:
        msg = self._find(topic)
        assert msg is not None  # every topic in _order has its message
        return msg.topic, msg.payload, msg.qos

    def _find(self, topic: str) -> Envelope | None:
        node = self._roots.get(topic.count("/") + 1)
        for level in topic.split("/"):
            if node is None:
                return None
            node = node.children.get(level)
        return None if node is None else node.message

    def remove(self, topic: str) -> None:
        """Forget the retained message of ``topic``; empty branches go with it."""
        levels = topic.split("/")
        root = self._roots.get(len(levels))
        path: list[tuple[_Node, str]] = []
        node = root
        for level in levels:
            if node is None:
                return
            path.append((node, level))
            node = node.children.get(level)
        if node is None or node.message is None:
            return
        node.message = None
        self._size -= 1
        self._order.pop(topic, None)
        # Prune so that a churn of client IDs leaves no empty nodes behind.
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.children or child.message is not None:
                break
            del parent.children[level]
        if root is not None and not root.children:
            del self._roots[len(levels)]

    def match(self, topic_filter: str) -> list[Envelope]:
        """The retained messages whose topics ``topic_filter`` matches (MQTT rules)."""
        levels = topic_filter.split("/")
        found: list[Envelope] = []
        if MULTI in levels:
            # ``a/#`` also matches ``a``, so every depth from the parent's up can match.
            for depth, root in self._roots.items():
                if depth >= len(levels) - 1:
                    _walk(root, levels, 0, found)
        else:
            same_depth = self._roots.get(len(levels))
            if same_depth is not None:
                _walk(same_depth, levels, 0, found)
        return found


def _walk(node: _Node, levels: list[str], index: int, found: list[Envelope]) -> None:
    if index == len(levels):
        if node.message is not None:
            found.append(node.message)
        return
    level = levels[index]
    if level == MULTI:
        _collect(node, found)
    elif level == SINGLE:
        for child in node.children.values():
            _walk(child, levels, index + 1, found)
    else:
        exact = node.children.get(level)
        if exact is not None:
            _walk(exact, levels, index + 1, found)


def _collect(node: _Node, found: list[Envelope]) -> None:
    if node.message is not None:
        found.append(node.message)
    for child in node.children.values():
        _collect(child, found)
