"""Batch routes on real connections: Mosquitto's in-flight window, drain, and the fixtures."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from tests.conftest import MosquittoFactory
from tests.support.waiting import NETWORK, until
from worker import App, Batch, Event
from worker.config import Settings, load_settings
from worker.runner import Worker
from worker.testing.fixtures import RunApp, publish_event

pytest_plugins = ["worker.testing"]

TOPIC = "iot-2/type/sensor/id/s{n}/evt/reading/fmt/json"
LONG = 30.0  # a max_wait no test may wait for


def settings(port: int, **flags: str) -> Settings:
    base = {"profile": "mqtt", "host": "127.0.0.1", "port": str(port), "org": "abc123"}
    base |= {"instance": "i1", "metrics_host": "127.0.0.1", "metrics_port": "0"}
    return load_settings({}, base | flags)


def recording_app(batches: list[list[int]], batch: Batch) -> App:
    app = App()

    @app.event(device_type="sensor", batch=batch)
    async def store(events: list[Event]) -> None:
        batches.append([e.data["n"] for e in events])

    return app


async def publish(port: int, count: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="publisher", timeout=NETWORK) as c:
        for n in range(count):
            await c.publish(TOPIC.format(n=n), b'{"n": %d}' % n, qos=1)


@pytest.mark.mosquitto
@pytest.mark.parametrize("version", ["3.1.1", "5"])
@pytest.mark.parametrize("transport", ["native", "aiomqtt"])
async def test_batches_never_wait_for_messages_the_brokers_window_holds_back(
    mosquitto_factory: MosquittoFactory, transport: str, version: str
) -> None:
    """Mosquitto sends 10 and waits for acks; batches of up to 1,000 must not wait 30 s.

    On 3.1.1 the window is Mosquitto's max_inflight_messages (learned by the pipeline), on 5
    the Receive Maximum the worker announces (known to it). (Once acks flow, Mosquitto 2.0
    sends more than its window from its queue, so batch sizes are not bounded by it; what
    matters is that no batch waits for messages held back.)
    """
    broker = mosquitto_factory(max_inflight=10)
    batches: list[list[int]] = []
    app = recording_app(batches, Batch(max_size=1000, max_wait=LONG))
    flags = {"transport": transport, "mqtt_version": version, "receive_maximum": "10"}
    worker = Worker(app, settings(broker.port, **flags), handle_signals=False)
    serving = asyncio.create_task(worker.serve())
    try:
        await asyncio.wait_for(worker.started.wait(), NETWORK)
        await publish(broker.port, 200)
        await until(
            lambda: sum(len(b) for b in batches) >= 200, "200 events in batches", within=NETWORK
        )
        assert sorted(n for b in batches for n in b) == list(range(200))
        assert len(batches[0]) <= 10  # the first window: what Mosquitto sent before any ack
    finally:
        worker.request_stop()
        await asyncio.wait_for(serving, NETWORK)


@pytest.mark.mosquitto
async def test_stopping_hands_over_the_partial_batch(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory()
    batches: list[list[int]] = []
    app = recording_app(batches, Batch(max_size=1000, max_wait=LONG))
    worker = Worker(app, settings(broker.port, qos="0"), handle_signals=False)
    serving = asyncio.create_task(worker.serve())
    await asyncio.wait_for(worker.started.wait(), NETWORK)
    await publish(broker.port, 5)
    await until(lambda: worker.pipeline.intake_depth == 5, "5 events waiting", within=NETWORK)
    assert batches == []  # QoS 0: nothing to wait for but max_wait
    worker.request_stop()
    await asyncio.wait_for(serving, NETWORK)
    assert batches == [[0, 1, 2, 3, 4]]
    assert worker.abandoned == 0


async def test_the_running_app_fixture_serves_batch_routes(
    running_app: RunApp, mqtt_client: aiomqtt.Client
) -> None:
    batches: list[list[int]] = []
    app = recording_app(batches, Batch(max_size=50, max_wait=0.05))
    serving = await running_app(app)
    for n in range(20):
        await publish_event(mqtt_client, "sensor", f"s{n}", "reading", {"n": n}, qos=1)
    handled = await serving.handled(20)
    assert [h.outcome.value for h in handled] == ["ok"] * 20
    assert sorted(n for b in batches for n in b) == list(range(20))
