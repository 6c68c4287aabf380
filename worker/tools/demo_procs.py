"""The demo's instances: ``worker run worker.examples.fleet`` as real processes, one per replica.

Each gets a free metrics port (``--metrics-port 0``; the port is read from the startup line
that ``worker run`` prints once subscribed), its own log file and its own ledger file
(``EXAMPLE_LEDGER``: the ``seq`` of every reading it handled). Processes start in a session of
their own, so a Ctrl-C in the terminal reaches the demo only, and the demo stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from worker.errors import WorkerError
from worker.tools.children import die_with_parent
from worker.tools.demo_broker import Broker

#: seconds for a worker to print its startup line (import, connect, subscribe)
START_DEADLINE: Final = 30.0
#: seconds beyond its drain timeout for a worker to exit after SIGTERM
EXIT_GRACE: Final = 10.0
_READY: Final = re.compile(r"metrics (http://\S+/metrics)")
APP: Final = "worker.examples.fleet"


class DemoError(WorkerError):
    """The demo could not go on: an instance did not start, or stopped answering."""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without WIOTP_*/WORKER_* settings (the demo chooses them), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIOTP_", "WORKER_"))}
    return env | extra


class Instance:
    """One worker process of the scalable application."""

    def __init__(self, number: int, folder: Path) -> None:
        self.name = f"demo-{number}"
        self.log = folder / f"{self.name}.log"
        self.ledger = folder / f"{self.name}.ledger"
        self.url = ""
        self.exit_code: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._stdout: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Started and not exited."""
        return self._proc is not None and self._proc.returncode is None

    async def start(
        self,
        broker: Broker,
        drain_timeout: float,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start and wait for the startup line; DemoError with the log's tail if it fails.

        ``extra`` flags and ``env`` variables are added to the worker's own.
        """
        self.ledger.unlink(missing_ok=True)
        args = [
            *broker.worker_flags(), "--instance", self.name, "--metrics-host", "127.0.0.1",
            "--metrics-port", "0", "--drain-timeout", f"{drain_timeout:g}",
            "--startup-timeout", f"{START_DEADLINE:g}", *extra,
        ]  # fmt: skip
        env = clean_env(EXAMPLE_LEDGER=str(self.ledger), **broker.worker_env(), **(env or {}))
        with self.log.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "worker.cli", "run", APP, *args,
                cwd=self.log.parent, env=env, stdout=asyncio.subprocess.PIPE, stderr=log,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), START_DEADLINE + 5)
        except TimeoutError:
            line = b""
        match = _READY.search(line.decode(errors="replace"))
        if match is None:
            await self.kill()
            raise DemoError(f"{self.name} did not start; its log ({self.log}):\n{self.tail()}")
        self.url = match.group(1)
        self._stdout = asyncio.create_task(self._discard(self._proc.stdout))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        # Nothing else is printed on stdout, but a full pipe must never block the worker.
        while await stream.read(65536):
            pass

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal (SIGUSR1 pause, SIGUSR2 resume, SIGTERM drain and exit)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(sig)

    async def stop(self, drain_timeout: float) -> int:
        """SIGTERM and wait for the exit; kill past the drain timeout plus a grace."""
        proc = self._proc
        if proc is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), drain_timeout + EXIT_GRACE)
        except TimeoutError:
            await self.kill()
        return await self._finish()

    async def kill(self) -> None:
        """Kill at once (the demo is failing or interrupted)."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await self._finish()

    async def _finish(self) -> int:
        assert self._proc is not None
        self.exit_code = self._proc.returncode
        if self._stdout is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._stdout, EXIT_GRACE)
        return self.exit_code if self.exit_code is not None else -1

    def tail(self, lines: int = 15) -> str:
        """The end of the instance's log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
