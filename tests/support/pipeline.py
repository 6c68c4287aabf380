"""In-memory boundaries for driving the real Pipeline: an acker, a publisher, metric reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry

from tests.support.waiting import QUICK
from worker.app import App
from worker.config import Settings
from worker.deadletter import DeadLetters
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.transports.base import Inbound


def new_metrics() -> Metrics:
    """Metrics on a fresh registry."""
    return Metrics(
        CollectorRegistry(),
        app="fleet",
        client_id="A:abc123:fleet",
        instance="w1",
        profile="wiotp",
        version="0.1.0",
    )


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample's value, 0 when the series does not exist."""
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def event(
    device: str = "d1",
    n: int = 0,
    *,
    qos: int = 1,
    packet_id: int | None = None,
    name: str = "reading",
    fmt: str = "json",
    payload: bytes | None = None,
    device_type: str = "sensor",
) -> Inbound:
    """A received device event; the payload is ``{"n": n}`` unless given."""
    topic = f"iot-2/type/{device_type}/id/{device}/evt/{name}/fmt/{fmt}"
    body = payload if payload is not None else b'{"n": %d}' % n
    pid = (n + 1 if packet_id is None else packet_id) if qos else 0
    return Inbound(topic, body, qos, False, pid)


class Acks:
    """An acker that records each call and lets a test wait for a number of packet IDs."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self._changed = asyncio.Event()

    def __call__(self, packet_ids: Sequence[int]) -> None:
        self.calls.append(list(packet_ids))
        self._changed.set()

    @property
    def ids(self) -> list[int]:
        return [i for call in self.calls for i in call]

    async def wait_for(self, count: int) -> list[int]:
        async with asyncio.timeout(QUICK):
            while len(self.ids) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.ids


class Published:
    """A publisher that records (topic, payload, qos, retain)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    async def __call__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.sent.append((topic, payload, qos, retain))


@asynccontextmanager
async def running(
    app: App,
    metrics: Metrics | None = None,
    *,
    dead_letters: DeadLetters | None = None,
    drain: float = QUICK,
    **settings: Any,
) -> AsyncIterator[Pipeline]:
    """A pipeline whose lanes run for the block; drained (within ``drain`` s) at its end."""
    pipeline = Pipeline(app, Settings(**settings), metrics or new_metrics(), dead_letters)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(pipeline.run())
        try:
            yield pipeline
        finally:
            await pipeline.drain(drain)


async def wait(event: asyncio.Event) -> None:
    """Wait for ``event`` within the deadline."""
    async with asyncio.timeout(QUICK):
        await event.wait()
