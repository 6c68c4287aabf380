"""``worker demo``: IBM's scalable-application scenario, replayed live on one machine.

A broker (:mod:`worker.tools.demo_broker`), a simulated fleet publishing ``reading`` events
(:mod:`worker.tools.simulate`), and up to three ``worker run worker.examples.fleet`` processes
(:mod:`worker.tools.demo_procs`) that join one scalable application. Six phases::

    1 one instance        100%
    2 a second joins      50 / 50
    3 a third joins       33 / 33 / 33
    4 two and three pause (SIGUSR1: unsubscribe, stay connected)   100 / 0 / 0
    5 they resume         (SIGUSR2)                                33 / 33 / 33
    6 scale-down          (SIGTERM: unsubscribe, drain, exit)       100

Each phase first acts, then lets the shares settle, then measures them over a window from
the instances' ``/metrics`` with :mod:`worker.tools.shares` (the live view draws the same bars as
``worker shares``). At the end every instance has stopped, and their ledgers are compared
with the sequence numbers the platform acknowledged to the simulator: each event handled
exactly once. Results go to ``demo.json`` and ``demo.svg`` (:mod:`worker.tools.demo_report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Protocol, TextIO, TypeVar

from worker.tools.demo_broker import Broker, open_broker
from worker.tools.demo_procs import DemoError, Instance
from worker.tools.demo_report import (
    Delivery,
    PhaseResult,
    Shares,
    chart_svg,
    check_delivery,
    read_ledger,
    results_json,
    table,
)
from worker.tools.publish import connected, tool_options
from worker.tools.shares import InstanceShare, Reading, compute_shares, scrape_all
from worker.tools.shares_view import CLEAR, render
from worker.tools.simulate import Mode, SimConfig, SimStats, Simulator

INSTANCES: Final = 3
#: seconds for one scrape of one instance
SCRAPE_TIMEOUT: Final = 2.0
#: seconds for the fleet to finish what it has in flight after the last phase
SIM_STOP_DEADLINE: Final = 30.0
THIRD: Final = 1 / 3


@dataclass(frozen=True)
class Phase:
    """One step of the scenario: what to do, what IBM's example says, the expected shares."""

    name: str
    action: str
    targets: tuple[int, ...]
    says: str
    expected: tuple[float | None, ...]


PHASES: Final = (
    Phase("one instance", "start", (0,), "Client one connects as {group} and subscribes to all "
          "device events: it receives 100% of the device events.", (1.0, None, None)),
    Phase("two instances", "start", (1,), "Client two connects as {group} too: from now on one "
          "and two share the events equally.", (0.5, 0.5, None)),
    Phase("three instances", "start", (2,), "Client three connects as {group}: the three share "
          "the processing load between them.", (THIRD, THIRD, THIRD)),
    Phase("two and three paused", "pause", (1, 2), "Clients two and three unsubscribe while "
          "still connected (SIGUSR1): client one receives 100% again.", (1.0, 0.0, 0.0)),
    Phase("two and three resumed", "resume", (1, 2), "Two and three subscribe again (SIGUSR2): "
          "the three share the load once more.", (THIRD, THIRD, THIRD)),
    Phase("scale-down", "stop", (1, 2), "Two and three get SIGTERM: they unsubscribe, finish "
          "and acknowledge what they hold, and exit; one takes 100% and nothing is lost.",
          (1.0, None, None)),
)  # fmt: skip


@dataclass(frozen=True)
class DemoConfig:
    """``worker demo``'s flags."""

    broker: str = "embedded"
    duration: float = 60.0
    rate: float = 100.0
    devices: int = 12
    sim_as: Mode | None = None
    live: bool = True
    out: Path = Path("demo-out")
    drain_timeout: float = 10.0
    interval: float = 1.0

    @property
    def phase_seconds(self) -> float:
        """Each phase's share of ``duration`` (its settling plus its measurement window)."""
        return self.duration / len(PHASES)


