"""The Worker lifecycle in-process, against a real Mosquitto (no signals: state is flipped)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import MosquittoFactory
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port
from tests.support.waiting import NETWORK, until
from worker import App, Event
from worker.config import Settings, load_settings
from worker.errors import ConnectError, NotAuthorized
from worker.runner import Worker

pytestmark = pytest.mark.mosquitto
TOPIC = "iot-2/type/t/id/d/evt/e/fmt/json"


def settings(port: int, **flags: str) -> Settings:
    base = {"profile": "mqtt", "host": "127.0.0.1", "port": str(port), "org": "abc123"}
    base |= {"instance": "i1", "metrics_host": "127.0.0.1", "metrics_port": "0"}
    return load_settings({}, base | flags)


async def test_lifecycle_hooks_pause_and_stop(mosquitto: Mosquitto) -> None:
    app = App()
    seen: list[str] = []

    @app.on_startup
    async def hello() -> None:
        # connected, publisher bound, not yet subscribed: this message is not ours to handle
        seen.append("startup")
        await app.publish_event("t", "d", "e", {"n": 0}, qos=1)

    @app.event()
    async def handle(event: Event) -> None:
        seen.append(f"event {event.data['n']}")

    @app.on_shutdown
    async def bye() -> None:
        seen.append("shutdown")

    worker = Worker(app, settings(mosquitto.port), handle_signals=False)
    assert worker.readiness() == "connecting"
    serving = asyncio.create_task(worker.serve())
    await asyncio.wait_for(worker.started.wait(), NETWORK)
    assert worker.readiness() is None
    assert worker.http.port > 0
    await app.publish_event("t", "d", "e", {"n": 1}, qos=1)
    await until(lambda: "event 1" in seen, "event 1 handled", within=NETWORK)
    assert seen == ["startup", "event 1"]

    worker.request_pause(True)
    await until(lambda: worker.readiness() == "paused", "the worker to pause", within=NETWORK)
    worker.request_pause(False)
    await until(lambda: worker.readiness() is None, "the worker to be ready again", within=NETWORK)

    worker.request_stop()
    assert worker.readiness() == "draining"
    await asyncio.wait_for(serving, NETWORK)
    assert seen[-1] == "shutdown"
    assert (worker.forced, worker.abandoned) == (False, 0)
    assert worker.registry.get_sample_value("worker_connected") == 0


async def test_refusal_is_raised_as_itself(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(users={"u": "p"})
    app = App()

    @app.event()
    async def handle(event: Event) -> None: ...

    worker = Worker(app, settings(broker.port, username="u", password="x"), handle_signals=False)
    with pytest.raises(NotAuthorized):
        await asyncio.wait_for(worker.serve(), NETWORK)


async def test_startup_timeout_is_a_connect_error() -> None:
    app = App()

    @app.event()
    async def handle(event: Event) -> None: ...

    worker = Worker(app, settings(free_port()), startup_timeout=0.5, handle_signals=False)
    with pytest.raises(ConnectError, match=r"could not connect to 127\.0\.0\.1:\d+ within 0\.5s"):
        await asyncio.wait_for(worker.serve(), NETWORK)


async def test_stop_while_still_connecting_returns_cleanly() -> None:
    app = App()

    @app.event()
    async def handle(event: Event) -> None: ...

    worker = Worker(app, settings(free_port()), handle_signals=False)
    serving = asyncio.create_task(worker.serve())
    await until(
        lambda: worker.connection.problem not in (None, "connecting"),
        "the connection to report its problem",
        within=NETWORK,
    )
    worker.request_stop()
    await asyncio.wait_for(serving, NETWORK)
    assert not worker.started.is_set()
