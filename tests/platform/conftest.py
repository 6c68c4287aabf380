"""Fixtures for the platform tests: a running platform on port 0 and ready-made clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import aiomqtt
import pytest
import uvloop

from tests.platform.rawclient import RawClient
from tests.support.credentials import API_KEY, DEVICE, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
from worker.platform import Platform

StartPlatform = Callable[..., AbstractAsyncContextManager[Platform]]


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    """A running platform with the default test configuration."""
    async with Platform(platform_config()) as p:
        assert p.ready.is_set()
        yield p


@pytest.fixture
async def clients() -> AsyncIterator[AsyncExitStack]:
    """An exit stack for clients, closed before the platform fixture stops."""
    async with AsyncExitStack() as stack:
        yield stack


def app_client(port: int, client_id: str = f"a:{ORG}:app1", **kw: Any) -> aiomqtt.Client:
    """An aiomqtt application client with the test API key."""
    kw.setdefault("username", API_KEY)
    kw.setdefault("password", TOKEN)
    kw.setdefault("timeout", 5.0)
    return aiomqtt.Client("127.0.0.1", port, identifier=client_id, **kw)


def device_client(
    port: int, client_id: str = DEVICE, token: str = DEVICE_TOKEN, **kw: Any
) -> aiomqtt.Client:
    """An aiomqtt device (or gateway) client with token authentication."""
    kw.setdefault("timeout", 5.0)
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        username="use-token-auth",
        password=token,
        **kw,
    )


async def raw(port: int, stack: AsyncExitStack) -> RawClient:
    """A raw client closed with ``stack``."""
    client = await RawClient.open(port)
    stack.push_async_callback(client.close)
    return client


async def next_message(client: aiomqtt.Client, within: float = 5.0) -> aiomqtt.Message:
    """The next message the client receives, within ``within`` seconds."""
    async with asyncio.timeout(within):
        return await anext(aiter(client.messages))


async def status_where(
    client: aiomqtt.Client, within: float = 5.0, **fields: Any
) -> tuple[aiomqtt.Message, dict[str, Any]]:
    """The next status message whose JSON has all of ``fields``; others are skipped."""
    async with asyncio.timeout(within):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            body = json.loads(message.payload)
            if all(body.get(k) == v for k, v in fields.items()):
                return message, body
    raise AssertionError("unreachable")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every platform test runs on asyncio's loop (embedded, as in ``TestClient``) and on
    uvloop's (``worker platform``'s)."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
