"""Golden bytes written out by hand from the MQTT 3.1, 3.1.1 and 5.0 specifications.

Each case is checked both ways: the packet encodes to exactly these bytes and the bytes decode
to exactly this packet.
"""

from __future__ import annotations

import pytest

from worker.mqtt import (
    Auth,
    Connack,
    ConnackReturnCode,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    decode_packet,
    encode,
)


def h(text: str) -> bytes:
    """Bytes from spaced hex, so cases read like the spec's tables."""
    return bytes.fromhex(text)


def s(value: str) -> bytes:
    """An MQTT string: two bytes of length, then UTF-8."""
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


V311: list[tuple[str, Packet, bytes]] = [
    (
        # The non-normative variable header example of 3.1.1 section 3.1.2 (name, level 4,
        # flags 0xCE, keep alive 10), then the payload in the order of section 3.1.3.
        "connect-all-fields",
        Connect(
            "client-1",
            clean_start=True,
            keep_alive=10,
            username="user",
            password=b"pass",
            will=Will("will/topic", b"bye", qos=1),
        ),
        h("10 31 0004 4d515454 04 ce 000a")
        + s("client-1")
        + s("will/topic")
        + s("bye")
        + s("user")
        + s("pass"),
    ),
    (
        "connect-minimal-persistent",
        Connect("", clean_start=False, keep_alive=0),
        h("10 0c 0004 4d515454 04 00 0000 0000"),
    ),
    (
        "connect-will-retain-qos2",
        Connect("c", will=Will("t", b"", qos=2, retain=True)),
        h("10 12 0004 4d515454 04 36 003c 0001 63 0001 74 0000"),
    ),
    ("connack-accepted", Connack(), h("20 02 00 00")),
    ("connack-session-present", Connack(session_present=True), h("20 02 01 00")),
    (
        "connack-not-authorized",
        Connack(reason_code=ConnackReturnCode.NOT_AUTHORIZED),
        h("20 02 00 05"),
    ),
    (
        "publish-qos1",
        Publish("a/b", b"hello", qos=1, packet_id=10),
        h("32 0c 0003 612f62 000a 68656c6c6f"),
    ),
    ("publish-qos0-retain", Publish("a/b", b"", retain=True), h("31 05 0003 612f62")),
    (
        "publish-qos2-dup",
        Publish("t", b"\x00\xff", qos=2, dup=True, packet_id=0xFFFF),
        h("3c 07 0001 74 ffff 00ff"),
    ),
    ("puback", Puback(10), h("40 02 000a")),
    ("pubrec", Pubrec(10), h("50 02 000a")),
    ("pubrel", Pubrel(10), h("62 02 000a")),
    ("pubcomp", Pubcomp(10), h("70 02 000a")),
    (
        "subscribe-two-filters",
        Subscribe(1, (Subscription("a/b", 1), Subscription("c/#", 2))),
        h("82 0e 0001") + s("a/b") + h("01") + s("c/#") + h("02"),
    ),
    ("suback", Suback(1, (1, 0x80)), h("90 04 0001 01 80")),
    ("unsubscribe", Unsubscribe(2, ("a/b",)), h("a2 07 0002 0003 612f62")),
    ("unsuback", Unsuback(2), h("b0 02 0002")),
    ("pingreq", Pingreq(), h("c0 00")),
    ("pingresp", Pingresp(), h("d0 00")),
    ("disconnect", Disconnect(), h("e0 00")),
]

V31: list[tuple[str, Packet, bytes]] = [
    (
        # MQTT 3.1: protocol name "MQIsdp", level 3.
        "connect-mqisdp",
        Connect("abc", keep_alive=60, protocol_level=3),
        h("10 11 0006 4d5149736470 03 02 003c") + s("abc"),
    ),
]

