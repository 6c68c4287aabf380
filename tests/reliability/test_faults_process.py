"""Process faults under load: ``kill -9`` of one replica, SIGTERM of one replica."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.reliability.conftest import StartGroup
from tests.reliability.group import WINDOW, books, wait_subscribed
from tests.reliability.load import Load
from tests.support.mosquitto import Mosquitto
from tests.support.waiting import until

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

RATE = 1000.0
COUNT = 3000


async def test_kill_9_of_one_replica(broker: Mosquitto, start_group: StartGroup) -> None:
    workers = await start_group()
    victim = workers[1]
    load = Load(broker.host, broker.port, rate=RATE)
    stream = asyncio.create_task(load.run(range(COUNT)))
    await until(lambda: len(victim.handled()) >= 200, "the victim to be busy")
    before = await victim.metrics()  # its counts up to the kill (no failures are expected)
    victim.signal(signal.SIGKILL)
    assert await victim.wait() == -signal.SIGKILL
    await stream
    book = await books(
        "kill -9 of one replica of three",
        workers,
        load,
        kept=[before],
        lost_bound=WINDOW,
        lost_reason="the killed member's unacknowledged in-flight window; clean session, "
        "Mosquitto does not redeliver (S11)",
    )
    book.check()
    survivors = [w for w in workers if w is not victim]
    await wait_subscribed(survivors, "the survivors to stay subscribed")


async def test_sigterm_of_one_replica_under_load(
    broker: Mosquitto, start_group: StartGroup
) -> None:
    workers = await start_group()
    leaving = workers[0]
    load = Load(broker.host, broker.port, rate=RATE)
    stream = asyncio.create_task(load.run(range(COUNT)))
    await until(lambda: len(leaving.handled()) >= 200, "the leaving worker to be busy")
    leaving.signal(signal.SIGTERM)
    # the drain's last scrape is impossible once it exited; its books are in its log
    assert await leaving.wait() == 0
    await stream
    assert "stopped (0 messages abandoned)" in leaving.log_text()
    book = await books("SIGTERM of one replica of three under load", workers, load)
    book.check()
    assert book.lost == 0
