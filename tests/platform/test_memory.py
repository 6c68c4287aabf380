"""A closed connection's memory goes at once, the heap is trimmed after a burst, and a socket
that has not connected holds none of what it sent.

Freed by reference counting means freed when the socket goes: whatever the cyclic garbage
collector would have to find instead waits for its next full collection, and after a flood
of sockets that kept the platform's memory at the flood's peak (half-open TLS handshakes:
hundreds of megabytes). So these tests run with the collector off and look for what is left.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.platform.conftest import raw
from tests.platform.test_limits import running
from tests.support.credentials import API_KEY, ORG, TOKEN
from tests.support.waiting import NETWORK, until
from worker.platform import Platform, memory, tls
from worker.platform.connection import MqttConnection
from worker.platform.handshakes import TlsGate
from worker.platform.limits import Limits
from worker.platform.retained import RetainedStore
from worker.platform.router import Envelope

#: what an accepted socket is made of on the platform's side
HELD_PER_SOCKET = (MqttConnection, TlsGate, ssl.SSLObject, asyncio.BaseTransport)


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def left_on(p: Platform) -> list[object]:
    """The platform's socket objects still alive (its listeners' own aside)."""
    ports = {p.port, p.tls_port}
    found: list[object] = []
    for obj in gc.get_objects():
        if not isinstance(obj, HELD_PER_SOCKET):
            continue
        if isinstance(obj, ssl.SSLObject) and not obj.server_side:
            continue  # a client's
        if isinstance(obj, asyncio.BaseTransport):
            # the clients' transports are this process's too: the platform's are bound to its ports
            name = obj.get_extra_info("sockname")
            if not (isinstance(name, tuple) and name[1] in ports):
                continue
        found.append(obj)
    return found


async def gone(p: Platform) -> None:
    await until(lambda: p.connections == 0, "every socket closed", within=NETWORK)
    await until(lambda: not p._handshakes.active, "every handshake ended", within=NETWORK)
    # The transports' connection_lost callbacks run; uvloop frees a handle a loop turn or
    # more after it closed (libuv's close callback), asyncio at once.
    await until(lambda: not left_on(p), "every socket object freed", within=NETWORK)


async def test_closed_connections_are_freed_without_the_cycle_collector(
    no_cycle_collector: None,
) -> None:
    async with running() as r, AsyncExitStack() as stack:
        for n in range(20):
            client = await raw(r.p.port, stack)
            assert (await client.connect(f"a:{ORG}:m{n}", API_KEY, TOKEN)).reason_code == 0
        silent = await raw(r.p.port, stack)  # one that never sends its CONNECT
        assert r.p.connections == 21
        await stack.aclose()
        del silent
        await gone(r.p)
        assert left_on(r.p) == []


async def test_dropped_and_failed_tls_handshakes_are_freed_without_the_cycle_collector(
    tmp_path: Path, no_cycle_collector: None
) -> None:
    context, ca = tls.dev_server_context(tmp_path)
    limits = Limits(handshakes=5)
    async with running(tls_port=0, ssl_context=context, limits=limits) as r:
        port = r.p.tls_port
        assert port is not None
        writers = []
        for _ in range(30):  # 25 dropped by the limit, the last 5 closed by their clients
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x16\x03\x01\x02\x00")  # a handshake record that never comes
            writers.append(writer)
        await until(lambda: r.limit_hits("handshakes") == 25, "25 dropped", within=NETWORK)
        client_context = ssl.create_default_context(cafile=str(ca))
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname="localhost"
        )  # and one that completes its handshake, then goes
        writers.append(writer)
        for writer in writers:
            writer.close()
        await gone(r.p)
        assert left_on(r.p) == []


async def test_the_heap_is_trimmed_after_a_few_ended_handshakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handshake holds far more than a plain socket: a handful of them is worth a trim, and
    the trim comes however the burst ends (here: below any count of sockets)."""
    if memory._malloc_trim() is None:
        pytest.skip("no glibc malloc_trim here")
    monkeypatch.setattr(memory, "DELAY", 0.05)
    context, _ = tls.dev_server_context(tmp_path)
    async with running(tls_port=0, ssl_context=context) as r:
        port = r.p.tls_port
        assert port is not None
        opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
        await until(lambda: len(r.p._handshakes.active) == 6, "six handshakes", within=NETWORK)
        assert r.p.hub.trimmer.trims == 0
        for _, writer in opened:
            writer.close()
        await until(lambda: r.p.hub.trimmer.trims >= 1, "a trim", within=NETWORK)


