"""A message's PUBLISH bytes are encoded once and stamped with each subscriber's packet ID."""

from __future__ import annotations

import pytest

from worker.mqtt import MQTT_3_1_1, MQTT_5, NO_PROPERTIES, Properties
from worker.mqtt.encode import encode_publish
from worker.platform.encoded import publish_bytes
from worker.platform.router import Envelope


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
@pytest.mark.parametrize("size", [0, 100, 200_000])  # a remaining length of 1 to 3 bytes
def test_every_delivery_is_the_encoding_of_its_own_publish(level: int, size: int) -> None:
    props = Properties(content_type="application/json") if level == MQTT_5 else NO_PROPERTIES
    msg = Envelope("org/type/t/id/d/evt/e/fmt/json", b"p" * size, 1)
    for topic in ("iot-2/type/t/id/d/evt/e/fmt/json", "iot-2/évt/e/fmt/json"):
        for qos, packet_id, dup in (
            (1, 1, False),
            (1, 258, False),
            (2, 65535, True),
            (0, None, False),
        ):
            got = publish_bytes(msg, topic, level, qos, packet_id, props, dup=dup)
            want = encode_publish(
                topic, msg.payload, qos, packet_id, dup=dup, properties=props,
                protocol_level=level,
            )  # fmt: skip
            assert got == want, (topic, qos, packet_id, dup)


def test_a_qos_1_message_keeps_its_bytes_only_from_its_second_delivery() -> None:
    msg = Envelope("org/type/t/id/d/evt/e/fmt/json", b"x" * 100, 1)
    publish_bytes(msg, "iot-2/type/t/id/d/evt/e/fmt/json", MQTT_3_1_1, 1, 7, NO_PROPERTIES)
    assert msg.encoded == {}
    publish_bytes(msg, "iot-2/type/t/id/d/evt/e/fmt/json", MQTT_3_1_1, 1, 8, NO_PROPERTIES)
    assert msg.encoded is not None and len(msg.encoded) == 1


def test_a_message_whose_expiry_counts_down_is_never_cached() -> None:
    msg = Envelope("org/a", b"x", 0)
    publish_bytes(msg, "a", MQTT_5, 0, None, NO_PROPERTIES, cacheable=False)
    assert msg.encoded is None
