"""Event loop factories: ``auto`` (uvloop where installed), ``asyncio`` and ``uvloop``.

The runner takes a factory rather than setting a global policy, so tests and embedding code
keep whatever loop they run on (``asyncio.Runner(loop_factory=...)``, Python 3.11+).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from worker.errors import ConfigError

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")

LOOPS: Final = ("auto", "asyncio", "uvloop")


def uvloop_factory() -> LoopFactory | None:
    """uvloop's ``new_event_loop``, or None when uvloop is not installed (e.g. on Windows)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_factory(name: str) -> LoopFactory:
    """The factory for ``name``; ConfigError for an unknown name or a missing uvloop."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name not in LOOPS:
        raise ConfigError(f"--loop={name!r}: accepted are {', '.join(LOOPS)}")
    factory = uvloop_factory()
    if factory is not None:
        return factory
    if name == "uvloop":
        raise ConfigError("--loop=uvloop: uvloop is not installed; use auto or asyncio")
    return asyncio.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which implementation a loop is, for the startup line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Run ``main`` to completion on a new loop of the chosen kind, then close the loop."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
