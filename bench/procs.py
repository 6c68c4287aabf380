"""Consumer processes of the benchmarks: start, pause, resume, count, stop; every wait bounded.

Two kinds, with one interface (:class:`Consumer`):

- :class:`WorkerProc` is ``worker run APP`` on a free metrics port (read from its startup
  line). What it has done is read from ``/metrics``: every (message, route) outcome, drops
  included, plus the messages no route took, so a QoS 0 drop can never hang a wait.
- :class:`BaselineProc` is ``python -m bench.baseline``; it reports ``done COUNT TIME`` lines.

``pause``/``resume`` are SIGSTOP/SIGCONT: the harness fills the broker while the consumer is
stopped, so that the publisher never competes with it for a CPU during the timed drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final, Protocol, TypeVar

from tests.support.fetch import fetch
from worker.tools.children import die_with_parent

ROOT: Final = Path(__file__).resolve().parents[1]
START_DEADLINE: Final = 30.0
STOP_DEADLINE: Final = 30.0
#: how often /metrics is read while waiting (a scrape costs the worker ~0.4 ms of CPU, so
#: under 1% at this interval); the finishing time is interpolated between reads
POLL: Final = 0.05
_READY = re.compile(r"metrics (http://[^ ]+:(\d+)/metrics)")
_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", re.MULTILINE)


class BenchError(Exception):
    """A consumer did not start, or did not finish within its deadline."""


T = TypeVar("T")


async def until_terminated(main: Awaitable[T]) -> T:
    """Await ``main``; SIGTERM cancels it, so that every ``finally`` stops its processes."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await main


def run_in_temporary_folder(
    prefix: str, main: Callable[[Path], Awaitable[int]], stopped: str
) -> int:
    """``main(folder)`` in a fresh temporary folder, until it ends or SIGTERM; its exit code.

    On SIGTERM every ``finally`` of ``main`` has stopped its processes: ``stopped`` is printed
    and the code is 1.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        try:
            return asyncio.run(until_terminated(main(Path(folder))))
        except asyncio.CancelledError:
            print(f"terminated: {stopped}", file=sys.stderr)
            return 1


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without WIOTP_*/WORKER_* settings (they would change what runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIOTP_", "WORKER_"))}
    return env | extra


class Consumer(Protocol):
    """What the throughput runs need of a consumer process."""

    name: str

    @property
    def pid(self) -> int: ...

    def pause(self) -> None:
        """Stop reading (SIGSTOP)."""

    def resume(self) -> None:
        """Carry on (SIGCONT)."""

    async def counted(self) -> int:
        """Messages finished so far."""

    async def finished_at(self, target: int, deadline: float) -> float:
        """The monotonic time at which ``counted()`` reached ``target``."""

    async def stop(self) -> None:
        """Terminate (politely first) and wait."""


class _Proc:
    """A child process with its stderr in a log file."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _spawn(self, argv: Sequence[str], env: dict[str, str]) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                preexec_fn=die_with_parent,
            )

    async def _line(self, deadline: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), deadline)
        except TimeoutError:
            raise BenchError(
                f"{self.name}: no answer within {deadline:g}s; {self.tail()}"
            ) from None
        if not raw:
            raise BenchError(f"{self.name} exited; {self.tail()}")
        return raw.decode().strip()

    def pause(self) -> None:
        """SIGSTOP: the process keeps its connection but reads nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        os.kill(self.pid, signal.SIGCONT)

    def peak_rss(self) -> int:
        """The process's peak resident set size in bytes (VmHWM), 0 once it is gone."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    async def stop(self) -> None:
        """SIGCONT (in case it is stopped), SIGTERM, wait; SIGKILL past the deadline."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_DEADLINE)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def tail(self) -> str:
        """The end of the process's log, for error messages."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            return "(no log)"
        return f"log {self.log}:\n" + "\n".join(lines)


