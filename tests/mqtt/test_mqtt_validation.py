"""What the spec calls malformed is refused, by the decoder and by the encoder alike."""

from __future__ import annotations

import pytest

from worker.errors import ProtocolError
from worker.mqtt import (
    MAX_REMAINING_LENGTH,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Properties,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolVersion,
    Will,
    decode_packet,
    encode,
    encode_puback,
    encode_pubacks,
    encode_publish,
)
from worker.mqtt.wire import encode_varint


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def connect(flags: str, level: str = "04", rest: str = "0001 63") -> bytes:
    """A 3.1.1 CONNECT with the given flags byte and payload, length computed."""
    body = h(f"0004 4d515454 {level} {flags} 003c {rest}")
    return bytes((0x10, len(body))) + body


MALFORMED_V311 = {
    "reserved packet type 0": h("00 00"),
    "auth before 5.0": h("f0 00"),
    "connect reserved flag": connect("03"),
    "connect will qos 3": connect("1e", rest="0001 63 0001 74 0000"),
    "connect will retain without will": connect("22"),
    "connect will qos without will": connect("0a"),
    "connect password without user name": connect("42", rest="0001 63 0001 70"),
    "connect trailing bytes": connect("02", rest="0001 63 00"),
    "connect truncated client id": connect("02", rest="0005 63"),
    "connect missing user name": connect("82"),
    "connect flags nonzero in header": h("11 0d 0004 4d515454 04 02 003c 0001 63"),
    "connect unknown protocol name": h("10 0d 0004 4d515458 04 02 003c 0001 63"),
    "client id not utf-8": connect("02", rest="0001 ff"),
    "client id surrogate": connect("02", rest="0003 eda080"),
    "client id overlong": connect("02", rest="0002 c0af"),
    "client id with nul": connect("02", rest="0001 00"),
    "connack reserved flags": h("20 02 02 00"),
    "connack return code 6": h("20 02 00 06"),
    "connack session present with refusal": h("20 02 01 05"),
    "connack too long": h("20 03 00 00 00"),
    "publish qos 3": h("36 05 0001 61 0001"),
    "publish qos 0 with dup": h("38 03 0001 61"),
    "publish packet id 0": h("32 05 0001 61 0000"),
    "publish topic past end": h("30 03 0005 61"),
    "publish without topic length": h("30 01 00"),
    "publish missing packet id": h("32 04 0001 61 00"),
    "publish topic with nul": h("30 03 0001 00"),
    "publish topic not utf-8": h("30 04 0002 c3 28"),
    "puback flags": h("42 02 0001"),
    "puback packet id 0": h("40 02 0000"),
    "puback too long": h("40 03 0001 00"),
    "puback too short": h("40 01 00"),
    "pubrel flags 0": h("60 02 0001"),
    "pubrec flags": h("52 02 0001"),
    "subscribe flags 0": h("80 06 0001 0001 61 00"),
    "subscribe no filter": h("82 02 0001"),
    "subscribe reserved option bits": h("82 06 0001 0001 61 04"),
    "subscribe qos 3": h("82 06 0001 0001 61 03"),
    "subscribe missing options": h("82 05 0001 0001 61"),
    "subscribe packet id 0": h("82 06 0000 0001 61 00"),
    "suback code 3": h("90 03 0001 03"),
    "suback no code": h("90 02 0001"),
    "unsubscribe flags 0": h("a0 05 0001 0001 61"),
    "unsubscribe no filter": h("a2 02 0001"),
    "unsuback with codes": h("b0 03 0001 00"),
    "pingreq with body": h("c0 01 00"),
    "pingresp flags": h("d1 00"),
    "disconnect with body on 3.1.1": h("e0 01 00"),
    "remaining length not minimal": h("c0 80 00"),
    "remaining length five bytes": h("30 ff ff ff ff 01"),
}

MALFORMED_V5 = {
    "v5 publish without property length": h("30 03 0001 61"),
    "v5 property length past end": h("30 05 0001 61 05 01"),
    "v5 property not allowed in publish": h("30 07 0001 61 03 21 0001"),
    "v5 duplicate property": h("30 08 0001 61 04 01 00 01 01"),
    "v5 payload format 2": h("30 06 0001 61 02 01 02"),
    "v5 topic alias 0": h("30 07 0001 61 03 23 0000"),
    "v5 unknown property": h("30 06 0001 61 02 7f 00"),
    "v5 property length not minimal": h("30 05 0001 61 80 00"),
    "v5 subscription identifier 0": h("30 06 0001 61 02 0b 00"),
    "v5 two subscription ids in subscribe": h("82 0b 0001 04 0b 01 0b 02 0001 61 00"),
    "v5 subscribe retain handling 3": h("82 07 0001 00 0001 61 30"),
    "v5 subscribe reserved bits": h("82 07 0001 00 0001 61 40"),
    "v5 puback bad reason": h("40 03 0001 01"),
    "v5 pubrel bad reason": h("62 03 0001 10"),
    "v5 connack bad reason": h("20 03 00 01 00"),
    "v5 connack missing properties": h("20 02 00 00"),
    "v5 connack receive maximum 0": h("20 06 00 00 03 21 0000"),
    "v5 suback granted to unsubscribe code": h("90 04 0001 00 11"),
    "v5 unsuback without codes": h("b0 03 0001 00"),
    "v5 disconnect bad reason": h("e0 01 01"),
    "v5 auth bad reason": h("f0 01 04"),
    "v5 auth flags": h("f1 00"),
    "v5 user property truncated": h("30 09 0001 61 05 26 0001 6b 00"),
    "v5 will property not allowed": h("10 11 0004 4d515454 05 06 003c 00 0001 63 02 23 00"),
}


