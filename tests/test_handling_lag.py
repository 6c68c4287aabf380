"""Handling lag: the age of the oldest message waiting for a lane, read at scrape time, as
``worker_handling_lag_seconds`` and in the /readyz answer."""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt

from tests.support.fetch import fetch
from tests.support.pipeline import Acks, event, new_metrics, running, value
from tests.support.waiting import QUICK, until
from worker import App, Batch, Event
from worker.testing.fixtures import LocalPlatform, RunApp, publish_event

pytest_plugins = ["worker.testing"]

LAG = "worker_handling_lag_seconds"


def blocked_app(release: asyncio.Event, started: asyncio.Event) -> App:
    app = App()

    @app.event(event="reading")
    async def slow(event: Event) -> None:
        started.set()
        await release.wait()

    return app


async def test_the_lag_grows_while_messages_wait_and_is_zero_once_handled() -> None:
    release, started = asyncio.Event(), asyncio.Event()
    metrics = new_metrics()
    acks = Acks()
    async with running(blocked_app(release, started), metrics, concurrency=1) as pipeline:
        assert pipeline.handling_lag() == 0.0 and value(metrics, LAG) == 0.0
        put_at = time.time()
        await pipeline.put([event("d1", 0), event("d2", 1), event("d3", 2)], acks)
        await asyncio.wait_for(started.wait(), QUICK)  # one runs, two wait
        await until(lambda: value(metrics, LAG) >= 0.2, "a lag of 0.2 s", within=QUICK)
        assert value(metrics, LAG) <= time.time() - put_at + 0.05
        release.set()
        await acks.wait_for(3)
        assert pipeline.handling_lag() == 0.0 and value(metrics, LAG) == 0.0


async def test_items_of_a_filling_batch_count_as_waiting() -> None:
    app = App()

    @app.event(event="reading", batch=Batch(max_size=10, max_wait=30))
    async def rows(events: list[Event]) -> None: ...

    async with running(app, concurrency=1) as pipeline:
        await pipeline.put([event("d1", 0, qos=0)], Acks())  # QoS 0: no stall hand-over
        await until(lambda: pipeline.handling_lag() >= 0.1, "a waiting batch item", within=QUICK)
        pipeline.hurry()


async def test_readyz_reports_the_handling_lag(
    platform: LocalPlatform, running_app: RunApp, mqtt_client: aiomqtt.Client
) -> None:
    release, started = asyncio.Event(), asyncio.Event()
    serving = await running_app(blocked_app(release, started), concurrency=1)
    port = serving.worker.http.port
    status, _, body = await fetch(port, "/readyz")
    assert status == 200 and json.loads(body)["handling_lag_seconds"] == 0.0
    for n in range(3):
        await publish_event(mqtt_client, "sensor", f"s{n}", "reading", {"n": n})
    await asyncio.wait_for(started.wait(), QUICK)

    async def lagging() -> bool:
        _, _, answer = await fetch(port, "/readyz")
        return bool(json.loads(answer)["handling_lag_seconds"] >= 0.2)

    await until(lagging, "/readyz showing the lag", within=QUICK)
    _, _, metrics = await fetch(port, "/metrics")
    assert f"{LAG} " in metrics.decode()
    release.set()
    await serving.handled(3)
