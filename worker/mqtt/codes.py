"""Numbers of the MQTT wire protocol: packet types, protocol levels, return and reason codes.

Reason codes are kept as plain ``int`` on the packets (an ``IntEnum`` compares equal to its value),
so decoding never pays for an enum lookup; the enums here name the values for readers and writers.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

MQTT_3_1: Final = 3
"""Protocol level of MQTT 3.1 (protocol name ``MQIsdp``)."""
MQTT_3_1_1: Final = 4
"""Protocol level of MQTT 3.1.1 (protocol name ``MQTT``)."""
MQTT_5: Final = 5
"""Protocol level of MQTT 5.0 (protocol name ``MQTT``)."""

PROTOCOL_NAMES: Final[dict[int, str]] = {MQTT_3_1: "MQIsdp", MQTT_3_1_1: "MQTT", MQTT_5: "MQTT"}
"""The protocol name each supported level announces in CONNECT."""

MAX_REMAINING_LENGTH: Final = 268_435_455
"""The largest value four bytes of variable byte integer can carry."""


class PacketType(IntEnum):
    """The control packet type: the high nibble of a packet's first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ConnackReturnCode(IntEnum):
    """CONNACK return codes of MQTT 3.1 and 3.1.1 (section 3.2.2.3); 6-255 are reserved."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class ReasonCode(IntEnum):
    """MQTT 5.0 reason codes (section 2.4); one number may carry several names."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class SubackReturnCode(IntEnum):
    """SUBACK return codes of MQTT 3.1.1 (section 3.9.3): the QoS granted, or a failure.

    5.0 keeps the numbers (its ``UNSPECIFIED_ERROR`` is 0x80) and adds failures of its own;
    every 5.0 failure is 0x80 or more.
    """

    SUCCESS_MAXIMUM_QOS_0 = 0x00
    SUCCESS_MAXIMUM_QOS_1 = 0x01
    SUCCESS_MAXIMUM_QOS_2 = 0x02
    FAILURE = 0x80


V3_CONNACK_CODES: Final = frozenset(ConnackReturnCode)
"""The CONNACK return codes MQTT 3.1.1 defines."""

V3_SUBACK_CODES: Final = frozenset(SubackReturnCode)
"""SUBACK return codes of MQTT 3.1.1: a granted QoS or 0x80 failure."""

CONNACK_MEANINGS: Final[dict[int, str]] = {
    ConnackReturnCode.ACCEPTED: "connection accepted",
    ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION: "unacceptable protocol version",
    ConnackReturnCode.IDENTIFIER_REJECTED: "the client ID is not accepted",
    ConnackReturnCode.SERVER_UNAVAILABLE: "server unavailable",
    ConnackReturnCode.BAD_USERNAME_OR_PASSWORD: "bad user name or password",
    ConnackReturnCode.NOT_AUTHORIZED: "not authorised",
}
"""What each CONNACK return code means, as the worker's messages say it: the one such table."""

V5_CONNACK_AS_V3: Final[dict[int, ConnackReturnCode]] = {
    ReasonCode.UNSUPPORTED_PROTOCOL_VERSION: ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID: ConnackReturnCode.IDENTIFIER_REJECTED,
    ReasonCode.SERVER_UNAVAILABLE: ConnackReturnCode.SERVER_UNAVAILABLE,
    ReasonCode.BAD_USER_NAME_OR_PASSWORD: ConnackReturnCode.BAD_USERNAME_OR_PASSWORD,
    ReasonCode.NOT_AUTHORIZED: ConnackReturnCode.NOT_AUTHORIZED,
    ReasonCode.BANNED: ConnackReturnCode.NOT_AUTHORIZED,
    ReasonCode.BAD_AUTHENTICATION_METHOD: ConnackReturnCode.NOT_AUTHORIZED,
}
"""5.0 CONNACK refusals by the 3.1.1 return code of the same meaning.

Client libraries (paho) report a 3.1.1 return code as the 5.0 reason code it corresponds to;
this turns it back.
"""


def connack_return_code(code: int) -> ConnackReturnCode | None:
    """The 3.1.1 return code a CONNACK code means, given as 3.1.1 (0-5) or as a 5.0 reason code.

    None when 3.1.1 has no code of that meaning. The two ranges do not overlap: every 5.0
    refusal is 0x80 or more.
    """
    if code in V3_CONNACK_CODES:
        return ConnackReturnCode(code)
    return V5_CONNACK_AS_V3.get(code)


def connack_meaning(code: int) -> str:
    """What a CONNACK code means, given either way ("unknown reason" when nothing says)."""
    return_code = connack_return_code(code)
    return "unknown reason" if return_code is None else CONNACK_MEANINGS[return_code]


_ACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_REL_CODES = frozenset({0x00, 0x92})
_CONNACK_CODES = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C}
    | {0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
_DISCONNECT_CODES = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90}
    | {0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F}
    | {0xA0, 0xA1, 0xA2}
)

V5_REASON_CODES: Final[dict[PacketType, frozenset[int]]] = {
    PacketType.CONNACK: _CONNACK_CODES,
    PacketType.PUBACK: _ACK_CODES,
    PacketType.PUBREC: _ACK_CODES,
    PacketType.PUBREL: _REL_CODES,
    PacketType.PUBCOMP: _REL_CODES,
    PacketType.SUBACK: frozenset(
        {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}
    ),
    PacketType.UNSUBACK: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    PacketType.DISCONNECT: _DISCONNECT_CODES,
    PacketType.AUTH: frozenset({0x00, 0x18, 0x19}),
}
"""The reason codes MQTT 5.0 allows in each packet type that carries one."""


def allowed_reason_codes(packet_type: PacketType, v5: bool) -> frozenset[int]:
    """The codes ``packet_type`` may carry; before 5.0 only CONNACK and SUBACK have any."""
    if v5:
        return V5_REASON_CODES[packet_type]
    if packet_type is PacketType.CONNACK:
        return V3_CONNACK_CODES
    if packet_type is PacketType.SUBACK:
        return V3_SUBACK_CODES
    return frozenset({0})