V5: list[tuple[str, Packet, bytes]] = [
    (
        "connect-v5-minimal",
        Connect("a", protocol_level=5),
        h("10 0e 0004 4d515454 05 02 003c 00") + s("a"),
    ),
    (
        # 5.0 allows a password without a user name; session expiry 0x11 is a four-byte integer.
        "connect-v5-properties-will",
        Connect(
            "a",
            password=b"pw",
            will=Will("w", b"x", properties=Properties(will_delay_interval=5)),
            protocol_level=5,
            properties=Properties(session_expiry_interval=60, receive_maximum=20),
        ),
        h("10 26 0004 4d515454 05 46 003c")
        + h("08 11 0000003c 21 0014")
        + s("a")
        + h("05 18 00000005")
        + s("w")
        + s("x")
        + s("pw"),
    ),
    ("connack-v5-empty-properties", Connack(), h("20 03 00 00 00")),
    (
        "connack-v5-properties",
        Connack(
            reason_code=0,
            properties=Properties(receive_maximum=10, assigned_client_identifier="id"),
        ),
        h("20 0b 00 00 08 12 0002 6964 21 000a"),
    ),
    (
        "connack-v5-refused",
        Connack(reason_code=ReasonCode.BAD_USER_NAME_OR_PASSWORD),
        h("20 03 00 86 00"),
    ),
    (
        "publish-v5-properties",
        Publish(
            "a",
            b"hi",
            qos=1,
            packet_id=1,
            properties=Properties(topic_alias=3, user_properties=(("k", "v"),)),
        ),
        h("32 12 0001 61 0001 0a 23 0003 26 0001 6b 0001 76 6869"),
    ),
    ("publish-v5-no-properties", Publish("a", b"hi"), h("30 06 0001 61 00 6869")),
    (
        "publish-v5-subscription-identifiers",
        Publish("a", b"", properties=Properties(subscription_identifiers=(1, 200))),
        h("30 09 0001 61 05 0b 01 0b c801"),
    ),
    # 3.4.2.1: the reason code and property length may be left out on Success.
    ("puback-v5-success", Puback(10), h("40 02 000a")),
    (
        "puback-v5-no-subscribers",
        Puback(10, ReasonCode.NO_MATCHING_SUBSCRIBERS),
        h("40 03 000a 10"),
    ),
    (
        "pubrec-v5-reason-string",
        Pubrec(10, 0x80, Properties(reason_string="no")),
        h("50 09 000a 80 05 1f 0002 6e6f"),
    ),
    ("pubrel-v5-not-found", Pubrel(10, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), h("62 03 000a 92")),
    ("pubcomp-v5", Pubcomp(10), h("70 02 000a")),
    (
        # Options: QoS 1, No Local 0x04, Retain As Published 0x08, Retain Handling 2 << 4.
        "subscribe-v5-options",
        Subscribe(
            3,
            (Subscription("a/#", 1, no_local=True, retain_as_published=True, retain_handling=2),),
            Properties(subscription_identifiers=(7,)),
        ),
        h("82 0b 0003 02 0b 07") + s("a/#") + h("2d"),
    ),
    ("suback-v5", Suback(3, (1, ReasonCode.NOT_AUTHORIZED)), h("90 05 0003 00 01 87")),
    ("unsubscribe-v5", Unsubscribe(4, ("a",)), h("a2 06 0004 00 0001 61")),
    ("unsuback-v5", Unsuback(4, (0x00, 0x11)), h("b0 05 0004 00 00 11")),
    ("pingreq-v5", Pingreq(), h("c0 00")),
    ("disconnect-v5-normal", Disconnect(), h("e0 00")),
    ("disconnect-v5-shutting-down", Disconnect(ReasonCode.SERVER_SHUTTING_DOWN), h("e0 01 8b")),
    (
        "disconnect-v5-session-expiry",
        Disconnect(0, Properties(session_expiry_interval=0)),
        h("e0 07 00 05 11 00000000"),
    ),
    ("auth-v5-success", Auth(), h("f0 00")),
    (
        "auth-v5-continue",
        Auth(ReasonCode.CONTINUE_AUTHENTICATION, Properties(authentication_method="M")),
        h("f0 06 18 04 15 0001 4d"),
    ),
]

CASES = (
    [pytest.param(packet, raw, 4, id=name) for name, packet, raw in V311]
    + [pytest.param(packet, raw, 3, id=name) for name, packet, raw in V31]
    + [pytest.param(packet, raw, 5, id=name) for name, packet, raw in V5]
)


@pytest.mark.parametrize(("packet", "raw", "level"), CASES)
def test_encodes_to_golden_bytes(packet: Packet, raw: bytes, level: int) -> None:
    assert encode(packet, level).hex(" ") == raw.hex(" ")


@pytest.mark.parametrize(("packet", "raw", "level"), CASES)
def test_decodes_golden_bytes(packet: Packet, raw: bytes, level: int) -> None:
    assert decode_packet(raw, level) == packet


@pytest.mark.parametrize(
    ("raw", "packet"),
    [
        # 5.0 lets a sender spell out what the short forms leave out; both decode alike.
        (h("40 03 000a 00"), Puback(10)),
        (h("40 04 000a 00 00"), Puback(10)),
        (h("e0 01 00"), Disconnect()),
        (h("e0 02 00 00"), Disconnect()),
        (h("f0 02 00 00"), Auth()),
    ],
)
def test_v5_long_forms_decode_like_short_forms(raw: bytes, packet: Packet) -> None:
    assert decode_packet(raw, 5) == packet


def test_v5_user_properties_keep_order_and_repeats() -> None:
    raw = h("30 12 0001 61 0e 26 0001 6b 0001 31 26 0001 6b 0001 32")
    packet = decode_packet(raw, 5)
    assert isinstance(packet, Publish)
    assert packet.properties.user_properties == (("k", "1"), ("k", "2"))
    assert encode(packet, 5) == raw


def test_enum_values_match_the_specs() -> None:
    assert ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION.value == 1
    assert ConnackReturnCode.IDENTIFIER_REJECTED.value == 2
    assert ConnackReturnCode.SERVER_UNAVAILABLE.value == 3
    assert ConnackReturnCode.BAD_USERNAME_OR_PASSWORD.value == 4
    assert ReasonCode.UNSUPPORTED_PROTOCOL_VERSION.value == 0x84
    assert ReasonCode.PACKET_TOO_LARGE.value == 0x95
    assert ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED.value == 0xA2
