"""The shipped Prometheus rules load and pass their promtool unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.binaries import installed

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"

pytestmark = pytest.mark.promtool


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in the rules folder, where tests.yaml finds rules.yaml by relative path."""
    return subprocess.run(
        [installed("promtool"), *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rules_are_valid() -> None:
    out = promtool("check", "rules", "rules.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_rule_unit_tests_pass() -> None:
    out = promtool("test", "rules", "tests.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
