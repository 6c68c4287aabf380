"""What the figures were measured on: the machine, the versions, and how busy it was.

The machine is shared, so every section records the load average and the CPU's busy share
over the second before it started; BENCHMARKS.md shows both next to the figures.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class Load:
    """How busy the machine was just before a section ran."""

    section: str
    loadavg: tuple[float, float, float]
    #: share of all cores busy over one second (0-1), from /proc/stat
    busy: float

    def describe(self) -> str:
        """``load 1.20 / 0.95 / 0.80, 35% busy``."""
        one, five, fifteen = self.loadavg
        return f"load {one:.2f} / {five:.2f} / {fifteen:.2f}, {self.busy:.0%} busy"


def _cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies over all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def measure_load(section: str, window: float = 1.0) -> Load:
    """The load average now and the busy share over the next ``window`` seconds."""
    try:
        idle0, total0 = _cpu_times()
        time.sleep(window)
        idle1, total1 = _cpu_times()
        busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    return Load(section, os.getloadavg(), busy)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_shares(pids: dict[str, int]) -> Iterator[dict[str, float]]:
    """Fills the yielded dict, on exit, with each process's share of one core meanwhile."""
    shares: dict[str, float] = {}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    try:
        yield shares
    finally:
        elapsed = max(1e-9, time.monotonic() - started)
        for name, pid in pids.items():
            shares[name] = (cpu_seconds(pid) - before[name]) / elapsed


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory() -> str:
    """Total memory from /proc/meminfo, in GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(mosquitto: str) -> dict[str, str]:
    """The machine and software rows of BENCHMARKS.md."""
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": memory(),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "uvloop": _version("uvloop"),
        "aiomqtt": _version("aiomqtt"),
        "paho-mqtt": _version("paho-mqtt"),
        "orjson": _version("orjson"),
        "Mosquitto": mosquitto,
    }
