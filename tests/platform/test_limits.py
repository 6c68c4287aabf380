"""The platform's limits (docs/platform/index.md, "Limits"): each one hit, counted and survived.

Every test runs a platform on port 0 with one limit made small, hits it over real sockets and
reads the limit's counter (``worker_platform_limit_hits_total``) and the drop reasons.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.platform.conftest import raw
from tests.platform.rawclient import RawClient
from tests.support.credentials import API_KEY, DEVICE, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
from tests.support.waiting import until
from worker.errors import ConfigError
from worker.mqtt import (
    MQTT_5,
    Connack,
    ConnackReturnCode,
    Properties,
    Puback,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    encode,
)
from worker.platform import Platform, connection, memory, tls
from worker.platform import hub as hub_module
from worker.platform.launch import Launch, prepare
from worker.platform.limits import Limits, parse_limits
from worker.platform.metrics import DropReason, GroupMetrics, PlatformMetrics

ALL_EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"
STATUS = "iot-2/type/+/id/+/mon"
EVENT = "iot-2/evt/e/fmt/bin"


class Running:
    """A platform with its metrics registry."""

    def __init__(self, platform: Platform, registry: CollectorRegistry) -> None:
        self.p = platform
        self.registry = registry

    def limit_hits(self, limit: str) -> float:
        return self._value("worker_platform_limit_hits_total", limit=limit)

    def dropped(self, reason: str) -> float:
        return self._value("worker_platform_messages_dropped_total", reason=reason)

    def _value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[Running]:
    registry = CollectorRegistry()
    cfg = platform_config(metrics=PlatformMetrics(registry), accept_any_key=True, **overrides)
    async with Platform(cfg) as p:
        yield Running(p, registry)


async def device(p: Platform, stack: AsyncExitStack, *, level: int = 4) -> RawClient:
    client = await raw(p.port, stack)
    assert (
        await client.connect(DEVICE, "use-token-auth", DEVICE_TOKEN, level=level)
    ).reason_code == 0
    return client


async def app(
    p: Platform, stack: AsyncExitStack, name: str, *, clean: bool = True, **kw: Any
) -> tuple[RawClient, Connack]:
    client = await raw(p.port, stack)
    connack = await client.connect(f"a:{ORG}:{name}", API_KEY, TOKEN, clean=clean, **kw)
    return client, connack


async def acks(client: RawClient, count: int) -> list[Puback]:
    found: list[Puback] = []
    while len(found) < count:
        packet = await client.recv()
        if isinstance(packet, Puback):
            found.append(packet)
    return found


# --- queues -----------------------------------------------------------------------------------


async def test_a_full_offline_queue_refuses_qos1_and_tells_an_mqtt5_publisher() -> None:
    async with running(buffer_size=3) as r, AsyncExitStack() as stack:
        sub, _ = await app(r.p, stack, "offline", clean=False)
        await sub.subscribe(ALL_EVENTS, qos=1)
        await sub.close()
        pub = await device(r.p, stack, level=MQTT_5)
        for n in range(5):
            pub.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        codes = [ack.reason_code for ack in await acks(pub, 5)]
        assert codes == [0, 0, 0, ReasonCode.QUOTA_EXCEEDED, ReasonCode.QUOTA_EXCEEDED]
        assert r.dropped("queue_full") == 2
        assert r.limit_hits("subscription_messages") == 2


async def test_session_bytes_push_out_the_oldest_qos0_first() -> None:
    limits = Limits(session_queue_bytes=4 * 1024)
    async with running(limits=limits) as r, AsyncExitStack() as stack:
        sub, _ = await app(r.p, stack, "bytes", clean=False)
        await sub.subscribe(ALL_EVENTS, qos=0)
        await sub.close()
        pub = await device(r.p, stack)
        for n in range(10):
            pub.send(Publish(EVENT, b"%04d" % n + b"x" * 996, qos=1, packet_id=n + 1))
        await acks(pub, 10)
        session = r.p.hub.sessions[f"a:{ORG}:bytes"]
        assert session.queued_bytes <= 4 * 1024
        back, connack = await app(r.p, stack, "bytes", clean=False)
        assert connack.session_present
        got = [int((await back.publication()).payload[:4]) for _ in range(session.pending or 3)]
        assert got == sorted(got) and got[-1] == 9  # the newest kept, the oldest gone
        assert r.dropped("queue_full") == r.limit_hits("session_queue_bytes") == 10 - len(got)


async def test_total_queued_bytes_bound_every_session_together() -> None:
    limits = Limits(queued_bytes=8 * 1024)
    async with running(limits=limits) as r, AsyncExitStack() as stack:
        for name in ("one", "two"):
            sub, _ = await app(r.p, stack, name, clean=False)
            await sub.subscribe(ALL_EVENTS, qos=1)
            await sub.close()
        pub = await device(r.p, stack, level=MQTT_5)
        for n in range(10):
            pub.send(Publish(EVENT, b"y" * 1000, qos=1, packet_id=n + 1))
        codes = [ack.reason_code for ack in await acks(pub, 10)]
        assert r.p.router.queued_bytes <= 8 * 1024
        assert ReasonCode.QUOTA_EXCEEDED in codes
        assert r.limit_hits("queued_bytes") == r.dropped("queue_full") > 0


async def test_a_publisher_waits_for_a_slow_subscriber_instead_of_losing_messages() -> None:
    async with running(max_inflight=5, buffer_size=20) as r, AsyncExitStack() as stack:
        sub, _ = await app(r.p, stack, "careful")
        await sub.subscribe(ALL_EVENTS, qos=1)
        pub = await device(r.p, stack, level=MQTT_5)
        total = 200
        for n in range(total):
            pub.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        got: list[int] = []
        async with asyncio.timeout(10):
            while len(got) < total:
                packet = await sub.publication()
                assert packet.packet_id is not None
                sub.send(Puback(packet.packet_id))
                got.append(int(packet.payload))
        assert got == list(range(total))  # nothing dropped, in order
        codes = {ack.reason_code for ack in await acks(pub, total)}
        assert codes == {0}
        assert r.dropped("queue_full") == 0 and r.limit_hits("backpressure") == 0


async def test_a_subscriber_that_never_catches_up_holds_publishers_only_so_long() -> None:
    limits = Limits(backpressure_wait=0.3)
    async with (
        running(max_inflight=5, buffer_size=20, limits=limits) as r,
        AsyncExitStack() as stack,
    ):
        sub, _ = await app(r.p, stack, "stuck")
        await sub.subscribe(ALL_EVENTS, qos=1)  # and never acknowledges
        pub = await device(r.p, stack, level=MQTT_5)
        for n in range(100):
            pub.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        codes = [ack.reason_code for ack in await acks(pub, 100)]
        assert r.limit_hits("backpressure") == 1
        refused = codes.count(ReasonCode.QUOTA_EXCEEDED)
        assert refused == r.dropped("queue_full") == 100 - 5 - 20


#: each drop reason and the test here that reaches it over a socket
REACHED = {
    "queue_full": "test_a_full_offline_queue_refuses_qos1_and_tells_an_mqtt5_publisher",
    "client_gone": "test_member_loss.test_with_no_member_left_they_are_dropped_and_counted",
    "expired": "test_message_expiry_drops_what_expired_and_sends_what_is_left",
    "session_expired": "test_mqtt5_session_expiry_is_honoured_and_capped",
    "too_large": "test_refused_publishes_are_counted_by_reason",
    "not_authorized": "test_refused_publishes_are_counted_by_reason",
    "topic_not_valid": "test_refused_publishes_are_counted_by_reason",
    "no_subscribers": "test_refused_publishes_are_counted_by_reason",
}


def test_every_drop_reason_is_reached_by_a_test() -> None:
    assert set(REACHED) == {reason.value for reason in DropReason}


async def test_refused_publishes_are_counted_by_reason() -> None:
    async with running() as r, AsyncExitStack() as stack:
        pub = await device(r.p, stack, level=MQTT_5)
        pub.send(Publish(EVENT, b"nobody listens", qos=1, packet_id=1))
        pub.send(Publish("iot-2/type/t/id/other/evt/e/fmt/bin", b"", qos=1, packet_id=2))
        pub.send(Publish("iot-2/evt/e", b"", qos=1, packet_id=3))
        codes = [ack.reason_code for ack in await acks(pub, 3)]
        assert codes == [0, ReasonCode.NOT_AUTHORIZED, ReasonCode.TOPIC_NAME_INVALID]
        pub.send(Publish(EVENT, b"x" * (r.p.config.max_payload + 1), qos=1, packet_id=4))
        await pub.until_closed()
        for reason in ("no_subscribers", "not_authorized", "topic_not_valid", "too_large"):
            assert r.dropped(reason) == 1, reason


async def test_offline_queues_cannot_leave_connected_clients_without_room() -> None:
    limits = Limits(queued_bytes=16 * 1024)
    async with running(limits=limits) as r, AsyncExitStack() as stack:
        away, _ = await app(r.p, stack, "away", clean=False)
        await away.subscribe(ALL_EVENTS, qos=1)
        await away.close()
        here, _ = await app(r.p, stack, "here")
        await here.subscribe(ALL_EVENTS, qos=1)
        pub = await device(r.p, stack)
        for n in range(40):
            pub.send(Publish(EVENT, b"%d" % n + b"w" * 400, qos=1, packet_id=n + 1))
            packet = await here.publication()  # every one, though the offline queue is full
            assert packet.packet_id is not None and packet.payload.startswith(b"%d" % n)
            here.send(Puback(packet.packet_id))
        offline = r.p.hub.sessions[f"a:{ORG}:away"].queued_bytes
        assert offline <= 8 * 1024 and r.limit_hits("queued_bytes") > 0


# --- sessions ---------------------------------------------------------------------------------


async def test_mqtt5_session_expiry_is_honoured_and_capped() -> None:
    async with running(limits=Limits(session_expiry=30)) as r, AsyncExitStack() as stack:
        asks = Properties(session_expiry_interval=1)
        sub, connack = await app(r.p, stack, "short", clean=False, level=MQTT_5, properties=asks)
        assert connack.properties.session_expiry_interval is None  # granted as asked
        await sub.subscribe(ALL_EVENTS, qos=1)
        await sub.close()
        pub = await device(r.p, stack)
        pub.send(Publish(EVENT, b"late", qos=1, packet_id=1))
        await acks(pub, 1)
        cid = f"a:{ORG}:short"
        await until(lambda: cid not in r.p.hub.sessions, "the session to expire", within=5)
        assert r.dropped("session_expired") == 1 and r.limit_hits("session_expiry") == 1
        _, again = await app(r.p, stack, "short", clean=False, level=MQTT_5, properties=asks)
        assert not again.session_present
        forever = Properties(session_expiry_interval=0xFFFFFFFF)
        _, capped = await app(r.p, stack, "long", clean=False, level=MQTT_5, properties=forever)
        assert capped.properties.session_expiry_interval == 30


async def test_a_311_durable_session_expires_and_takes_its_retained_status() -> None:
    async with running(limits=Limits(session_expiry=1)) as r, AsyncExitStack() as stack:
        dev = await raw(r.p.port, stack)
        await dev.connect(DEVICE, "use-token-auth", DEVICE_TOKEN, clean=False)
        await dev.close()
        await until(lambda: DEVICE not in r.p.hub.sessions, "the session to expire", within=5)
        watcher, _ = await app(r.p, stack, "watcher")
        await watcher.subscribe(STATUS)
        with pytest.raises(TimeoutError):
            await watcher.publication(within=0.3)  # no retained status left
        assert r.p.router.retained_count == 1  # the watcher's own Connect status


async def test_past_the_session_limit_the_oldest_offline_goes_then_connects_are_refused() -> None:
    async with running(limits=Limits(sessions=2)) as r, AsyncExitStack() as stack:
        first, _ = await app(r.p, stack, "first", clean=False)
        await first.close()
        await until(lambda: r.p.hub.attached == 0, "the first to go offline", within=5)
        second, _ = await app(r.p, stack, "second", clean=False)
        third, connack = await app(r.p, stack, "third")
        assert connack.reason_code == 0
        assert f"a:{ORG}:first" not in r.p.hub.sessions  # evicted: the oldest offline
        assert r.limit_hits("sessions") == 1
        _, refused = await app(r.p, stack, "fourth")
        assert refused.reason_code == ConnackReturnCode.SERVER_UNAVAILABLE
        _, refused5 = await app(r.p, stack, "fifth", level=MQTT_5)
        assert refused5.reason_code == ReasonCode.QUOTA_EXCEEDED
        assert r.limit_hits("sessions") == 3
        assert second and third


async def test_retained_statuses_are_bounded() -> None:
    async with running(limits=Limits(retained=3)) as r, AsyncExitStack() as stack:
        for n in range(5):
            dev = await raw(r.p.port, stack)
            await dev.connect(f"d:{ORG}:sensor:r{n}", "use-token-auth", "any")
            await dev.close()
        await until(lambda: r.p.hub.attached == 0, "every device to go", within=5)
        assert r.p.router.retained_count == 3
        assert r.limit_hits("retained") >= 2


# --- before CONNECT ---------------------------------------------------------------------------


async def test_a_large_packet_before_connect_is_refused_at_its_header() -> None:
    async with running(limits=Limits(connect_bytes=1024)) as r, AsyncExitStack() as stack:
        client = await raw(r.p.port, stack)
        client.send_bytes(b"\x10\xff\xff\x0b")  # CONNECT, remaining length about 190 KB
        assert await client.until_closed() == []
        assert r.limit_hits("connect_bytes") == 1
        ok, _ = await app(r.p, stack, "fine")
        ok.send(Publish("iot-2/type/t/id/d/cmd/c/fmt/bin", b"z" * 4000, qos=1, packet_id=1))
        assert isinstance(await ok.recv(), Puback)  # after CONNECT the full limit applies


async def test_sockets_that_never_connect_are_bounded_oldest_first() -> None:
    async with running(limits=Limits(connecting=3)) as r, AsyncExitStack() as stack:
        idle = [await raw(r.p.port, stack) for _ in range(5)]
        await until(lambda: r.limit_hits("connecting") == 2, "two evictions", within=5)
        assert await idle[0].until_closed() == [] and await idle[1].until_closed() == []
        _, connack = await app(r.p, stack, "latecomer")
        assert connack.reason_code == 0


# --- per packet -------------------------------------------------------------------------------


def _matching_filters(count: int) -> list[str]:
    """``count`` different filters that all match :data:`EVENT` from :func:`device`."""
    found = []
    for bits in range(count):
        levels = [name if bits >> i & 1 else "+" for i, name in enumerate(("sensor", "s1", "e"))]
        found.append("iot-2/type/{}/id/{}/evt/{}/fmt/+".format(*levels))
    return found


async def test_neither_a_read_nor_a_scrape_walks_the_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """24 groups of 3 applications: a scrape hands each application's numbers over once (3
    series), and the messages dispatched are all there."""
    flushed: list[GroupMetrics] = []
    original = GroupMetrics.flush

    def flush(series: GroupMetrics) -> None:
        flushed.append(series)
        original(series)

    monkeypatch.setattr(GroupMetrics, "flush", flush)
    async with running() as r, AsyncExitStack() as stack:
        for n in range(3):
            client = await raw(r.p.port, stack)
            await client.connect(f"A:{ORG}:g{n}", API_KEY, TOKEN)
            await client.subscribe(*_matching_filters(8))
        assert len(r.p.router.groups()) == 24
        pub = await device(r.p, stack)
        for n in range(50):
            pub.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        await acks(pub, 50)
        assert flushed == []  # 50 reads' worth of messages, and no walk of anything
        generate_latest(r.registry)
        assert len(flushed) == 3
        total = sum(
            s.value
            for family in r.registry.collect()
            for s in family.samples
            if s.name == "worker_platform_shared_dispatched_total"
        )
        assert total == 24 * 50


async def test_a_connack_is_not_kept_waiting_behind_other_clients_subscribes() -> None:
    """Ten applications send 1,000 filters each (ten SUBSCRIBEs of 100): a client that
    connects after them gets its CONNACK while their filters are still being stored."""
    filters = [f"iot-2/type/t{n}/id/+/evt/+/fmt/+" for n in range(1000)]
    async with running() as r, AsyncExitStack() as stack:
        storms = []
        for n in range(10):
            storm, _ = await app(r.p, stack, f"storm{n}")
            for first in range(0, 1000, 100):
                chunk = tuple(Subscription(f, 0) for f in filters[first : first + 100])
                storm.send(Subscribe(first // 100 + 1, chunk))
            storms.append(storm)
        started = time.perf_counter()
        _, connack = await app(r.p, stack, "visitor")
        waited = time.perf_counter() - started
        assert connack.reason_code == 0
        assert r.p.router.subscriptions < 10_000  # the storm was still being handled
        assert waited < 0.5
        for storm in storms:
            assert [type(await storm.recv(within=20)) for _ in range(10)] == [Suback] * 10
        assert r.p.router.subscriptions == 10_000


async def test_a_resumed_session_gets_its_unacknowledged_messages_then_the_rest_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,200 QoS 1 messages for an application that acknowledges none and goes: back, it
    gets the 1,000 it had been sent (DUP, same packet IDs, resent a few at a time under a
    small work budget), then, as it acknowledges them, the 200 that waited."""
    monkeypatch.setattr(hub_module, "TURN_BUDGET", 50)
    async with running() as r, AsyncExitStack() as stack:
        first, _ = await app(r.p, stack, "resume", clean=False)
        await first.subscribe(ALL_EVENTS, qos=1)
        pub = await device(r.p, stack)
        for n in range(1200):
            pub.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        await acks(pub, 1200)
        sent = [await first.publication() for _ in range(1000)]
        await first.close()  # no PUBACK
        back, connack = await app(r.p, stack, "resume", clean=False)
        assert connack.session_present
        again = [await back.publication() for _ in range(1000)]
        key = [(m.payload, m.packet_id) for m in sent]
        assert [(m.payload, m.packet_id) for m in again] == key and all(m.dup for m in again)
        for message in again:
            assert message.packet_id is not None
            back.send(Puback(message.packet_id))
        rest = [await back.publication() for _ in range(200)]
        assert [m.payload for m in rest] == [b"%d" % n for n in range(1000, 1200)]
        assert not any(m.dup for m in rest)