class WorkerProc(_Proc):
    """``worker run TARGET ARGS`` with metrics on a free port of 127.0.0.1."""

    def __init__(self, name: str, log: Path, target: str, args: Sequence[str], **env: str):
        super().__init__(name, log)
        self.target = target
        self.args = [*args, "--metrics-host", "127.0.0.1", "--metrics-port", "0"]
        self.env = clean_env(**env)
        self.metrics_port = 0

    @property
    def command(self) -> str:
        """The command line, as BENCHMARKS.md shows it."""
        return " ".join(["worker", "run", self.target, *self.args])

    async def start(self) -> None:
        """Start and wait for the startup line, which carries the metrics URL."""
        argv = [sys.executable, "-m", "worker.cli", "run", self.target, *self.args]
        await self._spawn(argv, self.env)
        line = await self._line(START_DEADLINE)
        match = _READY.search(line)
        if match is None:
            raise BenchError(f"{self.name}: unexpected startup line {line!r}; {self.tail()}")
        self.metrics_port = int(match.group(2))

    async def samples(self) -> dict[str, float]:
        """Every sample of /metrics, summed by metric name and by ``name{labels}``."""
        _, _, body = await fetch(self.metrics_port, "/metrics")
        totals: dict[str, float] = {}
        for name, labels, value in _SAMPLE.findall(body.decode()):
            totals[name] = totals.get(name, 0.0) + float(value)
            if labels:
                totals[f"{name}{{{labels}}}"] = float(value)
        return totals

    async def counted(self) -> int:
        # Finished: handled, unrouted, or dropped by a full QoS 0 intake (a drop is counted
        # as a drop only, not also as a handled outcome)
        s = await self.samples()
        unrouted = s.get('worker_messages_dropped_total{reason="unrouted"}', 0.0)
        full = s.get('worker_messages_dropped_total{reason="intake_full"}', 0.0)
        return int(s.get("worker_messages_handled_total", 0.0) + unrouted + full)

    async def finished_at(self, target: int, deadline: float) -> float:
        return await poll_until([self], target, deadline)


class BaselineProc(_Proc):
    """``python -m bench.baseline``: the bare aiomqtt + orjson receive loop."""

    def __init__(self, name: str, log: Path, port: int, qos: int, every: int) -> None:
        super().__init__(name, log)
        self.args = ["--port", str(port), "--qos", str(qos), "--every", str(every)]
        self._count = 0
        self._times: dict[int, float] = {}
        self._reader: asyncio.Task[None] | None = None
        self._news = asyncio.Event()

    async def start(self) -> None:
        """Start and wait until it is subscribed."""
        await self._spawn([sys.executable, "-m", "bench.baseline", *self.args], clean_env())
        line = await self._line(START_DEADLINE)
        if line != "ready":
            raise BenchError(f"{self.name}: unexpected first line {line!r}; {self.tail()}")
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-stdout")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            _, count, at = raw.decode().split()
            self._count = int(count)
            self._times[self._count] = float(at)
            self._news.set()

    async def counted(self) -> int:
        return self._count

    async def finished_at(self, target: int, deadline: float) -> float:
        async with _deadline(deadline, self):
            while target not in self._times:
                self._news.clear()
                await self._news.wait()
        return self._times[target]

    async def stop(self) -> None:
        await super().stop()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class CClientProc(_Proc):
    """``mosquitto_sub`` printing two bytes per message into a pipe: the C client's limit."""

    def __init__(self, name: str, log: Path, port: int, qos: int, topic: str) -> None:
        super().__init__(name, log)
        self.args = ["-h", "127.0.0.1", "-p", str(port), "-q", str(qos), "-t", topic, "-F", "x",
                     "-i", "bench-csub"]  # fmt: skip
        self._count = 0
        self._crossed: dict[int, float] = {}
        self._target = 0
        self._news = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start; ready is proved by the first probe message reaching it (see ``probe``)."""
        binary = shutil.which("mosquitto_sub") or "mosquitto_sub"
        await self._spawn([binary, *self.args], clean_env())
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-stdout")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(1 << 16):
            self._count += chunk.count(b"\n")
            if self._target and self._count >= self._target and self._target not in self._crossed:
                self._crossed[self._target] = time.monotonic()
            self._news.set()

    async def counted(self) -> int:
        return self._count

    async def finished_at(self, target: int, deadline: float) -> float:
        self._target = target
        async with _deadline(deadline, self):
            while self._count < target:
                self._news.clear()
                await self._news.wait()
        return self._crossed.get(target, time.monotonic())

    async def stop(self) -> None:
        await super().stop()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@contextlib.asynccontextmanager
async def _deadline(seconds: float, who: _Proc) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise BenchError(f"{who.name}: not finished within {seconds:g}s; {who.tail()}") from None


async def poll_until(workers: Sequence[WorkerProc], target: int, deadline: float) -> float:
    """When the workers' summed count reached ``target``: interpolated between two reads."""
    async with _deadline(deadline, workers[0]):
        before_t, before_n = time.monotonic(), sum([await w.counted() for w in workers])
        while True:
            await asyncio.sleep(POLL)
            now = time.monotonic()
            count = sum([await w.counted() for w in workers])
            if count >= target:
                # the rate is steady within one poll, so the crossing is where the line meets it
                share = (target - before_n) / max(1, count - before_n)
                return before_t + share * (now - before_t)
            before_t, before_n = now, count
