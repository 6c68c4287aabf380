"""The worker's metrics: exact names, bounded labels, and increments through real messages."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from tests.support.pipeline import Acks, event, new_metrics, running, value
from tests.support.waiting import QUICK, until
from worker import App, AppStatus, Command, DeviceStatus, Event
from worker.metrics import Metrics
from worker.transports.base import Inbound

DOCUMENTED_NAMES = {
    "worker_messages_received_total": "counter",
    "worker_messages_handled_total": "counter",
    "worker_handler_seconds": "histogram",
    "worker_intake_depth": "gauge",
    "worker_in_flight": "gauge",
    "worker_handling_lag_seconds": "gauge",
    "worker_messages_dropped_total": "counter",
    "worker_dead_letters_total": "counter",
    "worker_connected": "gauge",
    "worker_subscribed": "gauge",
    "worker_reconnects_total": "counter",
    "worker_protocol_errors_total": "counter",
    "worker_refusals_total": "counter",
    "worker_info": "gauge",
    "worker_batch_size": "histogram",
}


def test_exactly_the_design_names_and_types() -> None:
    metrics = new_metrics()
    found = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        found[name] = family.type
    assert found == DOCUMENTED_NAMES


def test_info_and_connection_gauges() -> None:
    metrics = new_metrics()
    labels = {
        "app": "fleet",
        "client_id": "A:abc123:fleet",
        "instance": "w1",
        "profile": "wiotp",
        "version": "0.1.0",
    }
    assert value(metrics, "worker_info", **labels) == 1
    metrics.set_connected(True)
    metrics.set_subscribed(True)
    metrics.reconnected()
    metrics.reconnected()
    assert value(metrics, "worker_connected") == 1
    assert value(metrics, "worker_subscribed") == 1
    assert value(metrics, "worker_reconnects_total") == 2
    metrics.set_subscribed(False)
    assert value(metrics, "worker_subscribed") == 0


def test_series_exist_at_zero_before_the_first_message() -> None:
    metrics = new_metrics()
    metrics.route("on_reading")
    assert (
        metrics.registry.get_sample_value(
            "worker_messages_handled_total", {"route": "on_reading", "outcome": "timeout"}
        )
        == 0
    )
    for kind in ("event", "command", "device_status", "app_status"):
        labels = {"kind": kind}
        assert metrics.registry.get_sample_value("worker_messages_received_total", labels) == 0
    assert metrics.route("on_reading") is metrics.route("on_reading")


def test_two_workers_in_one_process_use_their_own_registries() -> None:
    a = Metrics(CollectorRegistry(), app="a", client_id="c", instance="1", profile="p", version="v")
    b = Metrics(CollectorRegistry(), app="b", client_id="c", instance="2", profile="p", version="v")
    a.reconnected()
    assert value(b, "worker_reconnects_total") == 0


async def test_real_messages_move_the_counters_and_labels_stay_bounded() -> None:
    app = App()
    gate = asyncio.Event()

    @app.event(event="reading")
    async def on_reading(e: Event) -> None:
        if e.data["n"] == 99:
            await gate.wait()

    @app.command()
    async def on_command(c: Command) -> None: ...

    @app.device_status()
    async def on_status(s: DeviceStatus) -> None: ...

    @app.app_status()
    async def on_app(s: AppStatus) -> None: ...

    metrics, acks = new_metrics(), Acks()
    batch = [
        *(event(f"dev{n}", n, packet_id=n + 1) for n in range(5)),
        Inbound("iot-2/type/sensor/id/dev1/cmd/reboot/fmt/json", b"{}", 1, False, 6),
        Inbound("iot-2/type/sensor/id/dev1/mon", b'{"Action":"Connect"}', 0, True),
        Inbound("iot-2/app/other/mon", b'{"Action":"Connect"}', 0, True),
        event("dev1", 0, name="unknown", packet_id=7),
    ]
    async with running(app, metrics, concurrency=2) as pipeline:
        await pipeline.put(batch, acks)
        await acks.wait_for(7)
        await pipeline.put([event("dev9", 99, packet_id=8)], acks)
        await until(lambda: pipeline.in_flight == 1, "one event in flight", within=QUICK, every=0)
        assert value(metrics, "worker_in_flight") == 1
        await pipeline.put([event("dev9", 100, packet_id=9)], acks)
        gate.set()
        await acks.wait_for(9)
    received = {
        kind: value(metrics, "worker_messages_received_total", kind=kind)
        for kind in ("event", "command", "device_status", "app_status")
    }
    assert received == {"event": 8, "command": 1, "device_status": 1, "app_status": 1}
    handled = "worker_messages_handled_total"
    assert value(metrics, handled, route="on_reading", outcome="ok") == 7
    for route in ("on_command", "on_status", "on_app"):
        assert value(metrics, handled, route=route, outcome="ok") == 1
    assert value(metrics, "worker_handler_seconds_count", route="on_reading") == 7
    assert value(metrics, "worker_messages_dropped_total", reason="unrouted") == 1
    exposition = generate_latest(metrics.registry).decode()
    assert "dev1" not in exposition and "iot-2" not in exposition


def test_handler_seconds_is_written_as_prometheus_clients_own_histogram_would_be() -> None:
    """The hot path keeps plain counts; the scrape must not tell the difference."""
    from prometheus_client import Histogram

    from worker.metrics import HANDLER_BUCKETS

    runs = [0.0, 0.00005, 0.0001, 0.0003, 0.001, 0.02, 1.0, 59.0, 60.0, 61.0, 1e9]
    ours = new_metrics()
    route = ours.route("on_reading")
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "worker_handler_seconds", "Time spent in each handler run, by route", ["route"],
        buckets=HANDLER_BUCKETS, registry=reference_registry,
    ).labels(route="on_reading")  # fmt: skip
    for seconds in runs:
        route.seconds.observe(seconds)
        reference.observe(seconds)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if line.startswith("worker_handler_seconds_")
                and "_created" not in line]  # fmt: skip

    assert lines(ours.registry) == lines(reference_registry)
    assert len(lines(ours.registry)) == len(HANDLER_BUCKETS) + 3  # buckets, +Inf, count, sum


def test_handled_total_is_written_as_prometheus_clients_own_counter_would_be() -> None:
    from prometheus_client import Counter

    from worker.metrics import Outcome

    ours = new_metrics()
    reference_registry = CollectorRegistry()
    reference = Counter(
        "worker_messages_handled", "Messages handled, by route and outcome",
        ["route", "outcome"], registry=reference_registry,
    )  # fmt: skip
    for route, n in (("on_reading", 3), ("on_status", 1)):
        counts = ours.route(route).outcome
        for outcome in Outcome:
            if outcome is not Outcome.DROPPED:  # a drop is counted as dropped, not as handled
                reference.labels(route=route, outcome=outcome.value)  # exists at 0, as ours do
        counts[Outcome.OK].inc(n)
        counts[Outcome.ERROR].inc()
        reference.labels(route=route, outcome="ok").inc(n)
        reference.labels(route=route, outcome="error").inc()

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines()
                if "worker_messages_handled" in line and "_created" not in line]  # fmt: skip

    assert lines(ours.registry) == lines(reference_registry)
