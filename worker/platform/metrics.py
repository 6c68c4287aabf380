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
    group.dispatched(n)                                # once per routed batch
    metrics.dropped(DropReason.QUEUE_FULL, n)
"""

from __future__ import annotations

import enum
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from worker import web
from worker.identity import ClientClass

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
    #: the receiving client went away before the message could be written
    CLIENT_GONE = "client_gone"
    #: a rate limit of the throttling profile (W42)
    THROTTLED = "throttled"


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
    """The series of one shared group (org + app ID); keep one per group."""

    __slots__ = ("_dispatched", "_members")

    def __init__(self, families: _Families, org: str, app_id: str) -> None:
        self._dispatched = families.dispatched.labels(org, app_id)
        self._members = families.members.labels(org, app_id)

    def dispatched(self, messages: int = 1) -> None:
        """Messages handed to one member of the group (call once per routed batch)."""
        self._dispatched.inc(messages)

    def members(self, count: int) -> None:
        """The group now has ``count`` subscribed members."""
        self._members.set(count)


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


class PlatformMetrics:
    """The platform's metrics on ``registry``; every child the hot path uses is pre-bound."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._families = _Families(registry)
        self._clients = {cls: ClientMetrics(self._families, cls) for cls in ClientClass}
        self._drops = {reason: self._families.dropped.labels(reason) for reason in DropReason}
        self._refusals = {reason: self._families.refused.labels(reason) for reason in RefusalReason}
        self._groups: dict[tuple[str, str], GroupMetrics] = {}

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
        self._drops[reason].inc(messages)

    def refused(self, reason: RefusalReason) -> None:
        """Count a refused CONNECT."""
        self._refusals[reason].inc()


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
