"""The attacks of ``make attack``, each one a coroutine over real sockets, 127.0.0.1 only.

Every attack takes a :class:`Target` and a size, and puts what it keeps open into ``held`` (the
caller closes them when the attack's time is over). ``tests/reliability/test_attacks.py`` runs
each one small against an in-process platform; ``python -m bench.attack`` runs them at full size
against a ``worker platform`` process, repeatedly, for a set time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Final

from worker.mqtt import MQTT_3_1_1, Connect, Publish, Subscribe, Subscription, encode

ORG: Final = "abc123"
#: an application key of the test org (a platform started without credentials on loopback
#: accepts any token for a well-formed key)
API_KEY: Final = f"a-{ORG}-attack"
TOKEN: Final = "any"
#: how many sockets an attack opens at once
PARALLEL: Final = 100
EVENTS: Final = "iot-2/type/+/id/+/evt/+/fmt/+"


@dataclass(frozen=True, slots=True)
class Target:
    """Where the platform listens."""

    port: int
    tls_port: int | None = None
    host: str = "127.0.0.1"


Held = list[asyncio.StreamWriter]
Attack = Callable[[Target, int, Held], Coroutine[None, None, None]]


async def _open(
    target: Target, port: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(target.host, port or target.port)


async def _connect(
    target: Target, client_id: str, *, user: str, password: str, clean: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection past its CONNACK (whatever the CONNACK said)."""
    reader, writer = await _open(target)
    try:
        packet = Connect(client_id, clean, 60, user, password.encode(), None, MQTT_3_1_1)
        writer.write(encode(packet, MQTT_3_1_1))
        await asyncio.wait_for(reader.readexactly(4), 10)
    except BaseException:
        await _close(writer)
        raise
    return reader, writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 5)


async def _in_parallel(count: int, one: Callable[[int], Coroutine[None, None, None]]) -> None:
    """``one(i)`` for every i below ``count``, at most PARALLEL at a time; failures ignored
    (a platform defending itself closes sockets, and that is the point).

    PARALLEL tasks take the numbers in turn: one task per number, made all at once, stalled
    this process's loop for a tenth of a second and more at 5,000, and the probe that times
    the platform's CONNACKs shares that loop."""
    numbers = iter(range(count))

    async def taker() -> None:
        for i in numbers:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
                await one(i)

    await asyncio.gather(*(taker() for _ in range(min(PARALLEL, count))))


async def churn(target: Target, count: int, held: Held) -> None:
    """Devices with a new client ID each: connect, go (each leaves a retained status)."""

    async def one(i: int) -> None:
        _, writer = await _connect(
            target, f"d:{ORG}:churn:c{i}", user="use-token-auth", password=TOKEN
        )
        await _close(writer)

    await _in_parallel(count, one)


async def offline_sessions(target: Target, count: int, held: Held) -> None:
    """Durable application sessions subscribed to every event that go offline, then three
    events of 100 bytes per session published for them to keep."""

    async def one(i: int) -> None:
        reader, writer = await _connect(
            target, f"a:{ORG}:off{i}", user=API_KEY, password=TOKEN, clean=False
        )
        try:
            writer.write(encode(Subscribe(1, (Subscription(EVENTS, 1),)), MQTT_3_1_1))
            await asyncio.wait_for(reader.readexactly(5), 10)
        finally:
            await _close(writer)

    await _in_parallel(count, one)
    _, writer = await _connect(target, f"d:{ORG}:flood:f1", user="use-token-auth", password=TOKEN)
    try:
        for n in range(3 * count):
            publish = Publish("iot-2/evt/e/fmt/bin", b"x" * 100, 1, packet_id=n % 0xFFFF + 1)
            writer.write(encode(publish, MQTT_3_1_1))
            if n % 500 == 499:
                await writer.drain()
        await writer.drain()
    finally:
        await _close(writer)


async def idle_connections(target: Target, count: int, held: Held) -> None:
    """Connected devices that then say nothing (kept open in ``held``)."""

    async def one(i: int) -> None:
        _, writer = await _connect(
            target, f"d:{ORG}:idle:i{i}", user="use-token-auth", password=TOKEN
        )
        held.append(writer)

    await _in_parallel(count, one)


async def partial_connects(target: Target, count: int, held: Held) -> None:
    """Sockets that send 199 KB of a CONNECT that says it is 200 KB, then wait."""
    header = b"\x10" + bytes((0x80 | (204800 & 0x7F), 0x80 | ((204800 >> 7) & 0x7F), 204800 >> 14))
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + b"\x00" * (199 * 1024)

    async def one(i: int) -> None:
        _, writer = await _open(target)
        held.append(writer)
        writer.write(header + body)  # the platform closes it at the header
        await writer.drain()

    await _in_parallel(count, one)


async def half_open_tls(target: Target, count: int, held: Held) -> None:
    """Sockets to the TLS port that start a handshake (a record header) and never finish."""
    if target.tls_port is None:
        return

    async def one(i: int) -> None:
        _, writer = await _open(target, target.tls_port)
        held.append(writer)
        writer.write(b"\x16\x03\x01\x02\x00")  # a handshake record of 512 bytes, never sent
        await writer.drain()

    await _in_parallel(count, one)


async def shared_groups(target: Target, count: int, held: Held) -> None:
    """``count`` shared groups: scalable applications, each with many filters."""
    per_app = 1000
    apps = max(1, count // per_app)

    async def one(i: int) -> None:
        _, writer = await _connect(target, f"A:{ORG}:grp{i}", user=API_KEY, password=TOKEN)
        held.append(writer)
        for start in range(0, min(per_app, count), 100):
            filters = tuple(
                Subscription(f"iot-2/type/t{start + k}/id/+/evt/+/fmt/+", 0) for k in range(100)
            )
            writer.write(encode(Subscribe(start // 100 + 1, filters), MQTT_3_1_1))
        await writer.drain()

    await _in_parallel(apps, one)


async def bad_client_ids(target: Target, count: int, held: Held) -> None:
    """CONNECTs with a 65 KB client ID outside every class (each one is refused)."""
    bad = "z" * 65_000

    async def one(i: int) -> None:
        reader, writer = await _open(target)
        try:
            packet = Connect(bad, True, 60, API_KEY, TOKEN.encode(), None, MQTT_3_1_1)
            writer.write(encode(packet, MQTT_3_1_1))
            await asyncio.wait_for(reader.read(), 10)
        finally:
            await _close(writer)

    await _in_parallel(count, one)


#: name -> (attack, full size, whether it holds its sockets open for the attack's time)
ATTACKS: Final[dict[str, tuple[Attack, int, bool]]] = {
    "client_id_churn": (churn, 20_000, False),
    "offline_durable_sessions": (offline_sessions, 2_000, False),
    "idle_connections": (idle_connections, 10_000, True),
    "partial_connects": (partial_connects, 10_000, True),
    "half_open_tls": (half_open_tls, 5_000, True),
    "shared_groups": (shared_groups, 100_000, True),
    "bad_client_ids": (bad_client_ids, 2_000, False),
}
