"""A real Prometheus server for tests: scrapes given targets every second with rules.yaml."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.binaries import installed
from tests.support.ports import free_port
from tests.support.waiting import PROCESS

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yaml"


@asynccontextmanager
async def prometheus_server(folder: Path, targets: Sequence[str]) -> AsyncIterator[str]:
    """Run Prometheus scraping ``targets`` (host:port) every second; yield its base URL."""
    prometheus = installed("prometheus")
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
        prometheus,
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
