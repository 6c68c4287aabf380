"""The platform embedded in a program whose loop is uvloop's (as ``worker run``'s is).

uvloop's transports are not subclasses of asyncio's transport ABCs, so the platform must not
ask ``isinstance(transport, asyncio.WriteTransport)`` before it writes: on uvloop that would
silently never answer a CONNECT. uvloop also reads a socket once even when
``connection_made`` paused it, so a TLS client's ClientHello can reach the listener before
its TLS layer does: a client on the platform's own loop always sends it that early, and its
handshake must still complete. (Every platform test also runs on uvloop: tests/platform's
conftest.)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from tests.platform.rawclient import RawClient
from tests.support.credentials import API_KEY, DEVICE, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
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


def test_a_tls_client_on_the_same_uvloop_completes_its_handshake(tmp_path: Path) -> None:
    context, ca = tls.dev_server_context(tmp_path)

    async def scenario() -> int:
        config = platform_config(tls_port=0, ssl_context=context)
        async with Platform(config) as platform, asyncio.timeout(10):
            assert platform.tls_port is not None
            client_context = ssl.create_default_context(cafile=str(ca))
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", platform.tls_port, ssl=client_context, server_hostname="localhost"
            )
            async with RawClient(reader, writer) as client:
                return (await client.connect(f"a:{ORG}:uv", API_KEY, TOKEN)).reason_code

    assert on_uvloop(scenario()) == 0
