"""The Dockerfile, read statically (no Docker engine here): stages, user, entry point, layers."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Final

from tests.deploy.manifests import DEFAULT_METRICS_PORT, ROOT

DOCKERFILE: Final = ROOT / "Dockerfile"


@dataclass
class Stage:
    """One FROM ... AS name section."""

    image: str
    name: str
    steps: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        """The arguments of every step of this instruction, in order."""
        return [a for i, a in self.steps if i == instruction]


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    steps = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            steps.append((instruction.upper(), rest.strip()))
    return steps


def _stages() -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction, rest in _instructions():
        if instruction == "ARG" and not stages and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
        elif instruction == "FROM":
            image, _, name = rest.partition(" AS ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image.strip())
            stages.append(Stage(image, name.strip()))
        else:
            assert stages, f"{instruction} before FROM"
            stages[-1].steps.append((instruction, rest))
    return args, stages


ARGS, STAGES = _stages()
FINAL = STAGES[-1]


def test_multi_stage_on_a_slim_supported_python() -> None:
    assert len(STAGES) >= 2 and all(s.name for s in STAGES)
    for stage in STAGES:
        match = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", stage.image)
        assert match and int(match.group(1)) >= 11, stage.image
    assert any(f"--from={STAGES[0].name}" in a for a in FINAL.args("COPY"))


def test_dependencies_are_a_layer_of_their_own_before_the_source() -> None:
    build = STAGES[0]
    order = [f"{i} {a}" for i, a in build.steps if i in {"COPY", "RUN"}]
    deps = next(n for n, step in enumerate(order) if "pip install -r" in step)
    first_copy = next(n for n, step in enumerate(order) if step.startswith("COPY"))
    source = next(n for n, step in enumerate(order) if "COPY worker/" in step)
    assert order[first_copy] == "COPY pyproject.toml ./", "only pyproject.toml before the deps"
    assert first_copy < deps < source
    assert any("--no-deps" in step for step in order[source:]), "the source layer adds no deps"


def test_uvloop_is_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(dep.startswith("uvloop") for dep in project["dependencies"])
    assert any("import uvloop" in a for a in STAGES[0].args("RUN"))


def test_runs_as_a_numeric_non_root_user() -> None:
    (user,) = FINAL.args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can verify it"


def test_entrypoint_cmd_signal_and_port() -> None:
    assert [json.loads(a) for a in FINAL.args("ENTRYPOINT")] == [["worker"]]
    assert [json.loads(a) for a in FINAL.args("CMD")] == [["run", "worker.examples.fleet"]]
    assert FINAL.args("STOPSIGNAL") == ["SIGTERM"]
    assert FINAL.args("EXPOSE") == [str(DEFAULT_METRICS_PORT)]
    (check,) = FINAL.args("HEALTHCHECK")
    assert "/livez" in check


def test_dockerignore_keeps_the_context_small() -> None:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    assert lines[0] == "**", "everything is excluded, then the inputs are allowed"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        a.split()[-2].rstrip("/")
        for stage in STAGES
        for a in stage.args("COPY")
        if not a.startswith("--from")
    }
    assert copied <= allowed, copied - allowed
