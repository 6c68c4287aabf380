"""S4 and W24: a shared group member that vanishes loses nothing it had not acknowledged.

Its unacknowledged QoS 1 messages go back to the group flagged DUP and reach the remaining
members (counted as redelivered); only with no member left are they dropped, as
``client_gone``. The vanishing member's socket is reset without DISCONNECT, as ``kill -9``
leaves it.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from prometheus_client import CollectorRegistry

from tests.platform.conftest import raw
from tests.platform.rawclient import RawClient
from tests.support.credentials import API_KEY, DEVICE, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
from tests.support.waiting import until
from worker.mqtt import Puback, Publish
from worker.platform import Platform
from worker.platform.metrics import PlatformMetrics

ALL_EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"
EVENT = "iot-2/evt/e/fmt/bin"
GROUP = f"A:{ORG}:grp"


def gone(registry: CollectorRegistry) -> float:
    return value(registry, "messages_dropped_total", reason="client_gone")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"worker_platform_{name}", labels) or 0.0


async def member(p: Platform, stack: AsyncExitStack) -> RawClient:
    client = await raw(p.port, stack)
    assert (await client.connect(GROUP, API_KEY, TOKEN)).reason_code == 0
    await client.subscribe(ALL_EVENTS, qos=1)
    return client


def vanish(client: RawClient) -> None:
    """Reset the socket: no DISCONNECT, no FIN, as a killed process leaves it."""
    # no isinstance check: uvloop's transports are not subclasses of asyncio's ABCs
    client._writer.transport.abort()


async def collect(client: RawClient, seen: list[tuple[int, bool]], stop: asyncio.Event) -> None:
    """Acknowledge and note (number, DUP) of every message until ``stop``."""
    while not stop.is_set():
        try:
            packet = await client.publication(within=0.2)
        except TimeoutError:
            continue
        assert packet.packet_id is not None
        client.send(Puback(packet.packet_id))
        seen.append((int(packet.payload), packet.dup))


async def test_a_vanished_members_unacknowledged_messages_reach_the_others() -> None:
    registry = CollectorRegistry()
    cfg = platform_config(metrics=PlatformMetrics(registry))
    total = 300
    async with Platform(cfg) as p, AsyncExitStack() as stack:
        keepers = [await member(p, stack), await member(p, stack)]
        victim = await member(p, stack)
        seen: list[tuple[int, bool]] = []
        stop = asyncio.Event()
        tasks = [asyncio.create_task(collect(k, seen, stop)) for k in keepers]
        device = await raw(p.port, stack)
        await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
        for n in range(total):
            device.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        taken: list[int] = []
        async with asyncio.timeout(5):
            while len(taken) < 20:
                taken.append(int((await victim.publication()).payload))
        vanish(victim)  # never acknowledged any of them
        try:
            everything = set(range(total))
            await until(lambda: {n for n, _ in seen} == everything, "every message", within=10)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        redelivered = value(registry, "messages_redelivered_total")
        assert redelivered >= len(taken)  # at least what the victim showed it had
        dups = {n for n, dup in seen if dup}
        assert set(taken) <= dups and len(dups) == redelivered
        assert value(registry, "messages_dropped_total", reason="client_gone") == 0


async def test_with_no_member_left_they_are_dropped_and_counted() -> None:
    registry = CollectorRegistry()
    cfg = platform_config(metrics=PlatformMetrics(registry))
    async with Platform(cfg) as p, AsyncExitStack() as stack:
        last = await member(p, stack)
        device = await raw(p.port, stack)
        await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
        for n in range(10):
            device.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        for _ in range(10):
            await last.publication()
        vanish(last)
        await until(lambda: gone(registry) >= 10, "the drops to be counted", within=5)
        assert value(registry, "messages_dropped_total", reason="client_gone") == 10
        assert value(registry, "messages_redelivered_total") == 0