async def test_a_socket_that_has_not_connected_never_parks_a_large_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large read that comes once the loop turn's work budget is spent waits for a later
    turn, held in memory, but not before CONNECT: partial CONNECTs of 200 KB from a thousand
    sockets would hold 200 MB. Here every turn's budget is spent, and each is refused at once."""
    length = 200 * 1024  # what the CONNECT's header announces; 20 KB of it are sent
    header = bytes((0x10, 0x80 | (length & 0x7F), 0x80 | ((length >> 7) & 0x7F), length >> 14))
    async with running() as r:
        monkeypatch.setattr(r.p.hub, "turn_spent", lambda: True)
        writers = []
        for _ in range(5):
            _, writer = await asyncio.open_connection("127.0.0.1", r.p.port)
            writer.write(header + b"\x00\x04MQTT\x04\x02\x00\x3c" + bytes(20 * 1024))
            writers.append(writer)
        await until(lambda: r.limit_hits("connect_bytes") == 5, "5 refused", within=NETWORK)
        for writer in writers:
            writer.close()


def test_compacting_the_retained_store_keeps_every_message_and_its_age() -> None:
    """Compaction rebuilds the messages in new objects, with the same content, and the one
    stored longest ago is still the next to go."""
    evicted: list[None] = []
    store = RetainedStore(limit=3, on_evict=lambda: evicted.append(None))
    originals = [Envelope(f"iot-2/type/t/id/d{n}/mon", b'{"n":%d}' % n, 0) for n in range(3)]
    for msg in originals:
        store.put(msg)
    store.put(Envelope("iot-2/type/t/id/d0/mon", b"newer", 0))  # d0 is now the youngest
    store.compact(lambda topic, payload, qos: Envelope(topic, payload, qos, retain=True))
    found = {m.topic: m for m in store.match("iot-2/type/+/id/+/mon")}
    assert {t: m.payload for t, m in found.items()} == {
        "iot-2/type/t/id/d0/mon": b"newer",
        "iot-2/type/t/id/d1/mon": b'{"n":1}',
        "iot-2/type/t/id/d2/mon": b'{"n":2}',
    }
    assert not {id(m) for m in found.values()} & {id(m) for m in originals}
    assert not {id(m.payload) for m in found.values()} & {id(m.payload) for m in originals}
    store.put(Envelope("iot-2/type/t/id/d3/mon", b"x", 0))
    assert len(evicted) == 1 and not store.match("iot-2/type/t/id/d1/mon")


async def test_once_a_burst_of_closes_is_over_the_retained_statuses_are_rebuilt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The clean-up comes once the burst is over (little freed in DELAY): the statuses the
    burst left are then in new objects."""
    monkeypatch.setattr(memory, "MIN_FREED", 10 * memory.SOCKET_BYTES)
    monkeypatch.setattr(memory, "DELAY", 0.5)
    async with running() as r, AsyncExitStack() as stack:
        statuses = f"{ORG}/type/t/id/+/mon"
        for n in range(20):
            client = await raw(r.p.port, stack)
            assert (
                await client.connect(f"d:{ORG}:t:burst{n}", "use-token-auth", "x")
            ).reason_code == 0
            await client.close()
        await until(lambda: len(r.p.router.retained(statuses)) == 20, "statuses", within=NETWORK)
        before = r.p.router.retained(statuses)  # held: the new ones cannot take their addresses
        assert r.p.hub.trimmer.cleanups == 0
        await until(lambda: r.p.hub.trimmer.cleanups == 1, "the clean-up", within=NETWORK)
        after = r.p.router.retained(statuses)
        assert len(after) == 20 and not {id(m) for m in after} & {id(m) for m in before}
        assert all(b'"Action":"Disconnect"' in m.payload for m in after)
