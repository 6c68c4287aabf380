"""Waiting in tests: one ``until`` and the few deadlines that bound every wait.

A deadline only decides how soon a broken test fails; a passing test never waits for it.
So each is generous for its kind of wait on a busy two-core machine, and the longest stays
below pytest-timeout's 60 s so that the test's own message, not a stack dump, says what hung.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Final

#: In-process state only (a pipeline's lanes, acks, an event set by the code under test):
#: nothing to connect to, nothing to start.
QUICK: Final = 3.0
#: An exchange over loopback sockets with a server that is already up (the platform in
#: process, a running Mosquitto): a connect, a round trip, a reconnect after a backoff.
NETWORK: Final = 10.0
#: A child process: a cold interpreter importing the worker (or a broker binary) up to its
#: ready line, its exit after a signal, and what it does in between in a test.
PROCESS: Final = 20.0
#: A whole scenario of processes: the demo, Prometheus scraping and evaluating its rules,
#: a pytest run in a subprocess.
SCENARIO: Final = 55.0

Check = Callable[[], object | Awaitable[object]]


async def until(check: Check, what: str, *, within: float = PROCESS, every: float = 0.05) -> None:
    """Poll ``check`` (sync or async) every ``every`` s until it is truthy.

    Past ``within`` seconds an AssertionError says what was awaited. An exception raised by
    ``check`` itself, a TimeoutError included, propagates as it is. ``every=0`` only yields to
    the loop: for state that in-process tasks change without an event to wait on.
    """
    scope = asyncio.timeout(within)
    try:
        async with scope:
            while not await _holds(check):  # noqa: ASYNC110 - polls state with no event
                await asyncio.sleep(every)
    except TimeoutError:
        if scope.expired():
            raise AssertionError(f"timed out after {within:g} s waiting for {what}") from None
        raise


async def _holds(check: Check) -> bool:
    result = check()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)
