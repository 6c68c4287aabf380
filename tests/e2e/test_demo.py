"""``worker demo --no-live``: IBM's scenario with real processes, checked end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mosquitto import mosquitto_binary
from tests.support.processes import ROOT, clean_env
from tests.support.waiting import SCENARIO, until


async def run_demo(out: Path, *args: str) -> tuple[int, str, str]:
    """``worker demo --no-live`` to the end: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "demo", "--no-live", "--out", str(out), *args,
        cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out_b, err_b = await asyncio.wait_for(proc.communicate(), SCENARIO)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"worker demo did not finish; logs in {out}") from None
    assert proc.returncode is not None
    return proc.returncode, out_b.decode(), err_b.decode()


def check_results(out: Path, stdout: str) -> dict[str, Any]:
    """The JSON says every phase held and every event was handled once; the SVG is drawn."""
    doc: dict[str, Any] = json.loads((out / "demo.json").read_text())
    assert doc["ok"], stdout
    assert [p["name"] for p in doc["phases"]] == [
        "one instance", "two instances", "three instances", "two and three paused",
        "two and three resumed", "scale-down",
    ]  # fmt: skip
    delivery = doc["delivery"]
    assert delivery["exactly_once"] and delivery["lost"] == delivery["duplicates"] == 0
    assert delivery["sent"] > 0 and delivery["handled"] == delivery["sent"]
    assert set(delivery["per_instance"]) == {"demo-1", "demo-2", "demo-3"}
    assert doc["setup"]["exits"] == {"demo-1": 0, "demo-2": 0, "demo-3": 0}
    svg = ET.parse(out / "demo.svg").getroot()
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) >= 3  # one per instance at least (more where an instance was stopped)
    assert "| 3. three instances" in stdout and "each handled exactly once" in stdout
    return doc


async def test_demo_on_the_embedded_platform(tmp_path: Path) -> None:
    code, stdout, stderr = await run_demo(tmp_path, "--duration", "15", "--rate", "80")
    assert code == 0, f"{stdout}\n{stderr}"
    doc = check_results(tmp_path, stdout)
    three = doc["phases"][2]["measured"]
    assert all(abs(share - 1 / 3) <= 0.10 for share in three.values())
    assert "A:demo01:demo" in stdout


@pytest.mark.mosquitto
async def test_demo_on_mosquitto(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (make test installs it: scripts/system-deps.sh)")
    args = ("--broker", "mosquitto", "--duration", "15", "--rate", "80")
    code, stdout, stderr = await run_demo(tmp_path, *args)
    assert code == 0, f"{stdout}\n{stderr}"
    check_results(tmp_path, stdout)
    assert "$share/demo01:demo" in stdout


async def test_demo_refuses_a_bad_broker_url(tmp_path: Path) -> None:
    code, _, stderr = await run_demo(tmp_path, "--broker", "http://example.invalid")
    assert code == 2
    assert "accepted are mqtt[s]://" in stderr


async def test_demo_exits_4_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        code, _, stderr = await run_demo(tmp_path, "--broker", f"mqtt://127.0.0.1:{port}")
    assert code == 4
    assert "cannot connect" in stderr


def workers_of(out: Path) -> list[int]:
    """PIDs of live processes whose environment names a ledger in ``out``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"EXAMPLE_LEDGER={out}".encode() in environ:
            found.append(int(proc.name))
    return found


@contextlib.asynccontextmanager
async def demo_in_phase_one(out: Path, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``worker demo`` (60 s), once its first worker is up; killed on the way out if need be."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "demo", "--no-live", "--duration", "60",
        "--out", str(out), *args, cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(SCENARIO):
            # Phase 1 runs for 10 s: the worker and the fleet are up as soon as it is announced.
            while b"phase 1/6" not in await proc.stdout.readline():
                pass
            # The ledger is opened by the app's startup hook: the worker is up.
            ledger = out / "demo-1.ledger"
            await until(lambda: ledger.exists() and bool(workers_of(out)), "demo-1")
            yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_ends_the_demo_and_its_workers(tmp_path: Path) -> None:
    async with demo_in_phase_one(tmp_path) as proc:
        proc.terminate()
        assert await proc.wait() == 130
    assert workers_of(tmp_path) == []


def processes_of(out: Path) -> list[int]:
    """Workers (by their ledger) and the demo's Mosquitto (by its config) for ``out``."""
    found = workers_of(out)
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        is_mosquitto = cmdline.startswith(b"mosquitto\0") or b"/mosquitto\0" in cmdline
        if is_mosquitto and str(out).encode() in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("broker", ["embedded", "mosquitto"])
async def test_sigkill_of_the_demo_leaves_no_worker_or_broker_behind(
    tmp_path: Path, broker: str
) -> None:
    if broker == "mosquitto" and mosquitto_binary() is None:
        pytest.skip("mosquitto is needed (scripts/system-deps.sh)")
    async with demo_in_phase_one(tmp_path, "--broker", broker) as proc:
        if broker == "mosquitto":
            assert len(processes_of(tmp_path)) == 2  # the worker and the broker
        proc.kill()  # no chance to stop anything itself
        await proc.wait()
    # the kernel sends each child SIGTERM as its parent dies: they drain and exit
    await until(lambda: processes_of(tmp_path) == [], "the demo's children to exit")
