"""The Grafana dashboard parses, has unique ids, and queries only series that exist."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.binaries import installed

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "worker.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"

# Metrics of docs/observability.md; a histogram is exported as its _bucket, _sum and _count series.
EXPORTED = {
    "worker_messages_received_total",
    "worker_messages_handled_total",
    "worker_handler_seconds_bucket",
    "worker_handler_seconds_sum",
    "worker_handler_seconds_count",
    "worker_intake_depth",
    "worker_in_flight",
    "worker_messages_dropped_total",
    "worker_dead_letters_total",
    "worker_connected",
    "worker_subscribed",
    "worker_reconnects_total",
    "worker_info",
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Parts of an expression that hold label names, strings or durations rather than series.
NOT_SERIES = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # string literals
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # range selectors
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
]
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def recorded_names() -> set[str]:
    """The series the recording rules produce (read without a YAML parser on purpose)."""
    return set(re.findall(r"^\s*-?\s*record:\s*(\S+)\s*$", RULES.read_text(), re.MULTILINE))


def series_names(expr: str) -> set[str]:
    """The series an expression selects: identifiers that are not functions or keywords."""
    for pattern in NOT_SERIES:
        expr = pattern.sub(" ", expr)
    names = set()
    for match in IDENTIFIER.finditer(expr):
        is_call = expr[match.end() :].lstrip().startswith("(")
        if not is_call and match.group() not in KEYWORDS:
            names.add(match.group())
    return names


def load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def expressions(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in all_panels(doc["panels"]) for t in p.get("targets", [])]


def test_dashboard_parses_with_unique_ids_and_grafana_basics() -> None:
    doc = load()
    panels = list(all_panels(doc["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    assert doc["uid"] and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["app"]["type"] == "query"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(expressions(load()))
    for name in (
        "worker:load_share:ratio",
        "worker:messages_received:rate1m",
        "worker:handler_seconds:quantile5m",
        "worker:messages_handled:rate1m",
        "worker_intake_depth",
        "worker_in_flight",
        "worker_messages_dropped_total",
        "worker_reconnects_total",
        "worker_connected",
        "worker_subscribed",
    ):
        assert name in exprs, name


def test_every_expression_uses_only_exported_or_recorded_series() -> None:
    recorded = recorded_names()
    assert "worker:load_share:ratio" in recorded
    known = EXPORTED | recorded
    doc = load()
    for expr in expressions(doc):
        unknown = series_names(expr) - known
        assert not unknown, f"{expr!r} uses {sorted(unknown)}"
        if "worker_" in expr or "worker:" in expr:
            assert '$app"' in expr, f"{expr!r} ignores the app variable"
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            selected = re.fullmatch(r"label_values\(([A-Za-z_:][\w:]*), (\w+)\)", query)
            assert selected and selected.group(1) in known, query


def test_the_name_check_catches_a_typo() -> None:
    assert series_names('sum by (app) (rate(worker_recieved_total{app=~"$app"}[5m]))') == {
        "worker_recieved_total"
    }


@pytest.mark.promtool
def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel query, with Grafana's variables filled in as Grafana would."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(expressions(load())):
        concrete = expr.replace("$__rate_interval", "1m").replace("$app", ".+")
        lines += [
            f"      - record: dashboard:query_{number}",
            f"        expr: {json.dumps(concrete)}",
        ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text("\n".join(lines) + "\n")
    promtool = installed("promtool")
    out = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
