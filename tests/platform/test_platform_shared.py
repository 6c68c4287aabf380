"""Scalable applications: shared subscriptions and their load balancing (W24-W28, S4).

The first test is the "How it works" scenario of IBM's documentation, measured: one, two, three
instances of ``A:abc123:myApplication`` and the share of device events each gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack

import aiomqtt
import pytest

from tests.platform.conftest import app_client, device_client, raw
from tests.support.credentials import API_KEY, ORG, TOKEN
from worker.platform import Platform
from worker.platform.router import Envelope, RandomChoice, RoundRobin, Router
from worker.platform.session import Session

ALL_EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"
SCALABLE = f"A:{ORG}:myApplication"


class Tally:
    """Counts what each instance receives; ``wait`` returns when ``target`` messages arrived."""

    def __init__(self, instances: int) -> None:
        self.counts = [0] * instances
        self.target = 0
        self.done = asyncio.Event()

    def expect(self, target: int) -> None:
        self.counts = [0] * len(self.counts)
        self.target = target
        self.done.clear()

    async def consume(self, client: aiomqtt.Client, index: int) -> None:
        async for _ in client.messages:
            self.counts[index] += 1
            if sum(self.counts) >= self.target:
                self.done.set()

    def shares(self) -> list[float]:
        return [100 * n / self.target for n in self.counts]


async def publish_events(device: aiomqtt.Client, tally: Tally, count: int) -> list[float]:
    """Publish ``count`` device events and wait until the instances received all of them."""
    tally.expect(count)
    for i in range(count):
        await device.publish("iot-2/evt/reading/fmt/json", b"%d" % i)
    async with asyncio.timeout(20):
        await tally.done.wait()
    assert sum(tally.counts) == count, "a message went to more than one instance"
    return tally.shares()


def near(shares: Sequence[float], expected: Sequence[float], points: float = 5.0) -> bool:
    return all(abs(s - e) <= points for s, e in zip(shares, expected, strict=True))


@pytest.mark.slow
async def test_w24_w28_ibm_scenario_shares_are_measured(platform: Platform) -> None:
    tally = Tally(3)
    async with AsyncExitStack() as stack, asyncio.TaskGroup() as tasks:
        device = await stack.enter_async_context(device_client(platform.port))
        one, two, three = [
            await stack.enter_async_context(app_client(platform.port, SCALABLE)) for _ in range(3)
        ]
        consumers = [
            tasks.create_task(tally.consume(c, i)) for i, c in enumerate((one, two, three))
        ]

        # Client one subscribes to all device events: it receives 100% of them.
        await one.subscribe(ALL_EVENTS)
        assert await publish_events(device, tally, 600) == [100.0, 0.0, 0.0]
        # Client two subscribes too: the two share the events.
        await two.subscribe(ALL_EVENTS)
        assert near(await publish_events(device, tally, 1000), [50, 50, 0])
        # Client three subscribes too: a third each.
        await three.subscribe(ALL_EVENTS)
        shares = await publish_events(device, tally, 3000)
        assert near(shares, [100 / 3] * 3), shares
        # Clients two and three unsubscribe but stay connected: client one gets 100% again.
        await two.unsubscribe(ALL_EVENTS)
        await three.unsubscribe(ALL_EVENTS)
        assert await publish_events(device, tally, 600) == [100.0, 0.0, 0.0]
        assert platform.connections == 4
        for task in consumers:
            task.cancel()


async def test_w27_instances_with_different_filters_do_not_share(
    platform: Platform, clients: AsyncExitStack
) -> None:
    wide = await raw(platform.port, clients)
    await wide.connect(SCALABLE, API_KEY, TOKEN)
    await wide.subscribe(ALL_EVENTS)
    narrow = await raw(platform.port, clients)
    await narrow.connect(SCALABLE, API_KEY, TOKEN)
    await narrow.subscribe("iot-2/type/sensor/id/+/evt/+/fmt/+")
    device = await clients.enter_async_context(device_client(platform.port))
    for i in range(10):
        await device.publish("iot-2/evt/e/fmt/text", b"%d" % i)
    for client in (wide, narrow):
        got = [int((await client.publication()).payload) for _ in range(10)]
        assert got == list(range(10))


async def test_w26_with_and_without_instance_id_are_different_groups(
    platform: Platform, clients: AsyncExitStack
) -> None:
    plain = await raw(platform.port, clients)
    await plain.connect(SCALABLE, API_KEY, TOKEN)
    await plain.subscribe(ALL_EVENTS)
    named = await raw(platform.port, clients)
    await named.connect(f"{SCALABLE}:i1", API_KEY, TOKEN)
    await named.subscribe(ALL_EVENTS)
    device = await clients.enter_async_context(device_client(platform.port))
    await device.publish("iot-2/evt/e/fmt/text", b"both")
    assert (await plain.publication()).payload == b"both"
    assert (await named.publication()).payload == b"both"


async def test_w26_offline_durable_instance_share_goes_to_others_then_waits(
    platform: Platform, clients: AsyncExitStack
) -> None:
    instances = []
    for name in ("i1", "i2"):
        client = await raw(platform.port, clients)
        await client.connect(f"{SCALABLE}:{name}", API_KEY, TOKEN, clean=False)
        await client.subscribe(ALL_EVENTS, qos=1)
        instances.append(client)
    device = await clients.enter_async_context(device_client(platform.port))
    await instances[1].close()
    for i in range(4):
        await device.publish("iot-2/evt/e/fmt/text", b"%d" % i, qos=1)
    got = [int((await instances[0].publication()).payload) for _ in range(4)]
    assert got == [0, 1, 2, 3]  # the offline instance is skipped
    await instances[0].close()
    await device.publish("iot-2/evt/e/fmt/text", b"kept", qos=1)  # nobody online: kept
    back = await raw(platform.port, clients)
    ack = await back.connect(f"{SCALABLE}:i2", API_KEY, TOKEN, clean=False)
    assert ack.session_present
    assert (await back.publication()).payload == b"kept"


# --- the strategies, without sockets -----------------------------------------------------------


class Outlet:
    """A connection stand-in that records what the session writes."""

    def __init__(self) -> None:
        self.paused = False
        self.protocol_level = 4
        self.messages = 0

    def send(self, data: bytes) -> None:
        pass

    def send_message(self, data: bytes) -> None:
        self.messages += 1

    def request_drain(self) -> None:
        pass


def group_of(router: Router, n: int) -> list[tuple[Session, Outlet]]:
    members = []
    for _ in range(n):
        session = Session(f"A:{ORG}:app", router, durable=False, share=("app", False))
        outlet = Outlet()
        session.attach(outlet)
        session.subscribe(ALL_EVENTS, f"{ORG}/type/+/id/+/evt/+/fmt/+", str, 0)
        members.append((session, outlet))
    return members


def publish(router: Router, count: int) -> None:
    for _ in range(count):
        router.publish(Envelope(f"{ORG}/type/t/id/d/evt/e/fmt/f", b"x", 0))


def test_w28_random_strategy_shares_and_is_reproducible_with_a_seed() -> None:
    runs = []
    for _ in range(2):
        router = Router(RandomChoice(seed=7))
        members = group_of(router, 3)
        publish(router, 3000)
        counts = [outlet.messages for _, outlet in members]
        assert near([c / 30 for c in counts], [100 / 3] * 3), counts
        runs.append(counts)
    assert runs[0] == runs[1]


def test_w28_round_robin_keeps_its_turn_when_a_member_leaves() -> None:
    router = Router(RoundRobin())
    members = group_of(router, 3)
    publish(router, 3)
    members[0][0].unsubscribe(ALL_EVENTS)
    publish(router, 4)
    assert [outlet.messages for _, outlet in members] == [1, 3, 3]


@pytest.mark.parametrize("strategy", [RoundRobin(), RandomChoice(1)])
def test_s4_a_leaving_member_hands_its_backlog_to_the_group(
    strategy: RoundRobin | RandomChoice,
) -> None:
    router = Router(strategy)
    (slow, slow_out), (_, fast_out) = group_of(router, 2)
    slow_out.paused = True  # its socket is full: its share waits in its buffer
    publish(router, 10)
    assert slow.pending + fast_out.messages == 10
    slow.detach()
    assert fast_out.messages == 10 and slow_out.messages == 0
