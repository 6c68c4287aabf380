"""The ``worker`` pytest plugin, installed with the package and inactive until asked for.

Installing ``worker`` must not put fixtures named ``platform`` or ``mqtt_client`` into every
test suite of the environment, so this entry point only adds a switch. Any one of these
loads the fixtures of :mod:`worker.testing` (``platform``, ``running_app``, ``mqtt_client``):

* ``worker_fixtures = true`` in the pytest configuration (``[tool.pytest.ini_options]``)
* ``pytest --worker-fixtures``
* ``pytest -p worker.testing``, or ``pytest_plugins = ["worker.testing"]`` in the top-level
  ``conftest.py`` (these work without this entry point)

``-p no:worker`` turns the entry point off altogether.
"""

from __future__ import annotations

import pytest

_FIXTURES = "worker.testing"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The switch, as an ini setting and a flag."""
    parser.addini(
        "worker_fixtures",
        "load the worker.testing fixtures: platform, running_app, mqtt_client",
        type="bool",
        default=False,
    )
    group = parser.getgroup("worker", "worker testing toolkit")
    group.addoption(
        "--worker-fixtures",
        action="store_true",
        default=False,
        help="load the worker.testing fixtures: platform, running_app, mqtt_client",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Load the fixtures when the switch is on (once, however it was asked for)."""
    wanted = config.getoption("worker_fixtures") or config.getini("worker_fixtures")
    if wanted and not config.pluginmanager.has_plugin(_FIXTURES):
        config.pluginmanager.import_plugin(_FIXTURES)
