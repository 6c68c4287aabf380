"""``worker run --workers N``: real supervisor and worker processes on Mosquitto, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import pytest

from tests.conftest import MosquittoFactory
from tests.e2e.conftest import Spawn
from tests.support.fetch import fetch
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port
from tests.support.processes import (
    ROOT,
    WorkerProcess,
    clean_env,
    exactly_once,
    publish_events,
    run_cli,
)
from tests.support.waiting import PROCESS, until
from worker.tools.shares import scrape_all

pytestmark = pytest.mark.mosquitto


def mqtt_args(broker: Mosquitto, *more: str) -> tuple[str, ...]:
    return (
        "--profile", "mqtt", "--host", broker.host, "--port", str(broker.port),
        "--org", "abc123", "--app-id", "shared", "--instance", "pod", "--workers", "2", *more,
    )  # fmt: skip


async def livez(worker: WorkerProcess) -> dict[str, list[int | None]]:
    status, _, body = await fetch(worker.port, "/livez")
    assert status == 200
    answer: dict[str, list[int | None]] = json.loads(body)
    return answer


async def ready(worker: WorkerProcess) -> bool:
    status, _ = await worker.readyz()
    return status == 200


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_processes_share_the_work_and_one_metrics_page_shows_both(
    mosquitto_factory: MosquittoFactory, spawn: Spawn
) -> None:
    broker = mosquitto_factory(max_inflight=100)
    worker = spawn("pod", *mqtt_args(broker, "--concurrency", "8"))
    await worker.start()
    assert worker.ready_line.startswith(
        "worker ready: 2 processes (pod-0..pod-1) as client IDs shared-pod-0..pod-1"
    )
    # The processes' own startup lines (their loopback metrics ports) are not passed on.
    assert "worker ready: client ID" not in worker.log_text()
    numbers = range(4000)
    await publish_events(broker.host, broker.port, numbers)
    await until(lambda: len(worker.handled()) >= len(numbers), "every event handled")
    exactly_once([worker], numbers)
    samples = await worker.metrics()
    per_process = [
        samples[f'worker_messages_received_total{{process="{n}",kind="event"}}'] for n in (0, 1)
    ]
    assert sum(per_process) == len(numbers)
    assert all(count > 0 for count in per_process), per_process  # both are members
    assert any('instance="pod-0"' in key for key in samples)
    assert any('instance="pod-1"' in key for key in samples)
    # The scaling signal is the pod's: one series, the lanes of both processes.
    assert samples["worker_concurrency"] == 16
    assert 0 <= samples["worker_handler_saturation"] <= 1
    # `worker shares` shows each process as the group member it is, under its own name.
    url = f"http://127.0.0.1:{worker.port}/metrics"
    readings = await scrape_all([url], PROCESS, by_process=True)
    assert [(r.instance, r.received) for r in readings] == [
        ("pod-0", per_process[0]),
        ("pod-1", per_process[1]),
    ]
    assert await ready(worker)
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0
    assert worker.log_text().count("stopped (0 messages abandoned)") == 2


async def test_sigusr1_pauses_every_process_and_sigusr2_resumes(
    mosquitto: Mosquitto, spawn: Spawn
) -> None:
    worker = spawn("pod", *mqtt_args(mosquitto))
    await worker.start()
    worker.signal(signal.SIGUSR1)

    async def paused() -> bool:
        status, body = await worker.readyz()
        return status == 503 and body.count("paused") == 2

    await until(paused, "both processes paused")
    worker.signal(signal.SIGUSR2)
    await until(lambda: ready(worker), "both processes resumed")


async def test_a_killed_process_is_restarted_and_readyz_waits_for_it(
    mosquitto: Mosquitto, spawn: Spawn
) -> None:
    worker = spawn("pod", *mqtt_args(mosquitto))
    await worker.start()
    first = (await livez(worker))["pids"]
    victim = first[1]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        now = await livez(worker)
        return now["restarts"] == [0, 1] and now["pids"][1] not in (None, victim)

    await until(replaced, "process 1 restarted")
    await until(lambda: ready(worker), "ready again with both processes")
    assert (await livez(worker))["pids"][0] == first[0]  # the other one was left alone
    assert "process 1 exited -9; restarting in 1s" in worker.log_text()


async def test_children_do_not_outlive_a_killed_supervisor(
    mosquitto: Mosquitto, spawn: Spawn
) -> None:
    worker = spawn("pod", *mqtt_args(mosquitto))
    await worker.start()
    pids = [pid for pid in (await livez(worker))["pids"] if pid is not None]
    assert len(pids) == 2
    worker.signal(signal.SIGKILL)
    await worker.wait()
    await until(lambda: not any(alive(pid) for pid in pids), "both processes gone")


async def test_a_fatal_exit_stops_everything_with_its_code() -> None:
    # Nobody listens on the port: each process gives up by its startup timeout (exit 4), which
    # a restart would not fix.
    args = (
        "run", "tests.e2e.recorder", "--profile", "mqtt", "--host", "127.0.0.1", "--port", "1",
        "--org", "abc123", "--workers", "2", "--metrics-port", "0", "--startup-timeout", "1",
    )  # fmt: skip
    code, out, err = await asyncio.wait_for(run_cli(*args), PROCESS)
    assert code == 4, out + err
    assert "exited 4: stopping every process" in err


async def test_workers_need_the_shared_identity() -> None:
    code, _, err = await run_cli(
        "run", "tests.e2e.recorder", "--identity", "standalone", "--workers", "2"
    )
    assert code == 2
    assert "error: --workers 2 needs the shared identity" in err


async def test_a_bad_workers_value_says_what_is_accepted() -> None:
    code, _, err = await run_cli("run", "tests.e2e.recorder", "--workers", "0")
    assert code == 2
    assert "--workers='0': accepted is a whole number from 1 to 64" in err


async def test_sigterm_while_the_processes_start_stops_them_all_at_once(
    mosquitto: Mosquitto,
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "run", "tests.e2e.recorder",
        *mqtt_args(mosquitto, "--metrics-port", str(port)),
        cwd=ROOT, env=clean_env(), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip

    async def supervising() -> bool:
        try:
            status, _, _ = await fetch(port, "/livez")
        except OSError:
            return False
        return status == 200

    await until(supervising, "the supervisor answers")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # before every process is ready
    _, err = await asyncio.wait_for(proc.communicate(), PROCESS)
    assert proc.returncode == 0, err.decode()
    # Well within the drain timeout and grace after which a process would be killed.
    assert time.monotonic() - started < 10, err.decode()
