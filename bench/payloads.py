"""What the benchmarks publish: ~120-byte JSON readings on 100 device topics.

The publisher's monotonic clock goes into every payload (``ts``): on Linux CLOCK_MONOTONIC is
system-wide, so a consumer process on the same machine can subtract it from its own
``time.monotonic()`` to get the end-to-end latency.
"""

from __future__ import annotations

import functools
import time
from typing import Final

from worker.mqtt import encode_publish

DEVICES: Final = 100
#: the application-side topic on a standard broker, and an app's publish topic on the platform
TOPIC: Final = "iot-2/type/sensor/id/d{:03d}/evt/reading/fmt/json"
#: what every consumer subscribes to (the worker's mqtt profile adds ``$share/{org}:{app}/``)
FILTER: Final = "iot-2/type/+/id/+/evt/+/fmt/+"
_TOPICS: Final = tuple(TOPIC.format(n) for n in range(DEVICES))
#: stands for the timestamp in pre-encoded packets; as wide as ``stamp()``'s output
STAMP: Final = b"@" * 17
RING: Final = 65_535


def topic(seq: int) -> str:
    """The device topic of message ``seq`` (round-robin over the fleet)."""
    return _TOPICS[seq % DEVICES]


def stamp(ts: float | None = None) -> bytes:
    """A timestamp (default: now, monotonic) as STAMP-wide JSON: space-padded, always valid."""
    return b"%17.6f" % (time.monotonic() if ts is None else ts)


def payload(seq: int, ts: float | None = None) -> bytes:
    """One reading of about 120 bytes; ``ts`` defaults to now (monotonic seconds)."""
    return _payload(seq, stamp(ts))


def _payload(seq: int, ts: bytes) -> bytes:
    temp = 15.0 + (seq % 200) / 10  # stays below the example app's 80-degree alert
    return (
        b'{"ts":%s,"seq":%d,"temp":%.1f,"hum":%.1f,"bat":%d,"status":"ok","fw":"2.4.1",'
        b'"site":"plant-7","line":"L%02d"}' % (ts, seq, temp, 40 + seq % 30, 90, seq % 12)
    )


@functools.cache
def stamped_ring(qos: int) -> list[bytes]:
    """RING packets whose timestamp is the STAMP placeholder, for ``Publisher.paced``.

    As many as there are packet identifiers, so a QoS 1 identifier is reused only after the
    whole ring went round, far beyond the publisher's window.
    """
    return [
        encode_publish(topic(seq), _payload(seq, STAMP), qos, packet_id(seq) if qos else None)
        for seq in range(RING)
    ]


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
