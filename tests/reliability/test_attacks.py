"""The short form of every attack of ``make attack`` (bench.attacks), against a platform in
this process on 127.0.0.1 with small limits: each attack is defended (its limit counted),
a well-behaved client keeps working during it, and the platform is back to where it was once
the attackers leave. The full-size, timed run is ``make attack`` (results in BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bench.attack import AFTER_FACTOR, PlatformProcess
from bench.attacks import (
    API_KEY,
    ATTACKS,
    ORG,
    TOKEN,
    Held,
    Target,
    half_open_tls,
    idle_connections,
)  # fmt: skip
from tests.platform.conftest import raw
from tests.reliability.hostile import raise_fd_limit
from tests.support.credentials import API_KEY as CREDENTIAL_KEY
from tests.support.credentials import TOKEN as CREDENTIAL_TOKEN
from tests.support.processes import WorkerProcess, publish_events
from tests.support.waiting import NETWORK, until
from worker.mqtt import Puback, Publish
from worker.platform import Platform, PlatformConfig, tls
from worker.platform.limits import MIB, Limits
from worker.platform.metrics import PlatformMetrics

pytestmark = pytest.mark.slow

# connecting is above the attacks' parallelism (bench.attacks.PARALLEL), so that only the
# attacks meant to hit it do
LIMITS = Limits(
    queued_bytes=2 * MIB, retained=100, connecting=150, handshakes=20, session_expiry=60
)
#: attack -> its size here (the full size is in bench.attacks.ATTACKS)
SMALL = {
    "client_id_churn": 200,
    "offline_durable_sessions": 100,
    "idle_connections": 100,
    "partial_connects": 300,
    "half_open_tls": 60,
    "shared_groups": 2000,
    "bad_client_ids": 50,
}


class Attacked:
    """The platform under attack and its counters."""

    def __init__(self, platform: Platform, registry: CollectorRegistry) -> None:
        self.p = platform
        self.registry = registry

    def hits(self, limit: str) -> float:
        found = self.registry.get_sample_value("worker_platform_limit_hits_total", {"limit": limit})
        return found or 0.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture
async def attacked(certificates: Path) -> AsyncIterator[Attacked]:
    registry = CollectorRegistry()
    context, _ = tls.dev_server_context(certificates)
    config = PlatformConfig(
        host="127.0.0.1", port=0, tls_port=0, ssl_context=context, accept_any_key=True,
        metrics=PlatformMetrics(registry), limits=LIMITS,
    )  # fmt: skip
    async with Platform(config) as platform:
        yield Attacked(platform, registry)


async def well_behaved_round_trip(p: Platform) -> None:
    """A device's QoS 1 event reaches an application; both connect afresh."""
    async with AsyncExitStack() as stack:
        app = await raw(p.port, stack)
        assert (await app.connect(f"a:{ORG}:probe", API_KEY, TOKEN)).reason_code == 0
        await app.subscribe("iot-2/type/probe/id/+/evt/+/fmt/+", qos=1)
        dev = await raw(p.port, stack)
        assert (await dev.connect(f"d:{ORG}:probe:p1", "use-token-auth", TOKEN)).reason_code == 0
        dev.send(Publish("iot-2/evt/rt/fmt/bin", b"ping", 1, packet_id=1))
        got = await app.publication(within=10)
        assert got.payload == b"ping" and got.packet_id is not None
        app.send(Puback(got.packet_id))
        assert isinstance(await dev.recv(within=10), Puback)


def defended(name: str, a: Attacked) -> bool:
    """Whether the attack's defence shows (its limit counted, or its effect bounded)."""
    checks: dict[str, Callable[[], bool]] = {
        "client_id_churn": lambda: (
            a.p.router.retained_count <= LIMITS.retained and a.hits("retained") > 0
        ),
        "offline_durable_sessions": lambda: (
            a.p.router.queued_bytes <= LIMITS.queued_bytes and len(a.p.hub.offline) == SMALL[name]
        ),
        "idle_connections": lambda: a.p.hub.attached >= SMALL[name],
        "partial_connects": lambda: a.hits("connect_bytes") + a.hits("connecting") >= SMALL[name],
        "half_open_tls": lambda: a.hits("handshakes") >= SMALL[name] - LIMITS.handshakes,
        "shared_groups": lambda: len(a.p.router.groups()) >= SMALL[name],
        # refused at the CONNECT's header (its 65 KB ID is over limits.connect_bytes), unread
        "bad_client_ids": lambda: a.hits("connect_bytes") >= SMALL[name],
    }
    return checks[name]()


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_is_defended_and_the_platform_recovers(
    name: str, attacked: Attacked, caplog: pytest.LogCaptureFixture
) -> None:
    attack = ATTACKS[name][0]
    assert attacked.p.tls_port is not None
    target = Target(attacked.p.port, attacked.p.tls_port)
    held = Held()
    with caplog.at_level(logging.INFO, logger="worker.platform"):
        try:
            await attack(target, SMALL[name], held)
            await until(lambda: defended(name, attacked), f"{name} to be defended", within=20)
            await well_behaved_round_trip(attacked.p)
        finally:
            for writer in held:
                writer.close()
    await until(lambda: attacked.p.connections == 0, "every attacker to be gone", within=20)
    if name != "offline_durable_sessions":
        # a session's subscriptions beyond the first hundred leave over a few loop turns
        await until(
            lambda: attacked.p.hub.attached == 0 and not attacked.p.router.groups(),
            "every session and group to be gone",
            within=20,
        )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) <= 20, lines[:5]  # rate-limited, whatever the attack's size
    assert sum(len(line) for line in lines) < 10_000  # client values clipped


