"""A real Prometheus scrapes three fake instances and records their shares with rules.yaml.

The fake instances serve worker metrics whose received counters rise 5:3:2 per scrape; the
recorded worker:load_share:ratio and `worker shares --prometheus` must show that split.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.prometheus import prometheus_server
from tests.support.waiting import SCENARIO
from tests.test_shares import FakeInstance, metrics_endpoint, run_command, serve
from worker.tools.shares import InstanceShare, SharesError, prometheus_shares

EXPECTED = (0.2, 0.3, 0.5)

pytestmark = [pytest.mark.promtool, pytest.mark.slow]


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[str]:
    """Prometheus scraping w1/w2/w3 (steps 50/30/20) every second; yields its base URL."""
    servers, targets = [], []
    for name, step in (("w1", 50), ("w2", 30), ("w3", 20)):
        server, base = await serve(metrics_endpoint(FakeInstance(name, step)))
        servers.append(server)
        targets.append(base.removeprefix("http://"))
    try:
        async with prometheus_server(tmp_path, targets) as url:
            yield url
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def test_prometheus_records_the_shares_of_three_instances(prometheus: str) -> None:
    rows: list[InstanceShare] = []

    def split_is_5_3_2() -> bool:
        shares = sorted(r.share for r in rows)
        if len(shares) != len(EXPECTED):
            return False
        return all(abs(a - b) <= 0.05 for a, b in zip(shares, EXPECTED, strict=True))

    async with asyncio.timeout(SCENARIO):
        # Early rates rest on two or three scrapes and may be off; poll until the recorded
        # split settles on 5:3:2. The deadline turns a split that never does into a failure.
        while not split_is_5_3_2():
            await asyncio.sleep(0.5)
            try:
                rows = await prometheus_shares(prometheus, 2.0)
            except SharesError:
                rows = []  # not listening yet
    assert [r.instance.split(":")[0] for r in rows] == ["127.0.0.1"] * 3
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert {r.state for r in rows} == {"ready"}
    code, out, err = await run_command("--once", "--json", "--prometheus", prometheus)
    assert code == 0, err
    assert '"source": "prometheus"' in out
