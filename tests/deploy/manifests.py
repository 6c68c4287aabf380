"""Shared helpers: render the kustomize trees and resolve a container's environment offline."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from worker.options import OPTIONS, default_of

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
K8S: Final = DEPLOY / "k8s"
TREES: Final = ("base", "overlays/wiotp", "overlays/mqtt")
RULES: Final = DEPLOY / "prometheus" / "rules.yaml"
DASHBOARD: Final = DEPLOY / "grafana" / "worker.json"

#: Every environment variable the settings accept.
ACCEPTED_ENVS: Final = frozenset(name for option in OPTIONS for name in option.envs)
DEFAULT_METRICS_PORT: Final = int(default_of("metrics_port"))
DEFAULT_DRAIN: Final = float(default_of("drain_timeout"))

#: What the tests put where a manifest reads a Secret: a well-formed key of org abc123.
PLACEHOLDER_SECRETS: Final = {
    "WIOTP_AUTH_KEY": "a-abc123-placeholder",
    "WIOTP_API_KEY": "a-abc123-placeholder",
    "WIOTP_AUTH_TOKEN": "placeholder-token",
    "WIOTP_API_TOKEN": "placeholder-token",
    "WORKER_PASSWORD": "placeholder-password",
}

Obj = dict[str, Any]


def kubectl() -> str:
    """The kubectl binary, or skip: kustomize rendering needs it."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: cannot render the kustomize trees")
    return path


@functools.cache
def _render(tree: str, binary: str) -> tuple[Obj, ...]:
    out = subprocess.run(
        [binary, "kustomize", str(K8S / tree)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {tree} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def render(tree: str) -> list[Obj]:
    """The objects ``kubectl kustomize deploy/k8s/{tree}`` renders."""
    return list(_render(tree, kubectl()))


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    """The objects of one kind."""
    return [o for o in objects if o.get("kind") == kind]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The single object of a kind (and name)."""
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def worker_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(Deployment, container) for every container running the worker image."""
    for deployment in of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container["image"].split(":")[0].endswith("worker"):
                yield deployment, container


def _data(obj: Obj) -> dict[str, str]:
    data = dict(obj.get("data") or {})
    data.update(obj.get("stringData") or {})
    return {str(k): str(v) for k, v in data.items()}


def env_names(objects: list[Obj], container: Obj) -> set[str]:
    """Every variable name a container gets, including the keys of envFrom sources."""
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            cm = one(objects, "ConfigMap", source["configMapRef"]["name"])
            names |= {prefix + k for k in _data(cm)}
        if "secretRef" in source:
            secret = one(objects, "Secret", source["secretRef"]["name"])
            names |= {prefix + k for k in _data(secret)}
    return names


def pod_name(deployment: Obj) -> str:
    """The longest name a pod of this Deployment gets: {name}-{10 characters}-{5 characters}."""
    return f"{deployment['metadata']['name']}-7d9f8c6b5d-x2x4q"


def resolve_env(objects: list[Obj], deployment: Obj, container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet would build it; Secrets become placeholders."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cm = one(objects, "ConfigMap", source["configMapRef"]["name"])
            env.update({source.get("prefix", "") + k: v for k, v in _data(cm).items()})
        if "secretRef" in source:
            secret = one(objects, "Secret", source["secretRef"]["name"])
            env.update(
                {source.get("prefix", "") + k: PLACEHOLDER_SECRETS[k] for k in _data(secret)}
            )
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            env[name] = PLACEHOLDER_SECRETS[name]
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[name] = _data(one(objects, "ConfigMap", key["name"]))[key["key"]]
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[name] = pod_name(deployment)
        else:
            raise AssertionError(f"{name}: unsupported valueFrom {ref}")
    return env


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a matchLabels selector (no expressions) selects these labels."""
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked"
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def load_compose() -> Obj:
    """deploy/compose.yaml, with its anchors and merge keys resolved."""
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data
