"""The platform embedded in a program whose loop is uvloop's (as ``worker run``'s is).

uvloop's transports are not subclasses of asyncio's transport ABCs, so the platform must not
ask ``isinstance(transport, asyncio.WriteTransport)`` before it writes: on uvloop that would
silently never answer a CONNECT. Its TLS listener drives asyncio's own TLS layer, which
uvloop's transports cannot carry: asked for on uvloop, it is refused at start, saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from tests.platform.rawclient import RawClient
from tests.support.credentials import API_KEY, DEVICE, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
from worker.errors import ConfigError
from worker.mqtt import Publish
from worker.platform import Platform, tls

T = TypeVar("T")


async def round_trip(port: int) -> bytes:
    """A device's event through the platform to an application; the payload it got."""
    async with AsyncExitStack() as stack:
        device = await stack.enter_async_context(await RawClient.open(port))
        app = await stack.enter_async_context(await RawClient.open(port))
        assert (await app.connect(f"a:{ORG}:uv", API_KEY, TOKEN)).reason_code == 0
        await app.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", qos=1)
        assert (await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)).reason_code == 0
        device.send(Publish("iot-2/evt/reading/fmt/json", b'{"n": 1}', qos=1, packet_id=1))
        return (await app.publication()).payload


def on_uvloop(scenario: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(scenario)


def test_a_platform_on_uvloop_answers_and_delivers() -> None:
    async def scenario() -> bytes:
        async with Platform(platform_config()) as platform, asyncio.timeout(10):
            return await round_trip(platform.port)

    assert on_uvloop(scenario()) == b'{"n": 1}'


def test_its_tls_listener_on_uvloop_is_refused_at_start(tmp_path: Path) -> None:
    context, _ = tls.dev_server_context(tmp_path)

    async def scenario() -> None:
        async with Platform(platform_config(tls_port=0, ssl_context=context)):
            pass

    with pytest.raises(ConfigError, match="the TLS listener needs asyncio's event loop"):
        on_uvloop(scenario())
