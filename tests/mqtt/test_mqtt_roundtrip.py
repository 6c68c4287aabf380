"""Round trips: every packet type at every protocol level, by example and by property."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.mqtt import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Pingreq,
    Pingresp,
    Properties,
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
    decode_packet,
    encode,
)

from .mqtt_strategies import LEVELS, packets

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COMMON: list[Packet] = [
    Connack(),
    Connack(session_present=True),
    Publish("iot-2/type/t/id/d/evt/e/fmt/json", b'{"a": 1}'),
    Publish("a/b", b"x" * 300, qos=1, packet_id=1, retain=True),
    Publish("ünïcödé/✓", b"", qos=2, packet_id=65535, dup=True),
    Puback(1),
    Pubrec(2),
    Pubrel(3),
    Pubcomp(4),
    Subscribe(5, (Subscription("a/+", 0), Subscription("#", 2))),
    Suback(5, (0, 2)),
    Unsubscribe(6, ("a/+", "#")),
    Pingreq(),
    Pingresp(),
    Disconnect(),
]
V3_ONLY: list[Packet] = [
    Connect("dev", username="u", password=b"p", will=Will("w", b"gone", 1, True)),
    Unsuback(6),
    Suback(7, (0x80,)),
]
V5_ONLY: list[Packet] = [
    Connect(
        "dev",
        password=b"p",
        protocol_level=5,
        will=Will("w", b"x", properties=Properties(content_type="text/plain")),
        properties=Properties(authentication_method="SCRAM", authentication_data=b"\x01"),
    ),
    Connack(reason_code=0x9C, properties=Properties(server_reference="other:1883")),
    Publish("a", b"b", properties=Properties(payload_format_indicator=1, correlation_data=b"c")),
    Puback(1, 0x97, Properties(reason_string="quota")),
    Pubrec(1, 0x10),
    Pubrel(1, 0x92, Properties(user_properties=(("k", "v"),))),
    Pubcomp(1, 0, Properties(reason_string="ok")),
    Subscribe(1, (Subscription("a", 1, True, False, 1),), Properties(user_properties=(("x", ""),))),
    Suback(1, (0x9E, 0xA1, 0xA2)),
    Unsubscribe(1, ("a",), Properties(user_properties=(("x", "y"),))),
    Unsuback(1, (0x11, 0x8F), Properties(reason_string="r")),
    Disconnect(0x04),
    Disconnect(0x8E, Properties(reason_string="taken over", session_expiry_interval=5)),
    Auth(0x19, Properties(authentication_method="M", authentication_data=b"d")),
]


def _for_level(level: int) -> list[Packet]:
    extra = V5_ONLY if level == 5 else V3_ONLY
    packets_ = COMMON + extra
    if level != 4:
        packets_.append(Connect("client", protocol_level=level))
    return packets_


@pytest.mark.parametrize(
    ("level", "packet"),
    [(level, packet) for level in LEVELS for packet in _for_level(level)],
    ids=lambda value: getattr(value, "packet_type", value),
)
def test_example_round_trip(level: int, packet: Packet) -> None:
    assert decode_packet(encode(packet, level), level) == packet


def test_every_packet_type_is_covered_at_every_level() -> None:
    for level in LEVELS:
        kinds = {type(packet) for packet in _for_level(level)}
        expected = {
            Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe,
            Suback, Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect,
        }  # fmt: skip
        assert kinds >= expected
    assert Auth in {type(packet) for packet in _for_level(5)}


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
@FAST
@given(data=st.data())
def test_encode_decode_round_trip(level: int, data: st.DataObject) -> None:
    packet = data.draw(packets(level))
    raw = encode(packet, level)
    assert decode_packet(raw, level) == packet
    # Encoding is canonical: the decoded packet encodes to the same bytes.
    assert encode(decode_packet(raw, level), level) == raw


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
@FAST
@given(data=st.data())
def test_any_chunking_yields_the_same_packets(level: int, data: st.DataObject) -> None:
    sent = data.draw(st.lists(packets(level), max_size=8))
    stream = b"".join(encode(packet, level) for packet in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = PacketReader(max_packet_size=1 << 16, protocol_level=level)
    received: list[Packet] = []
    for begin, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += reader.feed(stream[begin:end])
    assert received == sent
    assert reader.buffered == 0


@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_byte_at_a_time(level: int, data: st.DataObject) -> None:
    sent = data.draw(st.lists(packets(level), min_size=1, max_size=4))
    stream = b"".join(encode(packet, level) for packet in sent)
    reader = PacketReader(max_packet_size=1 << 16, protocol_level=level)
    received: list[Packet] = []
    for index in range(len(stream)):
        received += reader.feed(stream[index : index + 1])
    assert received == sent
