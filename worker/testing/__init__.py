"""Testing toolkit: unit-test handlers in memory, integration-test them on the local platform.

In memory (no broker, no sockets)::

    from worker.testing import TestClient

    async def test_hot_reading_sends_an_alert() -> None:
        async with TestClient(app) as client:
            result = await client.send_event("sensor", "s1", "reading", {"temp": 95})
        assert result.ok
        assert [c.command for c in client.commands] == ["alert"]

pytest fixtures against the local Watson IoT-compatible platform: ``platform``,
``running_app`` and ``mqtt_client`` (:mod:`worker.testing.fixtures`). They are opt-in, so
that installing ``worker`` adds no fixtures to other projects' test suites; enable them with
``-p worker.testing`` (command line or ``addopts``), ``pytest_plugins = ["worker.testing"]``
in the top-level ``conftest.py``, or ``worker_fixtures = true`` in the pytest configuration.
"""

from __future__ import annotations

from worker.handling import Handled
from worker.metrics import Outcome
from worker.testing.client import DEFAULT_DEADLINE, Delivery, TestClient, raise_handler_error

try:  # the fixtures need pytest and pytest-asyncio; the TestClient needs neither
    from worker.testing.fixtures import (
        LocalPlatform,
        RunningApp,
        mqtt_client_fixture,
        platform_fixture,
        running_app_fixture,
    )
except ImportError as _missing:  # pragma: no cover - depends on the environment
    if _missing.name not in ("pytest", "pytest_asyncio", "_pytest"):
        raise

__all__ = [
    "DEFAULT_DEADLINE",
    "Delivery",
    "Handled",
    "LocalPlatform",
    "Outcome",
    "RunningApp",
    "TestClient",
    "mqtt_client_fixture",
    "platform_fixture",
    "raise_handler_error",
    "running_app_fixture",
]
