"""``worker demo --autoscale``: the scaling policy run locally, on real worker processes.

The fleet publishes at a low rate, then a high one, then low again. Every second the demo
scrapes each instance's ``/metrics``, computes the busy lanes and the replicas the policy
wants (:mod:`worker.tools.autoscale`: the recording rules' formula, with windows of seconds
instead of minutes), and starts an instance or drains one (SIGTERM) to match. Each reading
waits ``WORK`` seconds (``EXAMPLE_WORK``, as a database call would) on one of ``LANES`` lanes,
so a replica is sized for ``0.7 x LANES / WORK`` readings a second.

It holds when the replicas rose above one under the high load, came back to one after it,
every instance exited 0, and every acknowledged event was handled exactly once. Replicas over
time go to the summary, ``autoscale.json`` and ``autoscale.svg``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

from worker import web
from worker.tools.autoscale import Autoscaler, BusyMeter, Policy, read_load
from worker.tools.autoscale_chart import chart
from worker.tools.demo import DemoConfig, demo_broker, run_to_end
from worker.tools.demo_broker import Broker
from worker.tools.demo_procs import DemoError, Instance
from worker.tools.demo_report import Delivery, check_delivery, read_ledger
from worker.tools.simulate import Mode, SimConfig, SimStats, Simulator

#: seconds each reading takes, and the lanes of each instance
WORK: Final = 0.05
LANES: Final = 2
#: events/s: well under one replica's target, and well over two replicas' target
LOW_RATE: Final = 12.0
HIGH_RATE: Final = 70.0
#: seconds between decisions, and of the busy-lanes window
TICK: Final = 1.0
WINDOW: Final = 4.0
SCRAPE_TIMEOUT: Final = 2.0
SIM_STOP_DEADLINE: Final = 30.0
#: the share of the run at the low rate before the high one, and where the high one ends
BUSY_FROM: Final = 0.2
BUSY_UNTIL: Final = 0.55


@dataclass(frozen=True)
class Tick:
    """One decision: when, at what rate, how busy, what the policy wanted, what ran."""

    at: float
    rate: float
    busy: float
    desired: int
    replicas: int

    def as_dict(self) -> dict[str, float | int]:
        """The tick in the results JSON."""
        return {
            "t": round(self.at, 2),
            "rate": self.rate,
            "busy_lanes": round(self.busy, 3),
            "desired": self.desired,
            "replicas": self.replicas,
        }


@dataclass
class AutoscaleResult:
    """What the autoscale run found, and where it wrote it."""

    ticks: list[Tick]
    delivery: Delivery
    exits: dict[str, int | None]
    json_path: Path
    svg_path: Path

    @property
    def peak(self) -> int:
        """The most replicas at once."""
        return max((t.replicas for t in self.ticks), default=0)

    @property
    def ok(self) -> bool:
        """Scaled out under load, back to one after it, clean exits, exactly once."""
        clean = all(code == 0 for code in self.exits.values())
        back = bool(self.ticks) and self.ticks[-1].replicas == 1
        return self.peak > 1 and back and clean and self.delivery.ok

    def summary(self) -> str:
        """Replicas over time (every change), then the verdicts."""
        lines = ["replicas over time:"]
        shown = None
        for t in self.ticks:
            if t.replicas != shown:
                lines.append(
                    f"  {t.at:6.1f}s  {t.replicas} replica(s)   load {t.rate:g} events/s, "
                    f"{t.busy:.2f} lanes busy, policy wants {t.desired}"
                )
                shown = t.replicas
        lines.append(
            f"peak {self.peak} replicas; at the end {self.ticks[-1].replicas if self.ticks else 0}"
        )
        lines.append(self.delivery.summary())
        bad = {name: code for name, code in self.exits.items() if code != 0}
        if bad:
            lines.append(f"instances that did not exit cleanly: {bad}")
        lines.append(f"results: {self.json_path}  chart: {self.svg_path}")
        lines.append("the autoscaling held" if self.ok else "the autoscaling did NOT hold")
        return "\n".join(lines)


@dataclass
class AutoscaleDemo:
    """One autoscale run against one broker."""

    broker: Broker
    folder: Path
    out: TextIO
    duration: float
    drain_timeout: float
    devices: int = 12
    sim_as: Mode | None = None
    instances: list[Instance] = field(default_factory=list)
    draining: list[asyncio.Task[int]] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    simulator: Simulator | None = None
    _numbered: int = 0

    def __post_init__(self) -> None:
        # Windows of seconds: the run lasts about a minute (docs/scaling.md has a cluster's).
        self.policy = Policy(down_window=max(3.0, self.duration / 12), down_period=3.0)
        self._sim_task: asyncio.Task[SimStats] | None = None
        self.meter = BusyMeter(WINDOW)
        self.scaler = Autoscaler(self.policy)

    def clock(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        """One line of the transcript."""
        self.out.write(text + "\n")
        self.out.flush()

    async def run(self) -> AutoscaleResult:
        """Scale with the load until the end of the run; then stop, check and report."""
        self.say(f"worker demo --autoscale · {self.broker.describe()}")
        self.say(
            f"each reading waits {WORK * 1000:g} ms on one of {LANES} lanes: a replica is sized "
            f"for {self.policy.target * LANES / WORK:g} events/s (saturation "
            f"{self.policy.target:g}); load {LOW_RATE:g}, then {HIGH_RATE:g}, then "
            f"{LOW_RATE:g} events/s"
        )
        await self.add()
        self.start_simulator()
        assert self.simulator is not None
        rate = LOW_RATE
        while (now := self.clock()) < self.duration:
            wanted = (
                HIGH_RATE
                if BUSY_FROM * self.duration <= now < BUSY_UNTIL * self.duration
                else LOW_RATE
            )
            if wanted != rate:
                rate = self.simulator.rate = wanted
                self.say(f"{now:6.1f}s  load now {rate:g} events/s")
            await self.tick(rate)
            await asyncio.sleep(TICK)
        return await self.finish()

    def running(self) -> list[Instance]:
        """Instances that serve (started, not draining)."""
        return [i for i in self.instances if i.running and i.name in self.meter.samples]

    async def tick(self, rate: float) -> None:
        """Scrape, decide, act."""
        serving = self.running()
        for instance in serving:
            try:
                text = await web.get(instance.url, SCRAPE_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                raise DemoError(f"{instance.name} stopped answering /metrics: {exc}") from exc
            self.meter.add(instance.name, time.monotonic(), read_load(text.decode()))
        busy = self.meter.busy()
        now = self.clock()
        wanted = self.scaler.decide(now, busy, LANES, len(serving))
        self.ticks.append(
            Tick(now, rate, busy, min(wanted, self.policy.max_replicas), len(serving))
        )
        for _ in range(wanted - len(serving)):
            self.say(
                f"{now:6.1f}s  {busy:.2f} lanes busy of {LANES * len(serving)}: adding a replica"
            )
            await self.add()
        if wanted < len(serving):
            self.say(f"{now:6.1f}s  {busy:.2f} lanes busy of {LANES * len(serving)}: draining one")
            self.remove(serving[-1])

    async def add(self) -> None:
        """Start one more instance and count it once it serves."""
        self._numbered += 1
        instance = Instance(self._numbered, self.folder)
        self.instances.append(instance)
        extra = ["--concurrency", str(LANES)]
        await instance.start(self.broker, self.drain_timeout, extra, {"EXAMPLE_WORK": f"{WORK:g}"})
        self.meter.samples.setdefault(instance.name, deque())

    def remove(self, instance: Instance) -> None:
        """Drain ``instance`` (SIGTERM) in the background; it no longer counts."""
        self.meter.forget(instance.name)
        self.draining.append(asyncio.create_task(instance.stop(self.drain_timeout)))

    def start_simulator(self) -> None:
        """The fleet, at the low rate to begin with."""
        mode: Mode = self.sim_as or ("device" if self.broker.profile == "wiotp" else "app")
        config = SimConfig(devices=self.devices, rate=LOW_RATE, mode=mode, churn=1e9, seed=7)
        self.simulator = Simulator(config, self.broker.settings())
        self._sim_task = asyncio.create_task(self.simulator.run(), name="autoscale-fleet")

    async def finish(self) -> AutoscaleResult:
        """Stop the fleet, then every instance; check delivery; write JSON and SVG."""
        assert self.simulator is not None and self._sim_task is not None
        self.simulator.stop()
        stats = await asyncio.wait_for(self._sim_task, SIM_STOP_DEADLINE)
        await asyncio.gather(*self.draining)
        await asyncio.gather(*(i.stop(self.drain_timeout) for i in self.instances if i.running))
        ledgers = {i.name: read_ledger(i.ledger) for i in self.instances}
        delivery = check_delivery(stats.acked, stats.failed, ledgers)
        result = AutoscaleResult(
            self.ticks, delivery, {i.name: i.exit_code for i in self.instances},
            self.folder / "autoscale.json", self.folder / "autoscale.svg",
        )  # fmt: skip
        setup = {
            "broker": self.broker.describe(), "work_seconds": WORK, "lanes": LANES,
            "target": self.policy.target, "rates": [LOW_RATE, HIGH_RATE, LOW_RATE],
            "down_window": self.policy.down_window, "down_period": self.policy.down_period,
        }  # fmt: skip
        report = {
            "setup": setup,
            "ticks": [t.as_dict() for t in self.ticks],
            "peak_replicas": result.peak,
            "delivery": delivery.as_dict(),
            "exits": result.exits,
            "ok": result.ok,
        }
        result.json_path.write_text(json.dumps(report, indent=2) + "\n")
        points = [(t.at, t.rate, t.desired, t.replicas) for t in self.ticks]
        result.svg_path.write_text(chart(points, self.policy.max_replicas))
        return result

    async def abort(self) -> None:
        """Interrupted or failed: stop the fleet and kill every instance at once."""
        task = self._sim_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(i.kill() for i in self.instances if i.running))


async def run_autoscale(config: DemoConfig, out: TextIO) -> AutoscaleResult:
    """The whole autoscale run; DemoError, ConfigError or ConnectError when it cannot."""
    async with demo_broker(config) as (broker, folder):
        demo = AutoscaleDemo(
            broker, folder, out, config.duration, config.drain_timeout, config.devices,
            config.sim_as,
        )  # fmt: skip
        return await run_to_end(demo, demo.run())