# --- memory, in a platform process of its own --------------------------------------------------


async def test_half_open_tls_handshakes_leave_the_platform_s_memory_where_it_was(
    tmp_path: Path,
) -> None:
    """The memory targets of ``make attack`` for half-open TLS handshakes, small: while 2,000
    come and go (all but 100 dropped by the limit), a ``worker platform`` process stays within
    what 100 handshakes hold, and is back within 20% of idle soon after they left."""
    platform = PlatformProcess(tmp_path)
    await platform.start()
    try:
        target = Target(platform.port, platform.tls_port)
        await _half_open(target, 20)  # warm-up: the first handshakes load what all will use
        idle = platform.rss_mb()
        peak = await _half_open(target, 2000, rss=platform.rss_mb)
        assert peak < idle + 30, f"RSS peaked at {peak:.0f} MB from {idle:.0f} MB idle"
        await _rss_back(platform, idle, AFTER_FACTOR)
    finally:
        await platform.stop()


IDLE = 6000
#: where RSS must come back to, over idle, after IDLE connections went: measured at 1.23 with
#: the clean-up (worker.platform.memory) and 1.50 without it
IDLE_AFTER_FACTOR = 1.35


async def test_idle_connections_give_back_most_of_their_memory_once_gone(tmp_path: Path) -> None:
    """The memory target of ``make attack`` for idle connections, smaller: 6,000 devices
    connect, stay and go, each leaving its retained Disconnect status (1,000 kept). Once the
    burst is over the platform collects and rebuilds those statuses in fresh memory, and so
    gives back the memory that they and the interpreter's free lists pinned."""
    raise_fd_limit(2 * IDLE + 500)
    platform = PlatformProcess(tmp_path)
    await platform.start()
    try:
        target = Target(platform.port, platform.tls_port)
        held = Held()
        await idle_connections(target, 100, held)  # warm-up: what every connection will use
        for writer in held:
            writer.close()
        idle = platform.rss_mb()
        held = Held()
        await idle_connections(target, IDLE, held)
        assert platform.rss_mb() > idle * 1.3  # else this test proves nothing
        for writer in held:
            writer.close()
        await _rss_back(platform, idle, IDLE_AFTER_FACTOR)
    finally:
        await platform.stop()


async def _rss_back(platform: PlatformProcess, idle: float, factor: float) -> None:
    """Wait until the platform's RSS is at most ``factor`` times ``idle``."""
    await until(
        lambda: platform.rss_mb() <= idle * factor,
        f"RSS back within {factor - 1:.0%} of {idle:.0f} MB idle",
        within=NETWORK,
    )


async def _half_open(target: Target, count: int, rss: Callable[[], float] | None = None) -> float:
    """Open ``count`` half-open handshakes and close them; the highest ``rss()`` seen."""
    sample = rss or (lambda: 0.0)
    held = Held()
    peak = sample()
    attack = asyncio.create_task(half_open_tls(target, count, held))
    while not attack.done():
        peak = max(peak, sample())
        await asyncio.wait([attack], timeout=0.02)  # sampling, not synchronisation
    await attack
    peak = max(peak, sample())
    for writer in held:
        writer.close()
    return peak


# --- kill -9 of a member ----------------------------------------------------------------------


async def test_kill_9_of_one_of_three_members_loses_nothing(tmp_path: Path) -> None:
    """Three ``worker run`` members of ``A:abc123:shared``, one handler run at a time each; one
    is killed under load. What it had been sent and not acknowledged goes to the others (DUP):
    every event is handled, duplicates allowed and counted by the platform."""
    registry = CollectorRegistry()
    config = PlatformConfig(
        host="127.0.0.1", port=0, api_keys={CREDENTIAL_KEY: CREDENTIAL_TOKEN},
        metrics=PlatformMetrics(registry),
    )  # fmt: skip
    async with Platform(config) as p:
        args = (
            "--auth-key", CREDENTIAL_KEY, "--auth-token", CREDENTIAL_TOKEN, "--app-id", "shared",
            "--host", "127.0.0.1", "--port", str(p.port), "--concurrency", "1",
        )  # fmt: skip
        # 2 ms an event: the members stay behind the publisher, so the victim dies holding
        # messages it was sent and had not acknowledged
        workers = [WorkerProcess(tmp_path, f"w{i}", args, RECORD_DELAY="0.002") for i in (1, 2, 3)]
        try:
            await asyncio.gather(*(w.start() for w in workers))
            numbers = range(6000)
            publishing = asyncio.create_task(
                publish_events(
                    "127.0.0.1",
                    p.port,
                    numbers,
                    client_id=f"a:{ORG}:pub",
                    username=CREDENTIAL_KEY,
                    password=CREDENTIAL_TOKEN,
                )
            )
            victim = workers[0]
            await until(lambda: len(victim.handled()) >= 300, "the victim to be busy")
            victim.signal(signal.SIGKILL)
            assert await victim.wait() == -signal.SIGKILL
            await publishing

            def seen() -> set[int]:
                return {n for w in workers for n in w.handled()}

            await until(lambda: seen() >= set(numbers), "every event handled", within=60)
        finally:
            await asyncio.gather(*(w.stop() for w in workers))

        def counter(name: str, **labels: str) -> float:
            return registry.get_sample_value(f"worker_platform_{name}", labels) or 0.0

        assert counter("messages_dropped_total", reason="client_gone") == 0
        # the victim died holding unacknowledged messages: they were redelivered, not lost
        assert counter("messages_redelivered_total") > 0
