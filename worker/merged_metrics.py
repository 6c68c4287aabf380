"""One ``/metrics`` page for several worker processes: every process's series with a
``process`` label, and the scaling signal summed for the whole pod.

``worker run --workers N`` runs N processes; Prometheus scrapes one endpoint per pod. Each
process keeps its own registry (no shared files, no locks on the message path), and the
supervisor merges their pages at scrape time:

- every series of process ``n`` gets ``process="n"``. Prometheus sums them (the recording
  rules all ``sum by (instance, job)``), so no series is counted twice, and a restarted
  process shows as the counter reset of its own series, which ``rate`` already handles;
- the three scaling gauges (``worker.saturation``) are the pod's: one series each, without
  ``process``: ``worker_concurrency`` and ``worker_busy_lanes`` summed, and
  ``worker_handler_saturation`` their ratio. A scaler that reads one number per pod (KEDA's
  Metrics API scaler takes the first series that matches) then reads the pod's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

#: the scaling gauges, summed per pod rather than labelled per process
POD_GAUGES: Final = frozenset(
    {"worker_concurrency", "worker_busy_lanes", "worker_handler_saturation"}
)


def merge(pages: Mapping[str, str]) -> bytes:
    """The text exposition of every page (process label → its ``/metrics`` text), merged.

    ValueError when a page is not the Prometheus text format.
    """
    families: dict[str, Metric] = {}
    lanes = busy = 0.0
    for process, text in pages.items():
        for family in _families(process, text):
            if family.name in POD_GAUGES:
                value = family.samples[0].value if family.samples else 0.0
                lanes += value if family.name == "worker_concurrency" else 0.0
                busy += value if family.name == "worker_busy_lanes" else 0.0
                continue
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            for sample in family.samples:
                labels = {**sample.labels, "process": process}
                merged.add_sample(sample.name, labels, sample.value, sample.timestamp)
    if pages:
        families.update(_pod_gauges(lanes, busy))
    return generate_latest(_Fixed(families.values()))


def _families(process: str, text: str) -> list[Metric]:
    """The families of one page; ValueError naming the process when it is not the format."""
    try:
        return list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ValueError(f"process {process}: not the Prometheus text format: {exc}") from None


def _pod_gauges(lanes: float, busy: float) -> dict[str, Metric]:
    """The scaling gauges of the whole pod."""
    values = {
        "worker_concurrency": ("Lanes of every process of this pod", lanes),
        "worker_busy_lanes": ("Lanes busy on average, every process of this pod", busy),
        "worker_handler_saturation": (
            "Share of this pod's lane time spent in handlers (0..1)",
            min(1.0, busy / lanes) if lanes else 0.0,
        ),
    }
    out = {}
    for name, (doc, value) in values.items():
        metric = Metric(name, doc, "gauge")
        metric.add_sample(name, {}, value)
        out[name] = metric
    return out


class _Fixed(Collector):
    """A registry's worth of ready families, for ``generate_latest``."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families
