"""The kustomize base and overlays, rendered with ``kubectl kustomize`` and checked offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from click.testing import CliRunner

from tests.deploy.manifests import (
    ACCEPTED_ENVS,
    DASHBOARD,
    DEFAULT_METRICS_PORT,
    ROOT,
    RULES,
    TREES,
    Obj,
    env_names,
    of_kind,
    one,
    pod_name,
    render,
    resolve_env,
    selector_matches,
    worker_containers,
)
from tests.support.binaries import installed
from worker.cli import main
from worker.config import load_settings
from worker.errors import ConfigError
from worker.options import Profile

#: The Kubernetes version whose bundled schemas the objects are checked against.
K8S_VERSION = "1.30.0"
OPERATOR_API = "monitoring.coreos.com/v1"
#: Fields of the prometheus-operator CRDs (v0.7x) used or allowed here.
PODMONITOR_SPEC = {
    "jobLabel", "podTargetLabels", "podMetricsEndpoints", "selector", "namespaceSelector",
    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
    "keepDroppedTargets", "attachMetadata", "scrapeProtocols", "scrapeClass", "bodySizeLimit",
}  # fmt: skip
ENDPOINT = {
    "port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
    "honorLabels", "honorTimestamps", "trackTimestampsStaleness", "metricRelabelings",
    "relabelings", "proxyUrl", "enableHttp2", "filterRunning", "followRedirects", "basicAuth",
    "bearerTokenSecret", "oauth2", "authorization", "tlsConfig",
}  # fmt: skip
RELABEL = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
RULE_GROUP = {"name", "interval", "rules", "partial_response_strategy", "limit", "query_offset"}
RULE = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
#: The Dockerfile's USER.
IMAGE_UID = 10001


@pytest.fixture(params=TREES)
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    """The rendered objects of one tree."""
    return render(request.param)


def workers(objects: list[Obj]) -> list[tuple[Obj, Obj]]:
    """The worker containers, at least one."""
    found = list(worker_containers(objects))
    assert found, "no Deployment runs the worker image"
    return found


def test_builtin_objects_match_the_kubernetes_schemas(objects: list[Obj]) -> None:
    checked = 0
    for obj in objects:
        if obj["apiVersion"] == OPERATOR_API:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 6


def test_the_schema_check_catches_mistakes() -> None:
    """Guard against a validator that accepts anything (unknown field, wrong type)."""
    deployment = one(render("base"), "Deployment", "worker")
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["replicas"] = "3"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_every_variable_is_a_setting(objects: list[Obj]) -> None:
    for _, container in workers(objects):
        unknown = env_names(objects, container) - ACCEPTED_ENVS
        assert not unknown, f"not settings (see worker/options.py): {sorted(unknown)}"


def test_the_rendered_environment_is_valid_settings(objects: list[Obj]) -> None:
    for deployment, container in workers(objects):
        env = resolve_env(objects, deployment, container)
        settings = load_settings(env)
        assert settings.instance == pod_name(deployment), "WORKER_INSTANCE from the pod name"
        assert settings.qos == 1


def test_the_container_runs_a_worker_command(objects: list[Obj]) -> None:
    for _, container in workers(objects):
        assert "command" not in container, "the image's ENTRYPOINT is worker"
        args = [str(a) for a in container["args"]]
        assert args[0] in main.commands, f"`worker {args[0]}` is not a worker command"
        result = CliRunner().invoke(main, [*args, "--help"])
        assert result.exit_code == 0, result.output


def test_wiotp_overlay_connects_to_ibm_with_tls() -> None:
    objects = render("overlays/wiotp")
    ((deployment, container),) = workers(objects)
    settings = load_settings(resolve_env(objects, deployment, container))
    assert settings.profile is Profile.WIOTP
    assert settings.client_id == "A:abc123:worker"
    assert settings.host == "abc123.messaging.internetofthings.ibmcloud.com"
    assert (settings.port, settings.tls) == (8883, True)
    secret = one(objects, "Secret", "worker-credentials")
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
        and e["valueFrom"]["secretKeyRef"]["name"] == "worker-credentials"
    }
    assert refs == {"WIOTP_AUTH_KEY", "WIOTP_AUTH_TOKEN"} <= set(secret["stringData"])


def test_the_committed_secret_is_a_placeholder_the_worker_refuses() -> None:
    """Applying the overlay unedited fails at start (exit 2) instead of using a shared key."""
    objects = render("overlays/wiotp")
    ((deployment, container),) = workers(objects)
    env = resolve_env(objects, deployment, container)
    env.update(one(objects, "Secret", "worker-credentials")["stringData"])
    with pytest.raises(ConfigError, match="WIOTP_AUTH_KEY"):
        load_settings(env)


def test_mqtt_overlay_uses_the_in_cluster_broker_with_a_share_group() -> None:
    objects = render("overlays/mqtt")
    ((deployment, container),) = workers(objects)
    names = {e["name"] for e in container["env"]}
    assert not names & {"WIOTP_AUTH_KEY", "WIOTP_AUTH_TOKEN"}, "no IBM key on a standard broker"
    settings = load_settings(resolve_env(objects, deployment, container))
    assert settings.profile is Profile.MQTT
    assert settings.share_group == "myorg1:worker"
    assert settings.client_id == f"worker-{pod_name(deployment)}", "unique client IDs (S10)"
    service = one(objects, "Service", settings.host)
    assert settings.port in {p["port"] for p in service["spec"]["ports"]}
    broker = one(objects, "StatefulSet", "emqx")
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, _pod_labels(broker))
    env = {
        e["name"]: e.get("value")
        for e in broker["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["EMQX_MQTT__SHARED_SUBSCRIPTION_STRATEGY"] in {
        "random", "round_robin", "round_robin_per_group", "sticky", "local", "hash_clientid",
        "hash_topic",
    }  # fmt: skip


def _pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _port_by_name(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in ports, f"no container port named {port!r}"
    return int(ports[port])


def test_probes_use_livez_and_readyz_on_the_metrics_port(objects: list[Obj]) -> None:
    for deployment, container in workers(objects):
        settings = load_settings(resolve_env(objects, deployment, container))
        assert settings.metrics_port == DEFAULT_METRICS_PORT
        paths = {}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert _port_by_name(container, get["port"]) == DEFAULT_METRICS_PORT, probe
            paths[probe] = get["path"]
        assert paths["livenessProbe"] == "/livez"
        assert paths["readinessProbe"] == "/readyz"
        assert paths["startupProbe"] in {"/livez", "/readyz"}


def test_the_drain_ends_before_kubernetes_kills_the_pod(objects: list[Obj]) -> None:
    for deployment, container in workers(objects):
        settings = load_settings(resolve_env(objects, deployment, container))
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        # Room after the drain for the unsubscribe, the acks and the DISCONNECT.
        assert settings.drain_timeout + 5 <= grace, (settings.drain_timeout, grace)
        assert "preStop" not in container.get("lifecycle", {}), "a preStop hook delays SIGTERM"


def test_pod_names_are_legal_instance_ids(objects: list[Obj]) -> None:
    for deployment, _ in workers(objects):
        # The ReplicaSet hash is up to 10 characters and the pod suffix 5.
        assert len(pod_name(deployment)) <= 36, "shorten the Deployment name (max 19)"


def test_the_pod_is_locked_down(objects: list[Obj]) -> None:
    for deployment, container in workers(objects):
        pod = deployment["spec"]["template"]["spec"]
        pod_sc, sc = pod.get("securityContext", {}), container["securityContext"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
        assert sc.get("runAsUser", pod_sc.get("runAsUser")) == IMAGE_UID
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile"))
        assert seccomp == {"type": "RuntimeDefault"}
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), "the HPA needs a CPU request"
        assert "memory" in resources["limits"]


def test_replicas_disruption_budget_and_autoscaler(objects: list[Obj]) -> None:
    for deployment, _ in workers(objects):
        labels = _pod_labels(deployment)
        assert selector_matches(deployment["spec"]["selector"], labels)
        assert deployment["spec"]["replicas"] == 3
        pdb = one(objects, "PodDisruptionBudget")
        assert selector_matches(pdb["spec"]["selector"], labels)
        hpa = one(objects, "HorizontalPodAutoscaler")
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
        # IBM: at most 50 instances per shared application (docs/platform/rules.md, W29).
        assert hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"] <= 50
        kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert kinds["Resource"]["resource"]["name"] == "cpu"


def test_service_and_podmonitor_reach_the_metrics_port(objects: list[Obj]) -> None:
    ((deployment, container),) = workers(objects)
    labels = _pod_labels(deployment)
    service = one(objects, "Service", "worker-metrics")
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, labels)
    for port in service["spec"]["ports"]:
        assert _port_by_name(container, port["targetPort"]) == DEFAULT_METRICS_PORT

    monitor = one(objects, "PodMonitor")
    assert monitor["apiVersion"] == OPERATOR_API
    spec = monitor["spec"]
    assert set(spec) <= PODMONITOR_SPEC, set(spec) - PODMONITOR_SPEC
    assert selector_matches(spec["selector"], labels), "the PodMonitor selects no worker pod"
    assert spec["podMetricsEndpoints"]
    for endpoint in spec["podMetricsEndpoints"]:
        assert set(endpoint) <= ENDPOINT, set(endpoint) - ENDPOINT
        assert _port_by_name(container, endpoint["port"]) == DEFAULT_METRICS_PORT
        assert endpoint.get("path", "/metrics") == "/metrics"
        for relabel in endpoint.get("relabelings", []):
            assert set(relabel) <= RELABEL, set(relabel) - RELABEL


def test_prometheusrule_carries_the_rules_file(objects: list[Obj]) -> None:
    rule = one(objects, "PrometheusRule")
    assert rule["apiVersion"] == OPERATOR_API
    assert set(rule["spec"]) == {"groups"}
    groups = rule["spec"]["groups"]
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)), "group names must be unique"
    for group in groups:
        assert set(group) <= RULE_GROUP, set(group) - RULE_GROUP
        for item in group["rules"]:
            assert set(item) <= RULE, set(item) - RULE
            assert ("record" in item) != ("alert" in item), item
            assert isinstance(item["expr"], str) and item["expr"].strip()
            for key in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in item.get(key, {}).values()), item
    source = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert groups == source["groups"], "run: python scripts/render_monitoring.py"


def test_grafana_dashboard_configmap(objects: list[Obj]) -> None:
    cm = one(objects, "ConfigMap", "worker-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(cm["data"]["worker.json"])
    assert shipped == json.loads(DASHBOARD.read_text(encoding="utf-8"))


def test_generated_monitoring_files_are_up_to_date() -> None:
    missing = [p.relative_to(ROOT).as_posix() for p in (RULES, DASHBOARD) if not p.is_file()]
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_monitoring.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert not missing, f"missing (scripts/render_monitoring.py writes them): {missing}"


@pytest.mark.promtool
def test_the_shipped_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = installed("promtool")
    rule = one(render("base"), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    out = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_tree_renders() -> None:
    rendered: dict[str, Any] = {tree: render(tree) for tree in TREES}
    for tree, objects in rendered.items():
        kinds = {o["kind"] for o in objects}
        assert {"Deployment", "PodMonitor", "PrometheusRule", "HorizontalPodAutoscaler"} <= kinds
        assert of_kind(objects, "ConfigMap"), tree
