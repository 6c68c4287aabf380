"""The bytes of a PUBLISH to one subscriber, encoded once per message and reused.

Every subscriber that sees a message under the same topic, at the same protocol level, QoS
and DUP flag, gets the same bytes but for its packet identifier. So the encoding is cached on
the message as the bytes before and after the packet identifier (QoS 0 has none), and each
QoS 1 or 2 delivery joins them around its own identifier. Encoding anew for every subscriber
was a fifth of the platform's time when thousands of durable sessions came back for what
they had missed.
A message whose MQTT 5 expiry is counting down is encoded every time: the interval it
carries is what is left of it.
"""

from __future__ import annotations

from worker.mqtt import Properties
from worker.mqtt.encode import encode_publish
from worker.platform.router import Envelope


def publish_bytes(
    msg: Envelope,
    topic: str,
    level: int,
    qos: int,
    packet_id: int | None,
    properties: Properties,
    *,
    dup: bool = False,
    cacheable: bool = True,
) -> bytes:
    """The PUBLISH of ``msg`` under ``topic`` (as the subscriber sees it) for one subscriber."""
    cache = msg.encoded
    if not cacheable or (qos and cache is None):
        if cacheable:
            # A QoS 1 message usually goes to one subscriber: its bytes are kept from the
            # second delivery on, not for the whole time the first one waits for its PUBACK.
            msg.encoded = {}
        return encode_publish(
            topic, msg.payload, qos, packet_id, retain=msg.retain, dup=dup,
            properties=properties, protocol_level=level,
        )  # fmt: skip
    if cache is None:
        cache = msg.encoded = {}
    # For QoS 0 the key is (topic, level), the same as it always was.
    key = (topic, level | qos << 8 | dup << 10)
    parts = cache.get(key)
    if parts is None:
        packet = encode_publish(
            topic, msg.payload, qos, 1 if qos else None, retain=msg.retain, dup=dup,
            properties=properties, protocol_level=level,
        )  # fmt: skip
        parts = cache[key] = _split(packet, qos)
    if not qos:
        return parts[0]
    assert packet_id is not None
    return b"".join((parts[0], packet_id.to_bytes(2), parts[1]))


def _split(packet: bytes, qos: int) -> tuple[bytes, bytes]:
    """A PUBLISH's bytes before and after its packet identifier (all of them for QoS 0)."""
    if not qos:
        return packet, b""
    at = 1
    while packet[at] & 0x80:  # the remaining length's continuation bytes
        at += 1
    at += 3 + int.from_bytes(packet[at + 1 : at + 3])  # past the topic's length and bytes
    return packet[:at], packet[at + 2 :]
