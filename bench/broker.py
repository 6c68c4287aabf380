"""The benchmarks' Mosquitto: the tests' helper (own config, a free port) tuned for load.

- ``max_inflight_messages`` (QoS 1 messages in flight per client) is a parameter, the same for
  every consumer of one invocation, and BENCHMARKS.md states it;
- ``max_queued_messages`` is large (the tests' helper already sets it), so the broker can hold
  a whole fill for a stopped consumer;
- ``set_tcp_nodelay true``: Mosquitto leaves Nagle's algorithm on by default, which holds back
  its last small packet of a burst (a PUBACK, the end of a batch) for up to 40 ms behind the
  peer's delayed ACK. The local platform, as any asyncio server, turns Nagle off, so the two
  servers are compared on the same footing.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.mosquitto import Mosquitto, mosquitto_binary

__all__ = ["BenchMosquitto", "mosquitto_binary", "mosquitto_version"]


@dataclass
class BenchMosquitto(Mosquitto):
    """Mosquitto with the benchmark settings above."""

    nodelay: bool = True

    def _write_config(self) -> Path:
        config = super()._write_config()
        if self.nodelay:
            config.write_text(config.read_text() + "set_tcp_nodelay true\n")
        return config


def mosquitto_version(binary: str) -> str:
    """``mosquitto version 2.0.11`` and the like, from ``mosquitto -h``."""
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10).stdout
    first = out.splitlines()[0] if out else ""
    return first.strip() or "unknown"
