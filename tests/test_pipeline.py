"""The real Pipeline, driven through its boundaries: batches in, acks and metrics out."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.support.pipeline import Acks, event, new_metrics, running, value, wait
from tests.support.waiting import QUICK, until
from worker import App, ConnectError, DeviceStatus, Event
from worker.config import Settings
from worker.pipeline import Pipeline
from worker.transports.base import Inbound


def handled(metrics: Any, route: str, outcome: str) -> float:
    return value(metrics, "worker_messages_handled_total", route=route, outcome=outcome)


def dropped(metrics: Any, reason: str) -> float:
    return value(metrics, "worker_messages_dropped_total", reason=reason)


def received(metrics: Any) -> float:
    """Every message received, whatever its kind."""
    return _total(metrics, "worker_messages_received_total")


def all_dropped(metrics: Any) -> float:
    """Every message dropped, whatever the reason."""
    return _total(metrics, "worker_messages_dropped_total")


def _total(metrics: Any, name: str) -> float:
    return float(
        sum(
            sample.value
            for family in metrics.registry.collect()
            for sample in family.samples
            if sample.name == name
        )
    )


async def test_acks_leave_in_arrival_order_when_handlers_finish_out_of_order() -> None:
    app = App()
    gates = {n: asyncio.Event() for n in range(4)}
    started = asyncio.Event()

    @app.event()
    async def slow(e: Event) -> None:
        if len(started_ns) == 3:
            started.set()
        started_ns.append(e.data["n"])
        await gates[e.data["n"]].wait()

    started_ns: list[int] = []
    acks = Acks()
    async with running(app, concurrency=4) as pipeline:
        await pipeline.put([event("d1", n) for n in range(4)], acks)
        await wait(started)
        for n in (3, 1, 2):  # everything but the first finishes
            gates[n].set()
        await until(lambda: pipeline.in_flight == 1, "one event in flight", within=QUICK, every=0)
        gates[0].set()
        assert await acks.wait_for(4) == [1, 2, 3, 4]


async def test_one_devices_events_run_in_order_while_devices_run_concurrently() -> None:
    app = App()
    order: dict[str, list[int]] = {}
    running_now = 0
    peak = 0

    @app.event(ordered=True)
    async def on_reading(e: Event) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        for _ in range(e.data["n"] % 4):  # uneven work, so unordered lanes would reorder
            await asyncio.sleep(0)
        order.setdefault(e.device_id, []).append(e.data["n"])
        running_now -= 1

    acks = Acks()
    batch = [event(f"d{n % 5}", n, packet_id=n + 1) for n in range(60)]
    async with running(app, concurrency=8) as pipeline:
        await pipeline.put(batch, acks)
        assert await acks.wait_for(60) == list(range(1, 61))
    for device, seen in order.items():
        assert seen == sorted(seen), device
    assert sum(len(s) for s in order.values()) == 60
    assert peak > 1


async def test_unordered_work_spreads_over_every_lane() -> None:
    app = App()
    gate = asyncio.Event()
    all_busy = asyncio.Event()

    @app.event()
    async def block(e: Event) -> None:
        if pipeline.in_flight == 3:
            all_busy.set()
        await gate.wait()

    acks = Acks()
    async with running(app, concurrency=3) as pipeline:
        # all on one device: unordered work is not tied to a lane
        await pipeline.put([event("d1", n) for n in range(5)], acks)
        await wait(all_busy)
        assert pipeline.intake_depth == 2
        gate.set()
        await acks.wait_for(5)


async def test_timeout_is_its_own_outcome_and_is_acknowledged() -> None:
    app = App()
    forever = asyncio.Event()

    @app.event(timeout=0.02, dead_letter="none")
    async def stuck(e: Event) -> None:
        await forever.wait()

    metrics, acks = new_metrics(), Acks()
    async with running(app, metrics) as pipeline:
        await pipeline.put([event("d1", 0)], acks)
        await acks.wait_for(1)
    assert handled(metrics, "stuck", "timeout") == 1
    assert value(metrics, "worker_handler_seconds_count", route="stuck") == 1


async def test_a_handlers_own_timeout_error_is_an_error_not_a_timeout() -> None:
    app = App()

    @app.event(timeout=5, dead_letter="none")
    async def raises(e: Event) -> None:
        raise TimeoutError("upstream timed out")

    metrics, acks = new_metrics(), Acks()
    async with running(app, metrics) as pipeline:
        await pipeline.put([event()], acks)
        await acks.wait_for(1)
    assert handled(metrics, "raises", "error") == 1
    assert handled(metrics, "raises", "timeout") == 0


async def test_retries_with_backoff_until_the_handler_succeeds() -> None:
    app = App()
    runs: list[float] = []

    @app.event(retries=3, retry_backoff=0.01)
    async def flaky(e: Event) -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) < 3:
            raise ConnectionError("database away")

    metrics, acks = new_metrics(), Acks()
    async with running(app, metrics) as pipeline:
        await pipeline.put([event()], acks)
        await acks.wait_for(1)
    assert len(runs) == 3
    # backoff doubles: 0.01 then 0.02 seconds
    assert runs[1] - runs[0] >= 0.009
    assert runs[2] - runs[1] >= 0.019
    assert handled(metrics, "flaky", "ok") == 1
    assert value(metrics, "worker_handler_seconds_count", route="flaky") == 3


async def test_failure_after_retries_is_logged_once_with_traceback_and_dead_lettered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.event(retries=1, retry_backoff=0)
    async def broken(e: Event) -> None:
        raise ValueError("bad reading")

    metrics, acks = new_metrics(), Acks()
    with caplog.at_level(logging.WARNING):
        async with running(app, metrics) as pipeline:
            await pipeline.put([event()], acks)
            await acks.wait_for(1)
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1
    assert "broken" in with_traceback[0].getMessage()
    letters = [r for r in caplog.records if r.name == "worker.deadletter"]
    assert len(letters) == 1
    assert "reason=error" in letters[0].getMessage()
    assert "ValueError: bad reading" in letters[0].getMessage()
    assert handled(metrics, "broken", "dead_lettered") == 1
    assert handled(metrics, "broken", "error") == 0
    assert value(metrics, "worker_dead_letters_total", route="broken") == 1


async def test_a_worker_error_is_logged_on_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.event(retries=0)
    async def store(e: Event) -> None:
        raise ConnectError("the database at db:5432 cannot be reached: ConnectionRefusedError")

    metrics, acks = new_metrics(), Acks()
    with caplog.at_level(logging.WARNING, logger="worker"):
        async with running(app, metrics) as pipeline:
            await pipeline.put([event()], acks)
            await acks.wait_for(1)
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(r.getMessage(), r.exc_info) for r in failed] == [(
        f"store failed on {event().topic} (run 1): ConnectError: the database at db:5432 "
        "cannot be reached: ConnectionRefusedError", None
    )]  # fmt: skip


async def test_drop_oldest_drops_and_counts_the_oldest_queued_qos0_work() -> None:
    app = App()
    gate, first = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    @app.event()
    async def on_reading(e: Event) -> None:
        seen.append(e.data["n"])
        first.set()
        await gate.wait()

    metrics = new_metrics()
    settings: dict[str, Any] = {"concurrency": 1, "intake_size": 3, "overflow": "drop-oldest"}
    async with running(app, metrics, **settings) as pipeline:
        await pipeline.put([event(n=0, qos=0)], Acks())
        await wait(first)
        await pipeline.put([event(n=n, qos=0) for n in range(1, 7)], Acks())
        assert pipeline.intake_depth == 3
        gate.set()
    assert seen == [0, 4, 5, 6]
    assert dropped(metrics, "intake_full") == 3
    assert handled(metrics, "on_reading", "dropped") == 0  # a drop is counted once, as a drop
    assert handled(metrics, "on_reading", "ok") == 4
    assert received(metrics) == handled(metrics, "on_reading", "ok") + all_dropped(metrics) == 7


async def test_qos1_is_not_bounded_by_the_intake() -> None:
    app = App()
    gate = asyncio.Event()

    @app.event()
    async def on_reading(e: Event) -> None:
        await gate.wait()

    metrics, acks = new_metrics(), Acks()
    async with running(app, metrics, concurrency=1, intake_size=2) as pipeline:
        await pipeline.put([event(n=n) for n in range(6)], acks)
        assert pipeline.intake_depth >= 5
        gate.set()
        await acks.wait_for(6)
    assert dropped(metrics, "intake_full") == 0


async def test_block_policy_holds_put_until_a_lane_takes_work() -> None:
    app = App()
    gate, first = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    @app.event()
    async def on_reading(e: Event) -> None:
        seen.append(e.data["n"])
        first.set()
        await gate.wait()

    metrics = new_metrics()
    settings: dict[str, Any] = {"concurrency": 1, "intake_size": 2, "overflow": "block"}
    async with running(app, metrics, **settings) as pipeline:
        await pipeline.put([event(n=0, qos=0)], Acks())
        await wait(first)
        batches = [[event(n=n, qos=0) for n in range(1, 5)], [event(n=5, qos=0)]]
        puts = [asyncio.create_task(pipeline.put(b, Acks())) for b in batches]
        await until(
            lambda: pipeline.intake_depth == 2,
            "two events queued at the intake",
            within=QUICK,
            every=0,
        )
        await asyncio.sleep(0)
        assert not any(p.done() for p in puts)
        gate.set()
        async with asyncio.timeout(3):
            await asyncio.gather(*puts)
    assert sorted(seen) == [0, 1, 2, 3, 4, 5]
    assert seen[:5] == [0, 1, 2, 3, 4]
    assert dropped(metrics, "intake_full") == 0


async def test_decode_errors_are_an_outcome_never_retried() -> None:
    app = App()
    runs = 0

    @app.event(retries=3, dead_letter="none")
    async def on_reading(e: Event) -> None:
        nonlocal runs
        runs += 1
        assert e.data

    @app.device_status(dead_letter="none")
    async def on_status(s: DeviceStatus) -> None:
        raise AssertionError("a status that is not JSON never reaches its handler")

    metrics, acks = new_metrics(), Acks()
    batch = [
        event(payload=b"{not json", packet_id=1),
        event(fmt="yaml", payload=b"a: 1", packet_id=2),
        Inbound("iot-2/type/sensor/id/d1/mon", b"<html>", 1, False, 3),
    ]
    async with running(app, metrics) as pipeline:
        await pipeline.put(batch, acks)
        assert await acks.wait_for(3) == [1, 2, 3]
    assert runs == 2
    assert handled(metrics, "on_reading", "decode_error") == 2
    assert handled(metrics, "on_status", "decode_error") == 1


async def test_a_handler_that_catches_the_decode_error_decides_the_outcome() -> None:
    app = App()

    @app.event()
    async def tolerant(e: Event) -> None:
        try:
            e.data  # noqa: B018 - the access is the point
        except Exception:
            return

    metrics, acks = new_metrics(), Acks()
    async with running(app, metrics) as pipeline:
        await pipeline.put([event(payload=b"\xff")], acks)
        await acks.wait_for(1)
    assert handled(metrics, "tolerant", "ok") == 1


async def test_unrouted_messages_are_counted_and_acknowledged_in_order() -> None:
    app = App()
    gate = asyncio.Event()

    @app.event(event="reading")
    async def on_reading(e: Event) -> None:
        await gate.wait()

    metrics, acks = new_metrics(), Acks()
    batch = [
        event(n=0),
        event(n=1, name="other"),
        Inbound("not/an/iot/topic", b"", 1, False, 3),
    ]
    async with running(app, metrics) as pipeline:
        await pipeline.put(batch, acks)
        await until(lambda: pipeline.in_flight == 1, "one event in flight", within=QUICK, every=0)
        gate.set()  # the unrouted ones waited for the first
        assert await acks.wait_for(3) == [1, 2, 3]
    assert dropped(metrics, "unrouted") == 2
    assert value(metrics, "worker_messages_received_total", kind="event") == 2
    # the topic outside the grammar is received (kind unknown) before it is dropped
    assert value(metrics, "worker_messages_received_total", kind="unknown") == 1
    assert received(metrics) == handled(metrics, "on_reading", "ok") + all_dropped(metrics) == 3


async def test_a_message_for_two_routes_is_acked_after_both() -> None:
    app = App()
    gate = asyncio.Event()
    calls: list[str] = []

    @app.event()
    async def audit(e: Event) -> None:
        calls.append("audit")

    @app.event(event="reading")
    async def on_reading(e: Event) -> None:
        calls.append("reading")
        await gate.wait()

    acks = Acks()
    async with running(app) as pipeline:
        await pipeline.put([event()], acks)
        await until(
            lambda: len(calls) == 2 and pipeline.in_flight == 1,
            "two calls with one event in flight",
            within=QUICK,
            every=0,
        )
        gate.set()
        await acks.wait_for(1)
    assert sorted(calls) == ["audit", "reading"]


async def test_acks_go_back_through_the_connection_they_came_from() -> None:
    app = App()
    gate = asyncio.Event()

    @app.event()
    async def on_reading(e: Event) -> None:
        if e.data["n"] == 0:
            await gate.wait()

    old, new = Acks(), Acks()
    async with running(app) as pipeline:
        await pipeline.put([event(n=0, packet_id=7)], old)
        # after a reconnect the new connection reuses packet ID 7
        await pipeline.put([event(n=1, packet_id=7), event(n=2, packet_id=8)], new)
        assert await new.wait_for(2) == [7, 8]
        assert old.ids == []
        gate.set()
        assert await old.wait_for(1) == [7]
    assert new.ids == [7, 8]


async def test_drain_finishes_queued_work_and_releases_acks() -> None:
    app = App()
    seen: list[int] = []

    @app.event()
    async def on_reading(e: Event) -> None:
        await asyncio.sleep(0)
        seen.append(e.data["n"])

    pipeline = Pipeline(app, Settings(concurrency=2), new_metrics())
    acks = Acks()
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(pipeline.run())
        await pipeline.put([event(n=n) for n in range(10)], acks)
        assert await pipeline.drain(3) == 0
        assert acks.ids == list(range(1, 11))
    assert runner.done()
    assert sorted(seen) == list(range(10))


async def test_drain_timeout_abandons_and_counts_what_is_left() -> None:
    app = App()
    forever = asyncio.Event()

    @app.event()
    async def stuck(e: Event) -> None:
        if e.data["n"] == 1:
            await forever.wait()

    metrics, acks = new_metrics(), Acks()
    pipeline = Pipeline(app, Settings(concurrency=1), metrics)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(pipeline.run())
        await pipeline.put([event(n=n) for n in range(4)], acks)
        await acks.wait_for(1)
        assert await pipeline.drain(0.05) == 3  # one running, two queued
        await pipeline.put([event(n=9)], acks)  # refused: draining
    assert acks.ids == [1]
    assert dropped(metrics, "abandoned") == 3
    assert handled(metrics, "stuck", "dropped") == 0  # a drop is counted once, as a drop
    assert dropped(metrics, "draining") == 1


async def test_drain_without_running_lanes_returns_at_once() -> None:
    pipeline = Pipeline(App(), Settings(), new_metrics())
    async with asyncio.timeout(1):
        assert await pipeline.drain(30) == 0


async def test_idle_returns_once_work_is_done_and_its_acks_have_left() -> None:
    app = App()
    gate = asyncio.Event()

    @app.event(event="reading")
    async def on_reading(e: Event) -> None:
        await gate.wait()

    acks = Acks()
    async with running(app) as pipeline:
        async with asyncio.timeout(1):
            await pipeline.idle()
        await pipeline.put([event(n=0), event(n=1, name="unrouted")], acks)
        idle = asyncio.create_task(pipeline.idle())
        await until(lambda: pipeline.in_flight == 1, "one event in flight", within=QUICK, every=0)
        assert not idle.done()
        gate.set()
        async with asyncio.timeout(3):
            await idle
        assert acks.ids == [1, 2]
        await pipeline.put([event(n=2, name="unrouted")], acks)
        async with asyncio.timeout(3):
            await pipeline.idle()
        assert acks.ids == [1, 2, 3]
