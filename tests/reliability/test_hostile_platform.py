"""Hostile input to the platform: it stays up, keeps serving the others, its memory stays bounded.

Every test runs a :class:`~tests.reliability.hostile.Bystander` (an honest application and
device) through the attack and checks its QoS 1 round trips before, during and after.

Already proven elsewhere and not repeated here:

* ``tests/mqtt/test_mqtt_reader.py``: the codec under hypothesis fuzzing (arbitrary and mutated
  streams raise only ``ProtocolError``); a huge announced length is refused on the header alone.
* ``tests/platform/test_platform_robust.py``: each malformed packet closes only its connection and
  is logged once; SUBSCRIBE before CONNECT, a CONNECT announcing 256 MB and an HTTP request are
  closed; a silent socket is closed at the connect timeout; a slow subscriber is bounded (W21).
* ``tests/platform/test_platform_routing.py``: W17, a payload above 131072 bytes closes with 287,
  also when announced far above the limit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import signal
import time
import tracemalloc
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.platform.rawclient import RawClient
from tests.platform.test_platform_cli import start
from tests.reliability.hostile import (
    DEVICE,
    Bystander,
    attack,
    closed_by_server,
    devices_connected,
    fleet_with_retained_status,
    open_idle,
    raise_fd_limit,
    rss_kib,
    trickle,
    writer_closed,
)
from tests.support.credentials import API_KEY, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
from tests.support.waiting import until
from worker.mqtt import (
    Connect,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    encode,
)
from worker.platform import Platform, PlatformConfig, tls
from worker.platform.retained import RetainedStore
from worker.platform.router import Envelope
from worker.platform.websocket import WebSocketProtocol
from worker.topics import matches

CONNECT_TIMEOUT = 0.5


def hostile_config(**overrides: object) -> PlatformConfig:
    """One org; the development switch on, so attackers can log in and attack from inside."""
    hostile: dict[str, object] = {
        "api_keys": {API_KEY: TOKEN},
        "device_tokens": {DEVICE: DEVICE_TOKEN},
        "accept_any_key": True,
        "connect_timeout": CONNECT_TIMEOUT,
    }
    return platform_config(**(hostile | overrides))


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The ERROR records logged so far by anyone (an ``internal error`` is a platform bug)."""
    caplog.set_level(logging.INFO)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def run_attacker(port: int, data: bytes, stall: bool) -> None:
    client = await RawClient.open(port)
    client.send_bytes(data)
    if stall:
        # The connect timeout or the keepalive (60 s) ends it; only the former fits a test.
        if data.startswith(b"\x10") and len(data) > 40:
            await client.close()  # a CONNECT may have completed: keepalive governs, not tested
            return
        assert await closed_by_server(client, CONNECT_TIMEOUT + 5), data[:20]
    else:
        await closed_by_server(client, 1.0)


@pytest.mark.slow
async def test_fuzzed_and_truncated_streams_leave_the_others_served(
    errors: Callable[[], list[str]],
) -> None:
    rng = random.Random(8)
    async with Platform(hostile_config()) as p, AsyncExitStack() as stack:
        bystander = await Bystander.join(p.port, stack)
        await bystander.round_trip()
        for batch in range(4):
            attacks = [attack(rng, batch * 100 + i) for i in range(100)]
            storm = asyncio.gather(*(run_attacker(p.port, d, s) for d, s in attacks))
            await bystander.round_trip()  # while the batch is under way
            await storm
        await bystander.round_trip()
        assert errors() == []
        await until_only(p, 2)


async def until_only(p: Platform, connections: int) -> None:
    """Wait until the platform holds exactly ``connections`` sockets."""
    await until(lambda: p.connections == connections, f"{connections} connections")


async def test_huge_announced_lengths_are_refused_on_the_header_without_buffering(
    errors: Callable[[], list[str]],
) -> None:
    async with Platform(hostile_config()) as p, AsyncExitStack() as stack:
        bystander = await Bystander.join(p.port, stack)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            clients = []
            for n in range(50):
                client = await RawClient.open(p.port)
                await client.connect(f"d:{ORG}:big:b{n}", "use-token-auth", "x")
                # PUBLISH announcing 256 MB - 1 (the MQTT maximum), and 1 KB of it.
                client.send_bytes(b"\x30\xff\xff\xff\x7f" + b"\x00\x13iot-2/evt/e/fmt/bin" * 50)
                clients.append(client)
            closed = await asyncio.gather(*(closed_by_server(c, 5.0) for c in clients))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert all(closed)
        assert grown < 2 * 1024 * 1024, f"{grown} bytes kept after 50 x 256 MB announced"
        await bystander.round_trip()
        assert errors() == []


