"""``worker run`` processes on the local Watson IoT platform: one scalable app, ``A:org:app``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import Spawn
from tests.support.credentials import API_KEY, TOKEN
from tests.support.processes import WorkerProcess, exactly_once, publish_events, run_cli
from tests.support.waiting import until
from worker import collector
from worker.platform import Platform, PlatformConfig


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    config = PlatformConfig(
        host="127.0.0.1", port=0, ws_port=0, api_keys={API_KEY: TOKEN}, buffer_size=100_000
    )
    async with Platform(config) as running:
        yield running


def wiotp_args(port: int, *more: str) -> tuple[str, ...]:
    return (
        "--auth-key", API_KEY, "--auth-token", TOKEN, "--app-id", "shared",
        "--host", "127.0.0.1", "--port", str(port), *more,
    )  # fmt: skip


async def publish(platform: Platform, numbers: range) -> None:
    await publish_events(
        "127.0.0.1", platform.port, numbers, client_id="a:abc123:pub", username=API_KEY,
        password=TOKEN,
    )  # fmt: skip


def total(workers: list[WorkerProcess]) -> int:
    return sum(len(w.handled()) for w in workers)


async def test_three_processes_share_one_scalable_app_id(platform: Platform, spawn: Spawn) -> None:
    workers = [spawn(f"w{i}", *wiotp_args(platform.port)) for i in (1, 2, 3)]
    await asyncio.gather(*(w.start() for w in workers))
    assert all("client ID A:abc123:shared " in w.ready_line for w in workers)
    numbers = range(30_000)  # enough for the round-robin shares to settle inside the band
    await publish(platform, numbers)
    await until(lambda: total(workers) >= len(numbers), "every event handled")
    exactly_once(workers, numbers)
    for w in workers:
        share = len(w.handled()) / len(numbers)
        assert 0.25 <= share <= 0.42, f"{w.name} handled {share:.1%}"

    # The last step of IBM's example: clients two and three unsubscribe, one gets everything.
    one, two, three = workers
    before = {w.name: len(w.handled()) for w in workers}
    two.signal(signal.SIGUSR1)
    three.signal(signal.SIGUSR1)

    async def unsubscribed() -> bool:
        # /readyz says 503 at once; the gauge drops when the UNSUBACK is back.
        return [(await w.metrics())["worker_subscribed"] for w in (two, three)] == [0, 0]

    await until(unsubscribed, "two and three to unsubscribe")
    assert [(await w.readyz())[0] for w in (two, three)] == [503, 503]
    more = range(30_000, 30_600)
    await publish(platform, more)
    await until(lambda: len(one.handled()) >= before["w1"] + len(more), "one to take it all")
    assert {w.name: len(w.handled()) for w in (two, three)} == {
        "w2": before["w2"],
        "w3": before["w3"],
    }


async def test_websocket_transport(platform: Platform, spawn: Spawn) -> None:
    assert platform.ws_port is not None
    worker = spawn("ws", *wiotp_args(platform.ws_port, "--mqtt-transport", "websockets"))
    await worker.start()
    await publish(platform, range(300))
    await until(lambda: len(worker.handled()) >= 300, "events over WebSocket")
    exactly_once([worker], range(300))


async def test_wrong_token_exits_4(platform: Platform) -> None:
    args = wiotp_args(platform.port)
    args = tuple("wrong-token" if a == TOKEN else a for a in args)
    code, _, err = await run_cli("run", "tests.e2e.recorder", *args)
    assert code == 4
    assert "refused client ID 'A:abc123:shared' as user 'a-abc123-k1'" in err
    assert "wrong-token" not in err


async def test_worker_run_freezes_startup_objects_and_collects_young_objects_rarely(
    platform: Platform, spawn: Spawn
) -> None:
    worker = spawn("gc", *wiotp_args(platform.port))
    await worker.start("tests.e2e.gcprobe")
    threshold, frozen = worker.handled()
    assert threshold == collector.YOUNG_THRESHOLD
    assert frozen > 10_000  # the modules and classes of the worker and the App
