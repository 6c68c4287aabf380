"""``worker run`` as real processes, a QoS 1 publisher, and what the processes report."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from tests.support.fetch import fetch
from tests.support.waiting import PROCESS
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions

ROOT: Final = Path(__file__).resolve().parents[2]
_READY = re.compile(r"metrics http://[^:]+:(\d+)/metrics")
_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any WIOTP_*/WORKER_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIOTP_", "WORKER_"))}
    return env | extra


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``worker ARGS`` to the end: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", *args, cwd=ROOT, env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), PROCESS)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class WorkerProcess:
    """One ``worker run tests.e2e.recorder`` process writing its handled events to a file."""

    def __init__(self, folder: Path, name: str, args: Sequence[str], **env: str) -> None:
        self.name = name
        self.record = folder / f"{name}.record"
        self.log = folder / f"{name}.log"
        self.args = [*args, "--metrics-host", "127.0.0.1", "--metrics-port", "0"]
        self.env = clean_env(RECORD_FILE=str(self.record), **env)
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.ready_line = ""

    async def start(self, app: str = "tests.e2e.recorder") -> None:
        """Start and wait for the startup line (which carries the metrics port)."""
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "worker.cli", "run", app, *self.args,
                cwd=ROOT, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), PROCESS)
        except TimeoutError:
            raise AssertionError(f"{self.name} not ready:\n{self.log_text()}") from None
        match = _READY.search(line.decode())
        assert match, f"{self.name}: {line!r}\n{self.log_text()}"
        self.ready_line, self.port = line.decode().strip(), int(match.group(1))

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self) -> int:
        """Wait for the exit; its code."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), PROCESS)

    async def stop(self) -> None:
        """SIGTERM (if still running) and wait; kill past the deadline."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), PROCESS)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def handled(self) -> list[int]:
        """The event numbers this process finished, from its record file (whole lines only)."""
        try:
            text = self.record.read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.split("\n")[:-1]]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def metrics(self) -> dict[str, float]:
        """The /metrics samples as ``name{labels}`` -> value."""
        _, _, body = await fetch(self.port, "/metrics")
        samples = {}
        for line in body.decode().splitlines():
            match = _SAMPLE.match(line)
            if match:
                name, labels, value = match.groups()
                samples[f"{name}{{{labels}}}" if labels else name] = float(value)
        return samples

    async def readyz(self) -> tuple[int, str]:
        status, _, body = await fetch(self.port, "/readyz")
        return status, body.decode()


def event_topic(n: int, fmt: str = "json") -> str:
    return f"iot-2/type/sensor/id/d{n % 50}/evt/reading/fmt/{fmt}"


async def publish_events(
    host: str,
    port: int,
    numbers: range,
    *,
    chunk: int = 500,
    client_id: str = "publisher",
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Publish ``{"n": n}`` for every n at QoS 1, ``chunk`` in flight at a time."""
    pub = AiomqttTransport()
    options = ConnectOptions(host, port, client_id, username=username, password=password)
    await pub.connect(options)
    try:
        for start in range(numbers.start, numbers.stop, chunk):
            stop = min(start + chunk, numbers.stop)
            await asyncio.gather(
                *(pub.publish(event_topic(n), b'{"n": %d}' % n, qos=1) for n in range(start, stop))
            )
    finally:
        await pub.disconnect()


def exactly_once(workers: Sequence[WorkerProcess], numbers: range) -> Counter[int]:
    """Assert every number was handled exactly once across ``workers``; count per worker."""
    seen: Counter[int] = Counter()
    for worker in workers:
        seen.update(worker.handled())
    missing = [n for n in numbers if seen[n] == 0]
    twice = [n for n, c in seen.items() if c > 1]
    assert not missing, f"{len(missing)} never handled, e.g. {missing[:10]}"
    assert not twice, f"{len(twice)} handled more than once, e.g. {twice[:10]}"
    return seen
