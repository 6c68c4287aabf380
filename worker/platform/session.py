"""One client's session: its subscriptions, the QoS 1/2 window and the buffered messages.

A clean session lives as long as its connection. A durable one (clean session false, W20)
outlives it: its subscriptions stay in the router and keep buffering, at most
:data:`~worker.platform.router.BUFFER_SIZE` messages per subscription with the oldest dropped
first whatever the QoS (W21), until the client returns.

Delivery has one fast path: connected, not paused by the socket, nothing buffered, and room in
the in-flight window, so the message is encoded and handed to the connection's write buffer.
Anything else appends to the subscription's buffer; :meth:`Session.drain` empties the buffers
oldest first (by a per-session sequence number) when the socket drains or acks arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from worker.mqtt.encode import encode, encode_publish
from worker.mqtt.packets import Pubrel
from worker.platform.router import BUFFER_SIZE, Envelope, Router, Subscription

DRAIN_BATCH: Final = 512
"""Buffered messages sent per drain step, so one client's backlog cannot hog the loop."""


class Outlet(Protocol):
    """What a session writes to: its live connection."""

    #: the socket's write buffer is above its high-water mark
    paused: bool
    protocol_level: int

    def send(self, data: bytes) -> None:
        """Queue control-packet bytes for the socket."""
        ...

    def send_message(self, data: bytes) -> None:
        """Queue the bytes of one PUBLISH (counted as a written message)."""
        ...

    def request_drain(self) -> None:
        """Call :meth:`Session.drain` again after the next flush, if the socket allows."""
        ...


