"""Consumer throughput: fill the broker while the consumer is stopped, then time the drain.

The machine has two cores, and broker, publisher and consumer would be three busy processes.
So each run stops the consumer (SIGSTOP; its connection stays open and the broker queues for
it), publishes all the messages and waits until the broker has taken them (every PUBACK, or
a PINGRESP for QoS 0), then resumes the consumer and times until it has finished all of them.
During the timed part only the broker and the consumer run: the publisher cannot be the
bottleneck, and its own rate is printed beside. The broker always has a backlog, so this is
the consumer's capacity under saturation, which is what "msg/s" means in the targets.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench import payloads
from bench.procs import START_DEADLINE, BaselineProc, CClientProc, Consumer, WorkerProc
from bench.publisher import Publisher

#: the slowest consumer we expect, for the drain deadline (msg/s)
SLOWEST: Final = 2_000.0
#: names the throughput figures that show MQTT 5 on the aiomqtt transport; the baseline speaks
#: 3.1.1, so these are shown beside the floor rather than held to it
MQTT5_ON_AIOMQTT: Final = "MQTT 5"


@dataclass
class Figure:
    """The runs of one consumer at one QoS."""

    name: str
    qos: int
    command: str
    rates: list[float] = field(default_factory=list)
    #: the publisher's rate into the broker during each fill (msg/s)
    fill_rates: list[float] = field(default_factory=list)
    #: messages the consumer counted as dropped (QoS 0 intake overflow), over all runs
    dropped: int = 0
    skipped: str | None = None
    #: the machine's load just before this figure was measured
    load: str = ""

    @property
    def median(self) -> float:
        """The median rate, 0 when there is none."""
        return statistics.median(self.rates) if self.rates else 0.0


@dataclass(frozen=True)
class Variant:
    """A consumer to measure: its name, and how to start one for a QoS on a broker port."""

    name: str
    start: Callable[[int, int, Path], Awaitable[Consumer]]
    command: Callable[[int, int], str]
    #: why it cannot run (e.g. the native transport is not there yet); None when it can
    skip: str | None = None
    #: the only QoS it is measured at (None: every QoS of the plan)
    qos: int | None = None


def worker_args(port: int, qos: int, instance: str, *extra: str) -> list[str]:
    """The flags of a ``worker run`` on the bench's Mosquitto (mqtt profile, shared group)."""
    return [
        "--profile",
        "mqtt",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--qos",
        str(qos),
        "--app-id",
        "bench",
        "--instance",
        instance,
        "--log-level",
        "warning",
        *extra,
    ]


def worker_variant(
    name: str, target: str, *extra: str, skip: str | None = None, qos: int | None = None
) -> Variant:
    """``worker run TARGET`` with ``extra`` flags."""

    async def start(port: int, qos: int, folder: Path) -> Consumer:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:30].strip("-")  # a legal instance ID
        proc = WorkerProc(
            name, folder / f"{slug}-q{qos}.log", target, worker_args(port, qos, slug, *extra)
        )
        await proc.start()
        return proc

    def command(port: int, qos: int) -> str:
        return " ".join(["worker run", target, *worker_args(port, qos, "ID", *extra)])

    return Variant(name, start, command, skip, qos)


def baseline_variant(every: int) -> Variant:
    """The bare aiomqtt + orjson loop on uvloop; reports every ``every`` messages."""

    async def start(port: int, qos: int, folder: Path) -> Consumer:
        proc = BaselineProc("baseline", folder / f"baseline-q{qos}.log", port, qos, every)
        await proc.start()
        return proc

    def command(port: int, qos: int) -> str:
        return f"python -m bench.baseline --port {port} --qos {qos} --every {every}"

    return Variant("aiomqtt + orjson, uvloop (baseline)", start, command)


def c_client_variant() -> Variant:
    """``mosquitto_sub`` (C, libmosquitto): the practical limit of a consumer process."""
    topic = f"$share/csub/{payloads.FILTER}"

    async def start(port: int, qos: int, folder: Path) -> Consumer:
        proc = CClientProc("mosquitto_sub", folder / f"csub-q{qos}.log", port, qos, topic)
        await proc.start()
        await _probe(proc, port)
        return proc

    def command(port: int, qos: int) -> str:
        return f"mosquitto_sub -p {port} -q {qos} -t '{topic}' -F x -i bench-csub > pipe"

    return Variant("mosquitto_sub (C client, reference)", start, command)


async def _probe(proc: CClientProc, port: int) -> None:
    """Publish a message every 50 ms until the subscriber has one: then it is subscribed."""
    pub = await Publisher.connect("127.0.0.1", port, "bench-probe")
    try:
        async with asyncio.timeout(START_DEADLINE):
            seq = 0
            while not await proc.counted():
                await pub.send_all([payloads.encode(seq, 0)], 0)
                seq += 1
                await asyncio.sleep(0.05)
    finally:
        await pub.close()


async def drain_runs(
    consumer: Consumer, pub: Publisher, packets: Sequence[bytes], qos: int, runs: int
) -> tuple[list[float], list[float], int]:
    """``runs`` timed drains after one warm-up: (rates, fill rates, dropped)."""
    rates: list[float] = []
    fills: list[float] = []
    dropped = 0
    count = len(packets)
    deadline = 30.0 + count / SLOWEST
    for run in range(runs + 1):
        before = await consumer.counted()
        drops_before = await _dropped(consumer)
        consumer.pause()
        try:
            fill = await pub.send_all(packets, qos)
        finally:
            started = time.monotonic()
            consumer.resume()
        finished = await consumer.finished_at(before + count, deadline)
        lost = await _dropped(consumer) - drops_before
        if run == 0:
            continue  # warm-up: caches, the first broker queues, the CPU's clock
        # Only handled messages count: a QoS 0 intake that overflows drops the oldest (and
        # counts them), and dropping is not consuming.
        rates.append((count - lost) / (finished - started))
        fills.append(count / fill)
        dropped += lost
    return rates, fills, dropped


async def _dropped(consumer: Consumer) -> int:
    if isinstance(consumer, WorkerProc):
        return int((await consumer.samples()).get("worker_messages_dropped_total", 0.0))
    return 0


async def measure(
    variant: Variant, port: int, qos: int, packets: Sequence[bytes], runs: int, folder: Path
) -> Figure:
    """Start the consumer, run the drains, stop it; one Figure."""
    figure = Figure(variant.name, qos, variant.command(port, qos))
    if variant.skip:
        figure.skipped = variant.skip
        return figure
    consumer = await variant.start(port, qos, folder)
    pub = await Publisher.connect("127.0.0.1", port, f"bench-pub-{qos}")
    try:
        figure.rates, figure.fill_rates, figure.dropped = await drain_runs(
            consumer, pub, packets, qos, runs
        )
    finally:
        await pub.close()
        await consumer.stop()
    return figure


def is_baseline(figure: Figure) -> bool:
    """Whether ``figure`` is the baseline the others are divided by."""
    return figure.name.endswith("(baseline)")
