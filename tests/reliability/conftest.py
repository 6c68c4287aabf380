"""Fixtures of the fault tests: a broker, a proxy in front of it, a group of three workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.conftest import MosquittoFactory
from tests.reliability.group import APP, WINDOW, worker_args
from tests.reliability.proxy import Proxy
from tests.support.mosquitto import Mosquitto
from tests.support.processes import WorkerProcess

StartGroup = Callable[..., Awaitable[list[WorkerProcess]]]


@pytest.fixture
def broker(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    """Mosquitto with a known in-flight window per client (for MQTT 3.1.1 clients; the
    workers, on MQTT 5, announce the same as their Receive Maximum)."""
    return mosquitto_factory(max_inflight=WINDOW)


@pytest.fixture
async def proxy(broker: Mosquitto) -> AsyncIterator[Proxy]:
    """A TCP proxy in front of ``broker``, closed at teardown."""
    proxy = await Proxy.start(broker.host, broker.port)
    yield proxy
    await proxy.close()


@pytest.fixture
async def start_group(broker: Mosquitto, tmp_path: Path) -> AsyncIterator[StartGroup]:
    """``await start_group(*args, ports={"w2": ...}, env={"w2": {...}}, **env)``: w1, w2, w3.

    ``ports`` sends an instance elsewhere than the broker (the proxy's port puts the proxy in
    between); ``env`` adds variables to one instance. Every process is stopped at teardown.
    """
    made: list[WorkerProcess] = []

    async def start(
        *more: str,
        ports: dict[str, int] | None = None,
        env: dict[str, dict[str, str]] | None = None,
        **common: str,
    ) -> list[WorkerProcess]:  # fmt: skip
        workers = []
        for name in ("w1", "w2", "w3"):
            port = (ports or {}).get(name, broker.port)
            args = worker_args(broker.host, port, name, *more)
            extra = common | (env or {}).get(name, {})
            workers.append(WorkerProcess(tmp_path, name, args, **extra))
        made.extend(workers)
        await asyncio.gather(*(w.start(APP) for w in workers))
        return workers

    yield start
    for worker in made:
        await worker.stop()
