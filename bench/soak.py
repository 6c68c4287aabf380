"""``make soak``: a group of three workers at half their measured capacity for an hour.

::

    python -m bench.soak                  # the full hour
    python -m bench.soak --minutes 5      # a short run (recorded as such)

First a capacity run: QoS 1 published as fast as a window of PUBACKs allows for 20 s, the
group's handled rate measured from its /metrics. Then the soak: a paced publisher at half that
rate; every ``--every`` seconds one sample of the workers' summed RSS (``/proc``) and of the
p99 handler latency over the sample's window (from the ``worker_handler_seconds`` buckets).

Pass criteria: RSS flat (every sample after the first tenth of the run, a warm-up, within
±10% of the first one after it), p99 stable (no window's p99 above twice the median window's),
and the books balanced (every confirmed publish handled, nothing dropped or lost). The
result replaces the soak section of BENCHMARKS.md (between its markers); exit 1 on a failed
criterion. A run shorter than the hour says so in its heading.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.broker import BenchMosquitto, mosquitto_binary
from bench.procs import run_in_temporary_folder
from bench.sections import replace_section
from tests.reliability.accounting import family
from tests.reliability.group import APP, worker_args
from tests.reliability.load import plain, reading_topic
from tests.support.processes import WorkerProcess
from worker.errors import ConnectError
from worker.transports.base import ConnectOptions
from worker.transports.native import NativeTransport

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
BEGIN, END = "<!-- soak: written by make soak -->", "<!-- /soak -->"
WINDOW = 100


@dataclass
class Sample:
    """One point of the soak."""

    at: float
    rss_mib: float
    p99_ms: float
    rate: float


@dataclass
class Publisher:
    """Paced QoS 1 publishing that only counts (an hour of numbers would not fit in sets)."""

    host: str
    port: int
    confirmed: int = 0
    unconfirmed: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, rate: float | None) -> None:
        """Publish until ``stop``; at ``rate`` per second, or as fast as PUBACKs come."""
        pub = NativeTransport()
        await pub.connect(ConnectOptions(self.host, self.port, "soak-publisher"))
        slots, loop, n = asyncio.Semaphore(WINDOW), asyncio.get_running_loop(), 0
        start = loop.time()
        async with asyncio.TaskGroup() as tg:
            while not self.stop.is_set():
                if rate and (delay := start + n / rate - loop.time()) > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                tg.create_task(self._one(pub, n, slots))
                n += 1
        await pub.disconnect()

    async def _one(self, pub: NativeTransport, n: int, slots: asyncio.Semaphore) -> None:
        try:
            await pub.publish(reading_topic(n), plain(n), qos=1)
            self.confirmed += 1
        except ConnectError:
            self.unconfirmed += 1
        finally:
            slots.release()


def rss_mib(workers: list[WorkerProcess]) -> float:
    """The workers' resident memory, summed, in MiB."""
    total = 0
    for w in workers:
        assert w.proc is not None
        for line in Path(f"/proc/{w.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


async def totals(workers: list[WorkerProcess]) -> tuple[int, dict[float, int]]:
    """(messages handled ok, cumulative handler-seconds buckets), summed over the group."""
    ok, buckets = 0, dict[float, int]()
    for samples in await asyncio.gather(*(w.metrics() for w in workers)):
        ok += family(samples, "worker_messages_handled_total", "outcome")["ok"]
        for le, count in family(samples, "worker_handler_seconds_bucket", "le").items():
            bound = float(le)
            buckets[bound] = buckets.get(bound, 0) + count
    return ok, buckets


def p99_ms(before: dict[float, int], after: dict[float, int]) -> float:
    """The window's 99th percentile in ms, interpolated in its bucket as Prometheus does."""
    bounds = sorted(after)
    window = [after[b] - before.get(b, 0) for b in bounds]
    if not window or window[-1] == 0:
        return 0.0
    target = 0.99 * window[-1]
    # the first bucket that holds the target (the last, +Inf, always does)
    i = next(i for i, count in enumerate(window) if count >= target)
    lower, below = (bounds[i - 1], window[i - 1]) if i else (0.0, 0)
    if math.isinf(bounds[i]):
        return lower * 1000  # beyond the last finite bound: say that bound
    return (lower + (bounds[i] - lower) * (target - below) / (window[i] - below)) * 1000


async def measure(workers: list[WorkerProcess], publisher: Publisher, seconds: float) -> float:
    """Messages per second the group handles when published to as fast as possible."""
    task = asyncio.create_task(publisher.run(None))
    await asyncio.sleep(seconds / 4)  # warm-up, then the timed part
    ok0, _ = await totals(workers)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    ok1, _ = await totals(workers)
    rate = (ok1 - ok0) / (time.monotonic() - t0)
    publisher.stop.set()
    await task
    return rate


async def soak(
    workers: list[WorkerProcess], publisher: Publisher, rate: float, args: argparse.Namespace
) -> list[Sample]:
    """Publish at ``rate`` for ``args.minutes``; a Sample every ``args.every`` seconds."""
    task = asyncio.create_task(publisher.run(rate))
    samples: list[Sample] = []
    start = time.monotonic()
    ok0, buckets0 = await totals(workers)
    while time.monotonic() - start < args.minutes * 60:
        await asyncio.sleep(args.every)  # the sampling period: pacing, not synchronisation
        ok1, buckets1 = await totals(workers)
        at = time.monotonic() - start
        sample = Sample(at, rss_mib(workers), p99_ms(buckets0, buckets1), (ok1 - ok0) / args.every)
        samples.append(sample)
        print(f"{at:7.0f}s  RSS {sample.rss_mib:6.1f} MiB  p99 {sample.p99_ms:6.3f} ms  "
              f"{sample.rate:7.0f} msg/s", flush=True)  # fmt: skip
        ok0, buckets0 = ok1, buckets1
    publisher.stop.set()
    await task
    return samples


def verdict(samples: list[Sample], books: str) -> list[str]:
    """The failed criteria (empty: passed)."""
    failed = []
    steady = samples[max(1, len(samples) // 10) :] or samples
    base = steady[0].rss_mib
    worst = max(abs(s.rss_mib - base) / base for s in steady)
    if worst > 0.10:
        failed.append(f"RSS moved {worst:.1%} from {base:.1f} MiB after warm-up")
    median = statistics.median(s.p99_ms for s in steady)
    if max(s.p99_ms for s in steady) > 2 * median:
        failed.append(f"p99 rose above twice its median ({median:.3f} ms)")
    if books:
        failed.append(books)
    return failed


async def balanced(workers: list[WorkerProcess], publisher: Publisher, before: int = 0) -> str:
    """'' when every confirmed publish was handled ok (beyond ``before``, the count when it
    began) and nothing was dropped; else why not."""
    deadline = time.monotonic() + 30
    while True:
        ok, _ = await totals(workers)
        dropped = 0
        for samples in await asyncio.gather(*(w.metrics() for w in workers)):
            dropped += sum(family(samples, "worker_messages_dropped_total", "reason").values())
        if ok - before == publisher.confirmed and not dropped and not publisher.unconfirmed:
            return ""
        if time.monotonic() > deadline:
            return (f"books: {publisher.confirmed} confirmed, {publisher.unconfirmed} "
                    f"unconfirmed, {ok} handled, {dropped} dropped")  # fmt: skip
        await asyncio.sleep(0.2)  # polling the books, with the deadline above


def section(args: argparse.Namespace, capacity: float, rate: float, samples: list[Sample],
            failed: list[str]) -> str:  # fmt: skip
    """The soak section of BENCHMARKS.md."""
    kind = "full hour" if args.minutes >= 60 else f"short run of {args.minutes:g} minutes"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        BEGIN,
        f"## Soak ({kind})",
        "",
        f"Written by `make soak` (`python -m bench.soak --minutes {args.minutes:g}`) on {when}.",
        f"Three workers, one `$share` group on Mosquitto, QoS 1. Capacity measured first: "
        f"{capacity:,.0f} msg/s; soaked at half of it, {rate:,.0f} msg/s.",
        "",
        f"Result: **{'passed' if not failed else 'failed: ' + '; '.join(failed)}**.",
    ]
    if args.minutes < 60:
        lines.append("The one-hour run is still pending; this short run only shows the trend.")
    p99 = "p99 handler latency (ms, interpolated in its bucket as histogram_quantile does)"
    lines += ["", f"| at | RSS of the three (MiB) | {p99} | handled msg/s |", "|---|---|---|---|"]
    step = max(1, len(samples) // 12)
    for s in samples[::step]:
        lines.append(f"| {s.at:.0f} s | {s.rss_mib:.1f} | {s.p99_ms:.3f} | {s.rate:,.0f} |")
    return "\n".join([*lines, END]) + "\n"


def record(text: str) -> None:
    """Replace the soak section of BENCHMARKS.md (or append it)."""
    replace_section(BENCHMARKS, text, BEGIN, END)


async def run(args: argparse.Namespace, folder: Path) -> int:
    binary = mosquitto_binary()
    if binary is None:
        print("mosquitto is not installed (scripts/system-deps.sh)", file=sys.stderr)
        return 2
    broker = BenchMosquitto(binary, folder, max_inflight=WINDOW)
    broker.start()
    names = ("w1", "w2", "w3")
    workers = [WorkerProcess(folder, n, worker_args(broker.host, broker.port, n)) for n in names]
    try:
        await asyncio.gather(*(w.start(APP) for w in workers))
        probe = Publisher(broker.host, broker.port)
        capacity = args.capacity or await measure(workers, probe, 20.0)
        failed = [problem] if (problem := await balanced(workers, probe)) else []
        rate = capacity / 2
        print(f"capacity {capacity:,.0f} msg/s; soaking at {rate:,.0f} msg/s", flush=True)
        before, _ = await totals(workers)
        publisher = Publisher(broker.host, broker.port)
        samples = await soak(workers, publisher, rate, args)
        failed += verdict(samples, await balanced(workers, publisher, before))
    finally:
        await asyncio.gather(*(w.stop() for w in workers))
        broker.stop()
    record(section(args, capacity, rate, samples, failed))
    print("passed" if not failed else "failed: " + "; ".join(failed))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="soak length (default 60)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--capacity", type=float, default=0.0, help="skip measuring (msg/s)")
    args = parser.parse_args(argv)
    return run_in_temporary_folder(
        "soak-", lambda folder: run(args, folder), "the workers and the broker have been stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
