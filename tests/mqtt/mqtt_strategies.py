"""Hypothesis strategies for valid MQTT packets of one protocol level."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from worker.mqtt import (
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
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
from worker.mqtt.codes import V5_REASON_CODES
from worker.mqtt.properties import ALLOWED_PROPERTIES, WILL

LEVELS = (3, 4, 5)

# Well-formed UTF-8 (no surrogates) without U+0000: what an MQTT string may hold.
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
binary = st.binary(max_size=40)
packet_ids = st.integers(1, 0xFFFF)
u8_bool = st.integers(0, 1)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
varint = st.integers(1, 268_435_455)

_P = PropertyId
_VALUES: dict[PropertyId, tuple[str, st.SearchStrategy[Any]]] = {
    _P.PAYLOAD_FORMAT_INDICATOR: ("payload_format_indicator", u8_bool),
    _P.MESSAGE_EXPIRY_INTERVAL: ("message_expiry_interval", u32),
    _P.CONTENT_TYPE: ("content_type", text),
    _P.RESPONSE_TOPIC: ("response_topic", text),
    _P.CORRELATION_DATA: ("correlation_data", binary),
    _P.SESSION_EXPIRY_INTERVAL: ("session_expiry_interval", u32),
    _P.ASSIGNED_CLIENT_IDENTIFIER: ("assigned_client_identifier", text),
    _P.SERVER_KEEP_ALIVE: ("server_keep_alive", u16),
    _P.AUTHENTICATION_METHOD: ("authentication_method", text),
    _P.AUTHENTICATION_DATA: ("authentication_data", binary),
    _P.REQUEST_PROBLEM_INFORMATION: ("request_problem_information", u8_bool),
    _P.WILL_DELAY_INTERVAL: ("will_delay_interval", u32),
    _P.REQUEST_RESPONSE_INFORMATION: ("request_response_information", u8_bool),
    _P.RESPONSE_INFORMATION: ("response_information", text),
    _P.SERVER_REFERENCE: ("server_reference", text),
    _P.REASON_STRING: ("reason_string", text),
    _P.RECEIVE_MAXIMUM: ("receive_maximum", st.integers(1, 0xFFFF)),
    _P.TOPIC_ALIAS_MAXIMUM: ("topic_alias_maximum", u16),
    _P.TOPIC_ALIAS: ("topic_alias", st.integers(1, 0xFFFF)),
    _P.MAXIMUM_QOS: ("maximum_qos", u8_bool),
    _P.RETAIN_AVAILABLE: ("retain_available", u8_bool),
    _P.USER_PROPERTY: (
        "user_properties",
        st.lists(st.tuples(text, text), max_size=3).map(tuple),
    ),
    _P.MAXIMUM_PACKET_SIZE: ("maximum_packet_size", st.integers(1, 0xFFFF_FFFF)),
    _P.WILDCARD_SUBSCRIPTION_AVAILABLE: ("wildcard_subscription_available", u8_bool),
    _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: ("subscription_identifier_available", u8_bool),
    _P.SHARED_SUBSCRIPTION_AVAILABLE: ("shared_subscription_available", u8_bool),
}


def properties(context: int, level: int) -> st.SearchStrategy[Properties]:
    """Properties allowed in ``context`` (a packet type or WILL); always empty before 5.0."""
    if level != MQTT_5:
        return st.just(NO_PROPERTIES)
    allowed = ALLOWED_PROPERTIES[context]
    optional = {attr: values for pid, (attr, values) in _VALUES.items() if pid in allowed}
    if _P.SUBSCRIPTION_IDENTIFIER in allowed:
        most = 3 if context == PacketType.PUBLISH else 1
        optional["subscription_identifiers"] = st.lists(varint, max_size=most).map(tuple)
    return st.fixed_dictionaries({}, optional=optional).map(lambda kw: Properties(**kw))


def reason_codes(packet_type: PacketType, level: int) -> st.SearchStrategy[int]:
    """Reason codes a packet type may carry at ``level`` (only 0 where 3.1.1 has none)."""
    if level == MQTT_5:
        return st.sampled_from(sorted(V5_REASON_CODES[packet_type]))
    if packet_type is PacketType.CONNACK:
        return st.integers(0, 5)
    if packet_type is PacketType.SUBACK:
        return st.sampled_from([0, 1, 2, 0x80])
    return st.just(0)


def qos_and_id() -> st.SearchStrategy[tuple[int, int | None, bool]]:
    """QoS, packet identifier and DUP, consistent with each other."""
    return st.one_of(
        st.just((0, None, False)),
        st.tuples(st.integers(1, 2), packet_ids, st.booleans()),
    )


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    """CONNECT for ``level``; before 5.0 a password always comes with a user name."""
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(text),
            draw(binary),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(properties(WILL, level)),
        )
    username = draw(st.none() | text)
    password = draw(st.none() | binary)
    if level != MQTT_5 and username is None and password is not None:
        username = ""
    return Connect(
        draw(text),
        draw(st.booleans()),
        draw(u16),
        username,
        password,
        will,
        level,
        draw(properties(PacketType.CONNECT, level)),
    )


@st.composite
def connacks(draw: st.DrawFn, level: int) -> Connack:
    """CONNACK; session present only on acceptance."""
    code = draw(reason_codes(PacketType.CONNACK, level))
    present = draw(st.booleans()) and code == 0
    return Connack(present, code, draw(properties(PacketType.CONNACK, level)))


@st.composite
def publishes(draw: st.DrawFn, level: int) -> Publish:
    """PUBLISH of any QoS."""
    qos, packet_id, dup = draw(qos_and_id())
    return Publish(
        draw(text),
        draw(binary),
        qos,
        draw(st.booleans()),
        dup,
        packet_id,
        draw(properties(PacketType.PUBLISH, level)),
    )


def acks(level: int) -> st.SearchStrategy[Packet]:
    """PUBACK, PUBREC, PUBREL and PUBCOMP."""
    return st.one_of(
        [
            st.builds(
                cls,
                packet_ids,
                reason_codes(cls.packet_type, level),
                properties(cls.packet_type, level),
            )
            for cls in (Puback, Pubrec, Pubrel, Pubcomp)
        ]
    )


def subscriptions(level: int) -> st.SearchStrategy[Subscription]:
    """One topic filter with options (only QoS before 5.0)."""
    if level != MQTT_5:
        return st.builds(Subscription, text, st.integers(0, 2))
    return st.builds(
        Subscription, text, st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 2)
    )


def _tuples(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(values, min_size=1, max_size=4).map(tuple)


def packets(level: int) -> st.SearchStrategy[Packet]:
    """Any valid packet for a connection at ``level``."""
    options: list[st.SearchStrategy[Packet]] = [
        connects(level),
        connacks(level),
        publishes(level),
        acks(level),
        st.builds(
            Subscribe,
            packet_ids,
            _tuples(subscriptions(level)),
            properties(PacketType.SUBSCRIBE, level),
        ),
        st.builds(
            Suback,
            packet_ids,
            _tuples(reason_codes(PacketType.SUBACK, level)),
            properties(PacketType.SUBACK, level),
        ),
        st.builds(
            Unsubscribe, packet_ids, _tuples(text), properties(PacketType.UNSUBSCRIBE, level)
        ),
        st.just(Pingreq()),
        st.just(Pingresp()),
    ]
    if level == MQTT_5:
        options += [
            st.builds(
                Unsuback,
                packet_ids,
                _tuples(reason_codes(PacketType.UNSUBACK, level)),
                properties(PacketType.UNSUBACK, level),
            ),
            st.builds(
                Disconnect,
                reason_codes(PacketType.DISCONNECT, level),
                properties(PacketType.DISCONNECT, level),
            ),
            st.builds(
                Auth, reason_codes(PacketType.AUTH, level), properties(PacketType.AUTH, level)
            ),
        ]
    else:
        options += [st.builds(Unsuback, packet_ids), st.just(Disconnect())]
    return st.one_of(options)
