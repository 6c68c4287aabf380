"""Subscriptions, shared groups and the retained ``mon`` messages (W21, W24-W28, W30).

Every subscription lives in one :class:`~worker.routing.TopicTrie` keyed by its internal filter
(org first, see :mod:`worker.platform.rules`). A plain subscription is stored as itself; the
subscriptions of a scalable application (``A:``) are members of a :class:`SharedGroup` and the
trie stores the group, so a message that matches reaches one member of each group and every
plain subscriber.

A group is (org, app ID, exact filter, with or without instance ID) (W27): instances with
different filters do not share, and ``A:org:app`` and ``A:org:app:inst`` connections use
different groups (W26). The strategy picks among the members that are online now; when every
member is an offline durable instance the group keeps the messages (at most the buffer size,
the oldest dropped first) until one comes back (W26).

Accounting: every message leaves a queue by being sent or by a counted drop (the platform's
metrics, ``tally``). The bytes queued platform-wide are :attr:`Router.queued_bytes`, bounded by
``max_queued_bytes`` (:mod:`worker.platform.limits`). While one message is routed, the router
notes how many of its deliveries could not be queued (``refused``, for the publisher's MQTT 5
PUBACK) and which online session is falling behind (``pressure``, for back-pressure).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from worker.mqtt import NO_PROPERTIES, Properties
from worker.platform.limits import MIB, Limit, entry_size
from worker.platform.metrics import DropReason
from worker.platform.retained import RetainedStore
from worker.routing import TopicTrie

OFFLINE_SHARE: Final = 0.5
"""The part of ``limits.queued_bytes`` that offline sessions and member-less groups may fill."""
BUFFER_SIZE: Final = 5000
"""Messages kept per subscription (and per ownerless shared group) before the oldest drops (W21)."""


class Envelope:
    """One message in flight inside the platform; ``topic`` is the internal topic.

    A delivery's bytes depend only on the topic a subscriber sees, its protocol level and the
    packet identifier, so they are encoded once per message and reused for every subscriber
    (worker.platform.encoded).
    """

    __slots__ = (
        "dup",
        "encoded",
        "expires",
        "payload",
        "properties",
        "qos",
        "retain",
        "size",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        *,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
        expires: float | None = None,
        dup: bool = False,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        #: set only on the stored copy of a retained message, sent to new subscriptions
        self.retain = retain
        #: the MQTT 5 PUBLISH properties to forward to MQTT 5 subscribers (no topic alias)
        self.properties = properties
        #: ``time.monotonic()`` after which it is not delivered (MQTT 5 Message Expiry Interval)
        self.expires = expires
        #: a QoS 1 message that another member had received and not acknowledged (S4)
        self.dup = dup
        #: see worker.platform.encoded
        self.encoded: dict[tuple[str, int], tuple[bytes, bytes]] | None = None
        #: what each queued copy counts against the byte limits, worked out once: a message
        #: for thousands of sessions is weighed thousands of times
        self.size = entry_size(self)

    def redelivery(self) -> Envelope:
        """The copy handed to another member after its first member went: flagged DUP."""
        return Envelope(
            self.topic, self.payload, self.qos, properties=self.properties,
            expires=self.expires, dup=True,
        )  # fmt: skip


def _never() -> bool:
    return False


class Owner(Protocol):
    """The side of a subscription that receives: a client session."""

    @property
    def online(self) -> bool:
        """Whether a connection is attached now."""
        ...

    def deliver(self, sub: Subscription, msg: Envelope) -> None:
        """Send ``msg`` through ``sub`` now, or buffer it."""
        ...


class Subscription:
    """One client's subscription to one filter. Identity is the object: hashable as is."""

    __slots__ = (
        "dropped",
        "group",
        "internal",
        "owner",
        "pending",
        "qos",
        "rewrite",
        "sequence",
        "topic_filter",
    )

    def __init__(
        self,
        owner: Owner,
        topic_filter: str,
        internal: str,
        qos: int,
        rewrite: Callable[[str], str],
    ) -> None:
        self.owner = owner
        #: the filter as the client wrote it (the key for UNSUBSCRIBE)
        self.topic_filter = topic_filter
        self.internal = internal
        self.qos = qos
        #: internal topic -> the topic this client sees
        self.rewrite = rewrite
        self.group: SharedGroup | None = None
        #: messages waiting for the client: offline, paused or window full (W21); made on the
        #: first message, because an empty deque costs 760 bytes and most subscriptions never
        #: buffer (100,000 shared groups would carry 76 MB of them)
        self.pending: deque[Envelope] | None = None
        #: the session's sequence number of each pending message (which subscription's is
        #: oldest), kept apart: a (number, message) pair would be one more object per queued
        #: copy for the memory and for every pass of the garbage collector
        self.sequence: deque[int] | None = None
        self.dropped = 0


