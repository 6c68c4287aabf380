"""The Apps that ``worker run`` serves in the benchmarks (``worker run bench.apps:noop``).

- ``noop``: decodes the JSON and returns. Decoding is kept because the baseline decodes every
  message with orjson too; the worker's ``Event.data`` is lazy and would otherwise skip it.
- ``latency``: the end-to-end latency of every event, from the publisher's timestamp in the
  payload to the start of the handler (so it includes the broker, the transport, routing and
  the intake queue). ``BENCH_WARMUP`` events are left out; at shutdown the summary is written
  as JSON to ``BENCH_RESULT``.
- ``sleepy``: an I/O-bound handler, ``await asyncio.sleep(BENCH_SLEEP)`` (default 5 ms).
- ``cpu``: a CPU-bound handler, a fixed amount of arithmetic (``BENCH_CPU_WORK`` rounds,
  about 5 ms of one core by default) that holds the event loop as a parser or a model would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from worker import App, Event

noop = App()
latency = App()
sleepy = App()
cpu = App()

SLEEP = float(os.environ.get("BENCH_SLEEP", "0.005"))
CPU_WORK = int(os.environ.get("BENCH_CPU_WORK", "60000"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "0"))
_samples: list[float] = []
_seen = [0]


@noop.event(name="noop")
async def on_event(event: Event) -> None:
    """Decode and return."""
    event.data  # noqa: B018 - the decode is the point


@latency.event(name="latency")
async def on_timed(event: Event) -> None:
    """Record now minus the publisher's timestamp."""
    now = time.monotonic()
    _seen[0] += 1
    if _seen[0] > WARMUP:
        data: Any = event.data
        _samples.append(now - data["ts"])


@latency.on_shutdown
async def write_summary() -> None:
    """Write the latency summary where the harness looks for it."""
    target = os.environ.get("BENCH_RESULT")
    if target:
        # a few hundred bytes, once, while the worker shuts down: no thread needed
        with open(target, "w") as out:  # noqa: ASYNC230
            out.write(json.dumps(summary(_samples)))


@sleepy.event(name="sleepy")
async def on_slow(event: Event) -> None:
    """Wait like a handler that calls a database or a web service."""
    await asyncio.sleep(SLEEP)


def summary(samples: list[float]) -> dict[str, float]:
    """Count, p50, p99, p99.9 and max of latencies in seconds (zeros when there are none)."""
    if not samples:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}
    ordered = sorted(samples)
    last = len(ordered) - 1

    def pick(q: float) -> float:
        return ordered[min(last, round(q * last))]

    return {
        "count": len(ordered),
        "p50": pick(0.50),
        "p99": pick(0.99),
        "p999": pick(0.999),
        "max": ordered[-1],
    }


@cpu.event(name="cpu")
async def on_heavy(event: Event) -> None:
    """Compute without yielding: the same work for every message, whatever the machine's load."""
    total = 0
    for i in range(CPU_WORK):
        total += i * i % 7
    event.data  # noqa: B018 - decoded like every other bench handler
