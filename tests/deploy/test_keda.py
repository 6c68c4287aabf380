"""The KEDA overlays: the ScaledObject checked offline against KEDA's own CRD schema, and its
numbers tied to the Deployment, the settings and the recording rules they depend on."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Final

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.manifests import (
    RULES,
    Obj,
    of_kind,
    one,
    render,
    resolve_env,
    worker_containers,
)
from worker.saturation import families

KEDA_TREES: Final = ("overlays/keda", "overlays/keda-metrics-api")
SCHEMA_FILE: Final = Path(__file__).parent / "schemas" / "keda-scaledobject-2.20.2.yaml"
K8S_VERSION: Final = "1.30.0"
#: the saturation the replicas are sized for (docs/scaling.md; rules.yaml records the same)
TARGET: Final = 0.7


def scaledobject_schema() -> dict[str, Any]:
    """The openAPIV3Schema of KEDA's ScaledObject, strict: unknown fields are errors.

    The API server drops (or, with strict field validation, refuses) fields a CRD does not
    declare; JSON Schema allows them unless told otherwise, so every object that lists its
    properties and does not preserve unknown fields gets ``additionalProperties: false``.
    """
    crd = next(d for d in yaml.safe_load_all(SCHEMA_FILE.read_text(encoding="utf-8")) if d)
    (version,) = crd["spec"]["versions"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    _close(schema)
    return dict(schema)


def _close(node: Any) -> None:
    if isinstance(node, dict):
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for item in node:
            _close(item)


@pytest.fixture(params=KEDA_TREES)
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    """The rendered objects of one KEDA overlay."""
    return render(request.param)


def config(objects: list[Obj]) -> dict[str, str]:
    """The worker container's environment, as the kubelet would build it."""
    ((deployment, container),) = worker_containers(objects)
    return resolve_env(objects, deployment, container)


def test_the_scaledobject_matches_kedas_crd_schema(objects: list[Obj]) -> None:
    scaled = one(objects, "ScaledObject", "worker")
    jsonschema.validate(scaled, scaledobject_schema())


def test_the_schema_check_refuses_a_misspelt_field(objects: list[Obj]) -> None:
    scaled = copy.deepcopy(one(objects, "ScaledObject", "worker"))
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        jsonschema.validate(scaled, scaledobject_schema())


def test_the_other_objects_match_the_kubernetes_schemas(objects: list[Obj]) -> None:
    for obj in objects:
        if obj["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_keda_owns_the_autoscaler_of_the_deployment(objects: list[Obj]) -> None:
    # Two autoscalers on one Deployment would fight: the base's CPU-based HPA is gone.
    assert of_kind(objects, "HorizontalPodAutoscaler") == []
    scaled = one(objects, "ScaledObject", "worker")
    target = scaled["spec"]["scaleTargetRef"]
    deployment = one(objects, "Deployment", target["name"])
    assert target.get("kind", "Deployment") == "Deployment"
    assert scaled["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"] <= 50


def test_scale_down_gives_each_draining_pod_its_grace_period(objects: list[Obj]) -> None:
    scaled = one(objects, "ScaledObject", "worker")
    down = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    pod = one(objects, "Deployment", "worker")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert float(config(objects)["WORKER_DRAIN_TIMEOUT"]) < grace
    # At most one pod per period, and a period no shorter than a pod's whole grace period.
    assert down["selectPolicy"] == "Min"
    for policy in down["policies"]:
        assert policy == {"type": "Pods", "value": 1, "periodSeconds": policy["periodSeconds"]}
        assert policy["periodSeconds"] >= grace
    assert down["stabilizationWindowSeconds"] >= 60


def test_the_threshold_is_the_target_share_of_a_replicas_lanes(objects: list[Obj]) -> None:
    triggers = one(objects, "ScaledObject", "worker")["spec"]["triggers"]
    (trigger,) = [t for t in triggers if t["name"] == "busy-lanes"]
    lanes = int(config(objects)["WORKER_CONCURRENCY"])
    threshold = trigger["metadata"].get("threshold") or trigger["metadata"]["targetValue"]
    assert math.isclose(float(threshold), TARGET * lanes)
    # AverageValue: replicas = ceil(total busy lanes / threshold), the recorded desired count.
    assert trigger["metricType"] == "AverageValue"


def test_the_prometheus_trigger_reads_a_recorded_series_of_this_app() -> None:
    objects = render("overlays/keda")
    busy, lag = one(objects, "ScaledObject", "worker")["spec"]["triggers"]
    assert busy["type"] == lag["type"] == "prometheus"
    recorded = {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    assert {"worker:app_busy_lanes:rate1m", "worker:app_handling_lag:max"} <= recorded
    app = config(objects)["WIOTP_IDENTITY_APPID"]
    assert busy["metadata"]["query"] == f'sum(worker:app_busy_lanes:rate1m{{app="{app}"}})'
    # The lag trigger scales with the replicas (Value), and only once lag passes its threshold.
    assert lag["metricType"] == "Value"
    assert lag["metadata"]["query"] == f'max(worker:app_handling_lag:max{{app="{app}"}})'
    assert float(lag["metadata"]["threshold"]) > 0


def test_the_metrics_api_trigger_sums_a_gauge_every_pod_serves() -> None:
    objects = render("overlays/keda-metrics-api")
    (trigger,) = one(objects, "ScaledObject", "worker")["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "metrics-api"
    assert meta["format"] == "prometheus"
    assert meta["aggregateFromKubeServiceEndpoints"] == "true"
    assert meta["aggregationType"] == "sum"
    assert meta["valueLocation"] in {family.name for family in families(16, 0.0)}
    service = one(objects, "Service", "worker-metrics")
    namespace = service["metadata"]["namespace"]
    (port,) = service["spec"]["ports"]
    assert meta["url"] == f"http://worker-metrics.{namespace}.svc:{port['port']}/metrics"
    assert config(objects)["WORKER_METRICS_PORT"] == str(port["port"])
