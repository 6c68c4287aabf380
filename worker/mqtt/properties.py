"""MQTT 5.0 properties (section 2.2.2): one frozen value type, its encoder and decoder.

Each packet type, and the will, accepts its own set of properties; anything else, a repeated
property that may appear once, or a value the spec calls a Protocol Error is refused on both sides,
so that what encodes also decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, Final, cast

from worker.errors import ProtocolError
from worker.mqtt.codes import PacketType
from worker.mqtt.wire import Cursor, encode_binary, encode_utf8, encode_varint


class PropertyId(IntEnum):
    """Property identifiers (MQTT 5.0 section 2.2.2.2)."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


@dataclass(slots=True, frozen=True, kw_only=True, repr=False)
class Properties:
    """The properties of one MQTT 5.0 packet or will; ``None`` means absent.

    ``user_properties`` keeps order and repeats; ``subscription_identifiers`` may hold several
    values only in a PUBLISH sent by a server.
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = field(default=None, repr=False)
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __repr__(self) -> str:
        # Only what is present, and never the authentication data (it may be a secret).
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) not in (None, ()) and f.name != "authentication_data"
        ]
        if self.authentication_data is not None:
            shown.append("authentication_data=...")
        return f"Properties({', '.join(shown)})"


NO_PROPERTIES: Final = Properties()
"""The empty property set, shared by every packet that carries none."""

WILL: Final = 0
"""The property context of the will in CONNECT (0 is no packet type)."""

_P = PropertyId
_BYTE, _U16, _U32, _VARINT, _UTF8, _BINARY, _PAIR = range(7)

# (identifier, attribute, kind) in identifier order, which is also the order of encoding.
_SPECS: Final = (
    (_P.PAYLOAD_FORMAT_INDICATOR, "payload_format_indicator", _BYTE),
    (_P.MESSAGE_EXPIRY_INTERVAL, "message_expiry_interval", _U32),
    (_P.CONTENT_TYPE, "content_type", _UTF8),
    (_P.RESPONSE_TOPIC, "response_topic", _UTF8),
    (_P.CORRELATION_DATA, "correlation_data", _BINARY),
    (_P.SUBSCRIPTION_IDENTIFIER, "subscription_identifiers", _VARINT),
    (_P.SESSION_EXPIRY_INTERVAL, "session_expiry_interval", _U32),
    (_P.ASSIGNED_CLIENT_IDENTIFIER, "assigned_client_identifier", _UTF8),
    (_P.SERVER_KEEP_ALIVE, "server_keep_alive", _U16),
    (_P.AUTHENTICATION_METHOD, "authentication_method", _UTF8),
    (_P.AUTHENTICATION_DATA, "authentication_data", _BINARY),
    (_P.REQUEST_PROBLEM_INFORMATION, "request_problem_information", _BYTE),
    (_P.WILL_DELAY_INTERVAL, "will_delay_interval", _U32),
    (_P.REQUEST_RESPONSE_INFORMATION, "request_response_information", _BYTE),
    (_P.RESPONSE_INFORMATION, "response_information", _UTF8),
    (_P.SERVER_REFERENCE, "server_reference", _UTF8),
    (_P.REASON_STRING, "reason_string", _UTF8),
    (_P.RECEIVE_MAXIMUM, "receive_maximum", _U16),
    (_P.TOPIC_ALIAS_MAXIMUM, "topic_alias_maximum", _U16),
    (_P.TOPIC_ALIAS, "topic_alias", _U16),
    (_P.MAXIMUM_QOS, "maximum_qos", _BYTE),
    (_P.RETAIN_AVAILABLE, "retain_available", _BYTE),
    (_P.USER_PROPERTY, "user_properties", _PAIR),
    (_P.MAXIMUM_PACKET_SIZE, "maximum_packet_size", _U32),
    (_P.WILDCARD_SUBSCRIPTION_AVAILABLE, "wildcard_subscription_available", _BYTE),
    (_P.SUBSCRIPTION_IDENTIFIER_AVAILABLE, "subscription_identifier_available", _BYTE),
    (_P.SHARED_SUBSCRIPTION_AVAILABLE, "shared_subscription_available", _BYTE),
)
_BY_ID: Final = {int(pid): (attr, kind) for pid, attr, kind in _SPECS}

# Byte properties whose only legal values are 0 and 1, and integers for which 0 is a Protocol Error.
_BOOLEANS: Final = frozenset(
    {
        _P.PAYLOAD_FORMAT_INDICATOR,
        _P.REQUEST_PROBLEM_INFORMATION,
        _P.REQUEST_RESPONSE_INFORMATION,
        _P.MAXIMUM_QOS,
        _P.RETAIN_AVAILABLE,
        _P.WILDCARD_SUBSCRIPTION_AVAILABLE,
        _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        _P.SHARED_SUBSCRIPTION_AVAILABLE,
    }
)
_NON_ZERO: Final = frozenset(
    {_P.SUBSCRIPTION_IDENTIFIER, _P.RECEIVE_MAXIMUM, _P.TOPIC_ALIAS, _P.MAXIMUM_PACKET_SIZE}
)
_LIMITS: Final = {_BYTE: 0xFF, _U16: 0xFFFF, _U32: 0xFFFF_FFFF, _VARINT: 268_435_455}

_WILL_IDS = frozenset(
    {_P.PAYLOAD_FORMAT_INDICATOR, _P.MESSAGE_EXPIRY_INTERVAL, _P.CONTENT_TYPE, _P.RESPONSE_TOPIC}
    | {_P.CORRELATION_DATA, _P.WILL_DELAY_INTERVAL, _P.USER_PROPERTY}
)
_ACK_IDS = frozenset({_P.REASON_STRING, _P.USER_PROPERTY})
_AUTH_IDS = frozenset({_P.AUTHENTICATION_METHOD, _P.AUTHENTICATION_DATA})

ALLOWED_PROPERTIES: Final[dict[int, frozenset[PropertyId]]] = {
    WILL: _WILL_IDS,
    PacketType.CONNECT: _AUTH_IDS
    | {_P.SESSION_EXPIRY_INTERVAL, _P.REQUEST_PROBLEM_INFORMATION, _P.REQUEST_RESPONSE_INFORMATION}
    | {_P.RECEIVE_MAXIMUM, _P.TOPIC_ALIAS_MAXIMUM, _P.USER_PROPERTY, _P.MAXIMUM_PACKET_SIZE},
    PacketType.CONNACK: _AUTH_IDS
    | _ACK_IDS
    | {_P.SESSION_EXPIRY_INTERVAL, _P.ASSIGNED_CLIENT_IDENTIFIER, _P.SERVER_KEEP_ALIVE}
    | {_P.RESPONSE_INFORMATION, _P.SERVER_REFERENCE, _P.RECEIVE_MAXIMUM, _P.TOPIC_ALIAS_MAXIMUM}
    | {_P.MAXIMUM_QOS, _P.RETAIN_AVAILABLE, _P.MAXIMUM_PACKET_SIZE}
    | {_P.WILDCARD_SUBSCRIPTION_AVAILABLE, _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE}
    | {_P.SHARED_SUBSCRIPTION_AVAILABLE},
    PacketType.PUBLISH: (_WILL_IDS - {_P.WILL_DELAY_INTERVAL})
    | {_P.TOPIC_ALIAS, _P.SUBSCRIPTION_IDENTIFIER},
    PacketType.PUBACK: _ACK_IDS,
    PacketType.PUBREC: _ACK_IDS,
    PacketType.PUBREL: _ACK_IDS,
    PacketType.PUBCOMP: _ACK_IDS,
    PacketType.SUBSCRIBE: frozenset({_P.SUBSCRIPTION_IDENTIFIER, _P.USER_PROPERTY}),
    PacketType.SUBACK: _ACK_IDS,
    PacketType.UNSUBSCRIBE: frozenset({_P.USER_PROPERTY}),
    PacketType.UNSUBACK: _ACK_IDS,
    PacketType.DISCONNECT: _ACK_IDS | {_P.SESSION_EXPIRY_INTERVAL, _P.SERVER_REFERENCE},
    PacketType.AUTH: _AUTH_IDS | _ACK_IDS,
}
"""The properties each packet type (and the will, key :data:`WILL`) may carry."""


def _check_value(pid: int, value: int) -> None:
    if pid in _BOOLEANS and value > 1:
        raise ProtocolError(f"property {PropertyId(pid).name} must be 0 or 1, not {value}")
    if pid in _NON_ZERO and value == 0:
        raise ProtocolError(f"property {PropertyId(pid).name} may not be 0")


def _read_value(cursor: Cursor, pid: int, kind: int) -> int | str | bytes:
    if kind == _UTF8:
        return cursor.utf8()
    if kind == _BINARY:
        return cursor.binary()
    if kind == _BYTE:
        value = cursor.u8()
    elif kind == _U16:
        value = cursor.u16()
    elif kind == _U32:
        value = cursor.u32()
    else:
        value = cursor.varint()
    _check_value(pid, value)
    return value


def decode_properties(cursor: Cursor, context: int) -> Properties:
    """Read a property length and the properties it covers, for a packet type or :data:`WILL`."""
    length = cursor.varint()
    if length == 0:
        return NO_PROPERTIES
    end = cursor.pos + length
    if end > cursor.end:
        raise ProtocolError("property length runs past the end of the packet")
    outer_end, cursor.end = cursor.end, end
    allowed = ALLOWED_PROPERTIES[context]
    values: dict[str, Any] = {}
    users: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    while cursor.pos < end:
        pid = cursor.varint()
        if pid not in allowed:
            raise ProtocolError(f"property 0x{pid:02x} is not allowed in this packet")
        attr, kind = _BY_ID[pid]
        if pid == _P.USER_PROPERTY:
            users.append((cursor.utf8(), cursor.utf8()))
            continue
        # Only a PUBLISH from a server may carry several subscription identifiers.
        repeats = pid == _P.SUBSCRIPTION_IDENTIFIER and context == PacketType.PUBLISH
        if (attr in values or (sub_ids and pid == _P.SUBSCRIPTION_IDENTIFIER)) and not repeats:
            raise ProtocolError(f"property {PropertyId(pid).name} appears more than once")
        value = _read_value(cursor, pid, kind)
        if pid == _P.SUBSCRIPTION_IDENTIFIER:
            sub_ids.append(cast(int, value))
        else:
            values[attr] = value
    cursor.end = outer_end
    return Properties(
        user_properties=tuple(users), subscription_identifiers=tuple(sub_ids), **values
    )


def _encode_value(pid: int, kind: int, value: object) -> bytes:
    if kind == _UTF8 and isinstance(value, str):
        return encode_utf8(value)
    if kind == _BINARY and isinstance(value, bytes):
        return encode_binary(value)
    if kind == _PAIR and isinstance(value, tuple) and len(value) == 2:
        return encode_utf8(value[0]) + encode_utf8(value[1])
    if kind in _LIMITS and isinstance(value, int) and 0 <= value <= _LIMITS[kind]:
        _check_value(pid, value)
        if kind == _VARINT:
            return encode_varint(value)
        return value.to_bytes({_BYTE: 1, _U16: 2, _U32: 4}[kind], "big")
    raise ProtocolError(f"property {PropertyId(pid).name} cannot hold {value!r}")


def encode_properties(properties: Properties, context: int) -> bytes:
    """The property length and properties, for a packet type or :data:`WILL`."""
    if properties is NO_PROPERTIES:
        return b"\x00"
    allowed = ALLOWED_PROPERTIES[context]
    parts: list[bytes] = []
    for pid, attr, kind in _SPECS:
        value = getattr(properties, attr)
        if value is None or value == ():
            continue
        if pid not in allowed:
            raise ProtocolError(f"property {pid.name} is not allowed in this packet")
        repeated = value if kind in (_PAIR, _VARINT) else (value,)
        if kind == _VARINT and len(repeated) > 1 and context != PacketType.PUBLISH:
            raise ProtocolError(f"property {pid.name} may appear only once in this packet")
        for item in repeated:
            parts.append(bytes((pid,)))
            parts.append(_encode_value(pid, kind, item))
    body = b"".join(parts)
    return encode_varint(len(body)) + body
