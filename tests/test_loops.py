"""Loop factories."""

from __future__ import annotations

import asyncio

import pytest

from worker.errors import ConfigError
from worker.loops import loop_factory, loop_name, run, uvloop_factory


async def _which() -> str:
    return loop_name(asyncio.get_running_loop())


def test_asyncio_is_asyncio() -> None:
    assert run(_which(), "asyncio") == "asyncio"


def test_auto_prefers_uvloop_where_installed() -> None:
    expected = "uvloop" if uvloop_factory() is not None else "asyncio"
    assert run(_which(), "auto") == expected


def test_uvloop_runs_when_installed() -> None:
    if uvloop_factory() is None:
        pytest.skip("uvloop is not installed")
    assert run(_which(), "uvloop") == "uvloop"


def test_unknown_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="accepted are auto, asyncio, uvloop"):
        loop_factory("trio")
