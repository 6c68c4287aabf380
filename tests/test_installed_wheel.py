"""The built wheel, installed into a fresh virtual environment outside the checkout, works.

What a user gets from ``pip install worker``: the commands, the example application the demo
runs (it ships in the package), and nothing of the repository around it (tests, bench).
Everything runs from a temporary folder with a clean environment, so nothing in the
checkout can be imported by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    subprocess.run([*pip, "--disable-pip-version-check", str(wheel)], check=True,
                   timeout=INSTALL_DEADLINE)  # fmt: skip
    return folder / "bin"


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WIOTP_", "WORKER_"))}
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{venv}{os.pathsep}{env.get('PATH', '')}"
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
