"""The autoscaling policy: the recording rules' formula, up at once, down slowly, no flapping."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest

from tests.support.pipeline import new_metrics
from worker.saturation import Saturation
from worker.tools.autoscale import Autoscaler, BusyMeter, Load, Policy, desired, read_load


def test_desired_is_the_recording_rules_formula() -> None:
    policy = Policy(max_replicas=12)
    # 16 lanes a replica at 0.7: 11.2 busy lanes a replica (the promtool test's numbers)
    assert desired(10, 16, policy) == 1
    assert desired(24, 16, policy) == 3
    assert desired(6, 16, policy) == 1
    assert desired(0, 16, policy) == 1  # idle keeps the minimum
    assert desired(1000, 16, policy) == 12  # capped


def test_adding_a_replica_does_not_change_the_wish() -> None:
    # The work (busy lanes) is the same before and after a replica joins; so is the answer.
    scaler = Autoscaler(Policy(down_window=10, down_period=5))
    assert scaler.decide(0, 3.5, 2, 1) == 3
    for now in range(1, 30):
        assert scaler.decide(now, 3.5, 2, 3) == 3


def test_down_waits_for_a_whole_window_of_lower_wishes_and_goes_one_at_a_time() -> None:
    scaler = Autoscaler(Policy(down_window=10, down_period=5))
    assert scaler.decide(0, 3.5, 2, 1) == 3
    replicas, changes = 3, []
    for now in range(1, 40):
        busy = 3.5 if now < 5 or now == 12 else 0.5  # one spike inside the quiet period
        new = scaler.decide(now, busy, 2, replicas)
        if new != replicas:
            changes.append((now, new))
        replicas = new
    # The spike at 12 wants 3 again: the first removal waits until it is over 10 s old, the
    # next one 5 s (the period) later.
    assert changes == [(23, 2), (28, 1)]


def test_busy_lanes_are_read_from_the_workers_own_pages() -> None:
    metrics = new_metrics()
    metrics.route("telemetry").seconds.observe(2.5)
    metrics.registry.register(Saturation(metrics, 4))
    load = read_load(generate_latest(metrics.registry).decode())
    assert load == Load(handler_seconds=2.5, lanes=4)
    meter = BusyMeter(window=4)
    meter.add("a", 0.0, Load(0.0, 2))
    meter.add("a", 2.0, Load(3.0, 2))  # 1.5 lanes busy
    meter.add("b", 0.0, Load(10.0, 2))
    meter.add("b", 2.0, Load(11.0, 2))  # 0.5
    assert meter.busy() == 2.0
    meter.forget("b")
    assert meter.busy() == 1.5
