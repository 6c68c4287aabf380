"""The local platform's own Prometheus metrics, and a small asyncio server for ``/metrics``.

Everything is registered on an injected ``CollectorRegistry`` (tests use a fresh one). Labels
are bounded: the client class (``a``, ``A``, ``d``, ``g``), a closed set of reasons, and
org + app ID for shared groups, capped at :data:`MAX_GROUPS` series; never a device ID, a
client ID or a raw topic.

The server calls these per batch, not per message, and every labelled child is bound once
(per class at start, per group when the group first appears), so a hot-path call is one
attribute access and a counter increment::

    counters = metrics.client(ClientClass.DEVICE)   # at CONNECT; keep it on the session
    counters.connected()
    counters.received(messages=n, nbytes=len(data))   # once per socket read
    group = metrics.group(org, app_id)               # when the shared group is created
    group.dispatched(n)                                # a plain number until scraped
    metrics.dropped(DropReason.QUEUE_FULL, n)          # a plain number until scraped
    metrics.limit(Limit.SESSIONS)                     # a limit of worker.platform.limits hit

Gauges that describe the whole platform (queued bytes, sessions, retained messages) are read
when ``/metrics`` is scraped (:meth:`watch`); drops, limit hits and the shared groups' numbers
are counted as plain integers and handed to Prometheus then. No per-packet code touches a
Prometheus lock for them, and a scrape walks the series, never the groups or the sessions.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from worker import web
from worker.identity import ClientClass
from worker.platform.limits import Limit

PREFIX: Final = "worker_platform"
#: Shared groups beyond this many share one series labelled ``OVERFLOW`` (W29 allows 10).
MAX_GROUPS: Final = 100
OVERFLOW: Final = "_other"


class DropReason(enum.StrEnum):
    """Why the platform discarded a message (the ``reason`` label)."""

    #: a subscription's buffer was full and its oldest message went (W21)
    QUEUE_FULL = "queue_full"
    #: above the 131072-byte limit; the sender is disconnected (W17)
    TOO_LARGE = "too_large"
    #: a publish to a topic the client may not use; the sender is disconnected (W37)
    NOT_AUTHORIZED = "not_authorized"
    #: a publish to a topic outside the grammar (W13, W37)
    TOPIC_NOT_VALID = "topic_not_valid"
    #: a valid publish that no subscription matched
    NO_SUBSCRIBERS = "no_subscribers"
    #: the receiving client went away before acknowledging it, and no one could take it over
    CLIENT_GONE = "client_gone"
    #: its MQTT 5 Message Expiry Interval passed while it was queued
    EXPIRED = "expired"
    #: queued for an offline durable session that expired (or was evicted) before it came back
    SESSION_EXPIRED = "session_expired"


class RefusalReason(enum.StrEnum):
    """Why a CONNECT was refused (the ``reason`` label of refused connections)."""

    CLIENT_ID_NOT_VALID = "client_id_not_valid"
    NOT_AUTHORIZED = "not_authorized"
    QUICKSTART = "quickstart"
    PROTOCOL = "protocol"


class ClientMetrics:
    """The counters of one client class, bound once; keep one per session."""

    __slots__ = ("_connected", "_connects", "_in_bytes", "_in_msgs", "_out_bytes", "_out_msgs")

    def __init__(self, families: _Families, cls: ClientClass) -> None:
        label = cls.value
        self._connected = families.connections.labels(label)
        self._connects = families.connects.labels(label)
        self._in_msgs = families.received.labels(label)
        self._in_bytes = families.received_bytes.labels(label)
        self._out_msgs = families.sent.labels(label)
        self._out_bytes = families.sent_bytes.labels(label)

    def connected(self) -> None:
        """A client of this class completed CONNECT."""
        self._connects.inc()
        self._connected.inc()

    def disconnected(self) -> None:
        """A connected client of this class went away (for any reason)."""
        self._connected.dec()

    def received(self, messages: int, nbytes: int) -> None:
        """PUBLISHes and bytes read from clients of this class (call once per read)."""
        if messages:
            self._in_msgs.inc(messages)
        if nbytes:
            self._in_bytes.inc(nbytes)

    def sent(self, messages: int, nbytes: int) -> None:
        """PUBLISHes and bytes written to clients of this class (call once per write batch)."""
        if messages:
            self._out_msgs.inc(messages)
        if nbytes:
            self._out_bytes.inc(nbytes)


class GroupMetrics:
    """The series of one scalable application (org + app ID), shared by all its groups.

    Called per message and per member change, so it only keeps plain numbers; they reach
    Prometheus when ``/metrics`` is scraped (:meth:`flush`), and a scrape walks these series
    (at most :data:`MAX_GROUPS` + 1), never the groups themselves.
    """

    __slots__ = ("_count", "_dispatched", "_members", "_unreported")

    def __init__(self, families: _Families, org: str, app_id: str) -> None:
        self._dispatched = families.dispatched.labels(org, app_id)
        self._members = families.members.labels(org, app_id)
        self._unreported = 0
        self._count: int | None = None

    def dispatched(self, messages: int = 1) -> None:
        """Messages handed to one member of a group of this application."""
        self._unreported += messages

    def members(self, count: int) -> None:
        """A group of this application now has ``count`` subscribed members."""
        self._count = count

    def flush(self) -> None:
        """Hand what was counted since the last scrape to Prometheus."""
        if self._unreported:
            self._dispatched.inc(self._unreported)
            self._unreported = 0
        if self._count is not None:
            self._members.set(self._count)
            self._count = None


class _Families:
    """The metric families, registered once on the registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, labels, registry=registry)

        cls = "client_class"
        self.connections = gauge("connections", "Connected clients", cls)
        self.connects = counter("connects", "Accepted CONNECTs", cls)
        self.refused = counter("connects_refused", "Refused CONNECTs", "reason")
        self.received = counter("messages_received", "PUBLISHes from clients", cls)
        self.received_bytes = counter("received_bytes", "Bytes read from clients", cls)
        self.sent = counter("messages_sent", "PUBLISHes to clients", cls)
        self.sent_bytes = counter("sent_bytes", "Bytes written to clients", cls)
        self.dropped = counter("messages_dropped", "Messages discarded", "reason")
        self.dispatched = counter(
            "shared_dispatched", "Messages dispatched to a shared group", "org", "app"
        )
        self.members = gauge("shared_members", "Subscribed members of a shared group", "org", "app")
        self.limits = counter("limit_hits", "Times a limit refused, evicted or dropped", "limit")
        self.redelivered = counter(
            "messages_redelivered", "QoS 1 messages handed to another member, flagged DUP"
        )
        self.queued_bytes = gauge("queued_bytes", "Bytes of messages queued for clients")
        self.sessions = gauge("sessions", "Sessions, connected and offline durable")
        self.retained = gauge("retained_messages", "Retained status messages kept")