@pytest.mark.parametrize("raw", MALFORMED_V311.values(), ids=MALFORMED_V311.keys())
def test_malformed_v311(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_packet(raw, 4)
    # Each case is one whole packet, so the decoder itself must be what refused it.
    assert "expected one whole packet" not in str(caught.value)


@pytest.mark.parametrize("raw", MALFORMED_V5.values(), ids=MALFORMED_V5.keys())
def test_malformed_v5(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_packet(raw, 5)
    assert "expected one whole packet" not in str(caught.value)


def test_v5_allows_password_without_user_name() -> None:
    raw = h("10 11 0004 4d515454 05 42 003c 00 0001 63 0001 70")
    assert decode_packet(raw) == Connect("c", password=b"p", protocol_level=5)


@pytest.mark.parametrize(
    ("name", "level"),
    [("4d515454", "06"), ("4d515454", "03"), ("4d5149736470", "04"), ("4d515454", "00")],
)
def test_unsupported_protocol_version_says_what_was_asked(name: str, level: str) -> None:
    body = h(f"{len(name) // 2:04x} {name} {level} 02 003c 0001 63")
    with pytest.raises(UnsupportedProtocolVersion) as caught:
        decode_packet(bytes((0x10, len(body))) + body)
    assert caught.value.protocol_level == int(level, 16)
    assert caught.value.protocol_name == bytes.fromhex(name).decode()


REFUSED: list[tuple[str, Packet, int]] = [
    ("packet id 0", Puback(0), 4),
    ("packet id too big", Puback(65536), 4),
    ("qos 3", Publish("a", b"", qos=3, packet_id=1), 4),
    ("qos 1 without id", Publish("a", b"", qos=1), 4),
    ("qos 0 with id", Publish("a", b"", packet_id=1), 4),
    ("qos 0 with dup", Publish("a", b"", dup=True), 4),
    ("properties on 3.1.1", Publish("a", b"", properties=Properties(topic_alias=1)), 4),
    ("reason code on 3.1.1", Puback(1, 0x10), 4),
    ("disconnect reason on 3.1.1", Disconnect(0x04), 4),
    ("auth on 3.1.1", Auth(), 4),
    ("unsuback codes on 3.1.1", Unsuback(1, (0,)), 4),
    ("unsuback without codes on 5.0", Unsuback(1), 5),
    ("topic with nul", Publish("a\x00", b""), 4),
    ("topic with lone surrogate", Publish("\udc80", b""), 4),
    ("topic over 65535 bytes", Publish("a" * 65536, b""), 4),
    ("password without user name", Connect("c", password=b"p"), 4),
    ("will qos 3", Connect("c", will=Will("t", b"", qos=3)), 4),
    ("will payload over 65535 bytes", Connect("c", will=Will("t", b"x" * 65536)), 4),
    ("keep alive too big", Connect("c", keep_alive=65536), 4),
    ("unknown connect level", Connect("c", protocol_level=6), 4),
    ("empty subscribe", Subscribe(1, ()), 4),
    ("v5 options on 3.1.1", Subscribe(1, (Subscription("a", 0, no_local=True),)), 4),
    ("subscribe qos 3", Subscribe(1, (Subscription("a", 3),)), 5),
    ("retain handling 3", Subscribe(1, (Subscription("a", 0, retain_handling=3),)), 5),
    (
        "two subscription ids in subscribe",
        Subscribe(1, (Subscription("a"),), Properties(subscription_identifiers=(1, 2))),
        5,
    ),
    ("empty unsubscribe", Unsubscribe(1, ()), 4),
    ("empty suback", Suback(1, ()), 4),
    ("suback code 3 on 3.1.1", Suback(1, (3,)), 4),
    ("connack code 6 on 3.1.1", Connack(reason_code=6), 4),
    ("connack present and refused", Connack(True, 5), 4),
    ("connack bad v5 reason", Connack(reason_code=1), 5),
    ("property not allowed", Connack(properties=Properties(topic_alias=1)), 5),
    ("receive maximum 0", Connack(properties=Properties(receive_maximum=0)), 5),
    ("payload format 2", Publish("a", b"", properties=Properties(payload_format_indicator=2)), 5),
    ("u16 property overflow", Connack(properties=Properties(server_keep_alive=65536)), 5),
    ("u32 property negative", Connack(properties=Properties(session_expiry_interval=-1)), 5),
    (
        "subscription id 0",
        Publish("a", b"", properties=Properties(subscription_identifiers=(0,))),
        5,
    ),
    ("property of wrong type", Connack(properties=Properties(reason_string=b"x")), 5),  # type: ignore[arg-type]
    (
        "will property not allowed",
        Connect("c", will=Will("t", b"", properties=Properties(topic_alias=1)), protocol_level=5),
        5,
    ),
    ("unknown connection level", Puback(1), 6),
]


@pytest.mark.parametrize(
    ("packet", "level"),
    [pytest.param(packet, level, id=name) for name, packet, level in REFUSED],
)
def test_encoder_refuses_malformed(packet: Packet, level: int) -> None:
    with pytest.raises(ProtocolError):
        encode(packet, level)


def test_fast_encoders_refuse_bad_identifiers() -> None:
    for bad in (0, -1, 65536):
        with pytest.raises(ProtocolError):
            encode_puback(bad)
        with pytest.raises(ProtocolError):
            encode_pubacks([1, bad])
    with pytest.raises(ProtocolError):
        encode_publish("a", b"", qos=1)


def test_remaining_length_above_the_maximum_is_refused() -> None:
    assert encode_varint(MAX_REMAINING_LENGTH) == h("ff ff ff 7f")
    with pytest.raises(ProtocolError):
        encode_varint(MAX_REMAINING_LENGTH + 1)
