"""The tests' one ``until``: sync and async checks, a failure naming what it waited for."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.waiting import NETWORK, PROCESS, QUICK, SCENARIO, until


async def test_a_sync_check_is_polled_until_it_holds() -> None:
    calls: list[int] = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await until(third_time, "the third call", within=QUICK, every=0)
    assert len(calls) == 3


async def test_an_async_check_is_awaited() -> None:
    flag = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, flag.set)

    async def is_set() -> bool:
        await asyncio.sleep(0)
        return flag.is_set()

    await until(is_set, "the flag", within=QUICK, every=0.01)


async def test_past_the_deadline_it_fails_naming_what_it_waited_for() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AssertionError, match=r"timed out after 0\.1 s waiting for the moon"):
        await until(lambda: False, "the moon", within=0.1, every=0.01)
    assert 0.1 <= loop.time() - started < 0.1 + QUICK


async def test_an_error_of_the_check_itself_propagates_as_it_is() -> None:
    async def times_out() -> bool:
        raise TimeoutError("the check's own deadline")

    with pytest.raises(TimeoutError, match="the check's own deadline"):
        await until(times_out, "anything", within=QUICK)


def test_the_deadlines_grow_and_the_longest_leaves_pytest_timeout_room() -> None:
    assert QUICK < NETWORK < PROCESS < SCENARIO < 60
