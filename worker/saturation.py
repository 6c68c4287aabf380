"""The scaling signal: how busy the lanes are, as two gauges an autoscaler can read directly.

``worker_concurrency``         the lanes (``settings.concurrency``): handler runs at once
``worker_busy_lanes``          lanes busy on average over the last :data:`WINDOW` seconds
                               (handler seconds per second): the work, whatever the replicas
``worker_handler_saturation``  ``worker_busy_lanes / worker_concurrency``, 0..1

Saturation is ``Δ sum(worker_handler_seconds_sum) / Δt / worker_concurrency``: the same
quantity as the recording rule ``sum(rate(worker_handler_seconds_sum[1m])) /
worker_concurrency`` (deploy/prometheus/rules.yaml), computed here from the handler-time totals
the pipeline already keeps, so that a scaler without Prometheus (KEDA's Metrics API scaler, the
demo's autoscaler) reads the same number. Nothing is added to the per-message path: the totals
are sampled every :data:`SAMPLE_EVERY` seconds and at each scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.metrics import Metrics

#: seconds of handler time the saturation gauge averages over (as ``rate(...[1m])``)
WINDOW: Final = 60.0
#: seconds between samples of the handler-time totals
SAMPLE_EVERY: Final = 5.0


class Saturation(Collector):
    """``worker_concurrency`` and ``worker_handler_saturation`` of one worker's ``metrics``."""

    def __init__(
        self, metrics: Metrics, lanes: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._routes = metrics.handler_seconds.routes
        self._lanes = lanes
        self._clock = clock
        #: (when, handler seconds so far): the oldest is at most WINDOW old, bar one
        self._samples: deque[tuple[float, float]] = deque([(clock(), self._total())])

    def _total(self) -> float:
        """Handler seconds of every route so far (batch runs included, one run a batch)."""
        return sum(d.total for d in list(self._routes.values()))

    def sample(self) -> None:
        """Record the totals now; forget samples the window no longer needs."""
        now = self._clock()
        self._samples.append((now, self._total()))
        # Keep the newest sample at or before the window's start: the window stays whole.
        while len(self._samples) > 2 and self._samples[1][0] <= now - WINDOW:
            self._samples.popleft()

    def busy_lanes(self) -> float:
        """Lanes busy on average over the window (handler seconds per second)."""
        self.sample()
        (then, before), (now, after) = self._samples[0], self._samples[-1]
        elapsed = now - then
        return max(0.0, after - before) / elapsed if elapsed > 0 else 0.0

    def ratio(self) -> float:
        """The share of the lanes' time spent in handlers over the window, 0..1."""
        return min(1.0, self.busy_lanes() / self._lanes)

    async def run(self) -> None:
        """Sample every SAMPLE_EVERY seconds until cancelled."""
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            self.sample()

    def describe(self) -> Iterable[Metric]:
        return families(self._lanes, 0.0)

    def collect(self) -> Iterable[Metric]:
        return families(self._lanes, self.busy_lanes())


def families(lanes: int, busy: float) -> list[Metric]:
    """The three gauges for ``lanes`` lanes of which ``busy`` are busy on average."""
    concurrency = GaugeMetricFamily(
        "worker_concurrency", "Lanes: handler runs this worker takes at once"
    )
    concurrency.add_metric([], float(lanes))
    busy_lanes = GaugeMetricFamily(
        "worker_busy_lanes",
        f"Lanes busy on average over the last {WINDOW:g} s (handler seconds per second)",
    )
    busy_lanes.add_metric([], busy)
    saturation = GaugeMetricFamily(
        "worker_handler_saturation",
        f"Share of the lanes' time spent in handlers over the last {WINDOW:g} s (0..1)",
    )
    saturation.add_metric([], min(1.0, busy / lanes) if lanes else 0.0)
    return [concurrency, busy_lanes, saturation]
