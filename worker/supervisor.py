"""``worker run --workers N``: N worker processes of one App under one supervisor.

One process uses one core; a pod given several can run several workers, as uvicorn and
gunicorn do with ``--workers``. The supervisor runs no handler itself:

- it starts N ``worker run`` processes with the same settings, each with its own instance
  identity ``{instance}-{n}`` (so each joins the share group as a member of its own), its
  metrics on a loopback port of its own (``--metrics-port 0``, read from its startup line), in
  a session of its own (a terminal's Ctrl-C reaches the supervisor only, which forwards it
  once) and dying with the supervisor even if it is killed (``die_with_parent``);
- it forwards SIGTERM and SIGINT (drain all, then exit), SIGUSR1 and SIGUSR2 (pause and
  resume all);
- a process that exits while not asked to is restarted after a backoff (1 s, doubling up to
  30 s, back to 1 s once it ran a minute). Exit codes 2, 3 and 4 (bad settings, no App, not
  authorised or no connection by ``--startup-timeout``) are not crashes: another start would
  fail the same way, so every process is stopped and the supervisor exits with that code;
- it serves ``/metrics`` (every process's series with a ``process`` label, the scaling gauges
  summed: ``worker.merged_metrics``), ``/livez``, and ``/readyz``: 200 only when every process
  answers its own ``/readyz`` with 200.

It prints one startup line on stdout once every process is ready; the processes' own output
goes to stderr (but for their startup lines, which name their loopback metrics ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from worker import web
from worker.config import Settings
from worker.errors import ConfigError
from worker.merged_metrics import merge
from worker.options import OPTIONS
from worker.tools.children import die_with_parent

log = logging.getLogger("worker.supervisor")

#: exit codes of a process that another start would not fix (see worker.cli)
FATAL: Final = frozenset({2, 3, 4})
#: restart backoff: first delay, cap, and the run time after which it starts over
BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 30.0
STABLE_AFTER: Final = 60.0
#: seconds a process's /metrics or /readyz may take
PROBE_DEADLINE: Final = 2.0
#: seconds between readiness checks of the processes
POLL_EVERY: Final = 0.25
#: seconds beyond the drain timeout a process gets to exit after SIGTERM before SIGKILL
EXIT_GRACE: Final = 10.0
_READY: Final = re.compile(rb"metrics (http://\S+)/metrics")
_FORWARDED: Final = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
_JSON: Final = "application/json"


def child_args(target: str, flags: Mapping[str, object], number: int, instance: str) -> list[str]:
    """``worker run`` arguments of process ``number``: the command line's settings flags, then
    its own identity, loopback metrics on any free port, and one worker."""
    args = ["run", target]
    for option in OPTIONS:
        value = flags.get(option.field)
        if value is None or option.field in _PER_PROCESS:
            continue
        if option.is_flag:
            on, _, off = option.flag.partition("/")
            args.append(on if value else off)
        else:
            args += [option.flag, str(value)]
    if flags.get("startup_timeout") is not None:  # a flag of worker run, not a setting
        args += ["--startup-timeout", str(flags["startup_timeout"])]
    return [
        *args, "--instance", f"{instance}-{number}", "--metrics-host", "127.0.0.1",
        "--metrics-port", "0", "--workers", "1",
    ]  # fmt: skip


#: settings the supervisor sets for each process itself
_PER_PROCESS: Final = frozenset({"instance", "metrics_host", "metrics_port", "workers"})


class Process:
    """One supervised ``worker run``: started, watched, restarted."""

    def __init__(self, number: int, args: Sequence[str]) -> None:
        self.number = number
        self.args = list(args)
        self.url = ""
        self.restarts = 0
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it; its URL is known once it prints its startup line."""
        self.url = ""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", *self.args,
            stdout=asyncio.subprocess.PIPE, stderr=None,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip

    async def read_output(self) -> None:
        """Take the metrics URL from the startup line; pass every other line on to stderr.

        The startup line names the process's own loopback metrics port, which is no one's to
        scrape: the supervisor's line, once all are ready, names the page that merges them.
        """
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            if not self.url and (match := _READY.search(line)):
                self.url = match.group(1).decode()
                log.debug("process %d: %s", self.number, line.decode().rstrip())
                continue
            sys.stderr.buffer.write(line)
            sys.stderr.flush()

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` if it is running."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


class Supervisor:
    """Runs ``workers`` processes of ``target``; ``await run()`` returns the exit code."""

    def __init__(self, target: str, settings: Settings, flags: Mapping[str, object]) -> None:
        if settings.workers > 1 and settings.identity.value != "shared":
            raise ConfigError(
                f"--workers {settings.workers} needs the shared identity (every process joins "
                f"the group as a member); {settings.identity.value} connects as one client ID, "
                "which several processes cannot share"
            )
        self.settings = settings
        self.processes = [
            Process(n, child_args(target, flags, n, settings.instance))
            for n in range(settings.workers)
        ]
        self.server = web.Server(
            {"/metrics": self._metrics, "/livez": self._livez, "/readyz": self._readyz}
        )
        self._stopping = asyncio.Event()
        self._fatal: int | None = None
        self._not_ready: dict[int, str] = {p.number: "starting" for p in self.processes}

    # --- the endpoints -----------------------------------------------------------------------

    async def _metrics(self) -> web.Response:
        pages = await asyncio.gather(*(self._page(p, "/metrics") for p in self.processes))
        texts = {str(p.number): t for p, t in zip(self.processes, pages, strict=True) if t}
        return web.Response(200, merge(texts), "text/plain; version=0.0.4; charset=utf-8")

    async def _livez(self) -> web.Response:
        pids = [
            p.proc.pid if p.proc and p.proc.returncode is None else None for p in self.processes
        ]
        restarts = [p.restarts for p in self.processes]
        return web.Response(200, _json(status="ok", pids=pids, restarts=restarts), _JSON)

    async def _readyz(self) -> web.Response:
        if self._stopping.is_set():
            return web.Response(503, _json(status="not ready", reason="draining"), _JSON)
        if self._not_ready:
            reason = "; ".join(f"process {n}: {why}" for n, why in sorted(self._not_ready.items()))
            return web.Response(503, _json(status="not ready", reason=reason), _JSON)
        return web.Response(200, _json(status="ready"), _JSON)

    @staticmethod
    async def _page(process: Process, path: str) -> str:
        """A process's page, or "" when it cannot answer (starting, restarting)."""
        if not process.url:
            return ""
        try:
            return (await web.get(process.url + path, PROBE_DEADLINE)).decode()
        except (OSError, TimeoutError, ValueError):
            return ""

    async def _poll_readiness(self) -> None:
        """Keep ``_not_ready`` current: each process's own /readyz."""
        announced = False
        while not self._stopping.is_set():
            found = await asyncio.gather(*(self._readiness(p) for p in self.processes))
            self._not_ready = {p.number: why for p, why in found if why is not None}
            if not self._not_ready and not announced:
                announced = True
                print(self.describe(), flush=True)
            await asyncio.sleep(POLL_EVERY)

    @staticmethod
    async def _readiness(process: Process) -> tuple[Process, str | None]:
        """None when the process answers its /readyz with 200, else its reason."""
        if not process.url:
            return process, "starting"
        try:
            status, body = await web.get_any(process.url + "/readyz", PROBE_DEADLINE)
        except (OSError, TimeoutError, ValueError):
            return process, "not answering"
        if status == 200:
            return process, None
        try:
            return process, str(json.loads(body)["reason"])
        except (ValueError, KeyError, TypeError):
            return process, f"HTTP {status}"

    def describe(self) -> str:
        """The startup line, printed once every process is ready."""
        s, last = self.settings, len(self.processes) - 1
        names = f"{s.instance}-0..{s.instance}-{last}"
        # On a standard broker each process's client ID carries its instance name.
        who = (
            f"client ID {s.client_id}" if s.client is not None else f"client IDs {s.app_id}-{names}"
        )
        return (
            f"worker ready: {last + 1} processes ({names}) as {who} on {s.host}:{s.port}; "
            f"metrics {self.url}/metrics"
        )

    @property
    def url(self) -> str:
        """The supervisor's base URL, with the port actually bound."""
        host = self.settings.metrics_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server.port}"

    # --- the processes -----------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT has drained every process; the exit code."""
        s = self.settings
        try:
            await self.server.start(s.metrics_host, s.metrics_port)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-host/--metrics-port {s.metrics_host}:{s.metrics_port}: "
                f"cannot listen: {exc}"
            ) from exc
        self._install_signals()
        poller = asyncio.ensure_future(self._poll_readiness())
        try:
            codes = await asyncio.gather(*(self._keep(p) for p in self.processes))
        finally:
            poller.cancel()
            self._remove_signals()
            await self.server.close()
        if self._fatal is not None:
            return self._fatal
        return next((_exit_code(c) for c in codes if _exit_code(c) != 0), 0)

    async def _keep(self, process: Process) -> int:
        """Run ``process`` until the supervisor stops; restart it after a crash."""
        delay = BACKOFF_FIRST
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            await process.start()
            started = loop.time()
            code = await self._watch(process)
            if self._stopping.is_set():
                return code
            if code in FATAL:
                log.error("process %d exited %d: stopping every process", process.number, code)
                self._fatal = code
                self.stop()
                return code
            if loop.time() - started >= STABLE_AFTER:
                delay = BACKOFF_FIRST
            process.restarts += 1
            log.warning("process %d exited %d; restarting in %gs", process.number, code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return 0
            delay = min(delay * 2, BACKOFF_MAX)
        return 0

    async def _watch(self, process: Process) -> int:
        """Its exit code; SIGKILL when it outlives a stop by its drain timeout and a grace."""
        assert process.proc is not None
        output = asyncio.ensure_future(process.read_output())
        exited = asyncio.ensure_future(process.proc.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({exited, stopping}, return_when="FIRST_COMPLETED")
        if not exited.done():
            # Stopping: a process started after stop() went round did not get its SIGTERM.
            process.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(
                    asyncio.shield(exited), self.settings.drain_timeout + EXIT_GRACE
                )
            except TimeoutError:
                log.error("process %d did not exit after its drain: killing it", process.number)
                process.proc.kill()
        code = await exited
        stopping.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(output, EXIT_GRACE)
        return code

    def stop(self) -> None:
        """Drain every process (SIGTERM) and do not restart them."""
        self._stopping.set()
        for process in self.processes:
            process.signal(signal.SIGTERM)

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig is signal.SIGTERM:
            self.stop()
        elif sig is signal.SIGINT:
            # Forwarded as it is: the first drains, a second gives the drain up.
            self._stopping.set()
            for process in self.processes:
                process.signal(signal.SIGINT)
        else:
            for process in self.processes:
                process.signal(sig)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for name in _FORWARDED:
            sig = signal.Signals[name]
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for name in _FORWARDED:
            loop.remove_signal_handler(signal.Signals[name])


def _exit_code(code: int) -> int:
    """A process's code as the supervisor's own: 0 for one ended by the SIGTERM it was sent
    (still importing, before its handler existed: it held nothing), 128+N for signal N."""
    if code == -signal.SIGTERM:
        return 0
    return 128 - code if code < 0 else code


def _json(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def run_supervisor(target: str, settings: Settings, flags: Mapping[str, object]) -> int:
    """Supervise ``settings.workers`` processes of ``target`` until stopped; the exit code."""
    return asyncio.run(Supervisor(target, settings, flags).run())
