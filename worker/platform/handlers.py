"""What each MQTT packet from a client means to the platform (the connection's request side).

:func:`handle` dispatches one decoded packet. CONNECT asks the hub for a session; PUBLISH is
authorized, rewritten to its internal topic (cached per connection: a client publishes to few
topics) and handed to the router; SUBSCRIBE stores rewritten filters and sends the retained
status messages; errors close the connection with their close code (W37, W38, W40), except
where the platform answers instead: MQTT 5 reason codes, and gateway ``notify`` (W39).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from worker.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Connack,
    ConnackReturnCode,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    SubackReturnCode,
    Subscribe,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolVersion,
    connack_meaning,
    encode,
    encode_puback,
)
from worker.platform.logs import clip
from worker.platform.router import Envelope
from worker.platform.rules import (
    Denied,
    Principal,
    Rewrite,
    check_size,
    publish_target,
    subscribe_target,
)
from worker.platform.session import Session
from worker.platform.status import CloseCode, ConnectionInfo, protocol_name, timestamp

if TYPE_CHECKING:
    from worker.platform.connection import MqttConnection

log = logging.getLogger("worker.platform")

_PINGRESP: Final = b"\xd0\x00"
SUBSCRIBE_COST: Final = 30
"""Deliveries one filter of a SUBSCRIBE counts as, in a read's work budget."""
_ROUTE_CACHE: Final = 1024
_GATEWAY: Final = "g"


def handle(conn: MqttConnection, packet: Packet) -> None:
    """Act on one packet from the client; anything out of place closes with 105."""
    kind = type(packet)
    if kind is Publish:
        assert isinstance(packet, Publish)
        _on_publish(conn, packet)
        return
    if conn.session is None:
        if kind is Connect:
            assert isinstance(packet, Connect)
            _on_connect(conn, packet)
        else:
            conn.close(CloseCode.DATA_NOT_VALID, f"{kind.__name__} before CONNECT")
        return
    handler = _HANDLERS.get(kind)
    if handler is None:
        conn.close(CloseCode.DATA_NOT_VALID, f"a client may not send {kind.__name__} now")
    else:
        handler(conn, packet)


def _on_connect(conn: MqttConnection, packet: Connect) -> None:
    """Admit (CONNACK 0, keepalive, session, Connect status) or refuse (W4-W6, W19-W25)."""
    conn.protocol_level = packet.protocol_level
    conn.info = ConnectionInfo(
        client_addr=conn.peer,
        client_id=packet.client_id,
        port=conn.local_port,
        secure=conn.secure,
        protocol=protocol_name(packet.protocol_level, websocket=conn.websocket),
        user=packet.username,
        connect_time=timestamp(),
    )
    try:
        session, present, keepalive = conn.hub.admit(conn, packet)
    except Denied as exc:
        _refuse(conn, packet, exc)
        return
    props = NO_PROPERTIES
    if packet.protocol_level == MQTT_5:
        props = conn.hub.connack_properties(keepalive, packet.keep_alive, packet)
    conn.reader.max_packet_size = conn.hub.max_packet_size
    conn.send(encode(Connack(present, ConnackReturnCode.ACCEPTED, props), conn.protocol_level))
    conn.start_keepalive(keepalive)
    conn.session = session
    session.attach(conn)
    conn.hub.connected(conn)


def _refuse(conn: MqttConnection, packet: Connect, exc: Denied) -> None:
    """CONNACK "not authorized" (5.0: the client ID's own code when it is the client ID), a
    FailedConnect status message, close (W4-W6)."""
    code: int = ConnackReturnCode.NOT_AUTHORIZED
    full = exc.close_code == CloseCode.SERVER_CLOSED  # no room for a session (limits.sessions)
    if conn.protocol_level == MQTT_5:
        bad_id = exc.close_code == CloseCode.CLIENT_ID_NOT_VALID
        code = ReasonCode.CLIENT_IDENTIFIER_NOT_VALID if bad_id else ReasonCode.NOT_AUTHORIZED
        if full:
            code = ReasonCode.QUOTA_EXCEEDED
    elif full:
        code = ConnackReturnCode.SERVER_UNAVAILABLE
    meaning = connack_meaning(code)
    conn.hub.refusal_log.info(
        meaning, "refused %s (%s): %s (%s)", clip(packet.client_id), conn.peer, clip(str(exc)),
        meaning,
    )  # fmt: skip
    conn.send(encode(Connack(False, code), conn.protocol_level))
    conn.hub.failed(conn, packet, exc)
    conn.close(exc.close_code, str(exc))


