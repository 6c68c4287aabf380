"""The ``worker`` pytest plugin, installed with the package and inactive until asked for.

Installing ``worker`` must not put fixtures named ``platform`` or ``mqtt_client`` into every
test suite of the environment, so this entry point only adds a switch. Any one of these
loads the fixtures of :mod:`worker.testing` (``platform``, ``running_app``, ``mqtt_client``):

* ``worker_fixtures = true`` in the pytest configuration (``[tool.pytest.ini_options]``)
* ``pytest --worker-fixtures``
* ``pytest -p worker.testing``, or ``pytest_plugins = ["worker.testing"]`` in the top-level
  ``conftest.py`` (these work without this entry point)

``-p no:worker`` turns the entry point off altogether.

The minimal configuration is ``worker_fixtures = true`` and ``asyncio_mode = "auto"``. A test
that would fail for want of either is stopped before it runs with a message naming exactly
what to add: a worker fixture that is not loaded, or an async test that pytest-asyncio does not
run (strict mode, no ``@pytest.mark.asyncio``).
"""

from __future__ import annotations

import inspect
from typing import Final

import pytest

_FIXTURES: Final = "worker.testing"
#: the fixtures worker.testing provides
FIXTURE_NAMES: Final = ("platform", "running_app", "mqtt_client")
_SWITCH_ON: Final = (
    "add `worker_fixtures = true` under [tool.pytest.ini_options] in pyproject.toml "
    "(or under [pytest] in pytest.ini), or run `pytest --worker-fixtures`"
)
_ASYNC_ON: Final = (
    'add `asyncio_mode = "auto"` under [tool.pytest.ini_options] in pyproject.toml '
    "(or `asyncio_mode = auto` under [pytest] in pytest.ini), or mark the test "
    "@pytest.mark.asyncio"
)


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
        try:
            import pytest_asyncio  # noqa: F401  (the fixtures are pytest-asyncio fixtures)
        except ImportError:
            raise pytest.UsageError(
                "the worker fixtures need pytest-asyncio (the test extra): "
                "pip install pytest-asyncio"
            ) from None
        config.pluginmanager.import_plugin(_FIXTURES)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the fixtures are set up: fail a test that cannot work, saying what to add."""
    if not isinstance(item, pytest.Function):
        return
    wanted = [n for n in FIXTURE_NAMES if n in item.fixturenames]
    if not wanted:
        return
    loaded = item.config.pluginmanager.has_plugin(_FIXTURES)
    defined = getattr(item, "_fixtureinfo", None)
    known = defined.name2fixturedefs if defined is not None else {}
    missing = [n for n in wanted if n not in known]
    if missing and not loaded:
        pytest.fail(
            f"fixture {missing[0]!r} not found: the worker fixtures are off; {_SWITCH_ON}",
            pytrace=False,
        )
    if inspect.iscoroutinefunction(item.obj) and item.get_closest_marker("asyncio") is None:
        pytest.fail(
            f"{item.name} is an async test that pytest-asyncio does not run (strict mode); "
            f"{_ASYNC_ON}",
            pytrace=False,
        )
