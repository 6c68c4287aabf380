"""deploy/compose.yaml: parses, runs valid ``worker`` commands with valid settings, and wires
Prometheus and Grafana to the workers, the rules and the dashboard."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.deploy.manifests import (
    ACCEPTED_ENVS,
    DASHBOARD,
    DEFAULT_METRICS_PORT,
    DEPLOY,
    RULES,
    Obj,
    load_compose,
)
from tests.support.binaries import installed
from worker.cli import main
from worker.config import load_settings

IMAGE = "worker:dev"
COMPOSE = load_compose()
SERVICES: dict[str, Obj] = COMPOSE["services"]
WORKER_SERVICES = sorted(n for n, s in SERVICES.items() if s.get("image") == IMAGE)
REPLICAS = sorted(n for n in WORKER_SERVICES if (SERVICES[n].get("command") or [""])[0] == "run")


def _env(service: Obj) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _mounts(service: Obj) -> dict[str, Path]:
    """Container path -> host path of the bind mounts (relative to deploy/)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = (DEPLOY / source).resolve()
    return mounts


def test_the_demo_has_its_services() -> None:
    assert {"platform", "simulator", "prometheus", "grafana"} <= set(SERVICES)
    assert len(REPLICAS) == 3, "three replicas of one application"
    build = SERVICES["platform"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve().is_file()


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_every_variable_is_a_setting_and_loads(name: str) -> None:
    env = _env(SERVICES[name])
    unknown = set(env) - ACCEPTED_ENVS
    assert not unknown, f"{name}: not settings (see worker/options.py): {sorted(unknown)}"
    if name == "platform":
        return
    settings = load_settings(env)
    assert settings.host == "platform" and not settings.tls
    assert settings.metrics_port == DEFAULT_METRICS_PORT


def test_replicas_share_one_client_id_with_distinct_instances() -> None:
    loaded = [load_settings(_env(SERVICES[n])) for n in REPLICAS]
    assert len({s.client_id for s in loaded}) == 1, "one scalable application A:org:app"
    assert loaded[0].client_id.startswith("A:")
    assert [s.instance for s in loaded] == REPLICAS
    for name, settings in zip(REPLICAS, loaded, strict=True):
        grace = SERVICES[name]["stop_grace_period"]
        assert grace.endswith("s") and settings.drain_timeout + 5 <= float(grace[:-1])


def test_the_replicas_key_is_one_the_platform_accepts() -> None:
    command = SERVICES["platform"]["command"]
    key, token = command[command.index("--api-key") + 1].split(":", 1)
    for name in REPLICAS:
        env = _env(SERVICES[name])
        assert (env["WIOTP_AUTH_KEY"], env["WIOTP_AUTH_TOKEN"]) == (key, token)
        assert int(env["WIOTP_OPTIONS_MQTT_PORT"]) == int(command[command.index("--port") + 1])


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_the_command_is_a_worker_command(name: str) -> None:
    command = [str(part) for part in SERVICES[name]["command"]]
    assert command[0] in main.commands, f"`worker {command[0]}` is not a worker command"
    # Options are parsed before --help acts, so an unknown flag still fails here.
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output


def test_prometheus_scrapes_every_worker_with_the_rules() -> None:
    service = SERVICES["prometheus"]
    mounts = _mounts(service)
    config_path = mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name in [*REPLICAS, "platform"]:
        assert f"{name}:{DEFAULT_METRICS_PORT}" in targets, name
    rules = [t for t, source in mounts.items() if source == RULES.resolve()]
    assert rules, "deploy/prometheus/rules.yaml is not mounted"
    assert any(PurePosixPath(rules[0]).match(glob) for glob in config["rule_files"])


@pytest.mark.promtool
def test_prometheus_config_passes_promtool() -> None:
    promtool = installed("promtool")
    path = _mounts(SERVICES["prometheus"])["/etc/prometheus/prometheus.yml"]
    out = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    mounts = _mounts(SERVICES["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    sources: Any = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers: Any = yaml.safe_load((provisioning / "dashboards" / "worker.yaml").read_text())
    (provider,) = providers["providers"]
    folder = PurePosixPath(provider["options"]["path"])
    dashboards = [t for t, source in mounts.items() if source == DASHBOARD.resolve()]
    assert dashboards and PurePosixPath(dashboards[0]).parent == folder
    assert DASHBOARD.is_file(), "deploy/grafana/worker.json is missing"
