"""The MQTT control packets as small value classes, one per packet type.

Fields that only MQTT 5.0 puts on the wire (``properties``, reason codes of acks, subscription
options) default to the value that MQTT 3.1.1 implies, so one class serves every protocol level.
Reason and return codes are plain ``int``; :mod:`worker.mqtt.codes` names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from worker.mqtt.codes import MQTT_3_1_1, PROTOCOL_NAMES, PacketType
from worker.mqtt.properties import NO_PROPERTIES, Properties


@dataclass(slots=True, frozen=True)
class Will:
    """The will message of a CONNECT: published by the server if the client vanishes."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Connect:
    """CONNECT: the first packet a client sends; ``protocol_level`` is 3, 4 or 5."""

    packet_type: ClassVar[PacketType] = PacketType.CONNECT
    client_id: str
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    will: Will | None = None
    protocol_level: int = MQTT_3_1_1
    properties: Properties = NO_PROPERTIES

    @property
    def protocol_name(self) -> str:
        """``MQIsdp`` for MQTT 3.1, ``MQTT`` otherwise."""
        return PROTOCOL_NAMES.get(self.protocol_level, "MQTT")


@dataclass(slots=True, frozen=True)
class Connack:
    """CONNACK: the 3.1.1 return code or the 5.0 reason code in ``reason_code``."""

    packet_type: ClassVar[PacketType] = PacketType.CONNACK
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


# Not frozen on purpose: a frozen dataclass pays a guarded setattr per field and PUBLISH is
# built once per message on the hot path. Treat instances as immutable all the same.
@dataclass(slots=True, repr=False)
class Publish:
    """PUBLISH: an application message; ``packet_id`` is ``None`` exactly when ``qos`` is 0.

    Not frozen, so that decoding stays cheap; do not mutate a decoded packet.
    """

    packet_type: ClassVar[PacketType] = PacketType.PUBLISH
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = NO_PROPERTIES

    def __repr__(self) -> str:
        # A payload may be 256 MB; a repr ends up in logs.
        shown = self.payload[:32]
        more = f"+{len(self.payload) - 32}" if len(self.payload) > 32 else ""
        return (
            f"Publish(topic={self.topic!r}, payload={shown!r}{more}, qos={self.qos}, "
            f"retain={self.retain}, dup={self.dup}, packet_id={self.packet_id}, "
            f"properties={self.properties!r})"
        )


@dataclass(slots=True, frozen=True)
class Puback:
    """PUBACK: acknowledges a QoS 1 PUBLISH."""

    packet_type: ClassVar[PacketType] = PacketType.PUBACK
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Pubrec:
    """PUBREC: the first answer to a QoS 2 PUBLISH."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREC
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Pubrel:
    """PUBREL: releases a QoS 2 message after PUBREC."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREL
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Pubcomp:
    """PUBCOMP: completes a QoS 2 exchange."""

    packet_type: ClassVar[PacketType] = PacketType.PUBCOMP
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (all but ``qos`` are MQTT 5.0 only)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True, frozen=True)
class Subscribe:
    """SUBSCRIBE: one or more topic filters."""

    packet_type: ClassVar[PacketType] = PacketType.SUBSCRIBE
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Suback:
    """SUBACK: one return (3.1.1) or reason (5.0) code per filter, in order."""

    packet_type: ClassVar[PacketType] = PacketType.SUBACK
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Unsubscribe:
    """UNSUBSCRIBE: one or more topic filters."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Unsuback:
    """UNSUBACK: ``reason_codes`` is empty on 3.1.1 and has one code per filter on 5.0."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBACK
    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Pingreq:
    """PINGREQ: the client's keep-alive probe."""

    packet_type: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(slots=True, frozen=True)
class Pingresp:
    """PINGRESP: the server's answer to PINGREQ."""

    packet_type: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(slots=True, frozen=True)
class Disconnect:
    """DISCONNECT: a clean goodbye (5.0 adds a reason code and lets the server send it too)."""

    packet_type: ClassVar[PacketType] = PacketType.DISCONNECT
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True, frozen=True)
class Auth:
    """AUTH: a step of MQTT 5.0 extended authentication."""

    packet_type: ClassVar[PacketType] = PacketType.AUTH
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)
"""Any MQTT control packet."""