class GroupObserver(Protocol):
    """Receives a shared group's numbers (the platform's metrics implement it, keeping plain
    numbers until a scrape: it is called per message)."""

    def dispatched(self, messages: int = 1) -> None:
        """Messages handed to a member."""
        ...

    def members(self, count: int) -> None:
        """The group now has ``count`` members."""
        ...


class _Unobserved:
    """The observer of the groups of a platform without metrics: nothing to tell."""

    def dispatched(self, messages: int = 1) -> None:
        """Nothing to count."""

    def members(self, count: int) -> None:
        """Nothing to count."""


UNOBSERVED: Final = _Unobserved()


class Tally(Protocol):
    """Where the router and the sessions count what they drop (the platform's metrics)."""

    def dropped(self, reason: DropReason, messages: int = 1) -> None:
        """Count discarded messages."""
        ...

    def limit(self, limit: Limit) -> None:
        """Count one hit of a limit."""
        ...

    def redelivered(self, messages: int = 1) -> None:
        """Count QoS 1 messages handed to another member, flagged DUP."""
        ...


GroupKey = tuple[str, str, bool]
"""(internal filter, app ID, has instance ID): one shared subscription (W27)."""


class Strategy(Protocol):
    """Picks which online member of a group gets the next message (W28)."""

    def choose(self, group: SharedGroup) -> Subscription | None:
        """An online member, or None when no member is online."""
        ...


class RoundRobin:
    """Each online member in turn; offline durable members are skipped (default, W28)."""

    def choose(self, group: SharedGroup) -> Subscription | None:
        members = group.members
        n = len(members)
        for _ in range(n):
            i = group.cursor % n
            group.cursor = i + 1
            member = members[i]
            if member.owner.online:
                return member
        return None


class RandomChoice:
    """A uniformly random online member; give a seed for a reproducible sequence (W28)."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def choose(self, group: SharedGroup) -> Subscription | None:
        members = group.members
        member = members[self._random.randrange(len(members))]
        if member.owner.online:
            return member
        online = [m for m in members if m.owner.online]
        return self._random.choice(online) if online else None


def make_strategy(name: str, seed: int | None = None) -> Strategy:
    """``round-robin`` or ``random``; ValueError names the accepted values."""
    if name == "round-robin":
        return RoundRobin()
    if name == "random":
        return RandomChoice(seed)
    raise ValueError(f"strategy {name!r}: accepted are 'round-robin' and 'random'")


class SharedGroup:
    """The members of one shared subscription and the messages no member could take yet."""

    __slots__ = ("backlog", "cursor", "key", "members", "observer")

    def __init__(self, key: GroupKey, observer: GroupObserver = UNOBSERVED) -> None:
        self.key = key
        self.members: list[Subscription] = []
        self.cursor = 0
        #: messages kept while no member is online (W26); made on the first one, as above
        self.backlog: deque[Envelope] | None = None
        self.observer = observer

    @property
    def org(self) -> str:
        """The org: the first level of the internal filter."""
        return self.key[0].partition("/")[0]

    @property
    def app_id(self) -> str:
        """The scalable application's app ID."""
        return self.key[1]


