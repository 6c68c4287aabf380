"""Three live workers share a load; a real Prometheus and `worker shares` report the split.

The recording rule worker:load_share:ratio, computed by Prometheus from the workers' own
/metrics, must sum to 1 and agree with the events each worker actually handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Spawn
from tests.e2e.test_run_platform import wiotp_args
from tests.support.credentials import API_KEY, TOKEN
from tests.support.processes import WorkerProcess, event_topic, run_cli
from tests.support.prometheus import prometheus_server
from tests.support.waiting import SCENARIO
from worker.platform import Platform, PlatformConfig
from worker.tools.shares import InstanceShare, SharesError, prometheus_shares
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions

pytestmark = pytest.mark.promtool


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    config = PlatformConfig(host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN})
    async with Platform(config) as running:
        yield running


async def steady_load(port: int, stop: asyncio.Event) -> int:
    """Publish about 1000 events/s at QoS 1 until ``stop``; the count sent."""
    pub = AiomqttTransport()
    await pub.connect(ConnectOptions("127.0.0.1", port, "a:abc123:load", API_KEY, TOKEN))
    sent = 0
    try:
        while not stop.is_set():
            batch = range(sent, sent + 50)
            await asyncio.gather(
                *(pub.publish(event_topic(n), b'{"n": %d}' % n, qos=1) for n in batch)
            )
            sent += len(batch)
            # Pacing, not synchronisation: a steady rate gives Prometheus a rate to compute.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    finally:
        await pub.disconnect()
    return sent


def agrees(rows: list[InstanceShare], workers: list[WorkerProcess]) -> bool:
    """Shares sum to 1 (+-0.02) and each is within 5 points of the worker's handled fraction."""
    handled = {w.port: len(w.handled()) for w in workers}
    total = sum(handled.values())
    if len(rows) != len(workers) or not total or abs(sum(r.share for r in rows) - 1) > 0.02:
        return False
    return all(
        abs(r.share - handled[int(r.instance.rsplit(":", 1)[1])] / total) <= 0.05 for r in rows
    )


async def recorded_shares(url: str, workers: list[WorkerProcess]) -> list[InstanceShare]:
    """Poll Prometheus until its recorded shares agree with the handled counts.

    A rate needs a few scrapes before it is steady, so early answers may be off; the caller's
    deadline turns a split that never agrees into a failure.
    """
    rows: list[InstanceShare] = []
    while not agrees(rows, workers):
        await asyncio.sleep(0.5)  # Prometheus evaluates every second
        with contextlib.suppress(SharesError):
            rows = await prometheus_shares(url, 2.0)
    return rows


async def test_prometheus_and_worker_shares_see_the_real_split(
    platform: Platform, spawn: Spawn, tmp_path: Path
) -> None:
    workers = [spawn(f"w{i}", *wiotp_args(platform.port)) for i in (1, 2, 3)]
    await asyncio.gather(*(w.start() for w in workers))
    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(platform.port, stop))
    try:
        async with (
            prometheus_server(tmp_path, [f"127.0.0.1:{w.port}" for w in workers]) as prom,
            asyncio.timeout(SCENARIO),
        ):
            rows = await recorded_shares(prom, workers)
            code, out, err = await run_cli(
                "shares", "--once", "--json", "--interval", "1",
                *(f"http://127.0.0.1:{w.port}/metrics" for w in workers),
            )  # fmt: skip
    finally:
        stop.set()
        await load
    assert {r.state for r in rows} == {"ready"}
    assert code == 0, err
    assert_live_view(out, workers)


def assert_live_view(out: str, workers: list[WorkerProcess]) -> None:
    """`worker shares --json`: one ready row per worker, shares summing to 1."""
    snapshot = json.loads(out.splitlines()[-1])
    assert snapshot["source"] == "metrics"
    rows = snapshot["instances"]
    assert len(rows) == len(workers)
    assert {row["state"] for row in rows} == {"ready"}
    assert sum(row["share"] for row in rows) == pytest.approx(1.0, abs=0.02)
    assert all(row["share"] == pytest.approx(1 / 3, abs=0.1) for row in rows)