def refuse_version(conn: MqttConnection, exc: UnsupportedProtocolVersion) -> None:
    """MQTT-3.1.2-2: CONNACK "unacceptable protocol version" for a level it does not speak."""
    if exc.protocol_level == MQTT_5 or exc.protocol_level > MQTT_5:
        conn.send(encode(Connack(False, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), MQTT_5))
    else:
        refusal = Connack(False, ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION)
        conn.send(encode(refusal, MQTT_3_1_1))
    conn.close(CloseCode.DATA_NOT_VALID, str(exc))


def _on_publish(conn: MqttConnection, packet: Publish) -> None:
    """Authorize, check, rewrite and route one message, then acknowledge it (W13-W17)."""
    principal = conn.principal
    session = conn.session
    if session is None or principal is None:
        conn.close(CloseCode.DATA_NOT_VALID, "PUBLISH before CONNECT")
        return
    conn.counters.read_msg += 1
    topic = packet.topic
    internal = conn.routes.get(topic)
    try:
        if internal is None:
            internal = _route(conn, principal, packet)
        if packet.qos > conn.hub.max_qos:
            raise Denied(CloseCode.MAX_QOS, f"QoS {packet.qos} above {conn.hub.max_qos}")
        check_size(topic, len(packet.payload), conn.hub.max_payload)
    except Denied as exc:
        _publish_refused(conn, packet, exc)
        return
    qos = packet.qos
    if qos == 2:
        _on_publish_qos2(conn, session, packet, internal)
        return
    # W16: the client's retain flag is cleared; the message is routed as not retained.
    refused = _route_message(conn, _envelope(internal, packet))
    if qos:
        assert packet.packet_id is not None
        if refused and conn.protocol_level == MQTT_5:
            conn.send(encode(Puback(packet.packet_id, ReasonCode.QUOTA_EXCEEDED), MQTT_5))
        else:
            conn.send(encode_puback(packet.packet_id))


def _envelope(internal: str, packet: Publish) -> Envelope:
    """The message to route: MQTT 5 properties kept for v5 subscribers, the expiry as a time."""
    props = packet.properties
    if props is NO_PROPERTIES:
        return Envelope(internal, packet.payload, packet.qos)
    if props.subscription_identifiers:
        # A client may not send them (MQTT-3.3.4-6); they are not passed on.
        props = dataclasses.replace(props, subscription_identifiers=())
    interval = props.message_expiry_interval
    expires = None if interval is None else time.monotonic() + interval
    return Envelope(internal, packet.payload, packet.qos, properties=props, expires=expires)


def _route_message(conn: MqttConnection, msg: Envelope) -> bool:
    """Route; hold the publisher when a subscriber fell behind. True when some delivery could
    not be queued (counted as dropped; an MQTT 5 publisher's acknowledgement says so)."""
    router = conn.hub.router
    router.refused = 0
    router.pressure = None
    conn.hub.route(msg)
    if router.pressure is not None:
        conn.hub.hold(conn, router.pressure)
        router.pressure = None
    return router.refused > 0


def _route(conn: MqttConnection, principal: Principal, packet: Publish) -> str:
    """The internal topic of a topic this connection has not published to yet."""
    props = packet.properties
    if props is not NO_PROPERTIES and props.topic_alias is not None:
        # No Topic Alias Maximum is advertised: an alias is a protocol error (MQTT 5 3.3.2.3.4).
        raise Denied(CloseCode.DATA_NOT_VALID, "topic aliases are not supported")
    internal = publish_target(principal, packet.topic)
    if len(conn.routes) >= _ROUTE_CACHE:
        conn.routes.clear()
    conn.routes[packet.topic] = internal
    return internal


