"""Fixtures for the process tests: worker processes that are always stopped at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.processes import WorkerProcess

Spawn = Callable[..., WorkerProcess]


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
