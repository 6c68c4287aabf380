"""One client connection: the read loop that glues the codec, the session and the router.

:class:`MqttConnection` is an ``asyncio.Protocol``. Each read is parsed in one call (the
codec returns every complete packet) and handled synchronously; no task is created per
message or per connection. Writes are coalesced: packets queue in a list and one
``transport.write`` per loop iteration sends them all. The transport's ``pause_writing`` marks
the connection paused, so new messages wait in the session's bounded buffers (a slow
subscriber never stalls the publisher or anyone else) and flow again on ``resume_writing``.

It needs only an asyncio transport (``write``, ``close``, ``get_extra_info``, flow-control
callbacks), so TLS and WebSocket listeners reuse it unchanged: a WebSocket layer creates one
and hands it a transport that frames what it writes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from worker.errors import PacketTooLarge, ProtocolError
from worker.mqtt import (
    MQTT_5,
    NO_PROPERTIES,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolVersion,
    encode,
    encode_puback,
)
from worker.platform.router import Message
from worker.platform.rules import Denied, Principal, check_size, publish_target, subscribe_target
from worker.platform.session import Session
from worker.platform.status import (
    REASONS,
    CloseCode,
    ConnectionInfo,
    Counters,
    protocol_name,
    timestamp,
)

if TYPE_CHECKING:
    from worker.platform.hub import Hub
    from worker.platform.metrics import ClientMetrics

log = logging.getLogger("worker.platform")

_PINGRESP: Final = b"\xd0\x00"
_ROUTE_CACHE: Final = 1024
#: MQTT 5 reason codes for the server's DISCONNECT, by close code.
_V5_DISCONNECT: Final[dict[int, int]] = {
    CloseCode.KEEPALIVE_TIMEOUT: 0x8D,
    CloseCode.NOT_AUTHORIZED: 0x87,
    CloseCode.TOPIC_NOT_VALID: 0x90,
    CloseCode.MESSAGE_TOO_LARGE: 0x95,
    CloseCode.CLIENT_ID_REUSED: 0x8E,
    CloseCode.MAX_QOS: 0x9B,
    CloseCode.DATA_NOT_VALID: 0x81,
    CloseCode.ADMIN: 0x98,
    CloseCode.SERVER_SHUTDOWN: 0x8B,
}


class MqttConnection(asyncio.Protocol):
    """The server side of one MQTT connection (any transport: TCP, TLS, WebSocket)."""

    def __init__(self, hub: Hub, *, secure: bool = False, websocket: bool = False) -> None:
        self.hub = hub
        self.secure = secure
        self.websocket = websocket
        self.reader = PacketReader(hub.max_packet_size)
        self.protocol_level = 4
        self.paused = False
        self.closed = False
        self.close_code: int | None = None
        self.counters = Counters()
        self.session: Session | None = None
        self.principal: Principal | None = None
        self.info: ConnectionInfo | None = None
        self.will: Message | None = None
        #: the retained Connect status payload of this connection (W30)
        self.connect_status = b""
        self.metrics: ClientMetrics | None = None
        self.peer = "unknown"
        self.local_port = 0
        self.transport: asyncio.BaseTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._out_msgs = 0
        self._flush_handle: asyncio.Handle | None = None
        self._drain_wanted = False
        self._timer: asyncio.TimerHandle | None = None
        self._keepalive = 0.0
        self._last_read = self._loop.time()
        self._routes: dict[str, str] = {}

    def __repr__(self) -> str:
        who = self.principal.client_id if self.principal else "(connecting)"
        return f"<MqttConnection {who} from {self.peer}>"

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else str(peer or "unknown")
        sock = transport.get_extra_info("sockname")
        self.local_port = int(sock[1]) if isinstance(sock, tuple) and len(sock) > 1 else 0
        if isinstance(transport, asyncio.WriteTransport):
            transport.set_write_buffer_limits(high=self.hub.write_buffer_high)
        self.hub.opened(self)
        self._timer = self._loop.call_later(self.hub.connect_timeout, self._connect_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        counters = self.counters
        counters.read_bytes += len(data)
        before = counters.read_msg
        self._last_read = self._loop.time()
        try:
            packets = self.reader.feed(data)
        except PacketTooLarge as exc:
            self.close(CloseCode.MESSAGE_TOO_LARGE, str(exc))
            return
        except UnsupportedProtocolVersion as exc:
            self._refuse_version(exc)
            return
        except ProtocolError as exc:
            self.close(CloseCode.DATA_NOT_VALID, str(exc))
            return
        try:
            for packet in packets:
                self._handle(packet)
                if self.closed:
                    break
        except Exception:
            # A bug must cost one connection, not the server: log it once and close.
            log.exception("internal error on %r", self)
            self.close(CloseCode.SERVER_CLOSED, "internal error")
        self.hub.after_read(self, counters.read_msg - before, len(data))

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = CloseCode.CLIENT_CLOSED
            self._cancel_timer()
            self.hub.released(self, CloseCode.CLIENT_CLOSED, None)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out.clear()
        self.hub.forget(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.session is not None and self.session.pending and not self.closed:
            self.session.drain()

    # --- writing (the session's Outlet) -------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes; they leave with everything else queued in this loop iteration."""
        if self.closed:
            return
        self._out.append(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def send_message(self, data: bytes) -> None:
        """Queue one PUBLISH."""
        self._out_msgs += 1
        self.send(data)

    def request_drain(self) -> None:
        """Drain the session's buffers again once this iteration's bytes are written."""
        self._drain_wanted = True
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        transport = self.transport
        if out and isinstance(transport, asyncio.WriteTransport):
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self.counters.write_bytes += len(data)
            self.counters.write_msg += self._out_msgs
            self.hub.after_write(self, self._out_msgs, len(data))
            self._out_msgs = 0
            transport.write(data)
        if self._drain_wanted and not self.paused and not self.closed:
            self._drain_wanted = False
            if self.session is not None:
                self.session.drain()

    # --- closing ------------------------------------------------------------------------------

    def close(self, code: int, reason: str | None = None) -> None:
        """End the connection with a close code (W40); the first call wins."""
        if self.closed:
            return
        if code not in (CloseCode.NORMAL, CloseCode.SERVER_SHUTDOWN, CloseCode.CLIENT_ID_REUSED):
            log.info("closing %r: %s (%s)", self, REASONS.get(code, code), reason or "-")
        v5_code = _V5_DISCONNECT.get(code)
        if self.protocol_level == MQTT_5 and self.session is not None and v5_code is not None:
            self.send(encode(Disconnect(v5_code), MQTT_5))
        self._flush()
        self.closed = True
        self.close_code = code
        self._cancel_timer()
        if self.session is not None:
            self.hub.released(self, code, reason)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the socket without a goodbye (shutdown of a connection that will not close)."""
        self.closed = True
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _connect_timeout(self) -> None:
        self._timer = None
        if self.session is None:
            self.close(CloseCode.NO_DATA, "no CONNECT in time")

    def _check_keepalive(self) -> None:
        """Close at 1.5 times the keepalive without a packet (W23, M311 3.1.2.10)."""
        deadline = self._last_read + self._keepalive
        if self._loop.time() >= deadline:
            self._timer = None
            self.close(CloseCode.KEEPALIVE_TIMEOUT, f"nothing received for {self._keepalive:g} s")
        else:
            self._timer = self._loop.call_at(deadline, self._check_keepalive)

    # --- packets ------------------------------------------------------------------------------

    def _handle(self, packet: Packet) -> None:
        kind = type(packet)
        if kind is Publish:
            assert isinstance(packet, Publish)
            self._on_publish(packet)
            return
        if self.session is None:
            if kind is Connect:
                assert isinstance(packet, Connect)
                self._on_connect(packet)
            else:
                self.close(CloseCode.DATA_NOT_VALID, f"{kind.__name__} before CONNECT")
            return
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.close(CloseCode.DATA_NOT_VALID, f"a client may not send {kind.__name__} now")
        else:
            handler(self, packet)

    def _on_connect(self, packet: Connect) -> None:
        self.protocol_level = packet.protocol_level
        self.info = ConnectionInfo(
            client_addr=self.peer,
            client_id=packet.client_id,
            port=self.local_port,
            secure=self.secure,
            protocol=protocol_name(packet.protocol_level, websocket=self.websocket),
            user=packet.username,
            connect_time=timestamp(),
        )
        try:
            session, present, keepalive = self.hub.admit(self, packet)
        except Denied as exc:
            self._refuse(packet, exc)
            return
        props = NO_PROPERTIES
        if packet.protocol_level == MQTT_5:
            props = self.hub.connack_properties(keepalive, packet.keep_alive)
        self.send(encode(Connack(present, 0, props), self.protocol_level))
        self._cancel_timer()
        if keepalive:
            self._keepalive = keepalive * 1.5
            self._timer = self._loop.call_at(
                self._last_read + self._keepalive, self._check_keepalive
            )
        self.session = session
        session.attach(self)
        self.hub.connected(self)

    def _refuse(self, packet: Connect, exc: Denied) -> None:
        """CONNACK 5 (5.0: 0x85 or 0x87), a FailedConnect status message, close (W4-W6)."""
        log.info("refused %r (%s): %s", packet.client_id, self.peer, exc)
        if self.protocol_level == MQTT_5:
            code = 0x85 if exc.close_code == CloseCode.CLIENT_ID_NOT_VALID else 0x87
        else:
            code = 5
        self.send(encode(Connack(False, code), self.protocol_level))
        self.hub.failed(self, packet, exc)
        self.close(exc.close_code, str(exc))

    def _refuse_version(self, exc: UnsupportedProtocolVersion) -> None:
        """MQTT-3.1.2-2: CONNACK 1 (5.0: 0x84) for a protocol level this server does not speak."""
        if exc.protocol_level == MQTT_5 or exc.protocol_level > MQTT_5:
            self.send(encode(Connack(False, 0x84), MQTT_5))
        else:
            self.send(encode(Connack(False, 1), 4))
        self.close(CloseCode.DATA_NOT_VALID, str(exc))

    def _on_publish(self, packet: Publish) -> None:
        principal = self.principal
        session = self.session
        if session is None or principal is None:
            self.close(CloseCode.DATA_NOT_VALID, "PUBLISH before CONNECT")
            return
        self.counters.read_msg += 1
        topic = packet.topic
        internal = self._routes.get(topic)
        try:
            if internal is None:
                internal = self._route(principal, packet)
            if packet.qos > self.hub.max_qos:
                raise Denied(CloseCode.MAX_QOS, f"QoS {packet.qos} above {self.hub.max_qos}")
            check_size(topic, len(packet.payload), self.hub.max_payload)
        except Denied as exc:
            self._publish_refused(packet, exc)
            return
        qos = packet.qos
        if qos == 2:
            self._on_publish_qos2(session, packet, internal)
            return
        # W16: the client's retain flag is cleared; the message is routed as not retained.
        self.hub.route(Message(internal, packet.payload, qos))
        if qos:
            assert packet.packet_id is not None
            self.send(encode_puback(packet.packet_id))

    def _route(self, principal: Principal, packet: Publish) -> str:
        props = packet.properties
        if props is not NO_PROPERTIES and props.topic_alias is not None:
            # No Topic Alias Maximum is advertised: an alias is a protocol error (MQTT 5 3.3.2.3.4).
            raise Denied(CloseCode.DATA_NOT_VALID, "topic aliases are not supported")
        internal = publish_target(principal, packet.topic)
        if len(self._routes) >= _ROUTE_CACHE:
            self._routes.clear()
        self._routes[packet.topic] = internal
        return internal

    def _on_publish_qos2(self, session: Session, packet: Publish, internal: str) -> None:
        packet_id = packet.packet_id
        assert packet_id is not None
        # Delivered on PUBLISH; a resent PUBLISH before PUBREL is answered but not routed again.
        if packet_id not in session.qos2_received:
            session.qos2_received.add(packet_id)
            self.hub.route(Message(internal, packet.payload, 2))
        self.send(encode(Pubrec(packet_id), self.protocol_level))

    def _publish_refused(self, packet: Publish, exc: Denied) -> None:
        """Close (W37); gateways get a notify and v5 a negative ack instead (W37, W39)."""
        code = exc.close_code
        fatal = code in (CloseCode.MESSAGE_TOO_LARGE, CloseCode.MAX_QOS, CloseCode.DATA_NOT_VALID)
        principal = self.principal
        if not fatal and principal is not None and principal.client.cls.value == "g":
            self.hub.notify_gateway(principal, "publish", packet.topic, exc)
            self._ack_anyway(packet, 0)
        elif not fatal and self.protocol_level == MQTT_5 and packet.qos:
            self._ack_anyway(packet, 0x90 if code == CloseCode.TOPIC_NOT_VALID else 0x87)
        else:
            self.close(code, str(exc))

    def _ack_anyway(self, packet: Publish, reason: int) -> None:
        if packet.packet_id is None:
            return
        ack = Puback if packet.qos == 1 else Pubrec
        self.send(encode(ack(packet.packet_id, reason), self.protocol_level))

    def _on_subscribe(self, packet: Subscribe) -> None:
        session, principal = self.session, self.principal
        assert session is not None and principal is not None
        codes: list[int] = []
        fresh = []
        for request in packet.subscriptions:
            try:
                internal, rewrite = subscribe_target(principal, request.topic_filter)
            except Denied as exc:
                code = self._subscribe_refused(principal, request.topic_filter, exc)
                if code is None:
                    return
                codes.append(code)
                continue
            granted = min(request.qos, self.hub.max_qos)
            sub, new = session.subscribe(request.topic_filter, internal, rewrite.outbound, granted)
            codes.append(granted)
            if new:
                fresh.append(sub)
        self.send(encode(Suback(packet.packet_id, tuple(codes)), self.protocol_level))
        for sub in fresh:
            for msg in self.hub.router.retained(sub.internal):
                session.deliver(sub, msg)

    def _subscribe_refused(
        self, principal: Principal, topic_filter: str, exc: Denied
    ) -> int | None:
        """The SUBACK code for a refused filter, or None after closing (W38, W39)."""
        if principal.client.cls.value == "g":
            self.hub.notify_gateway(principal, "subscribe", topic_filter, exc)
            return 0x80
        if self.protocol_level == MQTT_5:
            return 0x8F if exc.close_code == CloseCode.TOPIC_NOT_VALID else 0x87
        self.close(exc.close_code, str(exc))
        return None

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        found = [session.unsubscribe(f) for f in packet.topic_filters]
        codes = tuple(0x00 if ok else 0x11 for ok in found) if self.protocol_level == MQTT_5 else ()
        self.send(encode(Unsuback(packet.packet_id, codes), self.protocol_level))

    def _on_pingreq(self, _packet: Pingreq) -> None:
        self.send(_PINGRESP)

    def _on_disconnect(self, packet: Disconnect) -> None:
        # A clean goodbye discards the will, unless a v5 client asks for it (reason 0x04).
        if packet.reason_code != 0x04:
            self.will = None
        self.close(CloseCode.NORMAL)

    def _on_puback(self, packet: Puback) -> None:
        assert self.session is not None
        self.session.on_puback(packet.packet_id)

    def _on_pubrec(self, packet: Pubrec) -> None:
        assert self.session is not None
        self.send(self.session.on_pubrec(packet.packet_id))

    def _on_pubrel(self, packet: Pubrel) -> None:
        assert self.session is not None
        self.session.qos2_received.discard(packet.packet_id)
        self.send(encode(Pubcomp(packet.packet_id), self.protocol_level))

    def _on_pubcomp(self, packet: Pubcomp) -> None:
        assert self.session is not None
        self.session.on_pubcomp(packet.packet_id)


_HANDLERS: Final[dict[type, Any]] = {
    Subscribe: MqttConnection._on_subscribe,
    Unsubscribe: MqttConnection._on_unsubscribe,
    Pingreq: MqttConnection._on_pingreq,
    Disconnect: MqttConnection._on_disconnect,
    Puback: MqttConnection._on_puback,
    Pubrec: MqttConnection._on_pubrec,
    Pubrel: MqttConnection._on_pubrel,
    Pubcomp: MqttConnection._on_pubcomp,
}
