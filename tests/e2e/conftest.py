"""Fixtures for the process tests: worker processes that are always stopped at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.processes import WorkerProcess

Spawn = Callable[..., WorkerProcess]
HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so that "not slow" sees the mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs ``worker`` processes for seconds: all are slow (make test-fast)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """``spawn(name, *args, **env)`` makes a WorkerProcess (start it with ``await w.start()``)."""
    made: list[WorkerProcess] = []

    def make(name: str, *args: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, name, args, **env)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()
