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

import asyncio
import contextlib
import enum
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

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

_HEAD_LIMIT: Final = 8192
_READ_TIMEOUT: Final = 10.0


class MetricsServer:
    """A minimal HTTP/1.1 server for ``GET /metrics`` on the running loop (no threads).

    Each request gets one response and the connection is closed: scrapers open one
    connection per scrape, so keep-alive would buy nothing.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen; ``port`` 0 picks a free port (see :attr:`port`)."""
        # The reader's limit bounds the request head: past it, readuntil refuses with 431.
        self._server = await asyncio.start_server(self._serve, host, port, limit=_HEAD_LIMIT)

    @property
    def port(self) -> int:
        """The port actually bound."""
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and wait for the open connections to finish."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            response = self._respond(head)
        except asyncio.LimitOverrunError:
            response = _response("431 Request Header Fields Too Large", b"request head too large\n")
        except (asyncio.IncompleteReadError, TimeoutError):
            response = _response("400 Bad Request", b"incomplete request\n")
        except ConnectionError:
            response = b""
        with contextlib.suppress(ConnectionError):
            writer.write(response)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def _respond(self, head: bytes) -> bytes:
        method, _, rest = head.decode("latin-1").partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if path != "/metrics":
            return _response("404 Not Found", b"not found; metrics are at /metrics\n")
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"use GET\n", allow="GET, HEAD")
        body = generate_latest(self._registry)
        return _response("200 OK", body, content_type=CONTENT_TYPE_LATEST, head=method == "HEAD")


def _response(
    status: str,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    allow: str | None = None,
    head: bool = False,
) -> bytes:
    """A whole HTTP/1.1 response; for HEAD, the headers of the GET without its body."""
    lines = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow is not None:
        lines.append(f"Allow: {allow}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)
