"""The platform's shared state: who is connected, durable sessions, status messages.

Connections call in here at CONNECT (:meth:`Hub.admit`, :meth:`Hub.connected`), when a
CONNECT is refused (:meth:`Hub.failed`) and when they end (:meth:`Hub.released`). The hub
decides takeover (W19: a second connection with a unique client ID closes the first with 288;
``A:org:app`` connections coexist, W24), resumes durable sessions (W20) and publishes the
status messages with their retain rules (W30):

* devices and gateways: Connect and Disconnect are both retained;
* applications: Connect is retained; on Disconnect the retained message is cleared and the
  Disconnect is sent non-retained, except for close code 288, where it is retained. When other
  connections of the same app ID are still up, the retained message becomes the Connect of the
  newest of them instead of being cleared [INF: an app with instances left is still connected];
* quickstart: nothing is retained (D-APP: retained status is for non-quickstart devices);
* a FailedConnect is never retained.

Clearing updates the retained store only; no empty message is sent to live subscribers, so
consumers never see a status message that is not JSON [INF].

Limits (:mod:`worker.platform.limits`): offline durable sessions expire (MQTT 5: the client's
Session Expiry Interval, at most ``session_expiry``; 3.1.1: ``session_expiry``) and take their
retained status with them; past ``sessions`` the oldest offline session is evicted, and with
none offline a CONNECT is refused (server unavailable / 5.0 quota exceeded); past
``connecting`` sockets without a completed CONNECT, the oldest is closed. A publisher whose
message left an online subscriber more than half full is held (its socket not read) until the
subscriber catches up or ``backpressure_wait`` passes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from worker.errors import IdentityError
from worker.identity import QUICKSTART_ORG, ClientId, parse_client_id
from worker.mqtt import MQTT_5, Connect, Properties, Will
from worker.platform.limits import Limit, Limits
from worker.platform.logs import Throttle, clip
from worker.platform.memory import Trimmer
from worker.platform.metrics import DropReason, RefusalReason
from worker.platform.router import Envelope, Router
from worker.platform.rules import (
    MAX_PAYLOAD,
    Authenticator,
    Denied,
    Principal,
    authorize_connect,
    check_size,
    parse_identity,
    principal_for,
    publish_target,
)
from worker.platform.session import Session
from worker.platform.status import Action, CloseCode, gateway_notification, status_payload

if TYPE_CHECKING:
    from worker.platform.connection import MqttConnection
    from worker.platform.metrics import PlatformMetrics

log = logging.getLogger("worker.platform")

MAX_SUBSCRIPTIONS = 1000
"""Filters one session may hold; more are refused in the SUBACK [INF: AWS IoT allows 50]."""
SHARED_MAX_KEEPALIVE = 3600
"""W23: keepalive of ``A:org:app`` (no instance) is 1-3600 s; 0 or more becomes 3600."""
HOLD_CHECK = 0.02
"""Seconds between checks whether a held publisher may be read again."""
TURN_BUDGET = 750
"""Deliveries (a SUBSCRIBE filter counts as 30) all reads of one loop turn may cause before
the rest waits for the next turn: a few milliseconds of work, so a flood cannot stall the
loop. A new client's CONNACK waits about four turns (accept, transport, protocol, read), so
it is the turn's length that sets it. With 2,000 durable sessions reconnecting in a loop, the
99th percentile of a new client's CONNACK wait was 90 ms at 5000, about 61 ms at 1500, and 39
ms at 750 (turns of 7 ms at the 99th percentile instead of 12); the platform's QoS 1 message
rate did not change."""
SUBSCRIPTION_BYTES = 700
"""About what one subscription gives back when it goes (its objects and its trie entry)."""
SESSION_BYTES = 4096
"""About what an offline session gives back besides its queued messages (its objects)."""
NEVER_EXPIRES = 0xFFFFFFFF
"""MQTT 5 Session Expiry Interval meaning "never" (MQTT 5 3.1.2.11.2)."""


class Hub:
    """State shared by every connection of one platform."""

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        router: Router,
        max_qos: int = 2,
        max_payload: int = MAX_PAYLOAD,
        max_inflight: int = 1000,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        connect_timeout: float = 10.0,
        max_keepalive: int | None = None,
        write_buffer_high: int = 256 * 1024,
        metrics: PlatformMetrics | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.router = router
        router.turn_spent = self.turn_spent
        self.max_qos = max_qos
        self.max_payload = max_payload
        # Room for a full-size payload, the longest topic and v5 properties: anything larger
        # is refused by the reader before a byte of it is buffered, with close code 287.
        self.max_packet_size = max_payload + 0xFFFF + 4096
        self.max_inflight = max_inflight
        self.max_subscriptions = max_subscriptions
        self.connect_timeout = connect_timeout
        self.max_keepalive = max_keepalive
        self.write_buffer_high = write_buffer_high
        self.metrics = metrics
        self.connections: set[MqttConnection] = set()
        #: the live connection of each unique client ID (not ``A:org:app`` without instance)
        self.live: dict[str, MqttConnection] = {}
        #: durable sessions by client ID, whether their client is connected or not
        self.sessions: dict[str, Session] = {}
        #: live application connections by internal status topic, oldest first
        self._apps: dict[str, list[MqttConnection]] = {}
        self.limits = limits or Limits()
        #: offline durable sessions, the longest offline first, with their status topics
        self.offline: dict[str, tuple[Session, str]] = {}
        #: connections with a session now
        self.attached = 0
        #: sockets whose CONNECT is not accepted yet, oldest first
        self.connecting: dict[MqttConnection, None] = {}
        #: publishers held by back-pressure: connection -> (session waited for, give up at)
        self.held: dict[MqttConnection, tuple[Session, float]] = {}
        self._hold_timer: asyncio.TimerHandle | None = None
        #: gives the heap back to the system after a burst of closed sockets
        self.trimmer = Trimmer(compact=router.compact_retained)
        #: the router's delivery count when this loop turn's work began (None: not begun)
        self._turn_start: int | None = None
        #: log lines about closing and refusing clients: one per kind and 10 s, then a count
        self.closing_log = Throttle(log)
        self.refusal_log = Throttle(log)
        self.stopping = False
        self._all_closed = asyncio.Event()

    # --- connection lifecycle ---------------------------------------------------------------

    def opened(self, conn: MqttConnection) -> None:
        """A socket was accepted; past ``limits.connecting`` the oldest still connecting goes."""
        self.connections.add(conn)
        self.connecting[conn] = None
        if len(self.connecting) > self.limits.connecting:
            oldest = next(iter(self.connecting))
            self.limit(Limit.CONNECTING)
            oldest.close(CloseCode.NO_DATA, "too many connections without CONNECT")
            self.connecting.pop(oldest, None)

    def forget(self, conn: MqttConnection) -> None:
        """A socket is gone."""
        self.connections.discard(conn)
        self.connecting.pop(conn, None)
        self.held.pop(conn, None)
        self.trimmer.closed()
        if not self.connections:
            self._all_closed.set()

    def turn_spent(self) -> bool:
        """Whether this loop turn's work budget (:data:`TURN_BUDGET` deliveries) is spent.

        The first call of a turn marks where it began and schedules the reset, which runs
        first in the next turn, before that turn's reads.
        """
        fanout = self.router.fanout
        if self._turn_start is None:
            self._turn_start = fanout
            asyncio.get_running_loop().call_soon(self._new_turn)
        return fanout - self._turn_start >= TURN_BUDGET

    def _new_turn(self) -> None:
        self._turn_start = None

    def limit(self, limit: Limit) -> None:
        """Count one hit of a limit."""
        if self.metrics is not None:
            self.metrics.limit(limit)

    def admit(self, conn: MqttConnection, packet: Connect) -> tuple[Session, bool, int]:
        """Check a CONNECT and give it a session: (session, session present, keepalive)."""
        client = parse_identity(packet.client_id)
        principal = authorize_connect(
            client,
            packet.username,
            packet.password,
            clean=packet.clean_start,
            secure=conn.secure,
            authenticator=self.authenticator,
        )
        will = self._will(principal, packet.will)
        conn.principal = principal
        conn.will = will
        session, present = self._session(conn, principal, packet)
        # MQTT 5 3.1.2.11.3: never more unacknowledged QoS 1/2 messages than the client allows.
        session.window = min(self.max_inflight, packet.properties.receive_maximum or 0xFFFF)
        self.connecting.pop(conn, None)
        if self.metrics is not None:
            conn.metrics = self.metrics.client(client.cls)
            conn.metrics.connected()
        return session, present, self._keepalive(client, packet.keep_alive)

    def _will(self, principal: Principal, will: Will | None) -> Envelope | None:
        if will is None:
            return None
        if will.qos > self.max_qos:
            raise Denied(CloseCode.MAX_QOS, f"will QoS {will.qos} above {self.max_qos}")
        internal = publish_target(principal, will.topic)
        check_size(will.topic, len(will.payload), self.max_payload)
        return Envelope(internal, will.payload, will.qos)

    def _keepalive(self, client: ClientId, requested: int) -> int:
        cap = self.max_keepalive
        if client.is_shared and client.qualifier is None:
            cap = SHARED_MAX_KEEPALIVE
        if cap and (requested == 0 or requested > cap):
            return cap
        return requested

    def connack_properties(self, keepalive: int, requested: int, packet: Connect) -> Properties:
        """What a v5 CONNACK tells the client (W23: the keepalive it must use; the session
        expiry it gets when it asked for more than ``limits.session_expiry``)."""
        asked = packet.properties.session_expiry_interval or 0
        granted = self._expiry(packet)
        return Properties(
            server_keep_alive=keepalive if keepalive != requested else None,
            session_expiry_interval=granted if granted != asked else None,
            maximum_qos=self.max_qos if self.max_qos < 2 else None,
            shared_subscription_available=0,
            subscription_identifier_available=0,
        )

    def _session(
        self, conn: MqttConnection, principal: Principal, packet: Connect
    ) -> tuple[Session, bool]:
        client, cid = principal.client, principal.client_id
        if packet.protocol_level == MQTT_5:
            durable = bool(packet.properties.session_expiry_interval)
        else:
            durable = not packet.clean_start
        share = (client.name, client.qualifier is not None) if client.is_shared else None
        if client.is_shared and client.qualifier is None:
            # W24: every instance uses this same ID; none takes another over.
            self._make_room(cid)
            return self._new_session(cid, False, share), False
        old = self.live.get(cid)
        if old is not None:
            old.close(CloseCode.CLIENT_ID_REUSED, "a new connection uses this client ID")
        session = self.sessions.pop(cid, None)
        self.offline.pop(cid, None)
        if session is not None and packet.clean_start:
            session.end()
            session = None
        present = session is not None
        if session is None:
            self._make_room(cid)
            session = self._new_session(cid, durable, share)
        session.durable = durable
        session.expiry = self._expiry(packet) if durable else 0
        if durable:
            self.sessions[cid] = session
        self.live[cid] = conn
        return session, present

    def _expiry(self, packet: Connect) -> int:
        """Seconds the session outlives its connection: MQTT 5 asks, at most the limit."""
        cap = self.limits.session_expiry
        if packet.protocol_level != MQTT_5:
            return 0 if packet.clean_start else cap
        asked = packet.properties.session_expiry_interval or 0
        return cap if asked == NEVER_EXPIRES else min(asked, cap)

    def _make_room(self, cid: str) -> None:
        """Before a new session: past ``limits.sessions``, evict the oldest offline one, or
        refuse the CONNECT when every session is connected."""
        if self.attached + len(self.offline) < self.limits.sessions:
            return
        self.limit(Limit.SESSIONS)
        if not self.offline:
            raise Denied(CloseCode.SERVER_CLOSED, f"no room for a new session ({cid!r})")
        oldest = next(iter(self.offline))
        self._expire(oldest, self.offline[oldest][0])

    def _new_session(self, cid: str, durable: bool, share: tuple[str, bool] | None) -> Session:
        return Session(
            cid,
            self.router,
            durable=durable,
            share=share,
            window=self.max_inflight,
            buffer_size=self.router.buffer_size,
            max_bytes=self.limits.session_queue_bytes,
        )

    def _went_offline(self, cid: str, session: Session, status_topic: str) -> None:
        """A durable session lost its client: keep it until it expires (or is evicted)."""
        self.offline[cid] = (session, status_topic)
        loop = asyncio.get_running_loop()
        session.expiry_timer = loop.call_later(session.expiry, self._expired, cid, session)

    def _expired(self, cid: str, session: Session) -> None:
        session.expiry_timer = None
        self.limit(Limit.SESSION_EXPIRY)
        self._expire(cid, session)

    def _expire(self, cid: str, session: Session) -> None:
        """End an offline session: its messages are counted, its retained status goes."""
        entry = self.offline.pop(cid, None)
        if self.sessions.get(cid) is session:
            del self.sessions[cid]
        # What an ended session held counts toward the next heap trim, as a closed socket's
        # does: 2,000 offline sessions expiring together left 8 MB of freed heap untrimmed.
        self.trimmer.closed(SESSION_BYTES + session.queued_bytes)
        session.end(DropReason.SESSION_EXPIRED)
        if entry is not None:
            self.router.forget_retained(entry[1])

    def connected(self, conn: MqttConnection) -> None:
        """The CONNACK is out: publish the retained Connect status message (W30)."""
        p, info = conn.principal, conn.info
        assert p is not None and info is not None
        payload = status_payload(Action.CONNECT, info, now=info.connect_time)
        conn.connect_status = payload
        self.attached += 1
        if p.client.is_application:
            self._apps.setdefault(p.status_topic, []).append(conn)
        self._status(p.status_topic, payload, retain=not p.quickstart)

    def released(self, conn: MqttConnection, code: int, reason: str | None) -> None:
        """A connected client is gone: session, will, registry, Disconnect status (W30, W40)."""
        p, session = conn.principal, conn.session
        assert p is not None and session is not None
        self.attached -= 1
        self.held.pop(conn, None)
        if not session.durable:
            # its subscriptions go with it: their memory counts toward the next heap trim
            self.trimmer.closed(SUBSCRIPTION_BYTES * len(session.subs))
        session.detach()
        cid = p.client_id
        if not session.durable and self.sessions.get(cid) is session:
            del self.sessions[cid]
        if session.durable and self.sessions.get(cid) is session and not self.stopping:
            self._went_offline(cid, session, p.status_topic)
        if self.live.get(cid) is conn:
            del self.live[cid]
        if conn.metrics is not None:
            conn.metrics.disconnected()
        if conn.will is not None and code != CloseCode.NORMAL:
            self.route(conn.will)
            conn.will = None
        if self.stopping:
            return
        assert conn.info is not None
        payload = status_payload(Action.DISCONNECT, conn.info, code, conn.counters)
        if p.client.is_application:
            self._app_gone(conn, p, payload, code)
        else:
            self._status(p.status_topic, payload, retain=not p.quickstart)

    def _app_gone(self, conn: MqttConnection, p: Principal, payload: bytes, code: int) -> None:
        topic = p.status_topic
        others = self._apps.get(topic, [])
        if conn in others:
            others.remove(conn)
        if not others:
            self._apps.pop(topic, None)
        if code == CloseCode.CLIENT_ID_REUSED or p.quickstart:
            self._status(topic, payload, retain=not p.quickstart)
            return
        still = others[-1].connect_status if others else b""
        self.router.retain(Envelope(topic, still, 0, retain=True))
        self._status(topic, payload, retain=False)

    def failed(self, conn: MqttConnection, packet: Connect, exc: Denied) -> None:
        """A CONNECT was refused: non-retained FailedConnect when the client ID is valid (W30)."""
        try:
            client: ClientId | None = parse_client_id(packet.client_id)
        except IdentityError:
            client = None
        if self.metrics is not None:
            self.metrics.refused(_refusal_reason(client))
        if client is None:
            return  # no status topic exists for an ID outside every class
        assert conn.info is not None
        payload = status_payload(Action.FAILED_CONNECT, conn.info, exc.close_code)
        self._status(principal_for(client).status_topic, payload, retain=False)

    def _status(self, topic: str, payload: bytes, *, retain: bool) -> None:
        self.router.publish(Envelope(topic, payload, 0))
        if retain:
            self.router.retain(Envelope(topic, payload, 0, retain=True))

    # --- traffic ------------------------------------------------------------------------------

    def route(self, msg: Envelope) -> None:
        """Hand a client's message to the router."""
        if not self.router.publish(msg) and self.metrics is not None:
            self.metrics.dropped(DropReason.NO_SUBSCRIBERS)

    def hold(self, conn: MqttConnection, session: Session) -> None:
        """Back-pressure: stop reading ``conn`` until ``session`` catches up (bounded wait).

        A client is never held for its own session (its acks arrive on the socket that
        would not be read), nor while the wait is 0.
        """
        wait = self.limits.backpressure_wait
        if conn.session is session or not wait or conn in self.held or conn.closed:
            return
        loop = asyncio.get_running_loop()
        conn.hold()
        self.held[conn] = (session, loop.time() + wait)
        if self._hold_timer is None:
            self._hold_timer = loop.call_later(HOLD_CHECK, self._check_held)

    def _check_held(self) -> None:
        """Read held publishers again once their subscriber caught up, or gave up on."""
        self._hold_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn, (session, until) in list(self.held.items()):
            if session.behind and not session.stuck and now < until:
                continue
            if session.behind and not session.stuck:
                # The subscriber did not catch up in time: stop waiting for it; what does not
                # fit from now on is dropped, counted and (MQTT 5) reported to the publisher.
                session.stuck = True
                self.limit(Limit.BACKPRESSURE)
                log.warning(
                    "subscriber %s fell behind for %g s; its publishers are read again",
                    clip(session.client_id), self.limits.backpressure_wait,
                )  # fmt: skip
            del self.held[conn]
            conn.release()  # may hold it again, behind another subscriber
        if self.held and self._hold_timer is None:
            self._hold_timer = loop.call_later(HOLD_CHECK, self._check_held)

    def refused_message(self, exc: Denied) -> None:
        """Count a client's message the platform would not route (W17, W37)."""
        if self.metrics is not None:
            self.metrics.dropped(_DROP_REASONS.get(exc.close_code, DropReason.NOT_AUTHORIZED))

    def notify_gateway(self, p: Principal, request: str, topic: str, exc: Denied) -> None:
        """A gateway's refused request goes to its ``notify`` topic; it stays connected (W39)."""
        payload = gateway_notification(
            request,
            topic,
            p.client_id,
            int(exc.close_code),
            str(exc),
            device_type=p.client.name,
            device_id=p.client.qualifier,
        )
        self.router.publish(Envelope(p.own_prefix + "notify", payload, 0))

    def after_read(self, conn: MqttConnection, messages: int, nbytes: int) -> None:
        """Per-read accounting (metrics are updated per read, never per message; the groups'
        dispatch counts at scrape time)."""
        if conn.metrics is not None:
            conn.metrics.received(messages, nbytes)

    def after_write(self, conn: MqttConnection, messages: int, nbytes: int) -> None:
        """Per-write accounting."""
        if conn.metrics is not None:
            conn.metrics.sent(messages, nbytes)

    # --- administration -----------------------------------------------------------------------

    def kick(self, client_id: str) -> int:
        """Close every connection using ``client_id`` with close code 94 (W40); how many."""
        victims = [
            c for c in self.connections if c.principal and c.principal.client_id == client_id
        ]
        for conn in victims:
            conn.close(CloseCode.ADMIN, "closed by the administrator")
        return len(victims)

    async def shutdown(self, grace: float) -> None:
        """Close every connection (93, no status messages) and wait until their sockets are gone."""
        self.stopping = True
        self.trimmer.cancel()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        for session, _topic in list(self.offline.values()):
            if session.expiry_timer is not None:
                session.expiry_timer.cancel()
                session.expiry_timer = None
        for conn in list(self.connections):
            conn.close(CloseCode.SERVER_SHUTDOWN, "the platform is stopping")
        if not self.connections:
            return
        self._all_closed.clear()
        try:
            async with asyncio.timeout(grace):
                await self._all_closed.wait()
        except TimeoutError:
            for conn in list(self.connections):
                conn.abort()


_DROP_REASONS = {
    CloseCode.MESSAGE_TOO_LARGE: DropReason.TOO_LARGE,
    CloseCode.TOPIC_NOT_VALID: DropReason.TOPIC_NOT_VALID,
    CloseCode.DATA_NOT_VALID: DropReason.TOPIC_NOT_VALID,
}


def _refusal_reason(client: ClientId | None) -> RefusalReason:
    if client is None:
        return RefusalReason.CLIENT_ID_NOT_VALID
    if client.org == QUICKSTART_ORG:
        return RefusalReason.QUICKSTART
    return RefusalReason.NOT_AUTHORIZED
