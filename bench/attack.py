"""``make attack``: each attack of :mod:`bench.attacks` against a platform under normal load.

::

    python -m bench.attack                 # 30 minutes in all (the full run)
    python -m bench.attack --minutes 5     # a short run (recorded as such)

A ``worker platform`` process (plain, TLS with development certificates, ``/metrics``) is
started on free loopback ports. A well-behaved pair of clients is its normal load for the
whole run: a device publishing QoS 1 events at ``--rate`` per second to an application that
subscribes to them (each round trip timed), and a new application connection every second
(its CONNACK timed). The attacks then run one after another, each for an equal share of the
time: attacks that open sockets hold them until their share is over, the others repeat.
Each runs in a process of its own (:mod:`bench.attacker`), so that its work is not counted
as the platform's latency. After each, the attackers leave and the platform gets a tenth of
the share to settle.

The platform runs with its default limits but one: ``session_expiry`` is
:data:`SESSION_EXPIRY` seconds instead of an hour. Offline durable sessions keep their queued
messages by design until they expire, so the settling starts once the platform holds no
more sessions than before the attack (for ``offline_durable_sessions``, once its sessions
expired, some ``SESSION_EXPIRY`` s after the attackers left): the RSS "after" shows whether
memory comes back when the sessions go, not how much an hour of them holds.

Recorded per attack: the platform's RSS when idle, at its peak and after the attackers left;
the p99 of the CONNACK and of the QoS 1 round trip during the attack; every platform counter
that moved. The targets (RSS < 150 MB, back within 20% of idle after, p99 < 50 ms) are
checked and the result replaces the attack section of BENCHMARKS.md; exit 1 on a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.attacks import API_KEY, ATTACKS, ORG, TOKEN, Target
from bench.procs import ROOT, run_in_temporary_folder
from bench.sections import replace_section
from tests.platform.rawclient import RawClient
from tests.support.fetch import fetch
from tests.support.ports import free_port
from worker.mqtt import Puback, Publish

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
BEGIN, END = "<!-- attack: written by make attack -->", "<!-- /attack -->"
RSS_LIMIT_MB: Final = 150.0
P99_LIMIT_MS: Final = 50.0
AFTER_FACTOR: Final = 1.2
SESSION_EXPIRY: Final = 30
"""Seconds an offline durable session is kept in this run (the platform's default: 3600)."""
#: seconds to wait, at most, for the sessions an attack left to be gone (they expire)
SESSIONS_GONE: Final = SESSION_EXPIRY + 60.0
_SAMPLE = re.compile(r"^(worker_platform_\w+)(?:\{([^}]*)\})? (\S+)$", re.MULTILINE)


@dataclass
class Probe:
    """The well-behaved clients: round trips and CONNACKs, timed."""

    target: Target
    rate: float
    round_trips: list[float] = field(default_factory=list)
    connacks: list[float] = field(default_factory=list)
    failures: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> tuple[list[float], list[float], int]:
        """The timings since the last call (ms), and the failures."""
        taken = (self.round_trips, self.connacks, self.failures)
        self.round_trips, self.connacks, self.failures = [], [], 0
        return taken

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._round_trips())
            tg.create_task(self._connacks())

    async def _round_trips(self) -> None:
        """Connect the pair, time round trips; on any failure count it and start afresh."""
        pairs = 0
        while not self.stop.is_set():
            pairs += 1
            try:
                async with contextlib.AsyncExitStack() as stack:
                    # numbered apart, so a fresh pair never takes an old pair's late message
                    await self._pair(stack, pairs * 1_000_000)
            except (TimeoutError, EOFError, OSError, AssertionError):
                self.failures += 1
                await asyncio.sleep(1.0)  # before connecting again

    async def _pair(self, stack: contextlib.AsyncExitStack, first: int) -> None:
        app = await RawClient.open(self.target.port)
        stack.push_async_callback(app.close)
        dev = await RawClient.open(self.target.port)
        stack.push_async_callback(dev.close)
        await app.connect(f"a:{ORG}:probe", API_KEY, TOKEN)
        await app.subscribe("iot-2/type/probe/id/+/evt/+/fmt/+", qos=1)
        await dev.connect(f"d:{ORG}:probe:p1", "use-token-auth", TOKEN)
        n = first
        while not self.stop.is_set():
            n += 1
            await self._one(app, dev, n)
            await asyncio.sleep(1 / self.rate)  # the load's pace

    async def _one(self, app: RawClient, dev: RawClient, n: int) -> None:
        sent = time.perf_counter()
        dev.send(Publish("iot-2/evt/rt/fmt/bin", b"%d" % n, 1, packet_id=n % 0xFFFF + 1))
        got = await app.publication(within=10)
        assert got.packet_id is not None and got.payload == b"%d" % n
        app.send(Puback(got.packet_id))
        self.round_trips.append((time.perf_counter() - sent) * 1000)
        assert isinstance(await dev.recv(within=10), Puback)

    async def _connacks(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(10):
                    client = await RawClient.open(self.target.port)
                    try:
                        connack = await client.connect(f"a:{ORG}:visitor{n}", API_KEY, TOKEN)
                    finally:
                        await client.close()
                if connack.reason_code:
                    self.failures += 1
                else:
                    self.connacks.append((time.perf_counter() - started) * 1000)
            except (TimeoutError, OSError, EOFError):
                self.failures += 1
            await asyncio.sleep(1.0)  # one visitor a second


@dataclass
class Result:
    """One attack's numbers."""

    name: str
    size: int
    rounds: int
    rss_idle: float
    rss_peak: float
    rss_after: float
    connack_p99: float
    round_trip_p99: float
    probe_failures: int
    counters: dict[str, float]

    def misses(self) -> list[str]:
        """The targets this attack missed."""
        found = []
        if self.rss_peak > RSS_LIMIT_MB:
            found.append(f"{self.name}: RSS peaked at {self.rss_peak:.0f} MB")
        if self.rss_after > self.rss_idle * AFTER_FACTOR:
            found.append(
                f"{self.name}: RSS {self.rss_after:.0f} MB after, idle {self.rss_idle:.0f}"
            )
        for what, value in (("CONNACK", self.connack_p99), ("round trip", self.round_trip_p99)):
            if value > P99_LIMIT_MS:
                found.append(f"{self.name}: {what} p99 {value:.1f} ms")
        if self.probe_failures:
            found.append(f"{self.name}: {self.probe_failures} probe failures")
        return found


class PlatformProcess:
    """``worker platform`` on free ports, its stderr in a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port, self.tls_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log = folder / "platform.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        args = [
            "--port", str(self.port), "--tls-port", str(self.tls_port),
            "--dev-tls", str(self.folder / "tls"), "--metrics-port", str(self.metrics_port),
            "--limit", f"session_expiry={SESSION_EXPIRY}",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "worker.cli", "platform", *args,
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            while not (line := await self.proc.stdout.readline()).startswith(b"ready"):
                if not line:  # at the end, readline returns at once: the loop would spin
                    # the log's folder goes with the run: say its end here
                    tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
                    raise RuntimeError("worker platform exited at start: " + " | ".join(tail))

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def sessions(self) -> float:
        """The platform's sessions gauge: connected, and offline durable ones."""
        _, _, body = await fetch(self.metrics_port, "/metrics", deadline=30)
        found = re.search(rb"^worker_platform_sessions (\S+)$", body, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    async def counters(self) -> dict[str, float]:
        _, _, body = await fetch(self.metrics_port, "/metrics", deadline=30)
        found = {}
        for name, labels, value in _SAMPLE.findall(body.decode()):
            if name.endswith("_total") and not name.endswith("_created"):
                found[f"{name}{{{labels}}}" if labels else name] = float(value)
        return found

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def p99(values: list[float]) -> float:
    """The 99th percentile (0 without values)."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100)[98]


async def one_attack(
    platform: PlatformProcess, probe: Probe, name: str, size: int, seconds: float
) -> Result:
    """Run one attack for ``seconds`` (repeating it, or holding what it opened), then let the
    attackers go and the platform settle for a tenth of that."""
    before = await platform.counters()
    sessions = await platform.sessions()
    idle = platform.rss_mb()
    probe.take()
    peak = idle
    # The attacker is a process of its own (bench.attacker): its work is not the platform's
    # latency. It says its rounds when its time is up, and its sockets close when its stdin
    # does: the probe's numbers are those of the attack, not of the attackers leaving.
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.attacker", name, str(size),
        str(platform.port), str(platform.tls_port), str(seconds),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert attacker.stdin is not None and attacker.stdout is not None
    line = asyncio.create_task(attacker.stdout.readline())
    while not line.done():
        await asyncio.wait([line], timeout=1.0)  # the RSS sampling period
        peak = max(peak, platform.rss_mb())
    round_trips, connacks, failures = probe.take()
    attacker.stdin.close()
    if await attacker.wait() or not line.result().strip():
        raise RuntimeError(f"{name}: the attacker exited with {attacker.returncode}")
    rounds = int(line.result())
    await _sessions_gone(platform, sessions)
    await asyncio.sleep(max(5.0, seconds / 10))  # settling
    after = platform.rss_mb()
    moved = {k: v - before.get(k, 0.0) for k, v in (await platform.counters()).items()}
    counters = {k: v for k, v in moved.items() if v and _interesting(k)}
    return Result(
        name, size, max(rounds, 1), idle, peak, after, p99(connacks), p99(round_trips),
        failures, counters,
    )  # fmt: skip


async def _sessions_gone(platform: PlatformProcess, before: float) -> None:
    """Wait until the platform holds no more sessions than ``before`` (the probe's own
    connection of the second aside), at most :data:`SESSIONS_GONE` seconds."""
    for _ in range(int(SESSIONS_GONE)):  # a look a second
        if await platform.sessions() <= before + 1:
            return
        await asyncio.sleep(1.0)


def _interesting(key: str) -> bool:
    return not key.startswith(("worker_platform_received_bytes", "worker_platform_sent_bytes"))


def section(minutes: float, results: list[Result], misses: list[str]) -> str:
    """The attack section of BENCHMARKS.md."""
    kind = "full run" if minutes >= 30 else f"short run of {minutes:g} minutes"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        BEGIN,
        f"## Attacks ({kind})",
        "",
        f"Written by `make attack` (`python -m bench.attack --minutes {minutes:g}`) on {when}.",
        "One `worker platform` process (plain, TLS and /metrics listeners, default limits but "
        f"`--limit session_expiry={SESSION_EXPIRY}`, on asyncio's loop and the C allocator, "
        "as by default) "
        "under a well-behaved load: QoS 1 events from a device to an application, each round trip "
        "timed, and a new application connection every second, its CONNACK timed. Each attack "
        f"runs for {minutes * 60 / len(results):.0f} s (those that open sockets hold them; the "
        "others repeat, rounds counting the repeats completed), then its sockets close and the "
        "platform settles: first until it holds no more sessions than before the attack "
        "(offline_durable_sessions: until its sessions have expired, since they keep their "
        "queued messages by design until then), then a tenth of the attack's time. "
        "The attacks run one after another on the same "
        "platform, so what one leaves behind by design (retained statuses) is there for the "
        "next: its idle RSS is the previous one's after. "
        "Targets: RSS under 150 MB during and back within 20% of idle after; p99 of CONNACK and "
        "round trip under 50 ms.",
        "",
        f"Result: **{'passed' if not misses else 'missed: ' + '; '.join(misses)}**.",
    ]
    if minutes < 30:
        lines.append("This is the short form; the full run (`make attack`) takes 30 minutes.")
    lines += [
        "",
        "| attack | size | rounds | RSS idle / peak / after (MB) | CONNACK p99 (ms) "
        "| round trip p99 (ms) | probe failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.size:,} | {r.rounds} | {r.rss_idle:.0f} / {r.rss_peak:.0f} / "
            f"{r.rss_after:.0f} | {r.connack_p99:.1f} | {r.round_trip_p99:.1f} "
            f"| {r.probe_failures} |"
        )
    lines += ["", "Platform counters that moved during each attack:", ""]
    for r in results:
        shown = ", ".join(f"`{k}` {v:,.0f}" for k, v in sorted(r.counters.items())) or "none"
        lines.append(f"- {r.name}: {shown}")
    return "\n".join([*lines, END]) + "\n"


def record(text: str) -> None:
    """Replace the attack section of BENCHMARKS.md (or append it)."""
    replace_section(BENCHMARKS, text, BEGIN, END)


async def run(args: argparse.Namespace, folder: Path) -> int:
    platform = PlatformProcess(folder)
    await platform.start()
    probe = Probe(Target(platform.port, platform.tls_port), args.rate)
    probe_task = asyncio.create_task(probe.run())
    results: list[Result] = []
    names = args.only or list(ATTACKS)
    try:
        await asyncio.sleep(5.0)  # warm-up: the load runs before the first attack
        seconds = args.minutes * 60 / len(names)
        for name in names:
            size = int(ATTACKS[name][1] * args.scale)
            print(f"{name}: {size:,} for {seconds:.0f} s", flush=True)
            result = await one_attack(platform, probe, name, size, seconds)
            print(f"  RSS {result.rss_idle:.0f}/{result.rss_peak:.0f}/{result.rss_after:.0f} MB, "
                  f"CONNACK p99 {result.connack_p99:.1f} ms, round trip p99 "
                  f"{result.round_trip_p99:.1f} ms", flush=True)  # fmt: skip
            results.append(result)
    finally:
        probe.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(probe_task, 30)
        await platform.stop()
    misses = [m for r in results for m in r.misses()]
    record(section(args.minutes, results, misses))
    print("passed" if not misses else "missed: " + "; ".join(misses))
    return 1 if misses else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="total time (default 30)")
    parser.add_argument("--rate", type=float, default=100.0, help="probe events a second")
    parser.add_argument("--scale", type=float, default=1.0, help="attack sizes times this")
    parser.add_argument("--only", nargs="*", choices=list(ATTACKS), help="these attacks only")
    args = parser.parse_args(argv)
    return run_in_temporary_folder(
        "attack-", lambda folder: run(args, folder), "the platform has been stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
