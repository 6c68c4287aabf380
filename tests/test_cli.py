"""The ``worker`` command as a user runs it: a real process, its output and exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import worker
from tests.support.credentials import STRONG_TOKEN

KEY = {"WIOTP_AUTH_KEY": "a-abc123-k1x", "WIOTP_AUTH_TOKEN": STRONG_TOKEN}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WIOTP_", "WORKER_"))}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == f"worker, version {worker.__version__}"
    out = run("--help")
    assert out.returncode == 0 and "check" in out.stdout


def test_check_prints_the_resolved_identity_with_secrets_masked() -> None:
    out = run("check", "--app-id", "myApplication", env=KEY)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines())
    assert lines["client ID"].strip() == "A:abc123:myApplication"
    assert lines["host"].strip() == "abc123.messaging.internetofthings.ibmcloud.com"
    assert lines["port"].strip() == "8883"
    assert lines["TLS"].strip().startswith("yes")
    assert lines["MQTT"].strip() == "3.1.1"  # IBM's platform speaks 3.x
    assert lines["profile"].strip() == "wiotp"
    assert lines["identity"].strip() == "shared"
    assert "instance" in lines
    assert KEY["WIOTP_AUTH_TOKEN"] not in out.stdout + out.stderr


def test_check_shows_the_mqtt_version_of_the_profile() -> None:
    out = run("check", "--profile", "mqtt", "--org", "abc123", "--host", "broker")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(":", 1) for line in out.stdout.splitlines())
    assert lines["MQTT"].strip() == "5"


def test_check_reports_every_problem_and_exits_2() -> None:
    out = run(
        "check",
        "--qos",
        "5",
        env={**KEY, "WIOTP_IDENTITY_APPID": "my app", "WIOTP_OPTIONS_MQTT_PORT": "http"},
    )
    assert out.returncode == 2
    assert out.stdout == ""
    errors = out.stderr.splitlines()
    assert (
        "error: WIOTP_IDENTITY_APPID='my app': allowed are 1-36 of letters, digits, '-', "
        "'_', '.'" in errors
    )
    assert "error: WIOTP_OPTIONS_MQTT_PORT='http': accepted is a whole number from 1 to 65535" in (
        errors
    )
    assert any(line.startswith("error: --qos='5'") for line in errors)
    assert "Traceback" not in out.stderr


def test_check_without_credentials_explains_quickstart() -> None:
    out = run("check")
    assert out.returncode == 2
    assert "quickstart does not support scalable applications" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_flag_is_a_usage_error() -> None:
    out = run("check", "--colour", "blue")
    assert out.returncode == 2
    assert "No such option" in out.stderr
