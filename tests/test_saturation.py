"""The scaling signal: worker_concurrency and worker_handler_saturation from handler time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from tests.support.pipeline import new_metrics
from worker.saturation import WINDOW, Saturation


class Clock:
    """A clock the test moves: the window's arithmetic is what is under test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_saturation_is_handler_seconds_per_second_per_lane() -> None:
    metrics, clock = new_metrics(), Clock()
    saturation = Saturation(metrics, 4, clock=clock)
    route = metrics.route("telemetry")
    for _ in range(30):  # 30 s in which handlers ran 2 s a second: 2 of 4 lanes busy
        clock.now += 1
        route.seconds.observe(1.5)
        route.seconds.observe(0.5)
        saturation.sample()
    assert saturation.busy_lanes() == 2.0
    assert saturation.ratio() == 0.5


def test_the_window_forgets_old_load() -> None:
    metrics, clock = new_metrics(), Clock()
    saturation = Saturation(metrics, 2, clock=clock)
    route = metrics.route("telemetry")
    for _ in range(10):
        clock.now += 5
        route.seconds.observe(10.0)  # both lanes busy: saturated
        saturation.sample()
    assert saturation.ratio() == 1.0
    for _ in range(int(WINDOW / 5) + 1):  # then a whole window idle
        clock.now += 5
        saturation.sample()
    assert saturation.ratio() == 0.0


def test_both_gauges_are_exposed_and_idle_is_zero() -> None:
    registry = CollectorRegistry()
    metrics, clock = new_metrics(), Clock()
    registry.register(Saturation(metrics, 16, clock=clock))
    text = generate_latest(registry).decode()
    assert "worker_concurrency 16.0" in text
    assert "worker_handler_saturation 0.0" in text
    assert "worker_busy_lanes 0.0" in text
    assert "# TYPE worker_handler_saturation gauge" in text