class Outgoing:
    """A QoS 1 or 2 PUBLISH sent to the client and not yet acknowledged."""

    __slots__ = ("payload", "qos", "released", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        #: QoS 2: PUBREC arrived and PUBREL was sent; waiting for PUBCOMP
        self.released = False


class Session:
    """Subscriptions and delivery state of one client ID (or one ``A:org:app`` connection)."""

    __slots__ = (
        "_next_id",
        "_seq",
        "buffer_size",
        "client_id",
        "dropped",
        "durable",
        "inflight",
        "outlet",
        "pending",
        "qos2_received",
        "router",
        "share",
        "subs",
        "window",
    )

    def __init__(
        self,
        client_id: str,
        router: Router,
        *,
        durable: bool,
        share: tuple[str, bool] | None = None,
        window: int = 1000,
        buffer_size: int = BUFFER_SIZE,
    ) -> None:
        self.client_id = client_id
        self.router = router
        self.durable = durable
        #: (app ID, has instance ID) for a scalable application's shared subscriptions
        self.share = share
        self.window = window
        self.buffer_size = buffer_size
        self.subs: dict[str, Subscription] = {}
        self.inflight: dict[int, Outgoing] = {}
        #: QoS 2 packet IDs received and not yet released by PUBREL (duplicates are not resent)
        self.qos2_received: set[int] = set()
        self.outlet: Outlet | None = None
        #: messages waiting in the subscriptions' buffers
        self.pending = 0
        #: messages dropped because a buffer was full
        self.dropped = 0
        self._seq = 0
        self._next_id = 1

    @property
    def online(self) -> bool:
        """A connection is attached."""
        return self.outlet is not None

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(
        self, topic_filter: str, internal: str, rewrite: Callable[[str], str], qos: int
    ) -> tuple[Subscription, bool]:
        """Add or update a subscription; True when retained messages should be sent for it."""
        existing = self.subs.get(topic_filter)
        if existing is not None:
            # MQTT-3.8.4-3: a repeated filter replaces the old subscription's QoS.
            existing.qos = qos
            return existing, existing.group is None
        sub = Subscription(self, topic_filter, internal, qos, rewrite)
        self.subs[topic_filter] = sub
        return sub, self.router.add(sub, self.share)

    def unsubscribe(self, topic_filter: str) -> bool:
        """Remove a subscription; False when there was none with that filter."""
        sub = self.subs.pop(topic_filter, None)
        if sub is None:
            return False
        self._retire(sub)
        return True

    def _retire(self, sub: Subscription) -> None:
        group = sub.group
        self.router.remove(sub)
        leftover = [msg for _, msg in sub.pending]
        self.pending -= len(leftover)
        sub.pending.clear()
        if group is not None and leftover:
            # The messages were this member's share; the rest of the group takes them over.
            self.router.hand_back(group, leftover)

    def end(self) -> None:
        """Drop every subscription: the session is over (clean session, or replaced)."""
        subs = list(self.subs.values())
        self.subs.clear()
        for sub in subs:
            self._retire(sub)
        self.inflight.clear()
        self.qos2_received.clear()

    # --- connection -----------------------------------------------------------------------------

    def attach(self, outlet: Outlet) -> None:
        """A connection takes this session: resend unacknowledged messages, then the buffers."""
        self.outlet = outlet
        level = outlet.protocol_level
        for packet_id, out in self.inflight.items():
            if out.released:
                outlet.send(_pubrel(packet_id, level))
            else:
                data = encode_publish(
                    out.topic, out.payload, out.qos, packet_id, dup=True, protocol_level=level
                )
                outlet.send_message(data)
        for sub in list(self.subs.values()):
            if sub.group is not None:
                self.router.flush_backlog(sub)
        self.drain()

    def detach(self) -> None:
        """The connection ended; a clean session ends with it."""
        self.outlet = None
        if not self.durable:
            self.end()

    # --- delivery -------------------------------------------------------------------------------

    def deliver(self, sub: Subscription, msg: Envelope) -> None:
        """Send ``msg`` to the client now if it can take it, else buffer it (W21)."""
        out = self.outlet
        qos = sub.qos if sub.qos < msg.qos else msg.qos
        if out is None or out.paused or self.pending or (qos and len(self.inflight) >= self.window):
            self._buffer(sub, msg)
        else:
            self._send(sub, msg, qos, out)

    def _send(self, sub: Subscription, msg: Envelope, qos: int, out: Outlet) -> None:
        topic = sub.rewrite(msg.topic)
        level = out.protocol_level
        if qos == 0:
            cache = msg.encoded
            if cache is None:
                cache = msg.encoded = {}
            data = cache.get((topic, level))
            if data is None:
                data = cache[topic, level] = encode_publish(
                    topic, msg.payload, 0, retain=msg.retain, protocol_level=level
                )
        else:
            packet_id = self._packet_id()
            self.inflight[packet_id] = Outgoing(topic, msg.payload, qos)
            data = encode_publish(
                topic, msg.payload, qos, packet_id, retain=msg.retain, protocol_level=level
            )
        out.send_message(data)

    def _buffer(self, sub: Subscription, msg: Envelope) -> None:
        pending = sub.pending
        if len(pending) >= self.buffer_size:
            pending.popleft()
            sub.dropped += 1
            self.dropped += 1
            self.pending -= 1
            self.router.dropped()
        self._seq += 1
        pending.append((self._seq, msg))
        self.pending += 1

    def drain(self) -> None:
        """Send buffered messages, oldest first, while the socket and the window allow."""
        out = self.outlet
        budget = DRAIN_BATCH
        while self.pending and out is not None and not out.paused:
            if not budget:
                out.request_drain()
                return
            sub = self._oldest()
            msg = sub.pending[0][1]
            qos = sub.qos if sub.qos < msg.qos else msg.qos
            if qos and len(self.inflight) >= self.window:
                # Keep the order: later messages wait behind this one for a free slot.
                return
            sub.pending.popleft()
            self.pending -= 1
            budget -= 1
            self._send(sub, msg, qos, out)

    def _oldest(self) -> Subscription:
        best: Subscription | None = None
        best_seq = 0
        for sub in self.subs.values():
            if sub.pending:
                seq = sub.pending[0][0]
                if best is None or seq < best_seq:
                    best, best_seq = sub, seq
        assert best is not None
        return best

    def _packet_id(self) -> int:
        packet_id = self._next_id
        inflight = self.inflight
        while packet_id in inflight:
            packet_id = packet_id % 0xFFFF + 1
        self._next_id = packet_id % 0xFFFF + 1
        return packet_id

    # --- acknowledgements from the client -------------------------------------------------------

    def on_puback(self, packet_id: int) -> None:
        """QoS 1 delivery done; unknown IDs are ignored (a late ack after a resend)."""
        out = self.inflight.get(packet_id)
        if out is not None and out.qos == 1:
            del self.inflight[packet_id]
            if self.pending:
                self.drain()

    def on_pubrec(self, packet_id: int) -> bytes:
        """QoS 2 step two: answer PUBREL (also for an unknown ID, so the client can finish)."""
        out = self.inflight.get(packet_id)
        if out is not None and out.qos == 2:
            out.released = True
        return _pubrel(packet_id, self.outlet.protocol_level if self.outlet else 4)

    def on_pubcomp(self, packet_id: int) -> None:
        """QoS 2 delivery done."""
        out = self.inflight.get(packet_id)
        if out is not None and out.released:
            del self.inflight[packet_id]
            if self.pending:
                self.drain()


def _pubrel(packet_id: int, level: int) -> bytes:
    return encode(Pubrel(packet_id), level)