@dataclass
class DemoResult:
    """What the demo found, and where it wrote it."""

    phases: list[PhaseResult]
    delivery: Delivery
    exits: dict[str, int | None]
    table: str
    json_path: Path
    svg_path: Path

    @property
    def ok(self) -> bool:
        """Every phase within tolerance, every event handled once, every instance exited 0."""
        clean = all(code == 0 for code in self.exits.values())
        return clean and self.delivery.ok and all(p.ok for p in self.phases)


@dataclass
class Demo:
    """One run of the scenario against one broker."""

    config: DemoConfig
    broker: Broker
    folder: Path
    out: TextIO
    instances: list[Instance] = field(default_factory=list)
    results: list[PhaseResult] = field(default_factory=list)
    timeline: list[tuple[float, Shares]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    simulator: Simulator | None = None
    _sim_task: asyncio.Task[SimStats] | None = None
    _last_sent: tuple[float, int] = (0.0, 0)

    @property
    def names(self) -> list[str]:
        """Every instance of the scenario, started or not."""
        return [f"demo-{n + 1}" for n in range(INSTANCES)]

    def clock(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started

    async def run(self) -> DemoResult:
        """Every phase, then the stop, the delivery check and the report files."""
        self.say(f"worker demo · {self.broker.describe()}")
        for number, phase in enumerate(PHASES, start=1):
            result = PhaseResult(phase.name, phase.says.format(group=self.broker.group),
                                 dict(zip(self.names, phase.expected, strict=True)),
                                 started=self.clock())  # fmt: skip
            self.results.append(result)
            if not self.config.live:
                self.say(f"\nphase {number}/{len(PHASES)}: {phase.name}\n  {result.says}")
            await self.act(phase)
            if self._sim_task is None:
                self.start_simulator()  # only now: an event with no subscriber would be lost
            await self.measure(number, result)
            if not self.config.live:  # the live view lists finished phases under the bars
                self.say(f"  measured: {self.result_line(result)}")
        return await self.finish()

    # --- acting ----------------------------------------------------------------------------

    async def act(self, phase: Phase) -> None:
        """Do what the phase says to the instances it names, and wait until it took effect."""
        drain = self.config.drain_timeout
        targets = list(phase.targets)
        if phase.action == "start":
            for n in targets:
                instance = Instance(n + 1, self.folder)
                self.instances.append(instance)
                await instance.start(self.broker, drain)
        elif phase.action in ("pause", "resume"):
            paused = phase.action == "pause"
            for n in targets:
                self.instances[n].signal(signal.SIGUSR1 if paused else signal.SIGUSR2)
            await self.until_subscribed([self.instances[n] for n in targets], not paused)
        else:
            await asyncio.gather(*(self.instances[n].stop(drain) for n in targets))

    async def until_subscribed(self, instances: Sequence[Instance], subscribed: bool) -> None:
        """Wait until the instances' /metrics say subscribed (or not); DemoError past 15 s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15.0
        while loop.time() < deadline:
            readings = await scrape_all([i.url for i in instances], SCRAPE_TIMEOUT)
            if all(r.subscribed is subscribed for r in readings):
                return
            await asyncio.sleep(0.05)  # polling the instances' gauges, with a deadline
        state = "subscribe" if subscribed else "unsubscribe"
        raise DemoError(f"{', '.join(i.name for i in instances)} did not {state} within 15 s")

    def start_simulator(self) -> None:
        """Start the fleet in the background; its task is held and awaited by ``finish``."""
        settings = self.broker.settings()
        mode: Mode = self.config.sim_as or ("device" if self.broker.profile == "wiotp" else "app")
        churn = max(1.0, self.config.phase_seconds / 2)
        sim_config = SimConfig(devices=self.config.devices, rate=self.config.rate, mode=mode,
                               churn=churn, seed=7)  # fmt: skip
        self.simulator = Simulator(sim_config, settings)
        self._sim_task = asyncio.create_task(self.simulator.run(), name="demo-simulator")

    # --- measuring -------------------------------------------------------------------------

    async def measure(self, number: int, result: PhaseResult) -> None:
        """Refresh the view every interval; measure the shares over the settled window."""
        loop = asyncio.get_running_loop()
        length = self.config.phase_seconds
        settle_end = loop.time() + min(2.0, 0.3 * length)
        end = loop.time() + length
        urls = [i.url for i in self.instances]
        before = await scrape_all(urls, SCRAPE_TIMEOUT)
        first: list[Reading] | None = None
        opened = self.clock()
        while loop.time() < end - 0.05:
            # The refresh period of the view, and the window of each bar's rate.
            await asyncio.sleep(
                max(0.0, min(loop.time() + self.config.interval, end) - loop.time())
            )
            self.check_simulator()
            after = await scrape_all(urls, SCRAPE_TIMEOUT)
            rows = self.named(compute_shares(before, after))
            self.timeline.append((self.clock(), self.shares_of(rows)))
            self.draw(number, result, rows)
            if first is None and loop.time() >= settle_end:
                first, opened = after, self.clock()
            before = after
        window = compute_shares(first or before, before)
        result.measured = self.shares_of(window)
        result.rates = {i.name: row.rate for i, row in zip(self.instances, window, strict=True)}
        result.window = (opened, self.clock())

    def named(self, rows: Sequence[InstanceShare]) -> list[InstanceShare]:
        """Rows under the demo's names; an instance that has exited says so, with its code."""
        named = []
        for instance, row in zip(self.instances, rows, strict=True):
            error = row.error if instance.running else f"stopped, exit code {instance.exit_code}"
            named.append(replace(row, instance=instance.name, error=error))
        return named

    def shares_of(self, rows: Sequence[InstanceShare]) -> Shares:
        """Instance name -> share, None for an instance that is not running."""
        shares: Shares = dict.fromkeys(self.names)
        for instance, row in zip(self.instances, rows, strict=True):
            shares[instance.name] = None if row.state == "down" else row.share
        return shares

    def check_simulator(self) -> None:
        """Raise the fleet's error at once if it failed (it cannot connect, say)."""
        task = self._sim_task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise DemoError(f"the simulator failed: {task.exception()}")

    # --- finishing -------------------------------------------------------------------------

    async def finish(self) -> DemoResult:
        """Stop the fleet, then the last instance; check delivery; write JSON and SVG."""
        assert self.simulator is not None and self._sim_task is not None
        self.simulator.stop()
        stats = await asyncio.wait_for(self._sim_task, SIM_STOP_DEADLINE)
        await self.stop_all()
        ledgers = {i.name: read_ledger(i.ledger) for i in self.instances}
        delivery = check_delivery(stats.acked, stats.failed, ledgers)
        outcome = DemoResult(self.results, delivery, {i.name: i.exit_code for i in self.instances},
                          table(self.results, self.names), self.folder / "demo.json",
                          self.folder / "demo.svg")  # fmt: skip
        setup = {"broker": self.broker.describe(), "rate": self.config.rate,
                 "devices": self.config.devices, "phase_seconds": self.config.phase_seconds,
                 "exits": outcome.exits}  # fmt: skip
        outcome.json_path.write_text(results_json(setup, self.results, delivery, self.timeline))
        title, where = (
            "Share of the events per instance",
            f"{self.broker.kind}, {self.broker.group}",
        )
        svg = chart_svg(title, where, self.results, self.names, self.timeline)
        outcome.svg_path.write_text(svg)
        return outcome

    async def stop_all(self) -> None:
        """SIGTERM every instance still running, and wait for each (kill past the deadline)."""
        running = [i for i in self.instances if i.running]
        await asyncio.gather(*(i.stop(self.config.drain_timeout) for i in running))

    async def abort(self) -> None:
        """Interrupted or failed: the fleet stops and the instances are stopped at once."""
        if self._sim_task is not None and not self._sim_task.done():
            self._sim_task.cancel()
            await asyncio.gather(self._sim_task, return_exceptions=True)
        await asyncio.gather(*(i.kill() for i in self.instances if i.running))

    # --- the terminal ----------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A line of the non-live transcript (or the header before the live view)."""
        self.out.write(text + "\n")
        self.out.flush()

    @staticmethod
    def result_line(result: PhaseResult) -> str:
        """The phase's measured shares against the expected, and the verdict."""
        cells = [
            f"{name} {got * 100:5.1f}% (expected {want * 100:.0f}%)"
            for name, want in result.expected.items()
            if want is not None and (got := result.measured.get(name)) is not None
        ]
        verdict = "ok" if result.ok else f"MISSED: {', '.join(result.misses)}"
        return " · ".join(cells) + f"  → {verdict}"

    def sim_line(self) -> str:
        """The fleet's progress: sent, msg/s over the last refresh, errors."""
        stats = self.simulator.stats if self.simulator else SimStats()
        now = time.monotonic()
        then, sent = self._last_sent
        rate = (stats.sent - sent) / (now - then) if then and now > then else 0.0
        self._last_sent = (now, stats.sent)
        return stats.line(rate)

    def draw(self, number: int, result: PhaseResult, rows: Sequence[InstanceShare]) -> None:
        """Redraw the live view: banner, IBM's words, the bars, the phases so far."""
        if not self.config.live:
            return
        expected = " · ".join(
            f"{n} {'-' if w is None else f'{w:.0%}'}" for n, w in result.expected.items()
        )
        left = max(0.0, result.started + self.config.phase_seconds - self.clock())
        lines = [
            f"worker demo · {self.broker.describe()}",
            "",
            f"PHASE {number}/{len(PHASES)}: {result.name.upper()}   (~{math.ceil(left)}s left)",
            f"  the docs: {result.says}",
            f"  expected: {expected}",
            f"  fleet:    {self.sim_line()}",
            "",
            render(rows, self.config.interval, "metrics").rstrip("\n"),
            "",
        ]
        lines += [f"  {n}. {r.name}: {self.result_line(r)}" for n, r in
                  enumerate(self.results[: number - 1], start=1)]  # fmt: skip
        self.out.write(CLEAR + "\n".join(lines) + "\n")
        self.out.flush()


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Send this process's log records (INFO and up) to ``path`` for the block only."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


@contextlib.asynccontextmanager
async def demo_broker(config: DemoConfig) -> AsyncIterator[tuple[Broker, Path]]:
    """The demo's broker, reachable, and its output folder; SIGTERM ends the run as Ctrl-C.

    The worker processes live in sessions of their own, so without the SIGTERM handler they
    would outlive a demo that was terminated.
    """
    folder = config.out.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        async with open_broker(config.broker, folder) as broker:
            # Fail fast, as ConnectError, when the broker cannot be reached or refuses us.
            async with connected(tool_options(broker.settings(), "demo")):
                pass
            yield broker, folder
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


T = TypeVar("T")


class Run(Protocol):
    """A demo that runs to its result, and can be stopped half-way."""

    async def abort(self) -> None: ...


async def run_to_end(demo: Run, result: Awaitable[T]) -> T:
    """Await ``result``; on any failure or cancellation, abort ``demo`` first."""
    try:
        return await result
    except BaseException:
        await asyncio.shield(demo.abort())
        raise


async def run_demo(config: DemoConfig, out: TextIO) -> DemoResult:
    """Run the whole scenario; DemoError, ConfigError or ConnectError when it cannot."""
    async with demo_broker(config) as (broker, folder):
        demo = Demo(config, broker, folder, out)
        return await run_to_end(demo, demo.run())
