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
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from worker.errors import IdentityError
from worker.identity import QUICKSTART_ORG, ClientId, parse_client_id
from worker.mqtt import MQTT_5, Connect, Properties, Will
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

MAX_SUBSCRIPTIONS = 1000
"""Filters one session may hold; more are refused in the SUBACK [INF: AWS IoT allows 50]."""
SHARED_MAX_KEEPALIVE = 3600
"""W23: keepalive of ``A:org:app`` (no instance) is 1-3600 s; 0 or more becomes 3600."""


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
    ) -> None:
        self.authenticator = authenticator
        self.router = router
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
        self.stopping = False
        self._all_closed = asyncio.Event()

    # --- connection lifecycle ---------------------------------------------------------------

    def opened(self, conn: MqttConnection) -> None:
        """A socket was accepted."""
        self.connections.add(conn)

    def forget(self, conn: MqttConnection) -> None:
        """A socket is gone."""
        self.connections.discard(conn)
        if not self.connections:
            self._all_closed.set()

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

    def connack_properties(self, keepalive: int, requested: int) -> Properties:
        """What a v5 CONNACK tells the client (W23: the keepalive it must use)."""
        return Properties(
            server_keep_alive=keepalive if keepalive != requested else None,
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
            return self._new_session(cid, False, share), False
        old = self.live.get(cid)
        if old is not None:
            old.close(CloseCode.CLIENT_ID_REUSED, "a new connection uses this client ID")
        session = self.sessions.pop(cid, None)
        if session is not None and packet.clean_start:
            session.end()
            session = None
        present = session is not None
        if session is None:
            session = self._new_session(cid, durable, share)
        session.durable = durable
        if durable:
            self.sessions[cid] = session
        self.live[cid] = conn
        return session, present

    def _new_session(self, cid: str, durable: bool, share: tuple[str, bool] | None) -> Session:
        return Session(
            cid,
            self.router,
            durable=durable,
            share=share,
            window=self.max_inflight,
            buffer_size=self.router.buffer_size,
        )

    def connected(self, conn: MqttConnection) -> None:
        """The CONNACK is out: publish the retained Connect status message (W30)."""
        p, info = conn.principal, conn.info
        assert p is not None and info is not None
        payload = status_payload(Action.CONNECT, info, now=info.connect_time)
        conn.connect_status = payload
        if p.client.is_application:
            self._apps.setdefault(p.status_topic, []).append(conn)
        self._status(p.status_topic, payload, retain=not p.quickstart)

    def released(self, conn: MqttConnection, code: int, reason: str | None) -> None:
        """A connected client is gone: session, will, registry, Disconnect status (W30, W40)."""
        p, session = conn.principal, conn.session
        assert p is not None and session is not None
        session.detach()
        cid = p.client_id
        if not session.durable and self.sessions.get(cid) is session:
            del self.sessions[cid]
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
        """Per-read accounting (metrics are updated per read, never per message)."""
        if conn.metrics is not None:
            conn.metrics.received(messages, nbytes)
            for group in self.router.groups():
                group.report()

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
