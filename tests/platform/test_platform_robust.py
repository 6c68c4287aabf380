"""Hostile input, slow subscribers, buffers and shutdown: one bad client never hurts the others.

W20-W21 durable buffers, W17 announced lengths, and the server's own guarantees: a malformed
packet closes only its connection and is logged once; outbound queues are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import AsyncExitStack

import pytest

from tests.platform.conftest import raw
from tests.platform.rawclient import RawClient
from tests.support.credentials import API_KEY, DEVICE, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
from worker.mqtt import Pingreq, Pingresp, Puback, Publish
from worker.platform import Platform
from worker.platform.limits import Limits

ALL_EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"
EVENT = "iot-2/evt/e/fmt/bin"


async def connected_device(platform: Platform, stack: AsyncExitStack) -> RawClient:
    device = await raw(platform.port, stack)
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
    return device


async def connected_app(platform: Platform, stack: AsyncExitStack, name: str) -> RawClient:
    app = await raw(platform.port, stack)
    await app.connect(f"a:{ORG}:{name}", API_KEY, TOKEN)
    return app


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00",  # reserved packet type 0
        b"\x82\x02\x00\x01",  # SUBSCRIBE without a filter
        b"\x30\x80\x80\x80\x80\x01",  # a remaining length of five bytes
        b"\x3f\x01\x00",  # PUBLISH with QoS 3
    ],
)
async def test_malformed_packet_closes_only_its_connection_and_is_logged_once(
    platform: Platform,
    clients: AsyncExitStack,
    caplog: pytest.LogCaptureFixture,
    garbage: bytes,
) -> None:
    bystander = await connected_app(platform, clients, "bystander")
    culprit = await connected_device(platform, clients)
    with caplog.at_level(logging.INFO, logger="worker.platform"):
        culprit.send_bytes(garbage)
        assert await culprit.until_closed() == []
        bystander.send(Pingreq())
        assert await bystander.recv() == Pingresp()
    closing = [r for r in caplog.records if DEVICE in r.getMessage()]
    assert len(closing) == 1, [r.getMessage() for r in caplog.records]
    assert "not valid" in closing[0].getMessage()


@pytest.mark.parametrize(
    "first",
    [
        b"\x82\x06\x00\x01\x00\x01x\x00",  # SUBSCRIBE before CONNECT
        b"\x10\xff\xff\xff\x7f",  # CONNECT announcing 256 MB
        b"GET / HTTP/1.1\r\n\r\n",  # not MQTT at all
    ],
)
async def test_hostile_first_packet_is_closed(
    platform: Platform, clients: AsyncExitStack, first: bytes
) -> None:
    client = await raw(platform.port, clients)
    client.send_bytes(first)
    assert await client.until_closed() == []


async def test_sockets_that_never_connect_leave_no_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Platform(platform_config()) as p, AsyncExitStack() as stack:
        for _ in range(3):
            client = await RawClient.open(p.port)
            await client.close()
        partial = await raw(p.port, stack)
        partial.send_bytes(b"\x10\x20\x00\x04MQ")  # half a CONNECT, then gone
        await partial.close()
        bystander = await connected_app(p, stack, "bystander")
        bystander.send(Pingreq())
        assert await bystander.recv() == Pingresp()
    # Leaving the block waited for every socket to be gone, so every callback has run.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_silent_socket_is_closed_after_the_connect_timeout() -> None:
    async with Platform(platform_config(connect_timeout=0.2)) as p, AsyncExitStack() as stack:
        client = await raw(p.port, stack)
        assert await client.until_closed(within=3) == []


async def test_slow_subscriber_is_bounded_and_does_not_stall_others() -> None:
    # A subscriber that never reads holds its publishers back for limits.backpressure_wait at
    # most (shortened here below the client's wait for each message), then no more.
    limits = Limits(backpressure_wait=0.5)
    cfg = platform_config(buffer_size=50, write_buffer_high=16 * 1024, limits=limits)
    async with Platform(cfg) as p, AsyncExitStack() as stack:
        slow = await slow_reader(p.port, stack)
        assert (await slow.connect(f"a:{ORG}:slow", API_KEY, TOKEN)).reason_code == 0
        await slow.subscribe(ALL_EVENTS)
        fast = await connected_app(p, stack, "fast")
        await fast.subscribe(ALL_EVENTS)
        device = await connected_device(p, stack)
        count, payload = 2000, b"x" * 2048
        for i in range(count):
            device.send(Publish(EVENT, payload, qos=1, packet_id=i + 1))
        received = 0
        async with asyncio.timeout(20):
            while received < count:
                await fast.publication()
                received += 1
        session = p.hub.live[f"a:{ORG}:slow"].session
        assert session is not None
        assert 0 < session.pending <= 50
        assert p.router.drops == session.dropped > 0  # every drop is counted


async def slow_reader(port: int, stack: AsyncExitStack) -> RawClient:
    """A client whose socket takes little and that reads only what the test asks for."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    client = RawClient(reader, writer)
    stack.push_async_callback(client.close)
    return client


async def test_w20_w21_durable_subscription_keeps_5000_and_refuses_later_qos1(
    platform: Platform, clients: AsyncExitStack
) -> None:
    app = await raw(platform.port, clients)
    await app.connect(f"a:{ORG}:durable", API_KEY, TOKEN, clean=False)
    await app.subscribe(ALL_EVENTS, qos=1)
    await app.close()
    device = await connected_device(platform, clients)
    total = 5003
    for i in range(total):
        device.send(Publish(EVENT, b"%d" % i, qos=1, packet_id=i % 65535 + 1))
    async with asyncio.timeout(10):
        for _ in range(total):
            assert isinstance(await device.recv(), Puback)
    back = await raw(platform.port, clients)
    assert (await back.connect(f"a:{ORG}:durable", API_KEY, TOKEN, clean=False)).session_present
    got: list[int] = []
    async with asyncio.timeout(20):
        while len(got) < 5000:
            packet = await back.publication()
            got.append(int(packet.payload))
            assert packet.packet_id is not None
            back.send(Puback(packet.packet_id))
    # A QoS 1 message is never pushed out by a newer one: the three newest were refused
    # (counted; an MQTT 5 publisher is told in its PUBACK, see test_limits).
    assert got == list(range(5000))
    assert platform.router.drops == 3


async def test_unacked_qos1_is_resent_with_dup_on_resume(
    platform: Platform, clients: AsyncExitStack
) -> None:
    app = await raw(platform.port, clients)
    await app.connect(f"a:{ORG}:resend", API_KEY, TOKEN, clean=False)
    await app.subscribe(ALL_EVENTS, qos=1)
    device = await connected_device(platform, clients)
    device.send(Publish(EVENT, b"once", qos=1, packet_id=1))
    first = await app.publication()
    await app.close()  # no PUBACK
    back = await raw(platform.port, clients)
    await back.connect(f"a:{ORG}:resend", API_KEY, TOKEN, clean=False)
    again = await back.publication()
    assert (again.payload, again.dup, again.packet_id) == (b"once", True, first.packet_id)


async def test_leaving_the_platform_block_closes_every_connection() -> None:
    async with AsyncExitStack() as stack:
        async with Platform(platform_config()) as p:
            clients = [await connected_device(p, stack), await connected_app(p, stack, "x")]
            await clients[1].subscribe(ALL_EVENTS)
        for client in clients:
            assert await client.until_closed() == []
        assert p.connections == 0
