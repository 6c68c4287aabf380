"""What ``worker run`` prints: the ready line once, also when stdout and stderr share a file."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.support.credentials import API_KEY, TOKEN
from tests.support.platform import platform_config
from tests.support.processes import ROOT, clean_env
from tests.support.waiting import PROCESS, until
from worker.platform import Platform


async def test_the_ready_line_is_printed_once_when_both_streams_share_a_file(
    tmp_path: Path,
) -> None:
    out = tmp_path / "worker.out"
    async with Platform(platform_config()) as platform:
        with out.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "worker.cli", "run", "worker.examples.fleet",
                "--auth-key", API_KEY, "--auth-token", TOKEN, "--host", "127.0.0.1",
                "--port", str(platform.port), "--metrics-port", "0",
                cwd=ROOT, env=clean_env(), stdout=sink, stderr=sink,
            )  # fmt: skip
        try:
            await until(lambda: "worker ready" in out.read_text(), "the ready line")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), PROCESS) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = out.read_text()
    assert text.count("worker ready") == 1, text
