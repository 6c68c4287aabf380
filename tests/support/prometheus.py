"""A real Prometheus server for tests: scrapes given targets every second with rules.yaml."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.waiting import PROCESS

PROMETHEUS = shutil.which("prometheus")
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yaml"

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus is not installed (`make test` installs it via scripts/system-deps.sh)",
)


@asynccontextmanager
async def prometheus_server(folder: Path, targets: Sequence[str]) -> AsyncIterator[str]:
    """Run Prometheus scraping ``targets`` (host:port) every second; yield its base URL."""
    assert PROMETHEUS is not None
    config = folder / "prometheus.yml"
    quoted = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: worker\n"
        f"    static_configs: [{{targets: [{quoted}]}}]\n"
    )
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        async with asyncio.timeout(PROCESS):
            await proc.wait()
