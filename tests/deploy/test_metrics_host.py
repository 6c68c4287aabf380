"""The metrics server listens on loopback by default; the deploy files open it on purpose."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import (
    TREES,
    load_compose,
    render,
    resolve_env,
    worker_containers,
)
from worker.config import load_settings
from worker.options import by_field


def test_the_default_metrics_host_is_loopback() -> None:
    assert by_field("metrics_host").default == "127.0.0.1"
    assert load_settings(env={"WORKER_ORG": "abc123"}).metrics_host == "127.0.0.1"


@pytest.mark.parametrize("tree", TREES)
def test_kubernetes_manifests_set_the_metrics_host_explicitly(tree: str) -> None:
    objects = render(tree)
    found = list(worker_containers(objects))
    assert found
    for deployment, container in found:
        env = resolve_env(objects, deployment, container)
        # The kubelet's probes and Prometheus reach the pod's IP, not its loopback.
        assert env.get("WORKER_METRICS_HOST") == "0.0.0.0"
        assert load_settings(env=env).metrics_host == "0.0.0.0"


def test_compose_workers_set_the_metrics_host_explicitly() -> None:
    services = load_compose()["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    assert workers
    for name, service in workers.items():
        assert service["environment"].get("WORKER_METRICS_HOST") == "0.0.0.0", name