async def test_a_session_with_many_subscriptions_leaves_over_several_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An application with 1,000 shared subscriptions goes while a device publishes to one
    of them: under a small work budget its subscriptions leave over several loop turns, what
    its groups kept meanwhile is dropped (counted), and another application gets every
    message."""
    monkeypatch.setattr(hub_module, "TURN_BUDGET", 200)
    filters = [f"iot-2/type/t{n}/id/+/evt/+/fmt/+" for n in range(1000)]
    async with running() as r, AsyncExitStack() as stack:
        wide = await raw(r.p.port, stack)
        await wide.connect(f"A:{ORG}:wide", API_KEY, TOKEN)
        for first in range(0, 1000, 100):
            await wide.subscribe(*filters[first : first + 100])
        other, _ = await app(r.p, stack, "other")
        await other.subscribe(ALL_EVENTS, qos=1)
        assert r.p.router.subscriptions == 1001
        pub = await raw(r.p.port, stack)
        await pub.connect(f"d:{ORG}:t900:d1", "use-token-auth", DEVICE_TOKEN)
        await wide.close()
        for n in range(20):
            pub.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        await acks(pub, 20)
        await until(lambda: r.p.router.subscriptions == 1, "the 1,000 to leave", within=10)
        assert not r.p.router.groups()
        got = [await other.publication() for _ in range(20)]
        assert [m.payload for m in got] == [b"%d" % n for n in range(20)]
        for message in got:
            assert message.packet_id is not None
            other.send(Puback(message.packet_id))
        # what the leaving group kept for its gone member was dropped and counted, not kept
        await until(lambda: r.p.router.queued_bytes == 0, "nothing left queued", within=5)
        assert r.dropped("client_gone") <= 20


async def test_tls_handshakes_in_progress_are_bounded_oldest_first(tmp_path: Path) -> None:
    context, ca = tls.dev_server_context(tmp_path)
    limits = Limits(handshakes=3)
    async with running(tls_port=0, ssl_context=context, limits=limits) as r:
        port = r.p.tls_port
        assert port is not None
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        await until(lambda: r.limit_hits("handshakes") == 2, "two handshakes dropped", within=5)
        for reader, _ in silent[:2]:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # reset or closed
        client_context = ssl.create_default_context(cafile=str(ca))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname="localhost"
        )
        async with RawClient(reader, writer) as client:
            assert (await client.connect(f"a:{ORG}:secure", API_KEY, TOKEN)).reason_code == 0
        for _, writer in silent:
            writer.close()


async def test_a_read_that_reaches_many_subscribers_is_spread_over_loop_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "FANOUT_BUDGET", 10)
    async with running() as r, AsyncExitStack() as stack:
        subs = []
        for n in range(5):
            sub, _ = await app(r.p, stack, f"fan{n}")
            await sub.subscribe(ALL_EVENTS)
            subs.append(sub)
        pub = await device(r.p, stack)
        pub.send_bytes(b"".join(
            encode(Publish(EVENT, b"%d" % n, 1, packet_id=n + 1), 4) for n in range(50)
        ))  # fmt: skip
        await acks(pub, 50)
        for sub in subs:
            assert [int((await sub.publication()).payload) for _ in range(50)] == list(range(50))


async def test_unacknowledged_messages_count_against_the_byte_limits() -> None:
    async with running() as r, AsyncExitStack() as stack:
        sub, _ = await app(r.p, stack, "slowpoke", clean=False)
        await sub.subscribe(ALL_EVENTS, qos=1)
        pub = await device(r.p, stack)
        for n in range(10):
            pub.send(Publish(EVENT, b"z" * 100, qos=1, packet_id=n + 1))
        for _ in range(10):
            await sub.publication()  # and no acknowledgement
        session = r.p.hub.sessions[f"a:{ORG}:slowpoke"]
        assert len(session.inflight) == 10 and session.pending == 0
        assert session.queued_bytes == r.p.router.queued_bytes > 10 * 100
        await sub.close()
        _, connack = await app(r.p, stack, "slowpoke")  # a clean start ends the session
        assert connack.reason_code == 0 and r.p.router.queued_bytes == 0


async def test_the_heap_is_trimmed_once_after_a_burst_of_closed_sockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "MIN_FREED", 20 * memory.SOCKET_BYTES)
    monkeypatch.setattr(memory, "DELAY", 0.05)
    async with running() as r, AsyncExitStack() as stack:
        if memory._malloc_trim() is None:
            pytest.skip("no glibc malloc_trim here")
        for _ in range(30):
            client = await raw(r.p.port, stack)
            await client.close()
        await until(lambda: r.p.hub.trimmer.trims >= 1, "a trim", within=5)


async def test_the_heap_is_trimmed_once_offline_sessions_have_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten durable sessions with 200 KB queued each expire: what they held is trimmed."""
    monkeypatch.setattr(memory, "DELAY", 0.05)
    async with running(limits=Limits(session_expiry=1)) as r, AsyncExitStack() as stack:
        if memory._malloc_trim() is None:
            pytest.skip("no glibc malloc_trim here")
        for n in range(10):
            client, _ = await app(r.p, stack, f"away{n}", clean=False)
            await client.subscribe(ALL_EVENTS, qos=1)
            await client.close()
        await until(lambda: len(r.p.hub.offline) == 10, "ten offline sessions", within=5)
        pub = await device(r.p, stack)
        for n in range(20):
            pub.send(Publish(EVENT, b"x" * 10_000, qos=1, packet_id=n + 1))
        await acks(pub, 20)
        assert r.p.router.queued_bytes > 10 * 20 * 10_000
        assert r.p.hub.trimmer.trims == 0  # ten closed sockets are too few to trim for
        await until(lambda: not r.p.hub.offline, "the sessions to expire", within=5)
        await until(lambda: r.p.hub.trimmer.trims >= 1, "a trim after them", within=5)