class Router:
    """Finds who gets a message: plain subscribers, one member per shared group, retained store."""

    def __init__(
        self,
        strategy: Strategy,
        buffer_size: int = BUFFER_SIZE,
        *,
        group_observer: Callable[[str, str], GroupObserver] | None = None,
        tally: Tally | None = None,
        max_queued_bytes: int = 64 * MIB,
        max_retained: int = 10_000,
    ) -> None:
        self._trie: TopicTrie[Subscription | SharedGroup] = TopicTrie()
        self._groups: dict[GroupKey, SharedGroup] = {}
        self._retained = RetainedStore(max_retained, on_evict=self._retained_evicted)
        self.strategy = strategy
        self.buffer_size = buffer_size
        self.max_queued_bytes = max_queued_bytes
        self._group_observer = group_observer
        self.tally = tally
        #: messages dropped from full buffers, platform-wide (W21)
        self.drops = 0
        #: messages that matched no subscription at all
        self.unrouted = 0
        #: subscriptions stored now (each group member counts one)
        self.subscriptions = 0
        #: bytes of messages queued in every session and group backlog (limits.entry_size)
        self.queued_bytes = 0
        #: deliveries of the message being routed that could not be queued (a quota was full)
        self.refused = 0
        #: an online session that fell behind while the message was routed (back-pressure)
        self.pressure: Any = None
        #: deliveries attempted since the start (a connection's read budgets its share)
        self.fanout = 0
        #: whether this loop turn's work budget is spent (the hub's; sessions draining their
        #: buffers stop there and go on in the next turn)
        self.turn_spent: Callable[[], bool] = _never

    # --- subscriptions ------------------------------------------------------------------------

    def add(self, sub: Subscription, share: tuple[str, bool] | None = None) -> bool:
        """Store ``sub``; ``share`` = (app ID, has instance) joins a shared group.

        True when ``sub`` starts a new delivery point: a plain subscription, or the first member
        of a group. Only then are retained messages sent (so that joining a running group does
        not replay the retained state to every instance).
        """
        self.subscriptions += 1
        if share is None:
            return self._trie.add(sub.internal, sub)
        key = (sub.internal, share[0], share[1])
        group = self._groups.get(key)
        first = group is None
        if group is None:
            group = self._groups[key] = SharedGroup(key)
            if self._group_observer is not None:
                group.observer = self._group_observer(group.org, group.app_id)
            self._trie.add(sub.internal, group)
        sub.group = group
        group.members.append(sub)
        group.observer.members(len(group.members))
        if sub.owner.online:
            self.flush_backlog(sub)
        return first

    def remove(self, sub: Subscription) -> None:
        """Forget ``sub``; its group stops giving it a share at once (W28)."""
        group = sub.group
        if group is None:
            if self._trie.remove(sub.internal, sub):
                self.subscriptions -= 1
            return
        sub.group = None
        try:
            index = group.members.index(sub)
        except ValueError:
            return
        self.subscriptions -= 1
        del group.members[index]
        if index < group.cursor:
            # Keep the rotation where it was: the member after the removed one is next.
            group.cursor -= 1
        group.observer.members(len(group.members))
        if not group.members:
            del self._groups[group.key]
            if not self._groups:
                # A dict never shrinks: 100,000 groups gone would keep their 2.6 MB table.
                self._groups = {}
            self._trie.remove(sub.internal, group)
            backlog, group.backlog = group.backlog or (), None
            for msg in backlog:
                self.queued_bytes -= entry_size(msg)
            self.dropped(DropReason.CLIENT_GONE, len(backlog))

    def flush_backlog(self, sub: Subscription) -> None:
        """Hand a group's kept messages to a member that has just come online (W26)."""
        group = sub.group
        if group is None:
            return
        backlog = group.backlog
        while backlog and sub.owner.online:
            msg = backlog.popleft()
            self.queued_bytes -= entry_size(msg)
            sub.owner.deliver(sub, msg)

    def hand_back(self, group: SharedGroup, messages: list[Envelope], *, redelivered: bool) -> None:
        """Give what a leaving member had not acknowledged or received to the rest of its
        group (S4); with no member left, they are dropped and counted (``client_gone``)."""
        if not group.members:
            self.dropped(DropReason.CLIENT_GONE, len(messages))
            return
        if redelivered and self.tally is not None and messages:
            self.tally.redelivered(len(messages))
        for msg in messages:
            member = self.strategy.choose(group)
            if member is not None:
                group.observer.dispatched()
                member.owner.deliver(member, msg)
            else:
                self._keep(group, msg)

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, msg: Envelope) -> int:
        """Deliver ``msg`` to every plain subscriber and one member of each group; the count."""
        targets = self._trie.match(msg.topic)
        self.fanout += len(targets)
        if not targets:
            self.unrouted += 1
            return 0
        choose = self.strategy.choose
        for target in targets:
            if type(target) is Subscription:
                target.owner.deliver(target, msg)
                continue
            assert isinstance(target, SharedGroup)
            member = choose(target)
            if member is not None:
                target.observer.dispatched()
                member.owner.deliver(member, msg)
            else:
                self._keep(target, msg)
        return len(targets)

    def _keep(self, group: SharedGroup, msg: Envelope) -> None:
        """Keep a message for a group whose members are all offline (W26), within the limits."""
        backlog = group.backlog
        if backlog is None:
            backlog = group.backlog = deque()
        size = entry_size(msg)
        if len(backlog) >= self.buffer_size:
            self.limit(Limit.SUBSCRIPTION_MESSAGES)
            self.queued_bytes -= entry_size(backlog.popleft())
            self.dropped(DropReason.QUEUE_FULL)
        if self.queued_bytes + size > self.room(online=False):
            self.refuse(Limit.QUEUED_BYTES)
            return
        backlog.append(msg)
        self.queued_bytes += size

    def room(self, *, online: bool) -> int:
        """The platform-wide bytes a queue may fill up to: all of ``max_queued_bytes`` for a
        client that is connected, :data:`OFFLINE_SHARE` of it for one that is not (offline
        sessions and groups with no member online), so offline queues can never leave the
        connected clients without room."""
        return self.max_queued_bytes if online else int(self.max_queued_bytes * OFFLINE_SHARE)

    def refuse(self, limit: Limit) -> None:
        """One delivery of the message being routed could not be queued because of ``limit``:
        counted, and the publisher told when it speaks MQTT 5. (A message for thousands of
        offline sessions comes here thousands of times: it does the least it can.)"""
        self.refused += 1
        self.drops += 1
        tally = self.tally
        if tally is not None:
            tally.limit(limit)
            tally.dropped(DropReason.QUEUE_FULL)

    def dropped(self, reason: DropReason = DropReason.QUEUE_FULL, messages: int = 1) -> None:
        """Count dropped messages: nothing is dropped without a trace."""
        if not messages:
            return
        if reason is DropReason.QUEUE_FULL:
            self.drops += messages
        if self.tally is not None:
            self.tally.dropped(reason, messages)

    def limit(self, limit: Limit) -> None:
        """Count one hit of a limit."""
        if self.tally is not None:
            self.tally.limit(limit)

    def groups(self) -> list[SharedGroup]:
        """The shared groups that exist now."""
        return list(self._groups.values())

    def _retained_evicted(self) -> None:
        self.limit(Limit.RETAINED)

    # --- retained status messages ---------------------------------------------------------------

    def retain(self, msg: Envelope) -> None:
        """Keep ``msg`` as the retained message of its topic; an empty payload clears it."""
        if msg.payload:
            self._retained.put(msg)
        else:
            self._retained.remove(msg.topic)

    def retained(self, internal_filter: str) -> list[Envelope]:
        """The retained messages a new subscription to ``internal_filter`` receives."""
        return self._retained.match(internal_filter)

    def compact_retained(self) -> None:
        """Copy the retained messages into new objects (see RetainedStore.compact)."""
        self._retained.compact(_retained_status)

    def forget_retained(self, topic: str) -> None:
        """Remove the retained message of ``topic`` (its client's session is over)."""
        self._retained.remove(topic)

    @property
    def retained_count(self) -> int:
        """Retained messages kept now."""
        return len(self._retained)


def _retained_status(topic: str, payload: bytes, qos: int) -> Envelope:
    return Envelope(topic, payload, qos, retain=True)
