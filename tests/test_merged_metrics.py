"""One /metrics page for several processes: a process label each, the scaling gauges summed."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.pipeline import new_metrics
from worker.merged_metrics import merge
from worker.saturation import Saturation


def page(handled: int, lanes: int) -> str:
    """A worker's /metrics text after ``handled`` one-second handler runs."""
    metrics = new_metrics()
    route = metrics.route("telemetry")
    for _ in range(handled):
        route.seconds.observe(1.0)
    registry = CollectorRegistry()
    registry.register(metrics.handled)
    registry.register(metrics.handler_seconds)
    registry.register(Saturation(metrics, lanes))
    return generate_latest(registry).decode()


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_each_series_gets_its_process_and_nothing_is_counted_twice() -> None:
    merged = samples(merge({"0": page(3, 8), "1": page(5, 8)}))
    assert merged[("worker_handler_seconds_count", (("process", "0"), ("route", "telemetry")))] == 3
    assert merged[("worker_handler_seconds_count", (("process", "1"), ("route", "telemetry")))] == 5
    counts = [v for (name, _), v in merged.items() if name == "worker_handler_seconds_count"]
    assert sum(counts) == 8  # what sum by (instance) gives: the pod's total


def test_the_scaling_gauges_are_the_pods() -> None:
    merged = samples(merge({"0": page(0, 8), "1": page(0, 16)}))
    assert merged[("worker_concurrency", ())] == 24
    assert merged[("worker_busy_lanes", ())] == 0
    assert merged[("worker_handler_saturation", ())] == 0
    assert not any(n == "worker_concurrency" and labels for n, labels in merged)


def test_no_process_answering_is_an_empty_page() -> None:
    assert merge({}) == b""


def test_a_page_that_is_not_the_text_format_is_refused() -> None:
    with pytest.raises(ValueError, match="process 0: not the Prometheus text format"):
        merge({"0": "worker_x{ 1 2 3 4\n"})
