"""MQTT 5 in the pipeline: properties reach handlers, expiry, the Receive Maximum as the batch
window, and the ``pace`` overflow policy (docs/guide/mqtt5.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from tests.support.pipeline import Acks, event, new_metrics, running, value
from tests.support.waiting import QUICK
from worker import App, Batch, Event
from worker.messages import MessageProperties
from worker.metrics import Metrics
from worker.transports.base import Inbound

PROPS = MessageProperties(
    user_properties=(("b", "2"), ("a", "1"), ("b", "3")),
    content_type="application/json",
    payload_format_indicator=1,
    correlation_data=b"\x00\x01",
    response_topic="iot-2/type/t/id/d/cmd/answer/fmt/json",
    message_expiry_interval=60,
)


def handled(metrics: Metrics, route: str, outcome: str) -> float:
    return value(metrics, "worker_messages_handled_total", route=route, outcome=outcome)


def dropped(metrics: Metrics) -> float:
    return value(metrics, "worker_messages_dropped_total", reason="intake_full")


def aged(inbound: Inbound, *, expired: bool) -> Inbound:
    """``inbound`` with an expiry deadline in the past (or far ahead)."""
    now = time.monotonic()
    return dataclasses.replace(inbound, expires_at=now - 1 if expired else now + 3600)


async def test_handlers_see_the_properties_in_order() -> None:
    app = App()
    seen: list[Event] = []

    @app.event()
    async def on_reading(e: Event) -> None:
        seen.append(e)

    acks = Acks()
    async with running(app) as pipeline:
        await pipeline.put([dataclasses.replace(event(n=1), properties=PROPS)], acks)
        await pipeline.put([event(n=2)], acks)
        await acks.wait_for(2)
    assert seen[0].properties == PROPS
    assert seen[0].properties.user_property("b") == "2"
    assert list(seen[0].properties.user_properties) == [("b", "2"), ("a", "1"), ("b", "3")]
    assert seen[1].properties == MessageProperties()  # none given: the empty set, never None


async def test_an_expired_message_is_acknowledged_not_handled() -> None:
    app = App()
    seen: list[int] = []

    @app.event()
    async def on_reading(e: Event) -> None:
        seen.append(e.data["n"])

    metrics, acks = new_metrics(), Acks()
    async with running(app, metrics) as pipeline:
        batch = [aged(event(n=0), expired=True), aged(event(n=1), expired=False), event(n=2)]
        await pipeline.put(batch, acks)
        assert await acks.wait_for(3) == [1, 2, 3]
    assert seen == [1, 2]
    assert handled(metrics, "on_reading", "expired") == 1
    assert handled(metrics, "on_reading", "ok") == 2


async def test_a_batch_route_leaves_out_what_expired() -> None:
    app = App()
    batches: list[list[int]] = []

    @app.event(batch=Batch(max_size=3, max_wait=0.01))
    async def store(events: list[Event]) -> None:
        batches.append([e.data["n"] for e in events])

    metrics, acks = new_metrics(), Acks()
    async with running(app, metrics) as pipeline:
        batch = [aged(event(n=0), expired=True), event(n=1), aged(event(n=2), expired=True)]
        await pipeline.put(batch, acks)
        assert sorted(await acks.wait_for(3)) == [1, 2, 3]
        await pipeline.put([aged(event(n=3), expired=True)], acks)  # a batch of expired only
        await acks.wait_for(4)
    assert batches == [[1]]
    assert handled(metrics, "store", "expired") == 3


async def test_the_receive_maximum_hands_a_batch_over_without_waiting() -> None:
    # With MQTT 5 the broker sends at most the Receive Maximum unacknowledged: a batch holding
    # that many can grow no more, so it goes at once, not after max_wait (nor after a stall).
    app = App()
    got = asyncio.Event()
    sizes: list[int] = []

    @app.event(batch=Batch(max_size=100, max_wait=30))
    async def store(events: list[Event]) -> None:
        sizes.append(len(events))
        got.set()

    acks = Acks()
    async with running(app, mqtt_version="5", receive_maximum=3) as pipeline:
        await pipeline.put([event(n=n) for n in range(3)], acks)
        # Handed over within put: not even the 2 ms stall timer is left to fire.
        assert not pipeline._filler.filling
        async with asyncio.timeout(QUICK):
            await got.wait()
        await acks.wait_for(3)
    assert sizes == [3]


async def test_pace_holds_a_burst_and_loses_nothing() -> None:
    app = App()
    seen: list[int] = []

    @app.event()
    async def on_reading(e: Event) -> None:
        await asyncio.sleep(0.001)  # slower than the burst arrives: the intake fills
        seen.append(e.data["n"])

    metrics = new_metrics()
    settings: dict[str, Any] = {
        "concurrency": 1,
        "intake_size": 5,
        "overflow": "pace",
        "pace_limit": 30.0,
    }
    async with running(app, metrics, **settings) as pipeline:
        for n in range(0, 60, 10):
            await pipeline.put([event(n=i, qos=0) for i in range(n, n + 10)], Acks())
        await pipeline.idle()
    assert seen == list(range(60))
    assert dropped(metrics) == 0


async def test_pace_drops_the_oldest_once_the_backlog_stays() -> None:
    app = App()
    gate = asyncio.Event()
    started = asyncio.Event()
    seen: list[int] = []

    @app.event()
    async def on_reading(e: Event) -> None:
        started.set()
        await gate.wait()  # the lanes are stuck: whatever arrives is a backlog that stays
        seen.append(e.data["n"])

    metrics = new_metrics()
    settings: dict[str, Any] = {
        "concurrency": 1,
        "intake_size": 2,
        "overflow": "pace",
        "pace_limit": 0.05,
    }
    async with running(app, metrics, **settings) as pipeline:
        await pipeline.put([event(n=0, qos=0)], Acks())
        async with asyncio.timeout(QUICK):
            await started.wait()
            # Waits up to the pace limit, then drops the oldest queued: put returns.
            await pipeline.put([event(n=n, qos=0) for n in range(1, 6)], Acks())
        assert dropped(metrics) == 3
        gate.set()
    assert seen == [0, 4, 5]  # the freshest were kept


async def test_publish_passes_the_properties_to_the_publisher() -> None:
    app = App()
    sent: list[tuple[object, ...]] = []

    async def publisher(*args: object) -> None:
        sent.append(args)

    app.bind_publisher(publisher)
    await app.publish_event("sensor", "d1", "reading", {"n": 1}, properties=PROPS)
    await app.publish_command("sensor", "d1", "reboot", {}, qos=0)
    assert sent[0][4] == PROPS
    assert len(sent[1]) == 4  # none given: the publisher is called as on MQTT 3.1.1
    with pytest.raises(TypeError, match=r"accepted is None or worker\.MessageProperties"):
        await app.publish_event("sensor", "d1", "x", {}, properties={"a": "b"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="payload_format_indicator=2"):
        MessageProperties(payload_format_indicator=2)
