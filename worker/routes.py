"""Routes and the compiled router: which handlers a received topic goes to, in one dict lookup.

A :class:`RouteTable` is built once from an App's routes. Its :class:`~worker.routing.TopicTrie`
answers a topic it has not seen (cost: the topic's depth, never the number of routes); the
answer is kept in a bounded per-topic cache, so the steady state is one dict lookup per
message. The answer carries the parsed topic too, so messages are built without re-parsing.

A message goes to **every** route whose filter matches, as every subscriber of a topic gets
it. :func:`subscription_filters` leaves out a filter that another route's filter covers, so
the platform sends such a message once; filters that only partly overlap are reported by
:func:`partial_overlaps`, since a broker may then send a message once per subscription.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from worker import topics
from worker.deadletter import SinkChoice
from worker.errors import CodecError, PermanentError, RegistrationError, TopicError
from worker.messages import (
    NO_PROPERTIES,
    AppStatus,
    DeviceStatus,
    Message,
    MessageProperties,
    build_command,
    build_event,
    status_fields,
)
from worker.metrics import Kind
from worker.payloads import PayloadModel
from worker.routing import TopicTrie

Handler = Callable[..., Awaitable[Any]]

#: distinct topics remembered by the router (a fleet's topics; older ones are forgotten first)
CACHE_SIZE: Final = 65_536
#: no retry waits longer than this, whatever the route's backoff and attempt
BACKOFF_CAP: Final = 60.0
#: the largest batch a route may ask for: a batch is held in memory and acknowledged at once
MAX_BATCH_SIZE: Final = 100_000
#: the longest a batch may wait for more messages (seconds)
MAX_BATCH_WAIT: Final = 60.0


class InboundLike(Protocol):
    """What the router and the pipeline read of a received PUBLISH (transports' ``Inbound``)."""

    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def qos(self) -> int: ...
    @property
    def retain(self) -> bool: ...
    @property
    def packet_id(self) -> int: ...
    @property
    def properties(self) -> MessageProperties | None: ...
    @property
    def expires_at(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """A route option: hand the handler a list of up to ``max_size`` messages.

    A batch is handed over when it holds ``max_size`` messages, when its first message has
    waited ``max_wait`` seconds, when the broker will send no more until it gets
    acknowledgements (QoS 1), and when the worker drains. ``max_wait=0`` hands over whatever
    one read from the socket brought.

    Each payload is decoded before the batch is formed, so one that does not decode stays out
    of it (outcome ``decode_error``). ``decode=False`` hands every message over as it came,
    ``data`` decoded on first use as on a single-message route: for a handler that passes
    the payload bytes on to something that checks them itself (a database's ``json``), and
    deals with the ones it refuses. A route with a payload model is always validated.
    """

    max_size: int = 100
    max_wait: float = 0.05
    decode: bool = True

    def __post_init__(self) -> None:
        size, wait = self.max_size, self.max_wait
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_BATCH_SIZE:
            raise RegistrationError(
                f"Batch(max_size={size!r}): accepted is a whole number from 1 to {MAX_BATCH_SIZE:,}"
            )
        number = isinstance(wait, int | float) and not isinstance(wait, bool)
        if not (number and math.isfinite(wait) and 0 <= wait <= MAX_BATCH_WAIT):
            raise RegistrationError(
                f"Batch(max_wait={wait!r}): accepted is seconds from 0 to {MAX_BATCH_WAIT:g}"
            )
        if not isinstance(self.decode, bool):
            raise RegistrationError(f"Batch(decode={self.decode!r}): accepted is True or False")


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """One registered handler with its filter and options (see ``App.event``)."""

    index: int
    name: str
    kind: Kind
    topic_filter: str
    handler: Handler
    ordered: bool = False
    timeout: float | None = None
    retries: int = 0
    retry_backoff: float = 0.1
    dead_letter: SinkChoice = None
    #: hand the handler a list of messages (see :class:`Batch`); None: one message a run
    batch: Batch | None = None
    #: ``data`` is validated into this model before the handler runs (events, commands)
    payload: PayloadModel | None = None
    #: only these exceptions are retried (None: every one but PermanentError)
    retry_on: tuple[type[BaseException], ...] | None = None
    #: the handler takes a second argument, the :class:`~worker.context.Context`
    wants_context: bool = False

    def retryable(self, error: BaseException | None) -> bool:
        """Whether a run that failed with ``error`` (None: it timed out) may run again."""
        if isinstance(error, PermanentError):
            return False
        if self.retry_on is None:
            return True
        return isinstance(error if error is not None else TimeoutError(), self.retry_on)


Builder = Callable[[tuple[str, ...], InboundLike, float], Message]


def _event(p: tuple[str, ...], m: InboundLike, at: float) -> Message:
    return build_event(
        p[0], p[1], p[2], p[3], m.payload, m.topic, m.qos, m.retain, at,
        m.properties or NO_PROPERTIES,
    )  # fmt: skip


def _command(p: tuple[str, ...], m: InboundLike, at: float) -> Message:
    return build_command(
        p[0], p[1], p[2], p[3], m.payload, m.topic, m.qos, m.retain, at,
        m.properties or NO_PROPERTIES,
    )  # fmt: skip


def _device_status(p: tuple[str, ...], m: InboundLike, at: float) -> Message:
    fields = status_fields(m.payload)
    return DeviceStatus(
        device_type=p[0], device_id=p[1], topic=m.topic, payload=m.payload, qos=m.qos,
        retain=m.retain, received_at=at, **fields,
    )  # fmt: skip


def _app_status(p: tuple[str, ...], m: InboundLike, at: float) -> Message:
    fields = status_fields(m.payload)
    return AppStatus(
        app_id=p[0], topic=m.topic, payload=m.payload, qos=m.qos, retain=m.retain,
        received_at=at, **fields,
    )  # fmt: skip


def _unroutable(p: tuple[str, ...], m: InboundLike, at: float) -> Message:
    raise CodecError(f"topic {m.topic!r} is not an application topic")


@dataclass(frozen=True, slots=True)
class Entry:
    """The router's answer for one topic."""

    #: None when the topic is not an application topic at all
    kind: Kind | None
    #: the matching routes, in registration order; empty when none matches
    routes: tuple[Route, ...]
    #: the topic's variable components (type, id, event/command, fmt; or type, id; or app)
    parts: tuple[str, ...]
    #: picks the lane of ordered routes: one device (or app) always gets the same lane
    key: int
    build: Builder


def parse_topic(topic: str) -> tuple[Kind, tuple[str, ...], Builder]:
    """(kind, components, builder) of an application topic; TopicError otherwise."""
    parsed = topics.parse(topic)
    if isinstance(parsed, topics.DeviceEventTopic):
        parts = (parsed.device_type, parsed.device_id, parsed.event, parsed.fmt)
        return Kind.EVENT, parts, _event
    if isinstance(parsed, topics.DeviceCommandTopic):
        parts = (parsed.device_type, parsed.device_id, parsed.command, parsed.fmt)
        return Kind.COMMAND, parts, _command
    if isinstance(parsed, topics.DeviceStatusTopic):
        return Kind.DEVICE_STATUS, (parsed.device_type, parsed.device_id), _device_status
    return Kind.APP_STATUS, (parsed.app_id,), _app_status


class RouteTable:
    """Routes compiled into a trie, with a bounded per-topic answer cache."""

    __slots__ = ("_cache", "_cache_size", "_trie", "routes")

    def __init__(self, routes: Sequence[Route], cache_size: int = CACHE_SIZE) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._trie: TopicTrie[int] = TopicTrie()
        for route in self.routes:
            self._trie.add(route.topic_filter, route.index)
        self._cache: dict[str, Entry] = {}
        self._cache_size = max(1, cache_size)

    def lookup(self, topic: str) -> Entry:
        """The routes for ``topic`` and its parsed components."""
        entry = self._cache.get(topic)
        if entry is None:
            entry = self._resolve(topic)
        return entry

    def _resolve(self, topic: str) -> Entry:
        try:
            kind, parts, build = parse_topic(topic)
        except TopicError:
            entry = Entry(None, (), (), 0, _unroutable)
        else:
            by_index = self.routes
            found = tuple(by_index[i] for i in sorted(self._trie.match(topic)))
            key = hash(parts[:2]) if len(parts) > 1 else hash(parts[0])
            entry = Entry(kind, found, parts, key, build)
        cache = self._cache
        if len(cache) >= self._cache_size:
            # forget the oldest topic: O(1), and a fleet's hot topics come straight back
            del cache[next(iter(cache))]
        cache[topic] = entry
        return entry


def _filter_trie(filters: Iterable[str]) -> TopicTrie[str]:
    trie: TopicTrie[str] = TopicTrie()
    for f in filters:
        trie.add(f, f)
    return trie


def subscription_filters(routes: Iterable[Route]) -> list[str]:
    """The distinct filters to subscribe to, without those another one covers.

    A trie walk per filter, so 10,000 routes compile in well under a second.
    """
    distinct = list(dict.fromkeys(r.topic_filter for r in routes))
    trie = _filter_trie(distinct)
    return [f for f in distinct if trie.covering(f) == [f]]


def partial_overlaps(routes: Iterable[Route]) -> list[tuple[str, str]]:
    """Pairs of subscribed filters that overlap without one covering the other."""
    subscribed = subscription_filters(routes)
    trie = _filter_trie(subscribed)
    order = {f: i for i, f in enumerate(subscribed)}
    return [(a, b) for a in subscribed for b in trie.overlapping(a) if order[b] > order[a]]
