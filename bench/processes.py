"""``worker run --workers N`` with a CPU-bound handler: 2 processes against 1, in one run.

One process uses one core; ``--workers 2`` runs two under one supervisor, each a member of the
shared group. The handler (``bench.apps:cpu``) does a fixed amount of arithmetic per message
(about 5 ms of one core) without yielding, so one process is CPU-bound and the second one can
only help by using the second core. Each figure is the same number of QoS 1 messages,
published at once; the rate is messages over the time until the supervisor's ``/metrics``
(both processes summed) counts them all handled. The target is 1.7x on a 2-core machine:
the publisher and Mosquitto need a little of the same two cores.

The section is written into BENCHMARKS.md between its own markers by any run that measured it
(not ``--quick``), so ``python -m bench --only processes`` records it without redoing the rest.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench import payloads
from bench.procs import WorkerProc, poll_until
from bench.publisher import Publisher
from bench.sections import replace_section
from bench.throughput import worker_args

BEGIN: Final = "<!-- processes: written by python -m bench --only processes -->"
END: Final = "<!-- /processes -->"
#: seconds of one core one message takes (bench.apps:cpu's default work, measured roughly)
MESSAGE_CPU: Final = 0.005
#: the goal: 2 processes against 1
TARGET: Final = 1.7


@dataclass
class ProcessFigure:
    """The rates of one ``--workers`` setting."""

    workers: int
    command: str
    messages: int
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median rate (msg/s)."""
        return statistics.median(self.rates) if self.rates else 0.0


@dataclass
class ProcessResults:
    """``--workers 1`` and ``--workers 2``, measured one after the other in one invocation."""

    figures: list[ProcessFigure]
    load: str = ""
    #: when, and on what (``bench.machine.describe``)
    date: str = ""
    machine: dict[str, str] = field(default_factory=dict)

    def ratio(self) -> float:
        """2 processes over 1 (0 when either is missing)."""
        rates = {f.workers: f.median for f in self.figures}
        return rates.get(2, 0.0) / rates[1] if rates.get(1) else 0.0


async def measure(
    port: int, workers: int, seconds: float, runs: int, folder: Path
) -> ProcessFigure:
    """``runs`` bursts of QoS 1 messages into ``worker run --workers N bench.apps:cpu``."""
    # The same burst for both settings: about `seconds` for two processes.
    count = max(100, int(2 * seconds / MESSAGE_CPU))
    packets = payloads.encode_many(count, 1)
    proc = WorkerProc(
        f"workers{workers}",
        folder / f"workers{workers}.log",
        "bench.apps:cpu",
        worker_args(port, 1, f"p{workers}", "--workers", str(workers), "--concurrency", "1"),
    )
    figure = ProcessFigure(workers, proc.command, count)
    try:
        await proc.start()
        pub = await Publisher.connect("127.0.0.1", port, f"bench-workers-{workers}")
        try:
            for _ in range(runs):
                before = await proc.counted()
                started = time.monotonic()
                await pub.send_all(packets, 1)
                finished = await poll_until([proc], before + count, 60.0 + 4 * seconds)
                figure.rates.append(count / (finished - started))
        finally:
            await pub.close()
    finally:
        await proc.stop()
    return figure


def section(r: ProcessResults, command: str) -> str:
    """The section of BENCHMARKS.md, between its markers."""
    one = next((f.median for f in r.figures if f.workers == 1), 0.0) or 1.0
    rows = [
        f"| {f.workers} | {f.median:,.0f} | {f.median / one:.2f}x | "
        + ", ".join(f"{x:,.0f}" for x in f.rates)
        + " |"
        for f in r.figures
    ]
    ratio = r.ratio()
    status = "met" if ratio >= TARGET else "not met"
    machine = ", ".join(f"{k} {v}" for k, v in r.machine.items()) or "not recorded"
    return "\n".join(
        [
            BEGIN,
            "## Processes per pod: `worker run --workers N`, CPU-bound handler (QoS 1)",
            "",
            f"Command: `{command}`, {r.date or 'date not recorded'}. Machine: {machine}.",
            f"Load before it: {r.load or 'not read'} (the busy share: other work on the machine).",
            "",
            "| --workers | msg/s | x 1 process | runs |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Target: 2 processes >= {TARGET}x one: {ratio:.2f}x, {status}.",
            "",
            *(f"    {f.command}" for f in r.figures),
            "",
            "Each message costs about 5 ms of one core (`bench.apps:cpu`, a fixed amount of",
            "arithmetic that never yields); every figure is the same burst of messages, timed",
            "from the first publish until the supervisor's `/metrics` counts all of them handled.",
            END,
            "",
        ]
    )


def record(text: str, path: Path) -> None:
    """Replace the processes section of ``path`` (or append it)."""
    replace_section(path, text, BEGIN, END)
