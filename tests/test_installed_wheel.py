"""The built wheel, installed into a fresh virtual environment outside the checkout, works.

What a user gets from installing the wheel with its ``test`` extra: the commands, the example
application the demo runs (it ships in the package), the testing toolkit, and nothing of the
repository around it (tests, bench). Everything runs from a temporary folder with a clean
environment, so nothing in the checkout can be imported by accident.

The last test is a newcomer's first hour, step by step: a handler module of their own run as a
file, two replicas of it on the local platform with distinct instance names, the simulator
refused (and told how to give devices tokens) and then publishing hot readings in a range,
``worker subscribe`` watching the commands go out, and the user's own tests with the minimal
pytest configuration.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from worker import __version__

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
#: building the wheel and installing its dependencies from the package index
INSTALL_DEADLINE = 600.0
#: one command of the installed package (the demo runs for 15 s of phases)
COMMAND_DEADLINE = 120.0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True, timeout=INSTALL_DEADLINE,
    )  # fmt: skip
    [built] = out.glob("worker-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a new virtual environment with the wheel installed."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "-q"]
    # [test]: what a user installs to test their handlers (pytest, pytest-asyncio)
    subprocess.run([*pip, "--disable-pip-version-check", f"{wheel}[test]"], check=True,
                   timeout=INSTALL_DEADLINE)  # fmt: skip
    return folder / "bin"


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """This environment without settings or PYTHONPATH, the venv first on PATH, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIOTP_", "WORKER_"))}
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{venv}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(venv)
    return subprocess.run(
        [str(venv / "worker"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=COMMAND_DEADLINE,
    )  # fmt: skip


def test_the_wheel_holds_the_package_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "worker/examples/fleet.py" in names
    assert "worker/py.typed" in names
    strays = [n for n in names if not n.startswith(("worker/", "worker-"))]
    assert strays == []


def test_version_and_check_from_another_folder(venv: Path, tmp_path: Path) -> None:
    version = run(venv, tmp_path, "--version")
    assert version.returncode == 0, version.stderr
    assert __version__ in version.stdout
    check = run(venv, tmp_path, "check", "--org", "abc123", "--identity", "standalone")
    assert check.returncode == 0, check.stderr
    assert "client ID: a:abc123:worker" in check.stdout


def test_the_demo_runs_from_another_folder(venv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    demo = run(venv, tmp_path, "demo", "--no-live", "--duration", "15", "--rate", "80",
               "--out", str(out))  # fmt: skip
    assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}"
    assert (out / "demo.json").is_file()
    assert "exactly once" in demo.stdout.lower() or "lost 0" in demo.stdout.lower(), demo.stdout


# --- the first hour ----------------------------------------------------------------------

HANDLERS = """
from worker import App, Event

app = App()
readings: list[float] = []


@app.event(device_type="sensor", event="reading")
async def on_reading(event: Event) -> None:
    readings.append(event.data["temp"])
    if event.data["temp"] > 80:
        await app.publish_command(event.device_type, event.device_id, "alert", {"hot": True})
"""

USER_TESTS = """
from fleet import app
from worker.testing import TestClient


async def test_a_hot_reading_sends_an_alert() -> None:
    async with TestClient(app) as client:
        result = await client.send_event("sensor", "s1", "reading", {"temp": 95})
    assert result.ok
    assert [c.command for c in client.commands] == ["alert"]


async def test_on_the_local_platform(platform, running_app) -> None:
    serving = await running_app(app)
    async with platform.device_client("sensor", "s2") as device:
        await device.publish("iot-2/evt/reading/fmt/json", b'{"temp": 20}', qos=1)
        [handled] = await serving.handled(1, route="on_reading")
    assert handled.outcome == "ok"
"""

#: the pytest configuration docs/guide/testing.md calls minimal
MINIMAL_PYTEST = """
[tool.pytest.ini_options]
asyncio_mode = "auto"
worker_fixtures = true
"""

API_KEY, TOKEN = "a-abc123-k1x", "secret"


class Started:
    """A long-running command of the installed package, and what it printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line_with(self, text: str, stream: str = "stdout") -> str:
        """The first line holding ``text`` on ``stream``, within the command deadline."""
        reader = self.proc.stdout if stream == "stdout" else self.proc.stderr
        assert reader is not None
        async with asyncio.timeout(COMMAND_DEADLINE):
            while True:
                raw = await reader.readline()
                assert raw, f"{stream} ended before a line with {text!r}"
                if text in raw.decode():
                    return raw.decode().strip()

    async def stop(self) -> int:
        """SIGTERM; the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(COMMAND_DEADLINE):
            await self.proc.communicate()
        assert self.proc.returncode is not None
        return self.proc.returncode


async def start(venv: Path, cwd: Path, *args: str, env: dict[str, str]) -> Started:
    proc = await asyncio.create_subprocess_exec(
        str(venv / "worker"), *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return Started(proc)


async def finish(cwd: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run a command of the venv to its end without blocking the loop: (code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(COMMAND_DEADLINE):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def instance_of(metrics_url: str) -> str:
    """The ``instance`` label of a worker's worker_info, read from its /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=COMMAND_DEADLINE) as answer:
        text = answer.read().decode()
    found = re.search(r'^worker_info\{[^}]*instance="([^"]+)"', text, re.MULTILINE)
    assert found, text
    return found.group(1)


async def test_a_newcomers_first_hour(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "fleet.py").write_text(HANDLERS)
    (tmp_path / "test_fleet.py").write_text(USER_TESTS)
    (tmp_path / "pyproject.toml").write_text(MINIMAL_PYTEST)
    env = clean_env(venv)
    started: list[Started] = []
    try:
        # The local platform, as the README starts it: one API key, no device tokens.
        platform = await start(
            venv, tmp_path, "platform", "--port", "0", "--api-key", f"{API_KEY}:{TOKEN}",
            env=env,
        )  # fmt: skip
        started.append(platform)
        port = (await platform.line_with("mqtt://127.0.0.1:")).rsplit(":", 1)[1]
        login = env | {
            "WIOTP_AUTH_KEY": API_KEY, "WIOTP_AUTH_TOKEN": TOKEN, "WORKER_HOST": "127.0.0.1",
            "WIOTP_OPTIONS_MQTT_PORT": port, "WIOTP_IDENTITY_APPID": "fleet",
        }  # fmt: skip

        # Two replicas of the handler module, given as file paths, no --instance.
        replicas = [
            await start(venv, tmp_path, "run", target, "--metrics-port", "0", env=login)
            for target in ("fleet.py", "./fleet.py")
        ]
        started += replicas
        urls = []
        for replica in replicas:
            ready = await replica.line_with("worker ready")
            urls.append(re.search(r"metrics (http://\S+/metrics)", ready).group(1))  # type: ignore[union-attr]
        names = [instance_of(url) for url in urls]
        assert names[0] != names[1], names

        # The simulator as devices: refused, one line that says how to give them tokens.
        code, _, err = await finish(
            tmp_path, str(venv / "worker"), "simulate", "--count", "1", "--host",
            "127.0.0.1", "--port", port, "--auth-key", API_KEY, "--auth-token", TOKEN, env=env,
        )  # fmt: skip
        assert code == 4, err
        assert err.count("\n") == 1 and "--accept-any-key" in err, err

        # Watch the commands while the simulator, as the application, sends hot readings.
        watcher = await start(venv, tmp_path, "subscribe", "iot-2/type/+/id/+/cmd/+/fmt/+",
                              "--count", "1", env=login)  # fmt: skip
        started.append(watcher)
        await watcher.line_with("subscribed to", stream="stderr")
        code, _, err = await finish(
            tmp_path, str(venv / "worker"), "simulate", "--as", "app", "--types", "sensor",
            "--count", "20", "--rate", "0", "--temp-range", "85:95", "--host", "127.0.0.1",
            "--port", port, "--auth-key", API_KEY, "--auth-token", TOKEN, env=env,
        )  # fmt: skip
        assert code == 0, err
        command = await watcher.line_with("/cmd/alert/fmt/json")
        assert command.startswith("iot-2/type/sensor/id/sensor-") and '{"hot":true}' in command

        # The user's own tests, with the minimal pytest configuration.
        code, out, err = await finish(
            tmp_path, str(venv / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
            env=env,
        )  # fmt: skip
        assert code == 0, out + err
        assert "2 passed" in out

        for replica in replicas:
            assert await replica.stop() == 0
    finally:
        for process in reversed(started):
            if process.proc.returncode is None:
                process.proc.kill()
                await process.proc.wait()
