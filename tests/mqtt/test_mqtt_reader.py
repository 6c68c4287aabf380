"""The streaming reader: batching, buffering, limits, protocol levels and fuzzing."""

from __future__ import annotations

import contextlib
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.errors import PacketTooLarge, ProtocolError
from worker.mqtt import (
    MAX_REMAINING_LENGTH,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Pingreq,
    Properties,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    encode,
    encode_puback,
    encode_pubacks,
    encode_publish,
)
from worker.mqtt.wire import encode_varint

from .mqtt_strategies import LEVELS, packets

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_one_read_yields_every_complete_packet_and_keeps_the_tail() -> None:
    stream = encode_publish("a", b"1", 1, 1) + encode_publish("b", b"2") + encode(Pingreq())
    tail = encode_publish("c", b"3" * 50)
    reader = PacketReader(max_packet_size=1024)
    got = reader.feed(stream + tail[:7])
    assert got == [Publish("a", b"1", 1, packet_id=1), Publish("b", b"2"), Pingreq()]
    assert reader.buffered == 7
    assert reader.feed(tail[7:20]) == []
    assert reader.feed(tail[20:] + tail) == [Publish("c", b"3" * 50)] * 2
    assert reader.buffered == 0


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_accepts_any_bytes_like(kind: type[bytearray] | type[memoryview]) -> None:
    reader = PacketReader(max_packet_size=1024)
    packets_ = reader.feed(kind(encode_publish("t", b"x")))
    assert packets_ == [Publish("t", b"x")]
    assert type(packets_[0].payload) is bytes  # type: ignore[union-attr]


def test_two_byte_and_four_byte_lengths() -> None:
    reader = PacketReader(max_packet_size=MAX_REMAINING_LENGTH)
    for size in (124, 125, 16_380, 16_381, 2_097_148, 2_097_149):
        raw = encode_publish("t", b"x" * size)
        assert reader.feed(raw) == [Publish("t", b"x" * size)]


def test_limit_is_inclusive_and_checked_on_the_header() -> None:
    at_limit = encode_publish("t", b"x" * 95)  # remaining length 3 + 95 = 98
    reader = PacketReader(max_packet_size=98)
    assert reader.feed(at_limit) == [Publish("t", b"x" * 95)]
    over = encode_publish("t", b"x" * 96)
    reader = PacketReader(max_packet_size=98)
    with pytest.raises(PacketTooLarge):
        reader.feed(over[:2])  # the fixed header alone is enough to refuse it
    assert PacketReader(max_packet_size=0).feed(b"\xc0\x00") == [Pingreq()]


def test_huge_announced_length_costs_nothing() -> None:
    header = b"\x30" + encode_varint(MAX_REMAINING_LENGTH) + b"\x00\x01t"
    reader = PacketReader(max_packet_size=MAX_REMAINING_LENGTH)
    tracemalloc.start()
    try:
        assert reader.feed(header) == []
        for _ in range(100):
            assert reader.feed(b"x") == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert reader.buffered == len(header) + 100
    with pytest.raises(PacketTooLarge):
        PacketReader(max_packet_size=1 << 20).feed(header)


@given(
    length=st.integers(0, MAX_REMAINING_LENGTH),
    limit=st.integers(0, MAX_REMAINING_LENGTH),
    received=st.integers(0, 64),
)
@settings(max_examples=200, deadline=None)
def test_announced_length_waits_or_is_refused(length: int, limit: int, received: int) -> None:
    received = min(received, length)
    reader = PacketReader(max_packet_size=limit)
    head = b"\xc0" + encode_varint(length)  # PINGREQ: checked only once the body is complete
    if length > limit:
        with pytest.raises(PacketTooLarge):
            reader.feed(head + b"\x00" * received)
        return
    if received < length:
        assert reader.feed(head + b"\x00" * received) == []
        assert reader.buffered == len(head) + received