@pytest.mark.slow
async def test_slow_loris_on_every_listener_is_dropped_at_the_connect_timeout(
    tmp_path: Path, errors: Callable[[], list[str]]
) -> None:
    context, _ = tls.dev_server_context(tmp_path)
    websocket = functools.partial(WebSocketProtocol, handshake_timeout=CONNECT_TIMEOUT)
    cfg = hostile_config(tls_port=0, ssl_context=context, ws_port=0, websocket=websocket)
    async with Platform(cfg) as p, AsyncExitStack() as stack:
        bystander = await Bystander.join(p.port, stack)
        assert p.tls_port is not None and p.ws_port is not None
        connect = encode(Connect(f"d:{ORG}:slow:s1", username="use-token-auth", password=b"x"))
        lorises = [
            trickle(p.port, connect[:-1]),  # CONNECT a byte at a time, never the last one
            trickle(p.tls_port, b""),  # TCP to the TLS port, never a ClientHello (fixed)
            trickle(p.tls_port, bytes.fromhex("160301") + b"\x02\x00"),  # half a ClientHello
            trickle(p.ws_port, b"GET /mqtt HTTP/1.1\r\nHost: x\r\n"),  # the upgrade, unfinished
        ]
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(loris) for loris in lorises]
        while not all(t.done() for t in tasks):
            await bystander.round_trip(5)
        took = [t.result() for t in tasks]
        assert all(CONNECT_TIMEOUT * 0.8 <= t < CONNECT_TIMEOUT + 2 for t in took), took
        assert time.perf_counter() - started < CONNECT_TIMEOUT + 3
        assert errors() == []


