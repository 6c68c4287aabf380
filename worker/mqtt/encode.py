"""Encoding of packets to bytes, for a given protocol level.

The encoder refuses what the decoder would refuse (packet identifier 0, QoS 3, reason codes the
packet type does not define, MQTT 5.0 fields on a 3.1.1 connection), so that a peer never sees a
malformed packet from us. The PUBLISH and PUBACK encoders are the native transport's hot path.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from itertools import repeat

from worker.errors import ProtocolError
from worker.mqtt.codes import (
    MQTT_3_1_1,
    MQTT_5,
    PROTOCOL_NAMES,
    PacketType,
    allowed_reason_codes,
)
from worker.mqtt.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from worker.mqtt.properties import NO_PROPERTIES, WILL, Properties, encode_properties
from worker.mqtt.wire import encode_binary, encode_utf8, fixed_header

_PUBACK_STRUCT = struct.Struct(">HH")
_pack_puback = _PUBACK_STRUCT.pack
_PUBACK_HEADER = 0x4002  # PUBACK, remaining length 2


def _is_v5(protocol_level: int) -> bool:
    if protocol_level not in PROTOCOL_NAMES:
        raise ProtocolError(f"unknown protocol level {protocol_level}")
    return protocol_level == MQTT_5


def _empty(properties: Properties) -> bool:
    return properties is NO_PROPERTIES or properties == NO_PROPERTIES


def _properties(properties: Properties, context: int, v5: bool) -> bytes:
    if v5:
        return encode_properties(properties, context)
    if not _empty(properties):
        raise ProtocolError("properties need MQTT 5.0")
    return b""


def _packet_id(packet_id: int) -> bytes:
    if not 0 < packet_id <= 0xFFFF:
        raise ProtocolError(f"packet identifier {packet_id} outside 1-65535")
    return packet_id.to_bytes(2, "big")


def _packet(first_byte: int, parts: Sequence[bytes]) -> bytes:
    body = b"".join(parts)
    return fixed_header(first_byte, len(body)) + body


def _check_code(code: int, packet_type: PacketType, v5: bool) -> int:
    if code not in allowed_reason_codes(packet_type, v5):
        raise ProtocolError(f"{packet_type.name} cannot carry reason code {code!r}")
    return code


def _reason_tail(code: int, properties: Properties, packet_type: PacketType, v5: bool) -> bytes:
    # The shortest legal form: 5.0 lets Success and an empty property set be left out.
    if not v5:
        if code or not _empty(properties):
            raise ProtocolError(f"a {packet_type.name} reason code or property needs MQTT 5.0")
        return b""
    _check_code(code, packet_type, v5)
    if _empty(properties):
        return bytes((code,)) if code else b""
    return bytes((code,)) + encode_properties(properties, packet_type)


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    packet_id: int | None = None,
    *,
    retain: bool = False,
    dup: bool = False,
    properties: Properties = NO_PROPERTIES,
    protocol_level: int = MQTT_3_1_1,
) -> bytes:
    """Encode a PUBLISH without building a :class:`Publish` first.

    ``packet_id`` must be given exactly when ``qos`` is 1 or 2; ``dup`` needs QoS 1 or 2.
    """
    header = encode_utf8(topic)
    if qos:
        if qos != 1 and qos != 2:
            raise ProtocolError(f"PUBLISH QoS must be 0, 1 or 2, not {qos!r}")
        if packet_id is None:
            raise ProtocolError("a QoS 1 or 2 PUBLISH needs a packet identifier")
        header += _packet_id(packet_id)
    elif packet_id is not None or dup:
        raise ProtocolError("a QoS 0 PUBLISH has no packet identifier and no DUP flag")
    if protocol_level != MQTT_3_1_1 or properties is not NO_PROPERTIES:
        header += _properties(properties, PacketType.PUBLISH, _is_v5(protocol_level))
    first_byte = 0x30 | (dup << 3) | (qos << 1) | retain
    return b"".join((fixed_header(first_byte, len(header) + len(payload)), header, payload))


def _publish(packet: Publish, protocol_level: int) -> bytes:
    return encode_publish(
        packet.topic,
        packet.payload,
        packet.qos,
        packet.packet_id,
        retain=packet.retain,
        dup=packet.dup,
        properties=packet.properties,
        protocol_level=protocol_level,
    )


def encode_puback(packet_id: int) -> bytes:
    """Encode a PUBACK with reason Success: the same four bytes on every protocol level."""
    if not 0 < packet_id <= 0xFFFF:
        raise ProtocolError(f"packet identifier {packet_id} outside 1-65535")
    return _pack_puback(_PUBACK_HEADER, packet_id)


def encode_pubacks(packet_ids: Iterable[int]) -> bytes:
    """Encode one Success PUBACK per packet identifier, concatenated in the order given.

    Lets a transport acknowledge everything one read delivered with a single write.
    """
    ids = packet_ids if isinstance(packet_ids, list | tuple) else list(packet_ids)
    if 0 in ids:
        raise ProtocolError("packet identifier 0")
    try:
        return b"".join(map(_pack_puback, repeat(_PUBACK_HEADER), ids))
    except struct.error as exc:
        raise ProtocolError("packet identifier outside 1-65535") from exc


def _connect_flags(packet: Connect, v5: bool) -> int:
    flags = 0x02 if packet.clean_start else 0x00
    will = packet.will
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise ProtocolError(f"will QoS must be 0, 1 or 2, not {will.qos!r}")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.username is not None:
        flags |= 0x80
    if packet.password is not None:
        if packet.username is None and not v5:
            raise ProtocolError("a password needs a user name before MQTT 5.0")
        flags |= 0x40
    return flags


def _connect(packet: Connect) -> bytes:
    # A CONNECT is encoded for the level it announces, whatever the connection's.
    v5 = _is_v5(packet.protocol_level)
    if not 0 <= packet.keep_alive <= 0xFFFF:
        raise ProtocolError(f"keep alive {packet.keep_alive} outside 0-65535")
    parts = [
        encode_utf8(packet.protocol_name),
        bytes((packet.protocol_level, _connect_flags(packet, v5))),
        packet.keep_alive.to_bytes(2, "big"),
        _properties(packet.properties, PacketType.CONNECT, v5),
        encode_utf8(packet.client_id),
    ]
    if packet.will is not None:
        parts.append(_properties(packet.will.properties, WILL, v5))
        parts.append(encode_utf8(packet.will.topic))
        parts.append(encode_binary(packet.will.payload))
    if packet.username is not None:
        parts.append(encode_utf8(packet.username))
    if packet.password is not None:
        parts.append(encode_binary(packet.password))
    return _packet(0x10, parts)


def _connack(packet: Connack, v5: bool) -> bytes:
    code = _check_code(packet.reason_code, PacketType.CONNACK, v5)
    if packet.session_present and code:
        raise ProtocolError("a refusing CONNACK cannot have session present")
    flags = bytes((1 if packet.session_present else 0, code))
    return _packet(0x20, (flags, _properties(packet.properties, PacketType.CONNACK, v5)))


def _ack(packet: Puback | Pubrec | Pubrel | Pubcomp, v5: bool) -> bytes:
    packet_type = packet.packet_type
    tail = _reason_tail(packet.reason_code, packet.properties, packet_type, v5)
    first_byte = packet_type << 4 | (0x02 if packet_type is PacketType.PUBREL else 0x00)
    return _packet(first_byte, (_packet_id(packet.packet_id), tail))


def _subscribe(packet: Subscribe, v5: bool) -> bytes:
    if not packet.subscriptions:
        raise ProtocolError("SUBSCRIBE needs at least one topic filter")
    parts = [_packet_id(packet.packet_id), _properties(packet.properties, PacketType.SUBSCRIBE, v5)]
    for sub in packet.subscriptions:
        if sub.qos not in (0, 1, 2) or sub.retain_handling not in (0, 1, 2):
            raise ProtocolError(f"invalid subscription options in {sub!r}")
        options = sub.qos | (sub.no_local << 2) | (sub.retain_as_published << 3)
        options |= sub.retain_handling << 4
        if options > 3 and not v5:
            raise ProtocolError("subscription options other than QoS need MQTT 5.0")
        parts.append(encode_utf8(sub.topic_filter))
        parts.append(bytes((options,)))
    return _packet(0x82, parts)


def _codes(codes: tuple[int, ...], packet_type: PacketType, v5: bool) -> bytes:
    if not codes:
        raise ProtocolError(f"{packet_type.name} needs at least one reason code")
    return bytes(_check_code(code, packet_type, v5) for code in codes)


def _suback(packet: Suback, v5: bool) -> bytes:
    properties = _properties(packet.properties, PacketType.SUBACK, v5)
    codes = _codes(packet.reason_codes, PacketType.SUBACK, v5)
    return _packet(0x90, (_packet_id(packet.packet_id), properties, codes))


def _unsubscribe(packet: Unsubscribe, v5: bool) -> bytes:
    if not packet.topic_filters:
        raise ProtocolError("UNSUBSCRIBE needs at least one topic filter")
    properties = _properties(packet.properties, PacketType.UNSUBSCRIBE, v5)
    filters = [encode_utf8(topic_filter) for topic_filter in packet.topic_filters]
    return _packet(0xA2, [_packet_id(packet.packet_id), properties, *filters])


def _unsuback(packet: Unsuback, v5: bool) -> bytes:
    packet_id = _packet_id(packet.packet_id)
    if not v5:
        if packet.reason_codes or not _empty(packet.properties):
            raise ProtocolError("UNSUBACK reason codes and properties need MQTT 5.0")
        return _packet(0xB0, (packet_id,))
    properties = encode_properties(packet.properties, PacketType.UNSUBACK)
    codes = _codes(packet.reason_codes, PacketType.UNSUBACK, v5)
    return _packet(0xB0, (packet_id, properties, codes))


def _auth(packet: Auth, v5: bool) -> bytes:
    if not v5:
        raise ProtocolError("AUTH is an MQTT 5.0 packet")
    return _packet(
        0xF0, (_reason_tail(packet.reason_code, packet.properties, packet.packet_type, v5),)
    )


def encode(packet: Packet, protocol_level: int = MQTT_3_1_1) -> bytes:
    """Encode any packet for a connection at ``protocol_level`` (3, 4 or 5).

    A :class:`Connect` is encoded for its own ``protocol_level``. Raises
    :class:`~worker.errors.ProtocolError` for a packet that would be malformed on the wire.
    """
    v5 = _is_v5(protocol_level)
    match packet:
        case Publish():
            return _publish(packet, protocol_level)
        case Puback() | Pubrec() | Pubrel() | Pubcomp():
            return _ack(packet, v5)
        case Connect():
            return _connect(packet)
        case Connack():
            return _connack(packet, v5)
        case Subscribe():
            return _subscribe(packet, v5)
        case Suback():
            return _suback(packet, v5)
        case Unsubscribe():
            return _unsubscribe(packet, v5)
        case Unsuback():
            return _unsuback(packet, v5)
        case Pingreq():
            return b"\xc0\x00"
        case Pingresp():
            return b"\xd0\x00"
        case Disconnect():
            tail = _reason_tail(packet.reason_code, packet.properties, packet.packet_type, v5)
            return _packet(0xE0, (tail,))
        case Auth():
            return _auth(packet, v5)
    raise ProtocolError(f"not an MQTT packet: {packet!r}")
