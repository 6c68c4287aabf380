"""Programs the tests run that are not Python packages (promtool, prometheus).

A missing one fails the test instead of skipping it. ``make test`` and ``make test-fast`` run
scripts/system-deps.sh first, which installs them, so wherever the suite is meant to run they
are present; a skip would let a broken install pass with checks silently left out. Running
pytest by hand without them fails with the command that fixes it.
"""

from __future__ import annotations

import shutil

import pytest


def installed(name: str) -> str:
    """The path of program ``name``; a test failure saying how to install it when absent."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run scripts/system-deps.sh (make test runs it first)",
            pytrace=False,
        )
    return path
