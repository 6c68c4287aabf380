"""Decoding of one packet's variable header and payload, given its first byte and its bounds.

Every rule of the wire format that a receiver can check is checked here (fixed-header flags,
reserved bits, packet identifiers, UTF-8, reason codes, exact remaining length); the semantic rules
(topic grammar, who may send what, session state) belong to the caller.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.errors import ProtocolError
from worker.mqtt.codes import (
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
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from worker.mqtt.properties import NO_PROPERTIES, WILL, Properties, decode_properties
from worker.mqtt.wire import Cursor


class UnsupportedProtocolVersion(ProtocolError):
    """A CONNECT for an MQTT level this codec does not speak.

    MQTT-3.1.2-2 asks the server to answer CONNACK return code 1 (5.0: reason 0x84) before it
    closes, so this carries what the client asked for.
    """

    def __init__(self, protocol_name: str, protocol_level: int) -> None:
        self.protocol_name = protocol_name
        self.protocol_level = protocol_level
        super().__init__(f"unsupported protocol {protocol_name!r} level {protocol_level}")


_PUBLISH = PacketType.PUBLISH
_PINGREQ = Pingreq()
_PINGRESP = Pingresp()
_DISCONNECT = Disconnect()


def decode_publish(first_byte: int, data: bytes, start: int, stop: int, v5: bool) -> Publish:
    """Decode a PUBLISH whose variable header starts at ``data[start]`` and ends at ``stop``.

    The hot path of both server and client: plain indexing, one slice for the topic and one
    for the payload.
    """
    qos = (first_byte >> 1) & 3
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if stop - start < 2:
        raise ProtocolError("PUBLISH too short for a topic name")
    pos = start + 2 + (data[start] << 8 | data[start + 1])
    if pos > stop:
        raise ProtocolError("PUBLISH topic name runs past the end of the packet")
    try:
        topic = data[start + 2 : pos].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError("malformed UTF-8 in a PUBLISH topic name") from exc
    if "\x00" in topic:
        raise ProtocolError("U+0000 in a PUBLISH topic name")
    packet_id = None
    if qos:
        if pos + 2 > stop:
            raise ProtocolError("PUBLISH too short for its packet identifier")
        packet_id = data[pos] << 8 | data[pos + 1]
        if not packet_id:
            raise ProtocolError("packet identifier 0")
        pos += 2
    elif first_byte & 0x08:
        raise ProtocolError("PUBLISH with QoS 0 and DUP set")
    properties = NO_PROPERTIES
    if v5:
        if pos >= stop:
            raise ProtocolError("PUBLISH without a property length")
        if data[pos]:
            cursor = Cursor(data, pos, stop)
            properties = decode_properties(cursor, _PUBLISH)
            pos = cursor.pos
        else:
            pos += 1
    return Publish(
        topic, data[pos:stop], qos, first_byte & 1 != 0, first_byte & 8 != 0, packet_id, properties
    )


def _packet_id(c: Cursor) -> int:
    packet_id = c.u16()
    if not packet_id:
        raise ProtocolError("packet identifier 0")
    return packet_id


def _check_code(code: int, packet_type: PacketType, v5: bool) -> int:
    if code not in allowed_reason_codes(packet_type, v5):
        raise ProtocolError(f"{packet_type.name} with invalid reason code 0x{code:02x}")
    return code


def _reason_and_properties(c: Cursor, packet_type: PacketType, v5: bool) -> tuple[int, Properties]:
    # 5.0 lets acks, DISCONNECT and AUTH drop a trailing Success and an empty property length.
    if not v5 or c.at_end():
        return 0, NO_PROPERTIES
    code = _check_code(c.u8(), packet_type, v5)
    if c.at_end():
        return code, NO_PROPERTIES
    return code, decode_properties(c, packet_type)


def _connect_header(c: Cursor) -> tuple[int, int, int]:
    name = c.utf8()
    level = c.u8()
    if PROTOCOL_NAMES.get(level) != name:
        if name in ("MQTT", "MQIsdp"):
            raise UnsupportedProtocolVersion(name, level)
        raise ProtocolError(f"unknown protocol name {name!r}")
    flags = c.u8()
    if flags & 0x01:
        raise ProtocolError("CONNECT reserved flag set")
    if flags & 0x04:
        if flags & 0x18 == 0x18:
            raise ProtocolError("CONNECT will QoS 3")
    elif flags & 0x38:
        raise ProtocolError("CONNECT will QoS or will retain without the will flag")
    if level < MQTT_5 and flags & 0xC0 == 0x40:
        raise ProtocolError("CONNECT password flag without the user name flag")
    return level, flags, c.u16()


def _connect(c: Cursor, _v5: bool) -> Connect:
    # The level comes from the packet itself, not from the reader.
    level, flags, keep_alive = _connect_header(c)
    v5 = level == MQTT_5
    properties = decode_properties(c, PacketType.CONNECT) if v5 else NO_PROPERTIES
    client_id = c.utf8()
    will = None
    if flags & 0x04:
        will_properties = decode_properties(c, WILL) if v5 else NO_PROPERTIES
        topic = c.utf8()
        will = Will(topic, c.binary(), (flags >> 3) & 3, flags & 0x20 != 0, will_properties)
    username = c.utf8() if flags & 0x80 else None
    password = c.binary() if flags & 0x40 else None
    c.expect_end("CONNECT")
    return Connect(
        client_id, flags & 0x02 != 0, keep_alive, username, password, will, level, properties
    )


def _connack(c: Cursor, v5: bool) -> Connack:
    flags = c.u8()
    if flags & 0xFE:
        raise ProtocolError("CONNACK reserved flags set")
    code = _check_code(c.u8(), PacketType.CONNACK, v5)
    if flags and code:
        raise ProtocolError("CONNACK with session present and a refusal")
    properties = decode_properties(c, PacketType.CONNACK) if v5 else NO_PROPERTIES
    c.expect_end("CONNACK")
    return Connack(flags != 0, code, properties)


_Ack = type[Puback] | type[Pubrec] | type[Pubrel] | type[Pubcomp]


def _ack_decoder(cls: _Ack) -> Callable[[Cursor, bool], Packet]:
    def decode(c: Cursor, v5: bool) -> Packet:
        packet_id = _packet_id(c)
        code, properties = _reason_and_properties(c, cls.packet_type, v5)
        c.expect_end(cls.packet_type.name)
        return cls(packet_id, code, properties)

    return decode


def _subscription(topic_filter: str, options: int, v5: bool) -> Subscription:
    qos = options & 0x03
    if qos == 3:
        raise ProtocolError("SUBSCRIBE with QoS 3")
    if not v5:
        if options & 0xFC:
            raise ProtocolError("SUBSCRIBE reserved option bits set")
        return Subscription(topic_filter, qos)
    retain_handling = (options >> 4) & 0x03
    if options & 0xC0 or retain_handling == 3:
        raise ProtocolError("SUBSCRIBE reserved option bits or retain handling 3")
    return Subscription(
        topic_filter, qos, options & 0x04 != 0, options & 0x08 != 0, retain_handling
    )


def _subscribe(c: Cursor, v5: bool) -> Subscribe:
    packet_id = _packet_id(c)
    properties = decode_properties(c, PacketType.SUBSCRIBE) if v5 else NO_PROPERTIES
    subscriptions: list[Subscription] = []
    while not c.at_end():
        topic_filter = c.utf8()
        subscriptions.append(_subscription(topic_filter, c.u8(), v5))
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE without a topic filter")
    return Subscribe(packet_id, tuple(subscriptions), properties)


def _codes(c: Cursor, packet_type: PacketType, v5: bool) -> tuple[int, ...]:
    codes = tuple(c.rest())
    if not codes:
        raise ProtocolError(f"{packet_type.name} without a reason code")
    for code in codes:
        _check_code(code, packet_type, v5)
    return codes


def _suback(c: Cursor, v5: bool) -> Suback:
    packet_id = _packet_id(c)
    properties = decode_properties(c, PacketType.SUBACK) if v5 else NO_PROPERTIES
    return Suback(packet_id, _codes(c, PacketType.SUBACK, v5), properties)


def _unsubscribe(c: Cursor, v5: bool) -> Unsubscribe:
    packet_id = _packet_id(c)
    properties = decode_properties(c, PacketType.UNSUBSCRIBE) if v5 else NO_PROPERTIES
    topic_filters: list[str] = []
    while not c.at_end():
        topic_filters.append(c.utf8())
    if not topic_filters:
        raise ProtocolError("UNSUBSCRIBE without a topic filter")
    return Unsubscribe(packet_id, tuple(topic_filters), properties)


def _unsuback(c: Cursor, v5: bool) -> Unsuback:
    packet_id = _packet_id(c)
    if not v5:
        c.expect_end("UNSUBACK")
        return Unsuback(packet_id)
    properties = decode_properties(c, PacketType.UNSUBACK)
    return Unsuback(packet_id, _codes(c, PacketType.UNSUBACK, v5), properties)


def _pingreq(c: Cursor, _v5: bool) -> Pingreq:
    c.expect_end("PINGREQ")
    return _PINGREQ


def _pingresp(c: Cursor, _v5: bool) -> Pingresp:
    c.expect_end("PINGRESP")
    return _PINGRESP


def _disconnect(c: Cursor, v5: bool) -> Disconnect:
    code, properties = _reason_and_properties(c, PacketType.DISCONNECT, v5)
    c.expect_end("DISCONNECT")
    if not code and properties is NO_PROPERTIES:
        return _DISCONNECT
    return Disconnect(code, properties)


def _auth(c: Cursor, v5: bool) -> Auth:
    code, properties = _reason_and_properties(c, PacketType.AUTH, v5)
    c.expect_end("AUTH")
    return Auth(code, properties)


_DECODERS: dict[int, Callable[[Cursor, bool], Packet]] = {
    PacketType.CONNECT: _connect,
    PacketType.CONNACK: _connack,
    PacketType.PUBACK: _ack_decoder(Puback),
    PacketType.PUBREC: _ack_decoder(Pubrec),
    PacketType.PUBREL: _ack_decoder(Pubrel),
    PacketType.PUBCOMP: _ack_decoder(Pubcomp),
    PacketType.SUBSCRIBE: _subscribe,
    PacketType.SUBACK: _suback,
    PacketType.UNSUBSCRIBE: _unsubscribe,
    PacketType.UNSUBACK: _unsuback,
    PacketType.PINGREQ: _pingreq,
    PacketType.PINGRESP: _pingresp,
    PacketType.DISCONNECT: _disconnect,
    PacketType.AUTH: _auth,
}
# The fixed-header flags every type but PUBLISH must carry (3.1.1 table 2.2, 5.0 table 2-2).
_FLAGS = {ptype: 0x02 if ptype in (6, 8, 10) else 0x00 for ptype in _DECODERS}


def check_first_byte(first_byte: int, v5: bool) -> None:
    """Refuse a fixed-header first byte that no packet may have, before its body arrives.

    Covers the reserved type 0, AUTH before 5.0, the fixed flags of every type but PUBLISH
    (3.1.1 table 2.2, 5.0 table 2-2), PUBLISH QoS 3 and DUP on QoS 0.
    """
    packet_type = first_byte >> 4
    flags = first_byte & 0x0F
    if packet_type == _PUBLISH:
        if flags & 0x06 == 0x06:
            raise ProtocolError("PUBLISH with QoS 3")
        if flags & 0x0E == 0x08:
            raise ProtocolError("PUBLISH with QoS 0 and DUP set")
        return
    if packet_type == 0:
        raise ProtocolError("reserved packet type 0")
    if packet_type == PacketType.AUTH and not v5:
        raise ProtocolError("AUTH is an MQTT 5.0 packet")
    if flags != _FLAGS[packet_type]:
        name = PacketType(packet_type).name
        raise ProtocolError(f"{name} with invalid fixed-header flags 0x{flags:x}")


def _valid_first_bytes(v5: bool) -> bytes:
    valid = bytearray(256)
    for first_byte in range(256):
        try:
            check_first_byte(first_byte, v5)
        except ProtocolError:
            continue
        valid[first_byte] = 1
    return bytes(valid)


VALID_FIRST_BYTES: dict[bool, bytes] = {
    False: _valid_first_bytes(False),
    True: _valid_first_bytes(True),
}
"""Keyed by "is MQTT 5.0": a table with 1 at each first byte :func:`check_first_byte` accepts."""


def decode_body(first_byte: int, data: bytes, start: int, stop: int, protocol_level: int) -> Packet:
    """Decode the packet with fixed-header byte ``first_byte`` and body ``data[start:stop]``.

    ``protocol_level`` is the connection's (3, 4 or 5); a CONNECT carries its own.
    """
    v5 = protocol_level == MQTT_5
    check_first_byte(first_byte, v5)
    packet_type = first_byte >> 4
    if packet_type == _PUBLISH:
        return decode_publish(first_byte, data, start, stop, v5)
    return _DECODERS[packet_type](Cursor(data, start, stop), v5)