def _on_publish_qos2(
    conn: MqttConnection, session: Session, packet: Publish, internal: str
) -> None:
    packet_id = packet.packet_id
    assert packet_id is not None
    # Delivered on PUBLISH; a resent PUBLISH before PUBREL is answered but not routed again.
    refused = False
    if packet_id not in session.qos2_received:
        session.qos2_received.add(packet_id)
        refused = _route_message(conn, _envelope(internal, packet))
    v5_refused = refused and conn.protocol_level == MQTT_5
    if v5_refused:
        # A PUBREC with an error code ends the exchange (MQTT 5 4.3.3): no PUBREL follows.
        session.qos2_received.discard(packet_id)
    reason = ReasonCode.QUOTA_EXCEEDED if v5_refused else ReasonCode.SUCCESS
    conn.send(encode(Pubrec(packet_id, reason), conn.protocol_level))


def _publish_refused(conn: MqttConnection, packet: Publish, exc: Denied) -> None:
    """Close (W37); gateways get a notify and v5 a negative ack instead (W37, W39)."""
    code = exc.close_code
    fatal = code in (CloseCode.MESSAGE_TOO_LARGE, CloseCode.MAX_QOS, CloseCode.DATA_NOT_VALID)
    conn.hub.refused_message(exc)
    principal = conn.principal
    if not fatal and principal is not None and principal.client.cls.value == _GATEWAY:
        conn.hub.notify_gateway(principal, "publish", packet.topic, exc)
        _ack_anyway(conn, packet, ReasonCode.SUCCESS)
    elif not fatal and conn.protocol_level == MQTT_5 and packet.qos:
        bad_topic = code == CloseCode.TOPIC_NOT_VALID
        _ack_anyway(
            conn, packet, ReasonCode.TOPIC_NAME_INVALID if bad_topic else ReasonCode.NOT_AUTHORIZED
        )
    else:
        conn.close(code, str(exc))


def _ack_anyway(conn: MqttConnection, packet: Publish, reason: int) -> None:
    if packet.packet_id is None:
        return
    ack = Puback if packet.qos == 1 else Pubrec
    conn.send(encode(ack(packet.packet_id, reason), conn.protocol_level))


def _on_subscribe(conn: MqttConnection, packet: Subscribe) -> None:
    """Store each allowed filter, SUBACK, then notify gateways and send retained status."""
    session, principal = conn.session, conn.principal
    assert session is not None and principal is not None
    # A new filter costs about as much as 30 deliveries: it counts against the read's budget.
    conn.hub.router.fanout += SUBSCRIBE_COST * len(packet.subscriptions)
    codes: list[int] = []
    fresh = []
    refused: list[tuple[str, Denied]] = []
    # One bound ``outbound`` per rewrite, not one per filter: each would be one more object
    # per subscription for the memory and for every pass of the garbage collector.
    outbound: dict[Rewrite, Callable[[str], str]] = {}
    for request in packet.subscriptions:
        if _over_quota(conn, session, request.topic_filter):
            v5 = conn.protocol_level == MQTT_5
            codes.append(ReasonCode.QUOTA_EXCEEDED if v5 else SubackReturnCode.FAILURE)
            continue
        try:
            internal, rewrite = subscribe_target(principal, request.topic_filter)
        except Denied as exc:
            code = _subscribe_refused(conn, principal, exc)
            if code is None:
                return
            codes.append(code)
            refused.append((request.topic_filter, exc))
            continue
        granted = min(request.qos, conn.hub.max_qos)
        send_as = outbound.get(rewrite)
        if send_as is None:
            send_as = outbound[rewrite] = rewrite.outbound
        sub, new = session.subscribe(request.topic_filter, internal, send_as, granted)
        codes.append(granted)
        if new:
            fresh.append(sub)
    conn.send(encode(Suback(packet.packet_id, tuple(codes)), conn.protocol_level))
    if principal.client.cls.value == _GATEWAY:
        for topic_filter, refusal in refused:
            conn.hub.notify_gateway(principal, "subscribe", topic_filter, refusal)
    for sub in fresh:
        for msg in conn.hub.router.retained(sub.internal):
            session.deliver(sub, msg)


