"""``worker demo --autoscale --no-live``: the scaling policy adds and drains real instances."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.e2e.test_demo import run_demo

SVG = "{http://www.w3.org/2000/svg}"


async def test_replicas_follow_the_load_up_and_down_and_nothing_is_lost(tmp_path: Path) -> None:
    code, stdout, stderr = await run_demo(tmp_path, "--autoscale", "--duration", "36")
    assert code == 0, f"{stdout}\n{stderr}"
    doc: dict[str, Any] = json.loads((tmp_path / "autoscale.json").read_text())
    assert doc["ok"], stdout
    ticks = doc["ticks"]
    high = [t for t in ticks if t["rate"] == doc["setup"]["rates"][1]]
    # Out under the high load, by the policy's own reading of the workers' metrics ...
    assert max(t["replicas"] for t in high) >= 2, stdout
    assert any(t["desired"] > 1 and t["busy_lanes"] > 1.4 for t in high)
    # ... and back to one once it fell, one replica at a time (each drains first).
    assert ticks[-1]["replicas"] == 1
    counts = [t["replicas"] for t in ticks]
    assert all(later >= earlier - 1 for earlier, later in itertools.pairwise(counts))
    delivery = doc["delivery"]
    assert delivery["exactly_once"] and delivery["sent"] == delivery["handled"] > 0
    assert all(code == 0 for code in doc["exits"].values())
    assert "replicas over time:" in stdout and "the autoscaling held" in stdout
    svg = ET.parse(tmp_path / "autoscale.svg").getroot()
    assert len(svg.findall(f"{SVG}polyline")) == 2  # the replicas and the policy's wish
