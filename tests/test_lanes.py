"""How the pipeline's lanes share the loop: who is woken, and how long they may run."""

from __future__ import annotations

import asyncio
import time

from tests.support.pipeline import Acks, event, running
from tests.support.waiting import QUICK, until
from worker import App, Event
from worker.pipeline import TURN

#: what one handler of the turn test costs, spinning (it never waits)
SPIN = 0.003


async def test_a_summoned_lane_that_finds_ordered_work_summons_another_for_shared_work() -> None:
    app = App()
    gate = asyncio.Event()

    @app.event(event="ordered", ordered=True)
    async def one_by_one(e: Event) -> None:
        await gate.wait()

    @app.event(event="free")
    async def anywhere(e: Event) -> None:
        await gate.wait()

    lanes = 3
    # the lane rule (worker.pipeline): hash((device type, device ID)) % lanes; lane 0 is the
    # first idle lane, so the one the first shared message summons
    device = next(f"d{n}" for n in range(1000) if hash(("sensor", f"d{n}")) % lanes == 0)
    acks = Acks()
    async with running(app, concurrency=lanes) as pipeline:
        # white-box: every lane has started and waits (in order 0, 1, 2) for work
        await until(lambda: pipeline._awake == 0, "every lane asleep", within=QUICK, every=0)
        batch = [
            event("x1", 1, name="free"),
            event(device, 2, name="ordered"),  # queued on the summoned lane itself
            event("x3", 3, name="free"),
        ]
        await pipeline.put(batch, acks)
        # lane 0 takes its own (ordered) work first and waits in it: the shared messages
        # must still reach the two other lanes
        await until(
            lambda: pipeline.in_flight == 3, "three events in flight", within=QUICK, every=0
        )
        gate.set()
        await acks.wait_for(3)


async def test_handlers_that_never_wait_still_give_the_loop_a_turn_every_turn_length() -> None:
    app = App()

    @app.event()
    async def spin(e: Event) -> None:
        ends = time.monotonic() + SPIN
        while time.monotonic() < ends:
            pass

    gaps: list[float] = []
    acks = Acks()

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    count = 100  # 0.3 s of handlers: without turns, the ticker would wait all of it
    async with running(app, concurrency=4) as pipeline:
        ticker = asyncio.ensure_future(tick())
        try:
            await pipeline.put([event(f"d{n}", n) for n in range(count)], acks)
            await acks.wait_for(count)
        finally:
            ticker.cancel()
    # a turn is TURN plus the handler that crossed it; a wide margin for a busy machine
    assert max(gaps) < 5 * (TURN + SPIN), max(gaps)
    assert sum(1 for g in gaps if g >= TURN) >= 3  # the lanes did run for whole turns
