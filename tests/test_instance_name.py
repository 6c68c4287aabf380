"""The default instance name: unique per process on one machine, stable per pod on Kubernetes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from worker import topics
from worker.config import default_instance, load_settings

MQTT = {"WORKER_PROFILE": "mqtt", "WORKER_ORG": "myorg1"}


def _check(env: dict[str, str]) -> dict[str, str]:
    """``worker check`` in a process of its own: its rows."""
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "check"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = (line.split(":", 1) for line in done.stdout.splitlines())
    return {key.strip(): value.strip() for key, value in rows}


def test_two_processes_on_one_machine_get_distinct_instances_and_client_ids() -> None:
    clean = dict.fromkeys(("WORKER_INSTANCE", "KUBERNETES_SERVICE_HOST"), "")
    first, second = _check(MQTT | clean), _check(MQTT | clean)
    assert first["instance"] != second["instance"]
    assert first["client ID"] != second["client ID"]


def test_outside_kubernetes_the_name_is_host_and_process_id() -> None:
    host = socket.gethostname()
    name = default_instance({})
    assert name.endswith(f"-{os.getpid()}")
    assert name.startswith(host.replace(".", "-")[:8])
    assert load_settings(env=MQTT).instance == name


def test_in_kubernetes_the_name_is_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "worker-7d9f8c6b5d-x2x4q")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    # The same in every process of the pod (no process ID): stable for the pod's life.
    assert default_instance(env) == "worker-7d9f8c6b5d-x2x4q"


def test_a_long_host_name_keeps_the_process_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 80)
    name = default_instance({})
    assert len(name) <= topics.NAME_MAX
    assert name.endswith(f"-{os.getpid()}")


def test_an_explicit_instance_wins() -> None:
    assert load_settings(env=MQTT | {"WORKER_INSTANCE": "r1"}).instance == "r1"