async def test_the_heap_is_trimmed_once_a_session_with_many_subscriptions_has_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "DELAY", 0.05)
    async with running() as r, AsyncExitStack() as stack:
        if memory._malloc_trim() is None:
            pytest.skip("no glibc malloc_trim here")
        wide = await raw(r.p.port, stack)
        await wide.connect(f"A:{ORG}:wide", API_KEY, TOKEN)
        for first in range(0, 1000, 100):
            await wide.subscribe(
                *(f"iot-2/type/t{n}/id/+/evt/+/fmt/+" for n in range(first, first + 100))
            )
        await wide.close()  # one socket: far too little to trim for, but 1,000 subscriptions
        await until(lambda: r.p.router.subscriptions == 0, "the subscriptions to go", within=5)
        await until(lambda: r.p.hub.trimmer.trims >= 1, "a trim after them", within=5)


# --- logs -------------------------------------------------------------------------------------


async def test_refusals_are_logged_clipped_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as r, AsyncExitStack() as stack:
        with caplog.at_level(logging.INFO, logger="worker.platform"):
            for _ in range(20):
                client = await raw(r.p.port, stack)
                connack = await client.connect("x" * 8000, API_KEY, TOKEN)
                assert connack.reason_code != 0
                await client.until_closed()
        lines = [rec.getMessage() for rec in caplog.records]
        assert 1 <= len(lines) <= 4, lines  # one refusal and one closing line, not twenty each
        assert all(len(line) < 600 for line in lines), [len(line) for line in lines]