def _over_quota(conn: MqttConnection, session: Session, topic_filter: str) -> bool:
    """A new filter beyond ``max_subscriptions`` (replacing an existing one is always fine).

    Each subscription costs a few kilobytes and buffers up to the buffer size, so without a
    cap one client's subscription storm could take the memory of the whole platform. The
    filter is refused like a standard broker refuses one (SUBACK ``FAILURE``, on 5.0
    ``QUOTA_EXCEEDED``) and the connection stays up: the client asked for too much, not for a
    topic it may not see (W38 is about those).
    """
    return topic_filter not in session.subs and len(session.subs) >= conn.hub.max_subscriptions


def _subscribe_refused(conn: MqttConnection, principal: Principal, exc: Denied) -> int | None:
    """The SUBACK code for a refused filter, or None after closing (W38, W39)."""
    if principal.client.cls.value == _GATEWAY:
        return SubackReturnCode.FAILURE  # 5.0: UNSPECIFIED_ERROR, the same number
    if conn.protocol_level == MQTT_5:
        bad_filter = exc.close_code == CloseCode.TOPIC_NOT_VALID
        return ReasonCode.TOPIC_FILTER_INVALID if bad_filter else ReasonCode.NOT_AUTHORIZED
    conn.close(exc.close_code, str(exc))
    return None


def _on_unsubscribe(conn: MqttConnection, packet: Unsubscribe) -> None:
    session = conn.session
    assert session is not None
    found = [session.unsubscribe(f) for f in packet.topic_filters]
    codes: tuple[int, ...] = ()
    if conn.protocol_level == MQTT_5:
        missing = ReasonCode.NO_SUBSCRIPTION_EXISTED
        codes = tuple(ReasonCode.SUCCESS if ok else missing for ok in found)
    conn.send(encode(Unsuback(packet.packet_id, codes), conn.protocol_level))


def _on_pingreq(conn: MqttConnection, _packet: Pingreq) -> None:
    conn.send(_PINGRESP)


def _on_disconnect(conn: MqttConnection, packet: Disconnect) -> None:
    # A clean goodbye discards the will, unless a v5 client asks for it.
    if packet.reason_code != ReasonCode.DISCONNECT_WITH_WILL_MESSAGE:
        conn.will = None
    conn.close(CloseCode.NORMAL)


def _on_puback(conn: MqttConnection, packet: Puback) -> None:
    assert conn.session is not None
    conn.session.on_puback(packet.packet_id)


def _on_pubrec(conn: MqttConnection, packet: Pubrec) -> None:
    assert conn.session is not None
    conn.send(conn.session.on_pubrec(packet.packet_id))


def _on_pubrel(conn: MqttConnection, packet: Pubrel) -> None:
    assert conn.session is not None
    conn.session.qos2_received.discard(packet.packet_id)
    conn.send(encode(Pubcomp(packet.packet_id), conn.protocol_level))


def _on_pubcomp(conn: MqttConnection, packet: Pubcomp) -> None:
    assert conn.session is not None
    conn.session.on_pubcomp(packet.packet_id)


_HANDLERS: Final[dict[type, Any]] = {
    Subscribe: _on_subscribe,
    Unsubscribe: _on_unsubscribe,
    Pingreq: _on_pingreq,
    Disconnect: _on_disconnect,
    Puback: _on_puback,
    Pubrec: _on_pubrec,
    Pubrel: _on_pubrel,
    Pubcomp: _on_pubcomp,
}
