"""What the benchmarks publish: ~120-byte JSON readings on 100 device topics.

The publisher's monotonic clock goes into every payload (``ts``): on Linux CLOCK_MONOTONIC is
system-wide, so a consumer process on the same machine can subtract it from its own
``time.monotonic()`` to get the end-to-end latency.
"""

from __future__ import annotations

import time
from typing import Final

from worker.mqtt import encode_publish

DEVICES: Final = 100
#: the application-side topic on a standard broker, and an app's publish topic on the platform
TOPIC: Final = "iot-2/type/sensor/id/d{:03d}/evt/reading/fmt/json"
#: what every consumer subscribes to (the worker's mqtt profile adds ``$share/{org}:{app}/``)
FILTER: Final = "iot-2/type/+/id/+/evt/+/fmt/+"
_TOPICS: Final = tuple(TOPIC.format(n) for n in range(DEVICES))


def topic(seq: int) -> str:
    """The device topic of message ``seq`` (round-robin over the fleet)."""
    return _TOPICS[seq % DEVICES]


def payload(seq: int, ts: float | None = None) -> bytes:
    """One reading of about 120 bytes; ``ts`` defaults to now (monotonic seconds)."""
    stamp = time.monotonic() if ts is None else ts
    temp = 15.0 + (seq % 200) / 10  # stays below the example app's 80-degree alert
    return (
        b'{"ts":%.6f,"seq":%d,"temp":%.1f,"hum":%.1f,"bat":%d,"status":"ok","fw":"2.4.1",'
        b'"site":"plant-7","line":"L%02d"}' % (stamp, seq, temp, 40 + seq % 30, 90, seq % 12)
    )


def packet_id(seq: int) -> int:
    """A legal MQTT packet identifier (1-65535) for message ``seq``."""
    return seq % 65535 + 1


def encode(seq: int, qos: int, ts: float | None = None) -> bytes:
    """Message ``seq`` as a complete PUBLISH packet."""
    pid = packet_id(seq) if qos else None
    return encode_publish(topic(seq), payload(seq, ts), qos, pid)


def encode_many(count: int, qos: int) -> list[bytes]:
    """``count`` PUBLISH packets, encoded ahead so that sending them costs only the writes."""
    now = time.monotonic()
    return [encode(seq, qos, now) for seq in range(count)]
