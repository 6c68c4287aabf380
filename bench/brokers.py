"""The local platform beside Mosquitto: one publisher into a shared group of three subscribers.

The subscribers are Mosquitto's own C client (``mosquitto_sub``, printing two bytes per
message into a pipe the harness counts), so that on both servers the clients cost next to
nothing and the server is what is measured. On the platform they are three connections of
the scalable application ``A:abc123:benchsub``; on Mosquitto, three members of
``$share/benchsub/...``. The publisher is the raw-socket one, streaming as fast as the server
takes it (QoS 1 with a window); the rate is messages delivered to the group over the time from
the first publish to the last delivery, with at most ``IN_TRANSIT`` messages published and
not yet delivered (so neither server can drop any, and the window is far above what either
needs to stay busy).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.payloads import FILTER, encode
from bench.procs import ROOT, START_DEADLINE, BenchError, clean_env
from bench.publisher import Publisher
from worker.tools.children import die_with_parent

SUBSCRIBERS: Final = 3
NODELAY: Final = "Mosquitto, set_tcp_nodelay true"
STOCK: Final = "Mosquitto, default (Nagle on)"
#: messages published and not yet delivered, at most: the platform keeps 5,000 per subscriber
#: and drops the oldest beyond (W21), Mosquitto queues without a bound here; end-to-end flow
#: control keeps both lossless, so the figure is delivered messages, not accepted ones
IN_TRANSIT: Final = 6_000
CHUNK: Final = 500
_LISTENING = re.compile(r"mqtt://[^ ]+:(\d+)")


@dataclass(frozen=True)
class Server:
    """Where to connect and as whom."""

    name: str
    port: int
    #: (client ID, user, password) of the publisher
    publisher: tuple[str, str | None, str | None]
    #: mosquitto_sub arguments of subscriber ``i`` (without -p, -q and output flags)
    subscriber: tuple[str, ...]


def mosquitto_server(port: int, name: str) -> Server:
    """Mosquitto: plain clients, a ``$share`` group."""
    return Server(
        name,
        port,
        ("bench-brokers-pub", None, None),
        ("-i", "bench-sub-{i}", "-t", f"$share/benchsub/{FILTER}"),
    )


def platform_server(port: int) -> Server:
    """The platform: an application publisher and a scalable application group."""
    return Server(
        "worker platform",
        port,
        ("a:abc123:benchpub", "a-abc123-pub", "any"),
        ("-i", "A:abc123:benchsub", "-u", "a-abc123-sub", "-P", "any", "-t", FILTER),
    )


class PlatformProc:
    """``worker platform --port 0`` as a child process (what users run)."""

    command: Final = "worker platform --port 0 --log-level warning"

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        """Start and read the bound port from the banner."""
        argv = [
            sys.executable,
            "-m",
            "worker.cli",
            "platform",
            "--port",
            "0",
            "--log-level",
            "warning",
        ]
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=ROOT,
                env=clean_env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                preexec_fn=die_with_parent,
            )
        assert self.proc.stdout is not None
        async with asyncio.timeout(START_DEADLINE):
            async for raw in self.proc.stdout:
                match = _LISTENING.search(raw.decode())
                if match:
                    self.port = int(match.group(1))
                    return
        raise BenchError(f"worker platform did not start; see {self.log}")

    async def stop(self) -> None:
        """SIGTERM and wait (kill past the deadline)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Group:
    """Three ``mosquitto_sub`` processes and the count of what they printed."""

    def __init__(self, server: Server, qos: int) -> None:
        self.server, self.qos = server, qos
        self.counts = [0] * SUBSCRIBERS
        self.changed = asyncio.Event()
        self._procs: list[asyncio.subprocess.Process] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the subscribers (each prints ``x`` and a newline per message)."""
        binary = shutil.which("mosquitto_sub") or "mosquitto_sub"
        for i in range(SUBSCRIBERS):
            args = [a.format(i=i) for a in self.server.subscriber]
            proc = await asyncio.create_subprocess_exec(
                binary,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.server.port),
                "-q",
                str(self.qos),
                "-F",
                "x",
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            self._procs.append(proc)
            self._readers.append(asyncio.create_task(self._count(i, proc)))

    async def _count(self, i: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(1 << 16):
            self.counts[i] += chunk.count(b"\n")
            self.changed.set()

    async def until(self, total: int, deadline: float) -> float:
        """The monotonic time at which the group had printed ``total`` lines."""
        async with asyncio.timeout(deadline):
            while sum(self.counts) < total:
                self.changed.clear()
                await self.changed.wait()
        return time.monotonic()

    async def stop(self) -> None:
        """Terminate the subscribers and their readers."""
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self._procs:
            await asyncio.wait_for(proc.wait(), 10)
        for task in self._readers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _until_all_subscribed(group: Group, pub: Publisher) -> None:
    """Publish probes until every member got one (the server's round-robin reaches all)."""
    async with asyncio.timeout(START_DEADLINE):
        seq = 0
        while not all(group.counts):
            await pub.send_all([encode(seq, 1)], 1)
            seq += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(group.changed.wait(), 0.05)
            group.changed.clear()


async def _stream(
    pub: Publisher, group: Group, packets: Sequence[bytes], qos: int, base: int
) -> None:
    """Publish ``packets`` keeping at most IN_TRANSIT of them undelivered."""
    sent = 0
    while sent < len(packets):
        group.changed.clear()  # before reading the counts: a later delivery wakes the wait
        room = min(IN_TRANSIT - (sent - (sum(group.counts) - base)), CHUNK, len(packets) - sent)
        if room <= 0:
            await group.changed.wait()
            continue
        await pub.send(packets[sent : sent + room], qos)
        sent += room


async def server_rates(
    server: Server, qos: int, packets: Sequence[bytes], runs: int
) -> list[float]:
    """``runs`` timed deliveries of all ``packets`` through ``server`` to the group."""
    group = Group(server, qos)
    await group.start()
    client_id, user, password = server.publisher
    pub = await Publisher.connect("127.0.0.1", server.port, client_id, user, password)
    rates: list[float] = []
    try:
        await _until_all_subscribed(group, pub)
        for _ in range(runs):
            await asyncio.sleep(0.2)  # let the probes' or the last run's stragglers arrive
            base = sum(group.counts)
            started = time.monotonic()
            async with asyncio.timeout(60.0 + len(packets) / 2_000):
                await _stream(pub, group, packets, qos, base)
            finished = await group.until(base + len(packets), 60.0)
            rates.append(len(packets) / (finished - started))
    finally:
        await pub.close()
        await group.stop()
    return rates


@dataclass
class BrokerFigure:
    """One server at one QoS."""

    server: str
    qos: int
    rates: list[float]

    @property
    def median(self) -> float:
        """The median rate (msg/s)."""
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def is_mosquitto(self) -> bool:
        """Whether this is one of the Mosquitto figures."""
        return self.server.startswith("Mosquitto")


def best_mosquitto(figures: Sequence[BrokerFigure], qos: int) -> float:
    """The faster Mosquitto's median at ``qos`` (0 when none was measured)."""
    return max((f.median for f in figures if f.qos == qos and f.is_mosquitto), default=0.0)
