"""The benchmark harness still runs end to end (smallest mode, very few messages).

Benchmarks are not tests (see docs/performance.md): nothing here looks at a figure or a timing.
This only keeps ``python -m bench`` from rotting: every section starts its processes, moves
its messages, finishes within its deadlines and writes a report.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mosquitto import mosquitto_binary

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


@pytest.mark.timeout(120)
def test_bench_runs_every_section(tmp_path: Path) -> None:
    if mosquitto_binary() is None or shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto and mosquitto_sub are needed (scripts/system-deps.sh)")
    report = tmp_path / "BENCHMARKS.md"
    args = ["--quick", "--messages", "200", "--runs", "1", "--seconds", "0.5", "--qos", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--output", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = report.read_text()
    for heading in ("## Targets", "## Consumer throughput", "## End-to-end latency",
                    "## RSS under sustained overload", "## Routing cost", "## Shared group",
                    "## Local platform vs Mosquitto", "## Processes per pod",
                    "## MQTT 5"):  # fmt: skip
        assert heading in text, heading
    # The aiomqtt transport is held to the floor on the baseline's MQTT 3.1.1; 5 is shown.
    assert "| worker no-op, aiomqtt, QoS 1 (floor) |" in text
    assert "| worker no-op, aiomqtt, MQTT 5 | 1 |" in text
    assert "aiomqtt, MQTT 5, QoS 1 (floor)" not in text
