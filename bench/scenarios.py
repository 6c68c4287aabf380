"""Scenarios with a live publisher: latency at half capacity, RSS under overload, group scaling.

- live capacity: the no-op worker while the publisher sends flat out, so publisher, broker and
  worker share the two cores as they do in the latency run; the worker's handled rate over
  the middle of the run is the capacity of that whole set-up.
- latency: ``worker run bench.apps:latency`` while the publisher sends at a steady rate (half
  the live capacity measured in the same invocation) with its clock in every payload; the
  handler takes the difference, so the figure is end to end (broker, transport, routing,
  intake, lane) and not just the handler's own time.
- overload: a QoS 0 publisher several times faster than the handler (1 ms sleep, 4 lanes), for
  a sustained period; the worker's peak RSS (VmHWM from /proc) and the drops it counted.
- group: 1, 2 and 3 ``worker run`` replicas in one ``$share`` group, each with one lane and a
  5 ms I/O-bound handler, so a replica can do at most ~200 msg/s; the group's rate should grow
  with the replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench import payloads
from bench.machine import cpu_shares
from bench.procs import WorkerProc, poll_until
from bench.publisher import Publisher
from bench.throughput import worker_args

#: the I/O-bound handler's sleep, and the ideal rate of one replica with one lane
GROUP_SLEEP: Final = 0.005
OVERLOAD_SLEEP: Final = 0.001
OVERLOAD_LANES: Final = 4


async def live_capacity(
    port: int, qos: int, flat_out: float, duration: float, transport: str, folder: Path
) -> float:
    """The no-op worker's handled rate (ok outcomes) while the publisher sends flat out.

    The rate is read from ``/metrics`` over the middle three fifths of ``duration``: the first
    fifth is start-up (connections, caches, the broker's queue filling), and the last fifth
    is left out so that the publisher is still sending throughout the window.
    """
    args = worker_args(port, qos, f"capacity-{transport}", "--transport", transport)
    proc = WorkerProc("capacity", folder / f"capacity-{transport}-q{qos}.log",
                      "bench.apps:noop", args)  # fmt: skip
    await proc.start()
    try:
        pub = await Publisher.connect("127.0.0.1", port, f"bench-cap-{qos}")
        sending = asyncio.ensure_future(pub.paced(flat_out, duration, qos))
        try:
            # a measuring window, not a synchronisation: the publisher runs for ``duration``
            await asyncio.sleep(duration / 5)
            t0, n0 = time.monotonic(), await _handled_ok(proc)
            await asyncio.sleep(duration * 3 / 5)
            t1, n1 = time.monotonic(), await _handled_ok(proc)
            # to its end, barrier included: the broker then has dispatched everything to this
            # worker, and none of it can reach the latency run's worker with an old timestamp
            await sending
        finally:
            if not sending.done():
                sending.cancel()  # the window failed; the run is lost anyway
            await pub.close()
    finally:
        await proc.stop()
    return (n1 - n0) / (t1 - t0)


async def _handled_ok(proc: WorkerProc) -> float:
    samples = await proc.samples()
    return sum(v for k, v in samples.items() if 'outcome="ok"' in k)


@dataclass
class Latency:
    """End-to-end latency of one run at a fixed rate."""

    qos: int
    transport: str
    rate: float
    #: the capacity it is half of: the no-op worker's rate with the publisher sending flat out
    capacity: float
    sent: int
    summary: dict[str, float]
    command: str
    #: share of one core each process used while publishing (worker, broker, publisher)
    cpu: dict[str, float]


async def latency(
    port: int,
    qos: int,
    capacity: float,
    duration: float,
    transport: str,
    folder: Path,
    broker_pid: int,
) -> Latency:
    """Publish at half ``capacity`` for ``duration`` s into the latency app; its summary.

    Also the CPU share of the worker, the broker and the harness (the publisher) while
    publishing: when one of them is near 100%, that process, not the worker's path, sets
    the latency.
    """
    rate = capacity / 2
    result = folder / f"latency-{transport}-q{qos}.json"
    result.unlink(missing_ok=True)
    warmup = int(rate * min(1.0, duration / 5))  # the first second: connections, caches
    args = worker_args(port, qos, f"latency-{transport}", "--transport", transport)
    proc = WorkerProc(
        "latency",
        folder / f"latency-{transport}-q{qos}.log",
        "bench.apps:latency",
        args,
        BENCH_RESULT=str(result),
        BENCH_WARMUP=str(warmup),
    )
    await proc.start()
    try:
        pub = await Publisher.connect("127.0.0.1", port, f"bench-lat-{qos}")
        pids = {"worker": proc.pid, "broker": broker_pid, "publisher": os.getpid()}
        try:
            with cpu_shares(pids) as shares:
                sent = await pub.paced(rate, duration, qos)
        finally:
            await pub.close()
        await proc.finished_at(sent, 30.0 + duration)
    finally:
        await proc.stop()  # the app writes its summary on shutdown
    summary = json.loads(result.read_text()) if result.exists() else {}
    return Latency(qos, transport, rate, capacity, sent, summary, proc.command, shares)


@dataclass
class Overload:
    """Memory and accounting of one sustained overload."""

    rate: float
    duration: float
    sent: int
    idle_rss: int
    peak_rss: int
    received: int
    handled: int
    dropped: int
    command: str
    rss_samples: list[int] = field(default_factory=list)


async def overload(
    port: int, rate: float, duration: float, transport: str, folder: Path
) -> Overload:
    """QoS 0 at ``rate`` for ``duration`` s into a handler that can take far less."""
    # drop-oldest: the figure is the worker's memory while its own intake absorbs the excess
    # (under the default, pace, the broker would hold it instead)
    extra = ["--transport", transport, "--concurrency", str(OVERLOAD_LANES)]
    extra += ["--overflow", "drop-oldest"]
    proc = WorkerProc(
        "overload",
        folder / f"overload-{transport}.log",
        "bench.apps:sleepy",
        worker_args(port, 0, f"overload-{transport}", *extra),
        BENCH_SLEEP=str(OVERLOAD_SLEEP),
    )
    await proc.start()
    try:
        idle = proc.peak_rss()
        samples: list[int] = []
        sent = await _publish_sampling(proc, port, rate, duration, samples)
        await proc.finished_at(sent, 30.0 + duration)  # everything handled or dropped
        peak = proc.peak_rss()
        s = await proc.samples()
    finally:
        await proc.stop()
    return Overload(
        rate, duration, sent, idle, peak,
        received=int(s.get("worker_messages_received_total", 0)),
        handled=int(s.get('worker_messages_handled_total{outcome="ok",route="sleepy"}', 0)),
        dropped=int(s.get("worker_messages_dropped_total", 0)),
        command=proc.command, rss_samples=samples,
    )  # fmt: skip


async def _publish_sampling(
    proc: WorkerProc, port: int, rate: float, duration: float, samples: list[int]
) -> int:
    """Publish QoS 0 at ``rate`` while sampling the worker's RSS; how many were sent."""
    sampler = asyncio.create_task(_sample_rss(proc, samples))
    pub = await Publisher.connect("127.0.0.1", port, "bench-overload")
    try:
        return await pub.paced(rate, duration, 0)
    finally:
        await pub.close()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


async def _sample_rss(proc: WorkerProc, samples: list[int]) -> None:
    """VmRSS every 100 ms, to show whether memory keeps growing or levels off."""
    path = f"/proc/{proc.pid}/status"
    while True:
        # /proc is answered from memory by the kernel: this read does not block
        with open(path) as status:  # noqa: ASYNC230
            text = status.read()
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                samples.append(int(line.split()[1]) * 1024)
        await asyncio.sleep(0.1)


@dataclass
class Group:
    """Throughput of a shared group of ``replicas`` I/O-bound workers."""

    replicas: int
    rates: list[float]
    command: str

    @property
    def median(self) -> float:
        """The median group rate (msg/s)."""
        return statistics.median(self.rates) if self.rates else 0.0


async def group(port: int, replicas: int, seconds: float, runs: int, folder: Path) -> Group:
    """Start ``replicas`` workers in one group; time ``runs`` bursts of QoS 1 messages."""
    count = max(20, int(seconds * replicas / GROUP_SLEEP))
    packets = payloads.encode_many(count, 1)
    procs = [
        WorkerProc(
            f"group{replicas}-{i}",
            folder / f"group{replicas}-{i}.log",
            "bench.apps:sleepy",
            worker_args(port, 1, f"g{replicas}-{i}", "--concurrency", "1"),
            BENCH_SLEEP=str(GROUP_SLEEP),
        )
        for i in range(replicas)
    ]
    rates: list[float] = []
    try:
        await asyncio.gather(*(p.start() for p in procs))
        pub = await Publisher.connect("127.0.0.1", port, f"bench-group-{replicas}")
        try:
            for _ in range(runs):
                before = sum([await p.counted() for p in procs])
                started = time.monotonic()
                await pub.send_all(packets, 1)
                finished = await poll_until(procs, before + count, 30.0 + 2 * seconds)
                rates.append(count / (finished - started))
        finally:
            await pub.close()
    finally:
        await asyncio.gather(*(p.stop() for p in procs))
    return Group(replicas, rates, procs[0].command)
