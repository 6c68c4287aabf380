"""One invocation: every selected section against one Mosquitto, in order, printing as it goes.

Sections: ``throughput`` (baseline, no-op worker per transport, example app; QoS 0 and 1),
``latency``, ``overload``, ``mqtt5`` (MQTT 5 against 3.1.1, and RSS with no broker window:
:mod:`bench.mqtt5`, its own section), ``routing``, ``group``, ``platform``, ``storage`` (events into
PostgreSQL, :mod:`bench.storage`, QoS 1 only, its own brokers) and ``processes`` (``worker run
--workers 2`` against 1 with a CPU-bound handler, :mod:`bench.processes`). Later sections use what
earlier ones measured (the latency section's flat-out publisher sends at twice the no-op
capacity); when run alone they measure that capacity first.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench import brokers, mqtt5, payloads, processes, scenarios, storage
from bench.broker import BenchMosquitto
from bench.machine import Load, measure_load
from bench.procs import ROOT, BenchError
from bench.publisher import PublisherError
from bench.report import Results, rate
from bench.routing import routing
from bench.throughput import (
    MQTT5_ON_AIOMQTT,
    Figure,
    Variant,
    baseline_variant,
    c_client_variant,
    measure,
    worker_variant,
)

#: busy share of the cores (other people's work) below which the machine counts as quiet
QUIET: Final = 0.2
SECTIONS: Final = (
    "throughput", "latency", "overload", "mqtt5", "routing", "group", "platform", "storage",
    "processes",
)  # fmt: skip
Say = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How much of everything to do."""

    sections: tuple[str, ...]
    qos: tuple[int, ...]
    messages: int
    runs: int
    #: seconds of latency and overload publishing, and per group burst
    seconds: float
    overload_rate: float
    routing_messages: int
    routes: int
    compile_counts: tuple[int, ...]
    inflight: int
    #: seconds to wait, before each section and figure, for the machine to be quiet
    quiet_wait: float = 0.0
    #: seconds over which the machine's busy share is sampled before each section and figure
    load_window: float = 1.0


def native_problem() -> str | None:
    """Why ``--transport native`` cannot run here, or None when it can."""
    probe = "from worker.connection import transport_factory; transport_factory('native')"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
    return f"--transport native is not available yet ({last})"


def variants(plan: Plan, native: str | None) -> list[Variant]:
    """The consumers of the throughput section, the baseline first."""
    return [
        baseline_variant(plan.messages),
        # The baseline speaks MQTT 3.1.1 (aiomqtt's default): the floor compares like with like.
        worker_variant(
            "worker no-op, aiomqtt",
            "bench.apps:noop",
            "--transport",
            "aiomqtt",
            "--mqtt-version",
            "3.1.1",
        ),
        # What the mqtt profile's default (5) costs on the aiomqtt transport: paho builds and
        # clears a Properties object per PUBLISH. Shown, not held to the floor.
        worker_variant(
            f"worker no-op, aiomqtt, {MQTT5_ON_AIOMQTT}",
            "bench.apps:noop",
            "--transport",
            "aiomqtt",
        ),
        worker_variant(
            "worker no-op, native", "bench.apps:noop", "--transport", "native", skip=native
        ),
        # QoS 0 only: with --overflow block a full intake holds the socket back instead of
        # dropping the oldest, so this is the pipeline's rate with nothing dropped
        worker_variant(
            "worker no-op, native, overflow block",
            "bench.apps:noop",
            "--transport",
            "native",
            "--overflow",
            "block",
            skip=native,
            qos=0,
        ),
        worker_variant("worker worker.examples.fleet (default transport)", "worker.examples.fleet"),
        c_client_variant(),
    ]