# --- MQTT 5 delivery --------------------------------------------------------------------------


async def test_properties_are_forwarded_to_mqtt5_subscribers_only() -> None:
    async with running() as r, AsyncExitStack() as stack:
        v5, _ = await app(r.p, stack, "five", level=MQTT_5)
        await v5.subscribe(ALL_EVENTS)
        v3, _ = await app(r.p, stack, "three")
        await v3.subscribe(ALL_EVENTS)
        pub = await device(r.p, stack, level=MQTT_5)
        props = Properties(content_type="text/plain", user_properties=(("k", "v"),))
        pub.send(Publish(EVENT, b"hi", qos=1, packet_id=1, properties=props))
        got5, got3 = await v5.publication(), await v3.publication()
        assert got5.properties.content_type == "text/plain"
        assert got5.properties.user_properties == (("k", "v"),)
        assert got3.payload == b"hi" and got3.properties.content_type is None


async def test_message_expiry_drops_what_expired_and_sends_what_is_left() -> None:
    async with running() as r, AsyncExitStack() as stack:
        asks = Properties(session_expiry_interval=60)
        sub, _ = await app(r.p, stack, "later", clean=False, level=MQTT_5, properties=asks)
        await sub.subscribe(ALL_EVENTS, qos=1)
        await sub.close()
        pub = await device(r.p, stack, level=MQTT_5)
        short, long = Properties(message_expiry_interval=1), Properties(message_expiry_interval=60)
        pub.send(Publish(EVENT, b"short", qos=1, packet_id=1, properties=short))
        pub.send(Publish(EVENT, b"long", qos=1, packet_id=2, properties=long))
        await acks(pub, 2)
        await asyncio.sleep(1.2)  # the expiry itself is what is tested
        back, _ = await app(r.p, stack, "later", clean=False, level=MQTT_5, properties=asks)
        got = await back.publication()
        assert got.payload == b"long"
        assert got.properties.message_expiry_interval is not None
        assert 55 <= got.properties.message_expiry_interval < 60
        assert r.dropped("expired") == 1


