"""One client's session: its subscriptions, the QoS 1/2 window and the buffered messages.

A clean session lives as long as its connection. A durable one (clean session false, W20)
outlives it: its subscriptions stay in the router and keep buffering until the client returns
or the session expires (the hub's timer). Buffers are bounded three ways
(:mod:`worker.platform.limits`): :data:`~worker.platform.router.BUFFER_SIZE` messages per
subscription, ``session_queue_bytes`` per session and ``queued_bytes`` in the whole platform.
At a bound the oldest QoS 0 messages of the subscription go first (W21); a QoS 1 or 2 message
is never pushed out by a newer one: the newer one is refused, counted, and its publisher told
in its MQTT 5 PUBACK. An online session that falls behind asks for back-pressure
(``router.pressure``) before it gets there.

When a session ends, nothing it held is lost silently: the QoS 1 messages a shared group's
member had in flight go back to the group flagged DUP, its buffered messages go to the other
members, and what no one can take is counted (``client_gone``, ``session_expired``).

Delivery has one fast path: connected, not paused by the socket, nothing buffered, and room in
the in-flight window, so the message is encoded and handed to the connection's write buffer.
Anything else appends to the subscription's buffer; :meth:`Session.drain` empties the buffers
oldest first (by a per-session sequence number) when the socket drains or acks arrive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from worker.mqtt import MQTT_5, NO_PROPERTIES, Properties
from worker.mqtt.encode import encode
from worker.mqtt.packets import Pubrel
from worker.platform.encoded import publish_bytes
from worker.platform.limits import MIB, Limit, entry_size
from worker.platform.metrics import DropReason
from worker.platform.router import BUFFER_SIZE, Envelope, Router, SharedGroup, Subscription

DRAIN_BATCH: Final = 512
"""Buffered messages sent per drain step, so one client's backlog cannot hog the loop."""
END_BATCH: Final = 100
"""Subscriptions an ending session takes out of the router at once; the rest in later turns."""
END_COST: Final = 10
"""Deliveries one subscription leaving counts as, against the loop turn's work budget."""


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
    """A QoS 1 or 2 PUBLISH sent to the client and not yet acknowledged.

    It keeps the subscription rather than the rewritten topic: thousands of these wait for
    every client that disconnected without acknowledging, and a topic string each would
    double what they cost. Its bytes count against the limits until it is acknowledged.
    """

    __slots__ = ("group", "msg", "qos", "released", "sub")

    def __init__(self, sub: Subscription, msg: Envelope, qos: int) -> None:
        self.sub = sub
        self.msg = msg
        self.qos = qos
        #: the shared group it was dispatched through: it goes back there if the client goes
        self.group = sub.group
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
        "ended",
        "expiry",
        "expiry_timer",
        "inflight",
        "max_bytes",
        "outlet",
        "pending",
        "qos2_received",
        "queued_bytes",
        "resend",
        "router",
        "share",
        "stuck",
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
        max_bytes: int = 4 * MIB,
    ) -> None:
        self.client_id = client_id
        self.router = router
        self.durable = durable
        #: (app ID, has instance ID) for a scalable application's shared subscriptions
        self.share = share
        #: unacknowledged QoS 1/2 messages allowed (MQTT 5: at most the Receive Maximum)
        self.window = window
        self.buffer_size = buffer_size
        self.max_bytes = max_bytes
        self.subs: dict[str, Subscription] = {}
        self.inflight: dict[int, Outgoing] = {}
        #: QoS 2 packet IDs received and not yet released by PUBREL (duplicates are not resent)
        self.qos2_received: set[int] = set()
        self.outlet: Outlet | None = None
        #: messages waiting in the subscriptions' buffers, and their bytes (limits.entry_size)
        self.pending = 0
        self.queued_bytes = 0
        #: messages dropped because a buffer was full
        self.dropped = 0
        #: seconds this session outlives its connection (set by the hub)
        self.expiry = 0
        self.expiry_timer: asyncio.TimerHandle | None = None
        #: held publishers gave up waiting for it: no back-pressure until it catches up
        self.stuck = False
        #: why the session ended (its last subscriptions may still be leaving the router)
        self.ended: DropReason | None = None
        #: packet IDs of unacknowledged messages a new connection has still to be sent
        self.resend: deque[int] | None = None
        self._seq = 0
        self._next_id = 1

    @property
    def online(self) -> bool:
        """A connection is attached."""
        return self.outlet is not None

    @property
    def behind(self) -> bool:
        """Online and more than half full: publishers should wait for it."""
        return self.outlet is not None and (
            2 * self.pending > self.buffer_size or 2 * self.queued_bytes > self.max_bytes
        )

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
        group = sub.group
        self.router.remove(sub)
        self._pass_on(group, self._empty(sub), DropReason.CLIENT_GONE)
        return True

    def _empty(self, sub: Subscription) -> list[Envelope]:
        """Take every message out of ``sub``'s buffer."""
        leftover = []
        while sub.pending:
            leftover.append(self._pop(sub))
        return leftover

    def _pass_on(
        self, group: SharedGroup | None, messages: list[Envelope], reason: DropReason
    ) -> None:
        """A member's share goes to the rest of its group; anyone else's is dropped, counted."""
        if not messages:
            return
        if group is not None:
            self.router.hand_back(group, messages, redelivered=False)
        else:
            self.router.dropped(reason, len(messages))

    def end(self, reason: DropReason = DropReason.CLIENT_GONE) -> None:
        """Drop every subscription: the session is over (clean session, replaced, expired).

        The subscriptions leave the router first, so no message comes back to this session;
        then the QoS 1 messages in flight go back to their groups (DUP), then the buffers.
        Past :data:`END_BATCH` subscriptions, or once the loop turn's work budget is spent,
        the rest leave in later turns, under that budget: 100 applications of 1,000 filters
        each leaving at once took 400 ms in one turn. Until then the session is ``ended``:
        offline, so no group picks it, and what still reaches it is dropped and counted
        (``reason``).
        """
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None
        self.ended = reason
        subs = list(self.subs.values())
        self.subs.clear()
        now = 0 if self.router.turn_spent() else min(len(subs), END_BATCH)
        self.router.fanout += END_COST * now
        leftovers = self._leave(subs[:now])
        self._return_inflight(reason)
        for group, messages in leftovers:
            self._pass_on(group, messages, reason)
        self.qos2_received.clear()
        if len(subs) > now:
            asyncio.get_running_loop().call_soon(self._leave_later, subs[now:], reason)

    def _leave(self, subs: list[Subscription]) -> list[tuple[SharedGroup | None, list[Envelope]]]:
        """Take ``subs`` out of the router; what each had buffered, with its group."""
        leftovers = []
        for sub in subs:
            group = sub.group
            self.router.remove(sub)
            leftovers.append((group, self._empty(sub)))
        return leftovers

    def _leave_later(self, subs: list[Subscription], reason: DropReason) -> None:
        """The rest of an ended session's subscriptions leave, while the turn's budget lasts."""
        router = self.router
        while subs and not router.turn_spent():
            batch, subs = subs[:END_BATCH], subs[END_BATCH:]
            router.fanout += END_COST * len(batch)
            for group, messages in self._leave(batch):
                self._pass_on(group, messages, reason)
        if subs:
            asyncio.get_running_loop().call_soon(self._leave_later, subs, reason)

    def _return_inflight(self, reason: DropReason) -> None:
        inflight, self.inflight = self.inflight, {}
        back: dict[SharedGroup, list[Envelope]] = {}
        lost = 0
        for out in inflight.values():
            self._count_bytes(-entry_size(out.msg))
            # QoS 2 stays with its member (S5); a plain subscriber's message has no one else.
            if out.group is not None and out.qos == 1:
                back.setdefault(out.group, []).append(out.msg.redelivery())
            else:
                lost += 1
        self.router.dropped(reason, lost)
        for group, messages in back.items():
            self.router.hand_back(group, messages, redelivered=True)

    # --- connection -----------------------------------------------------------------------------

    def attach(self, outlet: Outlet) -> None:
        """A connection takes this session: resend unacknowledged messages, then the buffers.

        The resending is done by :meth:`drain`, in steps under the loop turn's work budget:
        a thousand durable sessions reconnecting at once with a full window each would
        otherwise encode a million messages in one turn, and every other client would wait.
        """
        if self.expiry_timer is not None:
            self.expiry_timer.cancel()
            self.expiry_timer = None
        self.outlet = outlet
        self.resend = deque(self.inflight) if self.inflight else None
        for sub in list(self.subs.values()):
            if sub.group is not None:
                self.router.flush_backlog(sub)
        self.drain()

    def detach(self) -> None:
        """The connection ended; a clean session ends with it."""
        self.outlet = None
        self.resend = None  # the next connection resends whatever is still unacknowledged
        if not self.durable:
            self.end()

    # --- delivery -------------------------------------------------------------------------------

    def deliver(self, sub: Subscription, msg: Envelope) -> None:
        """Send ``msg`` to the client now if it can take it, else buffer it (W21)."""
        out = self.outlet
        qos = sub.qos if sub.qos < msg.qos else msg.qos
        if (
            out is None
            or out.paused
            or self.pending
            or self.resend
            or (qos and (len(self.inflight) >= self.window or self._full(msg)))
        ):
            self._buffer(sub, msg, qos)
        else:
            self._send(sub, msg, qos, out)

    def _full(self, msg: Envelope) -> bool:
        """Whether one more unacknowledged ``msg`` would break a byte limit."""
        size = msg.size
        return (
            self.queued_bytes + size > self.max_bytes
            or self.router.queued_bytes + size > self.router.max_queued_bytes
        )

    def _send(self, sub: Subscription, msg: Envelope, qos: int, out: Outlet) -> None:
        left = None
        if msg.expires is not None:
            left = msg.expires - time.monotonic()
            if left <= 0:
                self.router.dropped(DropReason.EXPIRED)
                return
        topic = sub.rewrite(msg.topic)
        level = out.protocol_level
        props = _forwarded(msg, level, left)
        packet_id = None
        if qos:
            packet_id = self._packet_id()
            self.inflight[packet_id] = Outgoing(sub, msg, qos)
            self._count_bytes(entry_size(msg))
        dup = msg.dup and qos > 0
        cacheable = left is None
        data = publish_bytes(msg, topic, level, qos, packet_id, props, dup=dup, cacheable=cacheable)
        out.send_message(data)

    def _buffer(self, sub: Subscription, msg: Envelope, qos: int) -> None:
        if self.ended is not None:
            self.router.dropped(self.ended)  # a subscription that has not left yet
            return
        size = msg.size
        pending = sub.pending
        router = self.router
        limit = self._over(len(pending) if pending else 0, size)
        # W21: the oldest QoS 0 messages make room; a QoS 1/2 one is never pushed out.
        while limit is not None and pending and min(sub.qos, pending[0].qos) == 0:
            self._pop(sub)
            self._count_drop(sub, limit)
            router.dropped(DropReason.QUEUE_FULL)
            limit = self._over(len(pending), size)
        if limit is not None:
            sub.dropped += 1
            self.dropped += 1
            router.refuse(limit)
            return
        if pending is None:
            pending = sub.pending = deque()
            sub.sequence = deque()
        assert sub.sequence is not None
        self._seq += 1
        pending.append(msg)
        sub.sequence.append(self._seq)
        self.pending += 1
        self._count_bytes(size)
        if not self.stuck and self.behind:
            router.pressure = self

    def _over(self, queued: int, size: int) -> Limit | None:
        """The limit that one more message of ``size`` bytes would break, if any."""
        if queued >= self.buffer_size:
            return Limit.SUBSCRIPTION_MESSAGES
        if self.queued_bytes + size > self.max_bytes:
            return Limit.SESSION_QUEUE_BYTES
        if self.router.queued_bytes + size > self.router.room(online=self.outlet is not None):
            return Limit.QUEUED_BYTES
        return None

    def _count_drop(self, sub: Subscription, limit: Limit) -> None:
        sub.dropped += 1
        self.dropped += 1
        self.router.limit(limit)

    def _pop(self, sub: Subscription) -> Envelope:
        assert sub.pending is not None and sub.sequence is not None
        msg = sub.pending.popleft()
        sub.sequence.popleft()
        self.pending -= 1
        self._count_bytes(-entry_size(msg))
        return msg

    def _count_bytes(self, size: int) -> None:
        """Queued and unacknowledged messages both count against the byte limits."""
        self.queued_bytes += size
        self.router.queued_bytes += size

    @property
    def waiting(self) -> bool:
        """Messages wait to be sent: buffered, or unacknowledged ones to resend."""
        return bool(self.pending or self.resend)

    def drain(self) -> None:
        """Resend what a new connection has not seen, then send buffered messages oldest
        first, while the socket and the window allow: at most :data:`DRAIN_BATCH` at a time
        and none once the loop turn's work budget is spent (each counts as a delivery)."""
        out = self.outlet
        if out is None:
            return
        router = self.router
        budget = self._resend(out, DRAIN_BATCH) if self.resend else DRAIN_BATCH
        if self.resend:
            out.request_drain()
            return
        while self.pending and not out.paused:
            if not budget or router.turn_spent():
                out.request_drain()
                return
            sub = self._oldest()
            assert sub.pending is not None
            msg = sub.pending[0]
            qos = sub.qos if sub.qos < msg.qos else msg.qos
            if qos and len(self.inflight) >= self.window:
                # Keep the order: later messages wait behind this one for a free slot.
                break
            self._pop(sub)
            budget -= 1
            router.fanout += 1
            self._send(sub, msg, qos, out)
        if self.stuck and not self.behind:
            self.stuck = False

    def _resend(self, out: Outlet, budget: int) -> int:
        """Resend unacknowledged messages flagged DUP (PUBREL for QoS 2 ones past PUBREC),
        in packet ID order, within ``budget``; what is left of it."""
        resend, router, level = self.resend, self.router, out.protocol_level
        assert resend is not None
        while resend and budget and not router.turn_spent():
            packet_id = resend.popleft()
            sent = self.inflight.get(packet_id)
            if sent is None:
                continue  # acknowledged meanwhile
            budget -= 1
            router.fanout += 1
            if sent.released:
                out.send(_pubrel(packet_id, level))
                continue
            msg = sent.msg
            props = _forwarded(msg, level, None)
            data = publish_bytes(
                msg, sent.sub.rewrite(msg.topic), level, sent.qos, packet_id, props, dup=True
            )
            out.send_message(data)
        if not resend:
            self.resend = None
        return budget

    def _oldest(self) -> Subscription:
        subs = self.subs
        if len(subs) == 1:
            return next(iter(subs.values()))
        best: Subscription | None = None
        best_seq = 0
        for sub in subs.values():
            if sub.sequence:
                seq = sub.sequence[0]
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
            self._count_bytes(-entry_size(out.msg))
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
            self._count_bytes(-entry_size(out.msg))
            if self.pending:
                self.drain()


def _forwarded(msg: Envelope, level: int, left: float | None) -> Properties:
    """The publisher's MQTT 5 properties for a v5 subscriber, with the expiry that is left;
    a 3.1.1 subscriber gets the message without them."""
    if level != MQTT_5 or msg.properties is NO_PROPERTIES:
        return NO_PROPERTIES
    if left is None:
        return msg.properties
    return dataclasses.replace(msg.properties, message_expiry_interval=max(1, math.ceil(left)))


def _pubrel(packet_id: int, level: int) -> bytes:
    return encode(Pubrel(packet_id), level)
