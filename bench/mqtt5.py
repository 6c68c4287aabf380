"""The ``mqtt5`` section: the native no-op worker on each protocol version, and RSS with no
broker window. Kept in BENCHMARKS.md between markers of its own (like the storage section).

Versions: ``--mqtt-version 3.1.1`` and ``5`` on the native transport, the same drain method as
the throughput section (:mod:`bench.throughput`), measured in this invocation against the same
Mosquitto, the two alternating run by run so that a change of load hits both alike; the target
is MQTT 5 within 10% of 3.1.1 at each QoS. At QoS 0 the ``drop-oldest`` overflow policy runs
too, and the drops of every QoS 0 consumer are shown: the default (``pace``) is held to losing
nothing where ``mosquitto_sub`` loses nothing.

Window: a Mosquitto with ``max_inflight_messages 0`` (no window of its own: everything published
may be in flight to the worker at once) and a QoS 1 overload into a slow handler. On MQTT 3.1.1
nothing but the broker's window bounds what the worker holds; on MQTT 5 the default Receive
Maximum does. The target is MQTT 5 under 60 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench import payloads
from bench.broker import BenchMosquitto
from bench.procs import WorkerProc
from bench.publisher import Publisher
from bench.report import MB, rate, table
from bench.sections import replace_section
from bench.throughput import Figure, Variant, c_client_variant, measure, worker_args
from bench.throughput import worker_variant as _worker_variant

BEGIN: Final = "<!-- mqtt5: written by python -m bench (section mqtt5) -->"
END: Final = "<!-- /mqtt5 -->"
#: messages published into the window scenario (all of them may be in flight at once)
WINDOW: Final = 100_000
#: the slow handler of the window scenario: 4 lanes sleeping 1 ms, about 4,000 msg/s
WINDOW_SLEEP: Final = 0.001
WINDOW_LANES: Final = 4
V3, V5 = "native no-op, MQTT 3.1.1", "native no-op, MQTT 5"
DROP_OLDEST = "native no-op, MQTT 5, drop-oldest"
C_CLIENT = "mosquitto_sub (C client, reference)"

Say = Callable[[str], None]
WINDOW_HEADER: Final = ("MQTT", "QoS 1 sent", "seconds", "RSS idle MB", "RSS peak MB", "read")


def variants(native_problem: str | None) -> list[Variant]:
    """The consumers: both versions (default overflow: pace), drop-oldest (QoS 0), C client."""
    noop, native = "bench.apps:noop", ("--transport", "native")
    return [
        _worker_variant(V3, noop, *native, "--mqtt-version", "3.1.1", skip=native_problem),
        _worker_variant(V5, noop, *native, "--mqtt-version", "5", skip=native_problem),
        _worker_variant(
            DROP_OLDEST,
            noop,
            *native,
            "--mqtt-version",
            "5",
            "--overflow",
            "drop-oldest",
            skip=native_problem,
            qos=0,
        ),
        c_client_variant(),
    ]


@dataclass
class WindowRss:
    """One QoS 1 overload against a broker without a window of its own."""

    version: str
    #: messages published (QoS 1) and the seconds it took
    sent: int
    seconds: float
    idle_rss: int
    peak_rss: int
    #: messages the worker had read when publishing ended
    received: int
    command: str
    rss_samples: list[int] = field(default_factory=list)


@dataclass
class Mqtt5Results:
    """What the section measured."""

    date: str
    machine: dict[str, str]
    runs: int
    messages: int
    figures: list[Figure] = field(default_factory=list)
    windows: list[WindowRss] = field(default_factory=list)
    load: str = ""

    def median(self, name: str, qos: int) -> float:
        found = [f.median for f in self.figures if f.name == name and f.qos == qos and f.rates]
        return found[0] if found else 0.0


async def run_section(
    port: int,
    binary: str,
    folder: Path,
    qos_levels: tuple[int, ...],
    runs: int,
    messages: int,
    window_rate: float,
    native_problem: str | None,
    results: Mqtt5Results,
    say: Say,
) -> None:
    """Measure both versions (alternating runs) at each QoS, then the window RSS."""
    for qos in qos_levels:
        packets = payloads.encode_many(messages, qos)
        chosen = [v for v in variants(native_problem) if v.qos in (None, qos)]
        figures = {v.name: Figure(v.name, qos, v.command(port, qos)) for v in chosen}
        for _ in range(runs):  # one run each in turn: load changes hit every variant alike
            for variant in chosen:
                one = await measure(variant, port, qos, packets, 1, folder)
                merged = figures[variant.name]
                merged.skipped = one.skipped
                merged.rates += one.rates
                merged.fill_rates += one.fill_rates
                merged.dropped += one.dropped
        for figure in figures.values():
            results.figures.append(figure)
            runs_shown = ", ".join(rate(x) for x in figure.rates)
            say(
                f"  QoS {qos} {figure.name}: {rate(figure.median)} msg/s, "
                f"dropped {figure.dropped:,} (runs {runs_shown})"
            )
        v3, v5 = results.median(V3, qos), results.median(V5, qos)
        if v3 and v5:
            say(f"  QoS {qos}: MQTT 5 / MQTT 3.1.1 = {v5 / v3:.2f}")
    if 1 not in qos_levels:
        return
    count = min(messages, WINDOW)
    for version in ("3.1.1", "5"):
        w = await window_rss(binary, folder, version, window_rate, count)
        results.windows.append(w)
        say(
            f"  window, MQTT {version}: {rate(w.sent)} QoS 1 sent in {w.seconds:.1f} s: peak "
            f"RSS {w.peak_rss / MB:.1f} MB (idle {w.idle_rss / MB:.1f}); read {rate(w.received)}"
        )


async def window_rss(
    binary: str, folder: Path, version: str, rate_: float, count: int = WINDOW
) -> WindowRss:
    """Publish ``count`` QoS 1 messages at ``rate_`` into a worker on ``version``; its RSS."""
    place = folder / f"window-{version}"
    place.mkdir(exist_ok=True)
    broker = BenchMosquitto(binary, place, max_inflight=0)
    broker.start()
    try:
        extra = ["--transport", "native", "--mqtt-version", version]
        extra += ["--concurrency", str(WINDOW_LANES)]
        proc = WorkerProc(
            f"window-{version}",
            place / "worker.log",
            "bench.apps:sleepy",
            worker_args(broker.port, 1, f"window-{version.replace('.', '')}", *extra),
            BENCH_SLEEP=str(WINDOW_SLEEP),
        )
        await proc.start()
        try:
            idle = proc.peak_rss()
            samples: list[int] = []
            sampler = asyncio.create_task(_sample_rss(proc.pid, samples))
            pub = await Publisher.connect("127.0.0.1", broker.port, f"bench-publisher-{version}")
            try:
                loop = asyncio.get_running_loop()
                started = loop.time()
                sent = await pub.paced(rate_, count / rate_, 1)
                took = loop.time() - started
                await asyncio.sleep(1.0)  # what the broker still had in flight arrives
            finally:
                await pub.close()
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            peak = proc.peak_rss()
            received = int((await proc.samples()).get("worker_messages_received_total", 0))
        finally:
            await proc.stop()
    finally:
        broker.stop()
    return WindowRss(version, sent, took, idle, peak, received, proc.command, samples)


async def _sample_rss(pid: int, samples: list[int]) -> None:
    """VmRSS every 100 ms."""
    path = f"/proc/{pid}/status"
    while True:
        # /proc is answered from memory by the kernel: this read does not block
        with contextlib.suppress(OSError), open(path) as status:  # noqa: ASYNC230
            for line in status.read().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append(int(line.split()[1]) * 1024)
        await asyncio.sleep(0.1)


def _targets(r: Mqtt5Results) -> list[list[str]]:
    rows = []
    for qos in (0, 1):
        v3, v5 = r.median(V3, qos), r.median(V5, qos)
        if v3 and v5:
            ratio = v5 / v3
            status = "met" if ratio >= 0.9 else "**not met**"
            rows.append([f"native no-op MQTT 5 vs 3.1.1, QoS {qos}", ">= 0.90x",
                         f"{ratio:.2f}x", status])  # fmt: skip
    for w in r.windows:
        if w.version == "5":
            status = "met" if w.peak_rss / MB < 60 else "**not met**"
            rows.append(["peak RSS, QoS 1 overload, no broker window, MQTT 5", "< 60 MB",
                         f"{w.peak_rss / MB:.1f} MB", status])  # fmt: skip
    return rows


def section(r: Mqtt5Results, command: str) -> str:
    """The section of BENCHMARKS.md, between its markers."""
    rows = [
        [f.name, str(f.qos), rate(f.median), ", ".join(rate(x) for x in f.rates),
         f"{f.dropped:,}" if f.name != C_CLIENT else "-"]
        for f in r.figures
        if not f.skipped
    ]  # fmt: skip
    windows = [
        [w.version, rate(w.sent), f"{w.seconds:.1f}", f"{w.idle_rss / MB:.1f}",
         f"{w.peak_rss / MB:.1f}", rate(w.received)]
        for w in r.windows
    ]  # fmt: skip
    commands = sorted({f"    {f.command}" for f in r.figures if not f.skipped})
    commands += [f"    {w.command}" for w in r.windows]
    lines = [
        BEGIN,
        "## MQTT 5",
        "",
        f"Written by `{command}` on {r.date}; {r.runs} timed runs per figure after a warm-up, "
        "the consumers alternating run by run; load before it: " + (r.load or "-") + ".",
        "",
        *table(["", ""], [[k, v] for k, v in r.machine.items()]),
        *table(["target", "goal", "measured", "status"], _targets(r)),
        f"Throughput: {r.messages:,} JSON events per run drained from a backlog (the method of "
        '"Consumer throughput"); "dropped" counts the QoS 0 intake overflows over all runs.',
        "",
        *table(["consumer", "QoS", "msg/s (median)", "runs", "dropped"], rows),
        "RSS with no broker window: Mosquitto with `max_inflight_messages 0`, QoS 1 published at",
        "a steady rate into a slow handler (4 lanes, 1 ms each); on MQTT 5 the worker announces",
        "its default Receive Maximum (1,000) and stops reading when a broker sends beyond it.",
        "",
        *table(WINDOW_HEADER, windows),
        "Commands (port and instance vary):",
        "",
        *commands,
        END,
    ]
    return "\n".join(lines) + "\n"


def record(text: str, path: Path) -> None:
    """Replace the mqtt5 section of ``path`` (or append it)."""
    replace_section(path, text, BEGIN, END)
