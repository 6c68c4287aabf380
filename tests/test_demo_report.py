"""The demo's verdicts, table, JSON and chart, from plain data."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from worker import cli
from worker.errors import ConfigError
from worker.tools.demo import PHASES, DemoConfig, DemoResult
from worker.tools.demo_broker import from_url
from worker.tools.demo_report import (
    PhaseResult,
    Shares,
    chart_svg,
    check_delivery,
    read_ledger,
    results_json,
    table,
)

NAMES = ["demo-1", "demo-2", "demo-3"]
SVG = "{http://www.w3.org/2000/svg}"


def phase(expected: list[float | None], measured: list[float | None]) -> PhaseResult:
    return PhaseResult(
        "three instances",
        "they share",
        dict(zip(NAMES, expected, strict=True)),
        dict(zip(NAMES, measured, strict=True)),
    )


def test_a_phase_holds_within_ten_points() -> None:
    assert phase([1 / 3] * 3, [0.40, 0.30, 0.30]).ok
    missed = phase([1 / 3] * 3, [0.45, 0.30, 0.25])
    assert not missed.ok and missed.misses == ["demo-1"]


def test_instances_not_expected_to_run_are_not_judged() -> None:
    assert phase([1.0, None, None], [1.0, None, None]).ok
    assert not phase([0.5, 0.5, None], [1.0, None, None]).ok  # demo-2 was not measured at all


def test_delivery_finds_loss_duplicates_and_strangers() -> None:
    good = check_delivery(range(6), [], {"a": [0, 2, 4], "b": [1, 3, 5]})
    assert good.ok and good.handled == 6 and good.per_instance == {"a": 3, "b": 3}
    assert "each handled exactly once" in good.summary()
    # One lost and one duplicated: the totals agree, the check does not.
    bad = check_delivery(range(6), [], {"a": [0, 2, 4], "b": [1, 3, 3]})
    assert (bad.lost, bad.duplicates, bad.unexpected) == ([5], [3], [])
    assert not bad.ok and "1 lost" in bad.summary() and "more than once" in bad.summary()
    stranger = check_delivery(range(2), [], {"a": [0, 1, 9]})
    assert stranger.unexpected == [9] and not stranger.ok


def test_a_failed_publish_may_arrive_once_but_not_twice() -> None:
    assert check_delivery([0, 1], [2], {"a": [0, 1, 2]}).ok
    assert check_delivery([0, 1], [2], {"a": [0, 1]}).ok
    assert check_delivery([0, 1], [2], {"a": [0, 1, 2], "b": [2]}).duplicates == [2]


def test_ledger_reads_whole_lines_only(tmp_path: Path) -> None:
    ledger = tmp_path / "x.ledger"
    ledger.write_text("1\n2\n3")  # the last line was being written
    assert read_ledger(ledger) == [1, 2]
    assert read_ledger(tmp_path / "missing") == []


def test_table_shows_measured_and_expected_per_instance() -> None:
    rows = [phase([1.0, None, None], [1.0, None, None]), phase([1 / 3] * 3, [0.5, 0.25, 0.25])]
    text = table(rows, NAMES)
    lines = text.splitlines()
    assert lines[0].startswith("| phase") and "demo-3" in lines[0]
    assert "| 1. three instances | 100.0% (100%)" in lines[2]
    assert "50.0% (33%)" in lines[3] and "MISSED" in lines[3]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_json_and_svg_of_a_run() -> None:
    first = phase([1.0, None, None], [1.0, None, None])
    second = phase([0.5, 0.5, None], [0.5, 0.5, None])
    second.started = 5.0
    timeline: list[tuple[float, Shares]] = [
        (1.0, {"demo-1": 1.0, "demo-2": None}),
        (6.0, {"demo-1": 0.5, "demo-2": 0.5}),
    ]
    delivery = check_delivery(range(3), [], {"demo-1": [0, 1], "demo-2": [2]})
    doc = json.loads(results_json({"rate": 10}, [first, second], delivery, timeline))
    assert doc["ok"] and doc["delivery"]["exactly_once"] and doc["setup"] == {"rate": 10}
    assert doc["timeline"][1]["shares"] == {"demo-1": 0.5, "demo-2": 0.5}
    svg = ET.fromstring(chart_svg("title <&>", "where", [first, second], NAMES, timeline))
    assert svg.tag == f"{SVG}svg"
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "title <&>" in texts and "2. three instances" in texts
    assert len(svg.findall(f"{SVG}polyline")) == 2  # demo-1 throughout, demo-2 from 6 s


def test_the_scenario_is_ibms() -> None:
    assert [p.expected for p in PHASES][:4] == [
        (1.0, None, None),
        (0.5, 0.5, None),
        (1 / 3, 1 / 3, 1 / 3),
        (1.0, 0.0, 0.0),
    ]
    assert DemoConfig(duration=60).phase_seconds == 10


def test_broker_urls() -> None:
    broker = from_url("mqtt://u:p%40ss@example.org:1884")
    assert (broker.profile, broker.host, broker.port, broker.password) == (
        "mqtt", "example.org", 1884, "p@ss",
    )  # fmt: skip
    assert "--profile" in broker.worker_flags() and "p@ss" not in broker.worker_flags()
    platform = from_url("wiotps://a-abc123-k:tok@h")
    assert (platform.org, platform.port, platform.tls, platform.group) == (
        "abc123", 8883, True, "A:abc123:demo",
    )  # fmt: skip
    for bad in ("http://h", "wiotp://h", "mqtt://"):
        with pytest.raises(ConfigError):
            from_url(bad)


def test_demo_exits_1_when_the_scenario_did_not_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missed = phase([1 / 3] * 3, [0.6, 0.2, 0.2])
    outcome = DemoResult(
        [missed],
        check_delivery(range(2), [], {"demo-1": [0, 1]}),
        {"demo-1": 0},
        table([missed], NAMES),
        tmp_path / "demo.json",
        tmp_path / "demo.svg",
    )

    async def fake(config: DemoConfig, out: object) -> DemoResult:
        return outcome

    monkeypatch.setattr("worker.tools.demo.run_demo", fake)
    result = CliRunner().invoke(cli.main, ["demo", "--no-live", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "MISSED" in result.output and "did NOT hold" in result.output