async def test_receive_maximum_bounds_unacknowledged_deliveries() -> None:
    async with running() as r, AsyncExitStack() as stack:
        sub, _ = await app(
            r.p, stack, "two", level=MQTT_5, properties=Properties(receive_maximum=2)
        )
        await sub.subscribe(ALL_EVENTS, qos=1)
        pub = await device(r.p, stack)
        for n in range(5):
            pub.send(Publish(EVENT, b"%d" % n, qos=1, packet_id=n + 1))
        first = [await sub.publication(), await sub.publication()]
        with pytest.raises(TimeoutError):
            await sub.publication(within=0.3)  # a third waits for an acknowledgement
        assert first[0].packet_id is not None
        sub.send(Puback(first[0].packet_id))
        assert (await sub.publication()).payload == b"2"


# --- settings ---------------------------------------------------------------------------------


def test_limits_are_settings_of_worker_platform() -> None:
    limits, problems = parse_limits(["session_expiry=600", "backpressure-wait=0.5"])
    assert problems == []
    assert limits.session_expiry == 600 and limits.backpressure_wait == 0.5
    assert limits.sessions == Limits().sessions  # the rest keep their defaults
    _, problems = parse_limits(["sesions=1", "sessions=many", "retained=0"])
    assert problems[0].startswith("--limit 'sesions=1': expected NAME=VALUE with NAME one of")
    assert problems[1] == "--limit 'sessions=many': sessions takes a whole number, not 'many'"
    assert problems[2] == "--limit: limits.retained must be at least 1"
    with pytest.raises(ConfigError) as raised:
        prepare(Launch(port=0, limits=("nope=1",)))
    assert "--limit 'nope=1'" in str(raised.value)
    assert prepare(Launch(port=0, limits=("retained=5",))).config.limits.retained == 5