@pytest.mark.parametrize(
    "raw", [b"\x30\xff\xff\xff\xff", b"\x30\xff\xff\xff\xff\x01", b"\xc0\x80\x00"]
)
def test_bad_remaining_length_is_refused_at_once(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        PacketReader(max_packet_size=MAX_REMAINING_LENGTH).feed(raw)


@pytest.mark.parametrize("first_byte", [0x00, 0x36, 0x38, 0x80, 0xF0, 0x61])
def test_impossible_first_byte_is_refused_before_its_length(first_byte: int) -> None:
    with pytest.raises(ProtocolError):
        PacketReader(max_packet_size=1024).feed(bytes((first_byte,)))


def test_reader_refuses_input_after_an_error() -> None:
    reader = PacketReader(max_packet_size=1024)
    with pytest.raises(ProtocolError):
        reader.feed(encode(Pingreq()) + b"\x00\x00")
    with pytest.raises(ProtocolError):
        reader.feed(encode(Pingreq()))


def test_connect_switches_the_level_within_one_read() -> None:
    sub = Subscribe(1, (Subscription("a", 1, no_local=True),), Properties(user_properties=()))
    stream = encode(Connect("c", protocol_level=5)) + encode(sub, 5) + encode(Disconnect(4), 5)
    reader = PacketReader(max_packet_size=1024)
    assert reader.feed(stream) == [Connect("c", protocol_level=5), sub, Disconnect(4)]
    assert reader.protocol_level == 5


def test_connect_at_3_1_keeps_the_3_1_1_encoding() -> None:
    reader = PacketReader(max_packet_size=1024, protocol_level=5)
    stream = encode(Connect("c", protocol_level=3)) + encode_publish("t", b"x", 1, 2)
    assert reader.feed(stream)[1] == Publish("t", b"x", 1, packet_id=2)
    assert reader.protocol_level == 3


def test_constructor_and_level_are_validated() -> None:
    with pytest.raises(ValueError, match="protocol_level"):
        PacketReader(max_packet_size=10, protocol_level=6)
    with pytest.raises(ValueError, match="max_packet_size"):
        PacketReader(max_packet_size=-1)
    reader = PacketReader(max_packet_size=10)
    with pytest.raises(ValueError, match="protocol_level"):
        reader.protocol_level = 2


def test_puback_fast_path_and_batch_encoder() -> None:
    ids = [1, 2, 0xFFFF, 300]
    batch = encode_pubacks(ids)
    assert batch == b"".join(encode_puback(i) for i in ids)
    assert batch == b"".join(encode(Puback(i)) for i in ids)
    assert encode_pubacks(iter(ids)) == batch
    assert encode_pubacks([]) == b""
    for level in LEVELS:
        reader = PacketReader(max_packet_size=16, protocol_level=level)
        assert reader.feed(batch) == [Puback(i) for i in ids]


def test_encode_publish_matches_the_generic_encoder() -> None:
    props = Properties(message_expiry_interval=30)
    assert encode_publish("t", b"p", 2, 9, retain=True, dup=True) == encode(
        Publish("t", b"p", 2, True, True, 9)
    )
    assert encode_publish("t", b"p", properties=props, protocol_level=5) == encode(
        Publish("t", b"p", properties=props), 5
    )
    assert encode_publish("t", b"p", protocol_level=3) == encode_publish("t", b"p")


def test_reprs_hide_secrets_and_large_payloads() -> None:
    connect = Connect("c", username="u", password=b"secret", properties=Properties(
        authentication_method="M", authentication_data=b"token"))  # fmt: skip
    assert "secret" not in repr(connect)
    assert "token" not in repr(connect)
    assert "authentication_method='M'" in repr(connect)
    shown = repr(Publish("t", b"x" * 1000))
    assert len(shown) < 300
    assert "+968" in shown


@pytest.mark.parametrize("level", LEVELS)
@FUZZ
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_fuzz_arbitrary_bytes_raise_only_protocol_error(
    level: int, data: bytes, cuts: list[int]
) -> None:
    reader = PacketReader(max_packet_size=1 << 20, protocol_level=level)
    bounds = sorted(min(cut, len(data)) for cut in cuts)
    with contextlib.suppress(ProtocolError):
        for begin, end in zip([0, *bounds], [*bounds, len(data)], strict=True):
            reader.feed(data[begin:end])
    assert reader.buffered <= len(data)


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_valid_streams_raise_only_protocol_error(
    level: int, data: st.DataObject
) -> None:
    sent: list[Packet] = data.draw(st.lists(packets(level), min_size=1, max_size=4))
    stream = bytearray(b"".join(encode(packet, level) for packet in sent))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(stream) - 1))
        stream[index] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del stream[data.draw(st.integers(0, len(stream) - 1)) :]
    reader = PacketReader(max_packet_size=1 << 16, protocol_level=level)
    with contextlib.suppress(ProtocolError):
        reader.feed(bytes(stream))