class Suite:
    """Runs the plan; ``results`` fills up section by section."""

    def __init__(
        self, plan: Plan, broker: BenchMosquitto, results: Results, folder: Path, say: Say
    ) -> None:
        self.plan, self.broker, self.results = plan, broker, results
        self.folder, self.say = folder, say
        #: the storage section's figures, which BENCHMARKS.md keeps in a section of their own
        self.storage: storage.StorageResults | None = None
        #: --workers 2 against 1, likewise kept in a section of its own
        self.processes: processes.ProcessResults | None = None
        #: MQTT 5 against 3.1.1 and RSS with no broker window, likewise
        self.mqtt5: mqtt5.Mqtt5Results | None = None
        self.native = native_problem()
        if self.native:
            say(f"native transport: skipped: {self.native}")
            results.notes.append(f"No-op worker with the native transport: {self.native}.")

    async def run(self) -> bool:
        """Every selected section, each after a load reading; True when one failed."""
        failed = False
        for section in SECTIONS:
            if section not in self.plan.sections:
                continue
            load = await self._quiet(section)
            self.results.loads.append(load)
            self.say(f"== {section} ({load.describe()})")
            try:
                await getattr(self, f"_{section}")()
            except (BenchError, PublisherError, TimeoutError, OSError) as exc:
                # One broken section should not cost the figures of the others.
                failed = True
                self.say(f"  FAILED: {exc}")
                self.results.notes.append(f"Section {section} failed: {exc}")
        return failed

    async def _quiet(self, section: str) -> Load:
        """The load before ``section``, after waiting (up to ``plan.quiet_wait``) for calm.

        On a shared machine other people's work comes and goes; waiting a little for it to
        pass makes the figures less noisy, and the reading that is recorded says how it went.
        """
        deadline = time.monotonic() + self.plan.quiet_wait
        load = measure_load(section, self.plan.load_window)
        while load.busy > QUIET and time.monotonic() < deadline:
            self.say(f"   waiting for a quieter machine before {section} ({load.describe()})")
            await asyncio.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
            load = measure_load(section, self.plan.load_window)
        return load

    async def _throughput(self) -> None:
        port = self.broker.port
        for qos in self.plan.qos:
            packets = payloads.encode_many(self.plan.messages, qos)
            for variant in variants(self.plan, self.native):
                if variant.qos not in (None, qos):
                    continue
                load = await self._quiet(f"throughput: {variant.name}, QoS {qos}")
                figure = await measure(variant, port, qos, packets, self.plan.runs, self.folder)
                figure.load = load.describe()
                self.results.throughput.append(figure)
                self._print(figure)

    def _print(self, f: Figure) -> None:
        if f.skipped:
            self.say(f"  QoS {f.qos} {f.name}: skipped ({f.skipped})")
            return
        fill = rate(min(f.fill_rates)) if f.fill_rates else "-"
        self.say(
            f"  QoS {f.qos} {f.name}: {rate(f.median)} msg/s = {self.results.ratio(f):.2f}x "
            f"baseline (runs {', '.join(rate(x) for x in f.rates)}; publisher >= {fill} msg/s;"
            f" dropped {f.dropped})"
        )

    async def capacity(self, qos: int) -> float:
        """The no-op worker's rate with the default transport (measured now if need be)."""
        name = f"worker no-op, {self.results.default_transport}"
        for f in self.results.throughput:
            if f.name == name and f.qos == qos and f.rates:
                return f.median
        packets = payloads.encode_many(self.plan.messages, qos)
        variant = next(v for v in variants(self.plan, self.native) if v.name == name)
        figure = await measure(variant, self.broker.port, qos, packets, 1, self.folder)
        self.say(f"  capacity, QoS {qos}: {rate(figure.median)} msg/s (one run)")
        return figure.median

    async def _latency(self) -> None:
        transport = self.results.default_transport
        for qos in self.plan.qos:
            # flat out: twice what the worker drains alone, so the publisher is never idle
            flat_out = 2 * await self.capacity(qos)
            live = await scenarios.live_capacity(
                self.broker.port, qos, flat_out, self.plan.seconds, transport, self.folder
            )
            self.say(f"  live capacity, QoS {qos}: {rate(live)} msg/s")
            target = live / 2
            assert self.broker.process is not None
            lat = await scenarios.latency(
                self.broker.port,
                qos,
                live,
                self.plan.seconds,
                transport,
                self.folder,
                self.broker.process.pid,
            )
            self.results.latency.append(lat)
            s = lat.summary
            self.say(
                f"  QoS {qos} at {rate(target)} msg/s: p50 {s.get('p50', 0) * 1e3:.2f} ms, "
                f"p99 {s.get('p99', 0) * 1e3:.2f} ms, max {s.get('max', 0) * 1e3:.2f} ms "
                f"({rate(s.get('count', 0))} samples; CPU "
                + ", ".join(f"{k} {v:.0%}" for k, v in lat.cpu.items())
                + ")"
            )

    async def _overload(self) -> None:
        # Faster than the handler by far, but within what the receive path reads, so that the
        # worker's intake (not the broker's queue) is what absorbs the excess.
        publish = min(self.plan.overload_rate, 0.8 * await self.capacity(0))
        o = await scenarios.overload(
            self.broker.port,
            publish,
            self.plan.seconds,
            self.results.default_transport,
            self.folder,
        )
        self.results.overload.append(o)
        self.say(
            f"  {rate(o.sent)} sent at {rate(publish)} msg/s: peak RSS {o.peak_rss / 2**20:.1f} "
            f"MB (idle {o.idle_rss / 2**20:.1f}); received {rate(o.received)}, handled "
            f"{rate(o.handled)}, dropped {rate(o.dropped)}"
        )

    async def _mqtt5(self) -> None:
        p, r = self.plan, self.results
        found = mqtt5.Mqtt5Results(r.date, r.machine, p.runs, p.messages)
        found.load = r.loads[-1].describe() if r.loads else ""
        await mqtt5.run_section(
            self.broker.port, self.broker.binary, self.folder, p.qos, p.runs, p.messages,
            p.overload_rate, self.native, found, self.say,
        )  # fmt: skip
        self.mqtt5 = found

    async def _routing(self) -> None:
        p = self.plan
        r = await routing(p.routing_messages, p.runs, p.routes, p.compile_counts)
        self.results.routing = r
        for n in (1, p.routes):
            self.say(
                f"  {n:,} routes: pipeline {rate(r.median(n))} msg/s, "
                f"cold lookup {r.cold_us[n]:.1f} us"
            )
        for n, s in r.compile_s.items():
            self.say(f"  App.compile with {n:,} routes: {s * 1000:.0f} ms")

    async def _group(self) -> None:
        for replicas in (1, 2, 3):
            g = await scenarios.group(
                self.broker.port, replicas, self.plan.seconds, self.plan.runs, self.folder
            )
            self.results.groups.append(g)
            self.say(f"  {replicas} replica(s): {rate(g.median)} msg/s")

    async def _platform(self) -> None:
        server = brokers.PlatformProc(self.folder / "platform.log")
        # Mosquitto twice: as configured for the whole run (Nagle off) and with its default
        # (Nagle on, which coalesces its many small writes); the platform is held against
        # the faster of the two.
        stock = BenchMosquitto(self.broker.binary, self.folder / "stock", nodelay=False)
        stock.folder.mkdir(exist_ok=True)
        await server.start()
        stock.start()
        try:
            for qos in self.plan.qos:
                packets = payloads.encode_many(self.plan.messages, qos)
                for target in (
                    brokers.mosquitto_server(self.broker.port, brokers.NODELAY),
                    brokers.mosquitto_server(stock.port, brokers.STOCK),
                    brokers.platform_server(server.port),
                ):
                    rates = await brokers.server_rates(target, qos, packets, self.plan.runs)
                    fig = brokers.BrokerFigure(target.name, qos, rates)
                    self.results.brokers.append(fig)
                    self.say(f"  QoS {qos} {target.name}: {rate(fig.median)} msg/s")
        finally:
            stock.stop()
            await server.stop()

    async def _storage(self) -> None:
        if 1 not in self.plan.qos:
            self.say("  skipped: storing is measured at QoS 1 only")
            return
        self.storage = await storage.run_section(
            self.plan.messages,
            self.plan.runs,
            self.plan.seconds,
            self.broker.binary,
            self.folder,
            self.say,
        )

    async def _processes(self) -> None:
        p = self.plan
        figures = []
        for workers in (1, 2):
            figure = await processes.measure(
                self.broker.port, workers, p.seconds, p.runs, self.folder
            )
            figures.append(figure)
            self.say(
                f"  --workers {workers}: {rate(figure.median)} msg/s "
                f"(runs {', '.join(rate(x) for x in figure.rates)})"
            )
        load = self.results.loads[-1].describe() if self.results.loads else ""
        self.processes = processes.ProcessResults(
            figures, load, self.results.date, dict(self.results.machine)
        )
        self.say(f"  2 processes vs 1: {self.processes.ratio():.2f}x")