class _BeforeScrape(Collector):
    """Runs the scrape-time hooks before the families are read (registered first)."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []

    def collect(self) -> Iterable[Metric]:
        for hook in self.hooks:
            hook()
        return []


class PlatformMetrics:
    """The platform's metrics on ``registry``; every child the hot path uses is pre-bound."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Registered before the families: a registry collects in registration order.
        self._before_scrape = _BeforeScrape()
        registry.register(self._before_scrape)
        self._families = _Families(registry)
        self._limits = {limit: self._families.limits.labels(limit) for limit in Limit}
        self._clients = {cls: ClientMetrics(self._families, cls) for cls in ClientClass}
        self._drops = {reason: self._families.dropped.labels(reason) for reason in DropReason}
        self._refusals = {reason: self._families.refused.labels(reason) for reason in RefusalReason}
        self._groups: dict[tuple[str, str], GroupMetrics] = {}
        # Drops and limit hits come per message copy (a message for 2,000 offline sessions
        # that cannot be queued is 2,000 of each): counted here as plain numbers, handed to
        # Prometheus when /metrics is scraped.
        self._drops_counted = dict.fromkeys(DropReason, 0)
        self._limits_counted = dict.fromkeys(Limit, 0)
        self._before_scrape.hooks.append(self._flush)

    def client(self, cls: ClientClass) -> ClientMetrics:
        """The counters of a client class (the same object every time)."""
        return self._clients[cls]

    def group(self, org: str, app_id: str) -> GroupMetrics:
        """The series of a shared group; past :data:`MAX_GROUPS` groups, one overflow series."""
        key = (org, app_id)
        found = self._groups.get(key)
        if found is None:
            if len(self._groups) >= MAX_GROUPS:
                key = (OVERFLOW, OVERFLOW)
                found = self._groups.get(key)
            if found is None:
                found = self._groups[key] = GroupMetrics(self._families, *key)
        return found

    def dropped(self, reason: DropReason, messages: int = 1) -> None:
        """Count discarded messages: nothing is dropped without a trace."""
        self._drops_counted[reason] += messages

    def refused(self, reason: RefusalReason) -> None:
        """Count a refused CONNECT."""
        self._refusals[reason].inc()

    def limit(self, limit: Limit) -> None:
        """Count one hit of a limit (see :mod:`worker.platform.limits`)."""
        self._limits_counted[limit] += 1

    def _flush(self) -> None:
        """Before a scrape: what was counted as plain numbers goes to Prometheus."""
        for reason, count in self._drops_counted.items():
            if count:
                self._drops[reason].inc(count)
                self._drops_counted[reason] = 0
        for limit, count in self._limits_counted.items():
            if count:
                self._limits[limit].inc(count)
                self._limits_counted[limit] = 0
        for group in self._groups.values():
            group.flush()

    def redelivered(self, messages: int = 1) -> None:
        """Count QoS 1 messages handed to another group member after their member went."""
        self._families.redelivered.inc(messages)

    def watch(
        self,
        *,
        queued_bytes: Callable[[], float],
        sessions: Callable[[], float],
        retained: Callable[[], float],
    ) -> None:
        """Read these when ``/metrics`` is scraped: nothing of it runs per packet."""
        self._families.queued_bytes.set_function(queued_bytes)
        self._families.sessions.set_function(sessions)
        self._families.retained.set_function(retained)


# --- /metrics over HTTP --------------------------------------------------------------------


class MetricsServer:
    """``GET /metrics`` on the running loop, with the limits and answers of ``worker.web``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server = web.Server({"/metrics": self._metrics})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen; ``port`` 0 picks a free port (see :attr:`port`). OSError if it cannot."""
        await self._server.start(host, port)

    @property
    def port(self) -> int:
        """The port actually bound; RuntimeError before :meth:`start`."""
        return self._server.port

    async def close(self) -> None:
        """Stop listening; answers under way get a moment to finish (see worker.web)."""
        await self._server.close()

    async def _metrics(self) -> web.Response:
        return web.Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)