@pytest.mark.slow
async def test_a_half_sent_packet_after_connect_ends_with_the_keepalive() -> None:
    """A logged-in slow-loris is bounded by its keepalive (W23: 1.5 times, close code 160)."""
    async with Platform(hostile_config()) as p, AsyncExitStack() as stack:
        bystander = await Bystander.join(p.port, stack)
        client = await RawClient.open(p.port)
        await client.connect(f"d:{ORG}:slow:k1", "use-token-auth", "x", keepalive=1)
        client.send_bytes(encode(Publish("iot-2/evt/e/fmt/bin", b"x" * 1000, 0))[:500])
        started = time.perf_counter()
        assert await closed_by_server(client, 5.0)
        assert 1.4 <= time.perf_counter() - started < 3.0
        await bystander.round_trip()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("listener", "data"),
    [
        ("tcp", bytes.fromhex("16030100a5010000a10303") + bytes(32)),  # a TLS ClientHello
        ("tcp", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("tcp", b"POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        ("tcp", b"GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        ("tcp", b"\x00" * 64),
        ("tls", encode(Connect("d:abc123:t:plain", username="use-token-auth", password=b"x"))),
        ("tls", b"GET / HTTP/1.1\r\n\r\n"),
        ("ws", encode(Connect("d:abc123:t:raw", username="use-token-auth", password=b"x"))),
        ("ws", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
    ],
)
async def test_another_protocol_on_a_listener_is_closed(
    tmp_path: Path, errors: Callable[[], list[str]], listener: str, data: bytes
) -> None:
    context, _ = tls.dev_server_context(tmp_path)
    cfg = hostile_config(tls_port=0, ssl_context=context, ws_port=0, connect_timeout=1.0)
    async with Platform(cfg) as p, AsyncExitStack() as stack:
        bystander = await Bystander.join(p.port, stack)
        port = {"tcp": p.port, "tls": p.tls_port, "ws": p.ws_port}[listener]
        assert port is not None
        client = await RawClient.open(port)
        client.send_bytes(data)
        # Most are recognised at once; bytes that could start a packet (``POST`` reads as a
        # PUBREC of 79 bytes) wait for the rest until the connect timeout.
        assert await closed_by_server(client, 3.0)
        await bystander.round_trip()
        assert errors() == []


def storm_filters(first: int, count: int) -> tuple[Subscription, ...]:
    return tuple(
        Subscription(f"iot-2/type/t{i}/id/+/evt/+/fmt/+", 0) for i in range(first, first + count)
    )


@pytest.mark.slow
async def test_subscription_storms_are_capped_cheap_and_leave_nothing_behind(
    errors: Callable[[], list[str]],
) -> None:
    cfg = hostile_config(max_subscriptions=1000)
    async with Platform(cfg) as p, AsyncExitStack() as stack:
        bystander = await Bystander.join(p.port, stack)
        await fleet_with_retained_status(p.port, 300)
        baseline = p.router.subscriptions
        stormers = []
        for n in range(4):
            client = await RawClient.open(p.port)
            stack.push_async_callback(client.close)
            await client.connect(f"a:{ORG}:storm{n}", API_KEY, TOKEN)
            stormers.append(client)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await storm(stormers, bystander)
            assert p.router.subscriptions == baseline + 4 * 1000
            await unsubscribe_all(stormers)
            assert p.router.subscriptions == baseline
            left = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert left < 1024 * 1024, f"{left} bytes left after every storm filter was removed"
        # Each slow round trip under the storm stayed short: the storm did not take the loop.
        assert bystander.worst < 3.0, bystander.worst  # it was over 10 s before the index
        assert errors() == []


async def storm(stormers: list[RawClient], bystander: Bystander) -> None:
    """Every stormer sends 3000 new filters in 500-filter SUBSCRIBEs; 1000 each are granted."""
    for client in stormers:
        for first in range(0, 3000, 500):
            client.send(Subscribe(client.packet_id(), storm_filters(first, 500)))
    await bystander.round_trip(5)
    for client in stormers:
        codes: list[int] = []
        for _ in range(6):
            suback = await client.recv()
            assert isinstance(suback, Suback)
            codes.extend(suback.reason_codes)
        # The first 1000 new filters are granted, the rest refused; the client stays.
        assert codes == [0] * 1000 + [0x80] * 2000
    await bystander.round_trip(5)


async def unsubscribe_all(stormers: list[RawClient]) -> None:
    for client in stormers:
        names = tuple(s.topic_filter for s in storm_filters(0, 1000))
        client.send(Unsubscribe(client.packet_id(), names))
        assert isinstance(await client.recv(), Unsuback)


async def test_a_status_subscription_gets_the_retained_fleet(
    errors: Callable[[], list[str]],
) -> None:
    """The retained index still answers ``mon`` filters in full (W30)."""
    async with Platform(hostile_config()) as p, AsyncExitStack() as stack:
        await fleet_with_retained_status(p.port, 30)
        app = await RawClient.open(p.port)
        stack.push_async_callback(app.close)
        await app.connect(f"a:{ORG}:watch", API_KEY, TOKEN)
        await app.subscribe("iot-2/type/fleet/id/+/mon", "iot-2/type/+/id/f7/mon")
        got = [(await app.publication()).topic for _ in range(31)]
        assert sorted(set(got)) == sorted(f"iot-2/type/fleet/id/f{n}/mon" for n in range(30))
        assert got.count("iot-2/type/fleet/id/f7/mon") == 2
        assert errors() == []


LEVEL = st.sampled_from(["a", "b", "mon", ""])


@given(
    topics=st.lists(st.lists(LEVEL, min_size=1, max_size=4).map("/".join), max_size=12),
    removed=st.lists(st.integers(0, 11), max_size=4),
    levels=st.lists(st.sampled_from(["a", "b", "mon", "", "+"]), min_size=0, max_size=4),
    hash_tail=st.booleans(),
)
def test_the_retained_index_matches_like_the_mqtt_rules(
    topics: list[str], removed: list[int], levels: list[str], hash_tail: bool
) -> None:
    store = RetainedStore()
    kept: dict[str, Envelope] = {}
    for topic in topics:
        kept[topic] = Envelope(topic, b"x", 0, retain=True)
        store.put(kept[topic])
    for index in removed:
        if index < len(topics):
            store.remove(topics[index])
            kept.pop(topics[index], None)
    topic_filter = "/".join([*levels, "#"] if hash_tail else levels)
    if not topic_filter:
        return
    expected = {t for t in kept if matches(topic_filter, t)}
    assert {m.topic for m in store.match(topic_filter)} == expected
    assert len(store) == len(kept)


async def left_only_bystander(metrics_port: int) -> bool:
    return await devices_connected(metrics_port) == 1


IDLE = 2000  # half of them logged-in devices, half sockets that never send a byte


@pytest.mark.slow
async def test_thousands_of_idle_connections_cost_little_and_leave_nothing_behind() -> None:
    """A ``worker platform`` process under 2000 idle sockets: RSS per socket, and no leak."""
    raise_fd_limit(2 * IDLE + 500)
    running = await start("--port", "0", "--accept-any-key", "--metrics-port", "0")
    pid = running.process.pid
    try:
        port = running.url("mqtt")
        async with AsyncExitStack() as stack:
            bystander = await Bystander.join(port, stack)
            await bystander.round_trip()
            base = rss_kib(pid)
            per_socket = []
            for _ in range(2):
                idle = await open_idle(port, IDLE)
                per_socket.append((rss_kib(pid) - base) * 1024 / IDLE)
                await bystander.round_trip()  # served while the sockets are held open
                await asyncio.gather(*(writer_closed(w) for w in idle))
                gone = functools.partial(left_only_bystander, running.url("http"))
                await until(gone, "the idle devices to be gone")
            after = rss_kib(pid)
            await bystander.round_trip()
    finally:
        code, _, err = await running.stop(signal.SIGTERM)
    assert code == 0, err
    # A socket costs a few KiB (protocol, transport, status message); the second round reuses
    # what the first freed, so it must not add a second round's worth.
    assert per_socket[0] < 24 * 1024, per_socket
    assert per_socket[1] < per_socket[0] * 1.25 + 1024, per_socket
    assert (after - base) * 1024 / IDLE < per_socket[0] * 1.25 + 1024, (per_socket, after - base)
