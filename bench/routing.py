"""Routing cost with 1 and with 10,000 routes, in-process (no broker, no sockets).

Both apps see the same 100 topics and every message matches exactly one route: in the one-
route app a route on every device type, in the 10,000-route app a route per device type
``t0`` ... ``t9999``. Measured:

- the pipeline: ``Pipeline.put`` of 64-message batches and its lanes running a no-op handler,
  until idle (routing, intake, lanes and outcome counting: the per-message path after the
  transport);
- the router's cold lookup (a topic it has not seen: parse and trie walk), with distinct
  device IDs so the per-topic cache never answers;
- ``App.compile`` for a few route counts: it runs once at start-up, and finds covered and
  overlapping filters with trie walks, so it should grow about linearly.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry

from worker import App
from worker.config import Settings
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.routes import RouteTable
from worker.transports.base import Inbound

BATCH: Final = 64
TOPICS: Final = 100
_TOPIC = "iot-2/type/t{}/id/d{}/evt/reading/fmt/json"


async def _noop(event: Any) -> None:
    return None


def make_app(routes: int) -> App:
    """An app with ``routes`` event routes, one per device type (or one for all)."""
    app = App()
    if routes == 1:
        app.event(name="r0")(_noop)
    for i in range(routes if routes > 1 else 0):
        app.event(device_type=f"t{i}", name=f"r{i}")(_noop)
    return app


def _batches(count: int) -> list[list[Inbound]]:
    payload = b'{"temp":21.5}'
    inbound = [
        Inbound(_TOPIC.format(n % TOPICS, n % TOPICS), payload, 0, False) for n in range(count)
    ]
    return [inbound[i : i + BATCH] for i in range(0, count, BATCH)]


async def pipeline_rate(app: App, count: int) -> float:
    """Messages a second through put + lanes + a no-op handler."""
    settings = Settings(intake_size=10 * count, dead_letter="none")
    metrics = Metrics(
        CollectorRegistry(),
        app="bench",
        client_id="bench",
        instance="bench",
        profile="mqtt",
        version="bench",
    )
    pipeline = Pipeline(app, settings, metrics)
    batches = _batches(count)
    runner = asyncio.create_task(pipeline.run())
    await pipeline.put(batches[0], _no_ack)  # fills the router's cache, as a warm worker has
    await pipeline.idle()
    started = time.perf_counter()
    for batch in batches:
        await pipeline.put(batch, _no_ack)
        await asyncio.sleep(0)  # one read per loop turn, as from a socket
    await pipeline.idle()
    elapsed = time.perf_counter() - started
    await pipeline.drain(5.0)
    await runner
    return count / elapsed


def _no_ack(packet_ids: Any) -> None:
    return None


def cold_lookup_us(app: App, count: int) -> float:
    """Microseconds per router lookup of a topic never seen before."""
    router = RouteTable(app.routes)
    topics = [_TOPIC.format(n % TOPICS, f"x{n}") for n in range(count)]
    started = time.perf_counter()
    for topic in topics:
        router.lookup(topic)
    return (time.perf_counter() - started) / count * 1e6


def compile_seconds(routes: int) -> float:
    """Seconds ``App.compile`` takes for ``routes`` routes (with its overlap checks)."""
    app = make_app(routes)
    logging.disable(logging.WARNING)  # the quota warning is expected here
    try:
        started = time.perf_counter()
        app.compile()
        return time.perf_counter() - started
    finally:
        logging.disable(logging.NOTSET)


@dataclass
class Routing:
    """Routing figures for 1 and many routes."""

    routes: int
    pipeline_rates: dict[int, list[float]]
    cold_us: dict[int, float]
    compile_s: dict[int, float]

    def median(self, routes: int) -> float:
        """The median pipeline rate with ``routes`` routes."""
        return statistics.median(self.pipeline_rates[routes])


async def routing(count: int, runs: int, many: int, compile_counts: tuple[int, ...]) -> Routing:
    """Pipeline and lookup figures for 1 and ``many`` routes; compile times."""
    rates: dict[int, list[float]] = {}
    cold: dict[int, float] = {}
    for routes in (1, many):
        app = make_app(routes)
        rates[routes] = [await pipeline_rate(app, count) for _ in range(runs)]
        cold[routes] = statistics.median(cold_lookup_us(app, count // 4) for _ in range(runs))
    compiled = {n: compile_seconds(n) for n in compile_counts}
    return Routing(many, rates, cold, compiled)
