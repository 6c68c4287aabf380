"""The ``test`` extra holds what a user's handler tests need; the project's tools are ``dev``."""

from __future__ import annotations

import re
import tomllib

from tests.support.processes import ROOT


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_test_extra_is_pytest_and_pytest_asyncio_only() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert _names(extras["test"]) == {"pytest", "pytest-asyncio"}
    # worker.testing's fixtures need exactly these two (and the package itself)
    assert {"pytest-timeout", "hypothesis", "kubernetes-validate"} <= _names(extras["dev"])
    assert "worker" in _names(extras["dev"])  # dev includes test
