"""The connection supervisor against a real Mosquitto: subscribe, feed, reconnect, refuse."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import MosquittoFactory
from tests.support.mosquitto import Mosquitto
from tests.support.waiting import NETWORK, until
from worker.config import Settings, load_settings
from worker.connection import (
    DURABLE_SESSION_EXPIRY,
    Backoff,
    Connection,
    connect_options,
    transport_factory,
)
from worker.errors import ConfigError, NotAuthorized
from worker.metrics import Metrics
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Inbound

pytestmark = pytest.mark.mosquitto
EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"
FAST = Backoff(initial=0.05, cap=0.2)


def settings(broker: Mosquitto | int, **flags: str) -> Settings:
    port = broker if isinstance(broker, int) else broker.port
    base = {"profile": "mqtt", "host": "127.0.0.1", "port": str(port)}
    base |= {"org": "abc123", "app_id": "app", "instance": "i1"}
    return load_settings({}, base | flags)


class Sink:
    """Takes batches, acknowledges them at once, and lets tests wait on the count."""

    def __init__(self) -> None:
        self.messages: list[Inbound] = []
        self._changed = asyncio.Condition()

    async def put(self, batch: Sequence[Inbound], ack: Callable[[Sequence[int]], None]) -> None:
        self.messages.extend(batch)
        ack([m.packet_id for m in batch if m.qos])
        async with self._changed:
            self._changed.notify_all()

    async def count(self, n: int) -> None:
        async with asyncio.timeout(NETWORK), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= n)


class Running:
    """A Connection whose ``run`` is a task, with its metrics registry."""

    def __init__(self, s: Settings, **kw: Any) -> None:
        self.registry = CollectorRegistry()
        metrics = Metrics(
            self.registry, app="app", client_id=s.client_id, instance="i1", profile="mqtt",
            version="0",
        )  # fmt: skip
        self.sink = Sink()
        kw.setdefault("backoff", FAST)
        kw.setdefault("transport_factory", AiomqttTransport)
        self.conn = Connection(s, [EVENTS], self.sink, metrics, rng=random.Random(1), **kw)
        self.task = asyncio.create_task(self.conn.run())

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(name)

    async def until(self, check: Callable[[], bool], what: str) -> None:
        """Wait until ``check()``; a connection task that ended raises its error at once."""

        def holds() -> bool:
            if self.task.done():
                self.task.result()
            return check()

        await until(holds, what, within=NETWORK)

    async def close(self) -> None:
        await self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, NETWORK)


@contextlib.asynccontextmanager
async def running(s: Settings, **kw: Any) -> AsyncIterator[Running]:
    r = Running(s, **kw)
    try:
        yield r
    finally:
        await r.close()


@contextlib.asynccontextmanager
async def publisher(broker: Mosquitto) -> AsyncIterator[AiomqttTransport]:
    transport = AiomqttTransport()
    await transport.connect(ConnectOptions(host=broker.host, port=broker.port, client_id="pub"))
    try:
        yield transport
    finally:
        await transport.disconnect()


def event(n: int) -> str:
    return f"iot-2/type/sensor/id/d{n}/evt/reading/fmt/json"


async def test_subscribes_shared_and_feeds_the_sink(mosquitto: Mosquitto) -> None:
    async with running(settings(mosquitto)) as r, publisher(mosquitto) as pub:
        await asyncio.wait_for(r.conn.wait_online(), NETWORK)
        assert not r.conn.subscribed  # nothing arrives before the startup hooks have run
        await r.conn.open_intake()
        await asyncio.wait_for(r.conn.ready.wait(), NETWORK)
        assert r.conn.client_id == "app-i1"
        assert (r.gauge("worker_connected"), r.gauge("worker_subscribed")) == (1, 1)
        for n in range(5):
            await pub.publish(event(n), b"{}", qos=1)
        await r.sink.count(5)
        assert {m.qos for m in r.sink.messages} == {1}
        assert r.conn.received == 5
    assert f"app-i1 1 $share/abc123:app/{EVENTS}" in mosquitto.log.read_text()


async def test_broker_restart_reconnects_and_resubscribes(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings(mosquitto)) as r:
        # The runner's order: online, then the startup hooks, then the intake opens.
        await asyncio.wait_for(r.conn.wait_online(), NETWORK)
        await r.conn.open_intake()
        await asyncio.wait_for(r.conn.ready.wait(), NETWORK)
        await asyncio.to_thread(mosquitto.restart)
        await r.until(
            lambda: r.gauge("worker_reconnects_total") == 1 and r.conn.subscribed,
            "one reconnect and the subscription back",
        )
        async with publisher(mosquitto) as pub:
            await pub.publish(event(1), b"{}", qos=1)
            await r.sink.count(1)
    # A loss after subscribing is a retried WARNING, not an ERROR as if subscribing had failed.
    lost = [r for r in caplog.records if r.name == "worker.connection" and "lost" in r.getMessage()]
    assert lost and {rec.levelname for rec in lost} == {"WARNING"}, caplog.text


async def test_bad_credentials_raise_at_once_without_retrying(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(users={"alice": "right"})
    attempts = 0

    def counting() -> AiomqttTransport:
        nonlocal attempts
        attempts += 1
        return AiomqttTransport()

    s = settings(broker, username="alice", password="wrong")
    r = Running(s, transport_factory=counting)
    with pytest.raises(NotAuthorized) as caught:
        await asyncio.wait_for(r.task, NETWORK)
    assert attempts == 1
    assert "alice" in str(caught.value)
    assert "wrong" not in str(caught.value)


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return first, await reader.readexactly(length)


async def test_refused_suback_is_an_error_not_silence(caplog: pytest.LogCaptureFixture) -> None:
    # Mosquitto's ACL file filters delivery but grants every SUBSCRIBE, so a scripted server
    # plays the broker that refuses (SUBACK 0x80).
    subscribes = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal subscribes
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await _read_packet(reader)  # CONNECT
            writer.write(b"\x20\x02\x00\x00")
            while True:
                kind, body = await _read_packet(reader)
                if kind == 0x82:
                    subscribes += 1
                    writer.write(b"\x90\x03" + body[:2] + b"\x80")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with running(settings(port, mqtt_version="3.1.1")) as r:  # the script speaks 3.1.1
        await asyncio.wait_for(r.conn.wait_online(), NETWORK)
        await r.conn.open_intake()
        # It keeps trying, loudly.
        await r.until(lambda: subscribes >= 3, "three subscription attempts")
        assert "refused the subscription to $share/abc123:app/" + EVENTS in caplog.text
        assert not r.conn.subscribed
        assert r.conn.problem is not None
        assert r.gauge("worker_subscribed") == 0
    server.close()
    await server.wait_closed()


async def test_pause_unsubscribes_and_resume_resubscribes(mosquitto: Mosquitto) -> None:
    async with running(settings(mosquitto)) as r, publisher(mosquitto) as pub:
        await r.conn.open_intake()
        await asyncio.wait_for(r.conn.ready.wait(), NETWORK)
        await r.conn.pause()
        assert (r.conn.connected, r.conn.subscribed, r.conn.paused) == (True, False, True)
        assert r.gauge("worker_subscribed") == 0
        await pub.publish(event(1), b"{}", qos=1)
        await r.conn.barrier()  # anything the broker sent before its UNSUBACK is in by now
        assert r.sink.messages == []
        await r.conn.resume()
        assert r.conn.subscribed
        await pub.publish(event(2), b"{}", qos=1)
        await r.sink.count(1)
        assert r.sink.messages[0].topic == event(2)


async def test_takeover_of_a_unique_client_id_is_reported(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(mosquitto)  # both use app-i1: the broker closes the older connection
    async with running(s, stable_after=5.0) as one, running(s, stable_after=5.0) as two:
        await one.conn.open_intake()
        await two.conn.open_intake()
        await one.until(
            lambda: "another process uses the same client ID" in caplog.text, "the takeover report"
        )
        assert "app-i1" in caplog.text


async def test_publish_goes_through_the_live_connection(mosquitto: Mosquitto) -> None:
    async with running(settings(mosquitto)) as r:
        await r.conn.open_intake()
        await asyncio.wait_for(r.conn.ready.wait(), NETWORK)
        await r.conn.publish(event(7), b'{"x":1}', qos=1)
        await r.sink.count(1)
        assert r.sink.messages[0].payload == b'{"x":1}'


def test_unknown_transport_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--transport"):
        transport_factory("carrier-pigeon")


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [Backoff(initial=1, cap=8).delay(n, rng) for n in range(10)]
    assert all(0.5 <= d <= 8 for d in delays)
    assert 4 <= delays[-1] <= 8
    assert len(set(delays)) == len(delays)


@pytest.mark.parametrize(
    ("flags", "clean", "expiry"),
    [
        ({}, True, 0),
        ({"identity": "standalone"}, True, 0),
        ({"identity": "shared-durable", "instance_id": "i1"}, False, DURABLE_SESSION_EXPIRY),
    ],
)
def test_only_a_shared_durable_instance_keeps_its_session(
    flags: dict[str, str], clean: bool, expiry: int
) -> None:
    base = {"org": "abc123", "host": "127.0.0.1", "port": "1883", "app_id": "fleet"}
    options = connect_options(load_settings({}, base | flags))
    assert (options.clean_session, options.session_expiry) == (clean, expiry)
