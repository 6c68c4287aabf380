"""Hostile input to the worker: every bad message is a counted outcome; no crash, no stall.

In memory (the real pipeline through :class:`~worker.testing.TestClient`) for the matrix of
payloads and topics, then over real sockets through ``worker run``: bad payloads and topics
from a standard broker (which, unlike the platform, lets them through), and a flood of
retained status messages when the worker subscribes on the platform.

Already proven elsewhere: ``tests/e2e/test_run_mosquitto.py`` (malformed JSON and an unknown
``fmt`` over Mosquitto, a handler that raises or times out), ``tests/test_pipeline.py`` (decode
errors are never retried; unrouted messages are counted and acknowledged in order),
``tests/test_messages.py`` (each codec's failures).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.reliability import hostile_app
from tests.support.credentials import API_KEY, ORG, TOKEN
from tests.support.mosquitto import Mosquitto
from tests.support.processes import WorkerProcess, publish_events
from tests.support.waiting import until
from worker.config import Settings
from worker.metrics import Outcome
from worker.mqtt import Connect, Disconnect, encode
from worker.platform import Platform, PlatformConfig
from worker.platform.limits import Limits
from worker.testing import TestClient
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions

APP = "tests.reliability.hostile_app"
Spawn = Callable[..., WorkerProcess]
LIMIT = 131072  # the platform's payload limit (W17); a standard broker may deliver more


def event_topic(fmt: str, device: str = "d1") -> str:
    return f"iot-2/type/sensor/id/{device}/evt/reading/fmt/{fmt}"


def big_json(size: int) -> bytes:
    """A well-formed JSON object of exactly ``size`` bytes."""
    head, tail = b'{"pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


#: (what, topic, payload, outcome of the route that matches)
PAYLOADS = [
    ("malformed JSON", event_topic("json"), b'{"n": 1', Outcome.DECODE_ERROR),
    ("JSON that is not UTF-8", event_topic("json"), b'{"n": "\xff"}', Outcome.DECODE_ERROR),
    ("a format with no codec", event_topic("xml"), b"<n>1</n>", Outcome.DECODE_ERROR),
    ("invalid UTF-8 in text", event_topic("text"), b"caf\xc3", Outcome.DECODE_ERROR),
    ("a UTF-16 surrogate in text", event_topic("text"), b"\xed\xa0\x80", Outcome.DECODE_ERROR),
    ("an empty JSON payload", event_topic("json"), b"", Outcome.DECODE_ERROR),
    ("131073 bytes of JSON", event_topic("json"), big_json(LIMIT + 1), Outcome.OK),
    ("131073 bytes of bin", event_topic("bin"), b"\x00" * (LIMIT + 1), Outcome.OK),
    ("a status that is not JSON", "iot-2/type/sensor/id/d1/mon", b"{oops", Outcome.DECODE_ERROR),
]

#: topics a standard broker delivers through ``iot-2/type/+/id/+/evt/+/fmt/+``
OUTSIDE_THE_GRAMMAR = [
    "iot-2/type/bad type/id/d1/evt/reading/fmt/json",  # a space in the type
    "iot-2/type/sensor/id/" + "d" * 37 + "/evt/reading/fmt/json",  # an ID of 37 characters
    "iot-2/type//id/d1/evt/reading/fmt/json",  # an empty level
    "iot-2/type/sensor/id/d1/evt/reading/fmt/",  # an empty format
]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """``spawn(name, *args)``: WorkerProcess objects, each stopped at teardown."""
    made: list[WorkerProcess] = []

    def make(name: str, *args: str) -> WorkerProcess:
        made.append(WorkerProcess(tmp_path, name, args))
        return made[-1]

    yield make
    for worker in made:
        await worker.stop()


@pytest.mark.parametrize(("what", "topic", "payload", "outcome"), PAYLOADS)
async def test_a_bad_payload_is_a_counted_outcome(
    what: str, topic: str, payload: bytes, outcome: Outcome
) -> None:
    # Without a dead-letter sink the outcome is the counted one (with the default ``log``
    # sink it is ``dead_lettered``, with this reason in the letter).
    settings = Settings(dead_letter="none")
    async with TestClient(hostile_app.app, settings, raise_errors=False) as client:
        delivery = await client.send(topic, payload, qos=1)
        assert delivery.outcome is outcome, what
        good = await client.send(event_topic("json"), b'{"n": 2}', qos=1)
        assert good.outcome is Outcome.OK  # and the next message is handled as usual
        route = "status" if topic.endswith("/mon") else "event"
        counted = client.registry.get_sample_value(
            "worker_messages_handled_total", {"route": route, "outcome": outcome.value}
        )
        assert counted == (2 if outcome is Outcome.OK else 1), what


@pytest.mark.parametrize("topic", OUTSIDE_THE_GRAMMAR)
async def test_a_topic_outside_the_grammar_is_dropped_and_counted(topic: str) -> None:
    async with TestClient(hostile_app.app) as client:
        delivery = await client.send(topic, b'{"n": 1}', qos=1)
        assert not delivery.routed
        dropped = client.registry.get_sample_value(
            "worker_messages_dropped_total", {"reason": "unrouted"}
        )
        assert dropped == 1
        assert (await client.send(event_topic("json"), b'{"n": 2}')).outcome is Outcome.OK


@pytest.mark.mosquitto
async def test_worker_run_counts_bad_input_from_a_standard_broker_and_keeps_going(
    mosquitto: Mosquitto, spawn: Spawn
) -> None:
    worker = spawn(
        "w1", "--profile", "mqtt", "--host", mosquitto.host, "--port", str(mosquitto.port),
        "--org", ORG, "--app-id", "hostile", "--instance", "w1", "--dead-letter", "none",
    )  # fmt: skip
    await worker.start(APP)
    pub = AiomqttTransport()
    await pub.connect(ConnectOptions(host=mosquitto.host, port=mosquitto.port, client_id="pub"))
    try:
        for _, topic, payload, _ in PAYLOADS:
            await pub.publish(topic, payload, qos=1)
        for topic in OUTSIDE_THE_GRAMMAR:
            await pub.publish(topic, b'{"n": 1}', qos=1)
        for n in range(100):
            await pub.publish(event_topic("json", f"g{n % 7}"), b'{"n": %d}' % n, qos=1)
    finally:
        await pub.disconnect()
    samples = await settled(worker, total=len(PAYLOADS) + 100)
    handled = 'worker_messages_handled_total{outcome="%s",route="%s"}'
    assert samples[handled % ("ok", "event")] == 102  # the two 131073-byte ones and 100
    assert samples[handled % ("decode_error", "event")] == 6
    assert samples[handled % ("decode_error", "status")] == 1
    assert samples['worker_messages_dropped_total{reason="unrouted"}'] == len(OUTSIDE_THE_GRAMMAR)
    status, body = await worker.readyz()
    assert (status, json.loads(body)["status"]) == (200, "ready")
    assert worker.proc is not None and worker.proc.returncode is None
    assert "Traceback" not in worker.log_text()


async def settled(worker: WorkerProcess, total: int) -> dict[str, float]:
    """The worker's samples once ``total`` routed messages have an outcome."""

    async def done() -> bool:
        samples = await worker.metrics()
        outcomes = sum(
            v for k, v in samples.items() if k.startswith("worker_messages_handled_total{")
        )
        return outcomes >= total

    await until(done, f"{total} outcomes")
    return await worker.metrics()


FLEET = 1500


@pytest.fixture
async def fleet_platform() -> AsyncIterator[Platform]:
    """A platform whose fleet left a retained status each (W30): the flood on subscribe."""
    config = PlatformConfig(
        host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN}, accept_any_key=True,
        limits=Limits(retained=2 * FLEET),  # every status stays (the apps' too): all are sent
    )  # fmt: skip
    async with Platform(config) as running:
        for first in range(0, FLEET, 50):
            await asyncio.gather(*(visit(running.port, n) for n in range(first, first + 50)))
        yield running


async def visit(port: int, n: int) -> None:
    """A device that connects and leaves: a retained Disconnect status stays behind."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(Connect(f"d:{ORG}:fleet:f{n}", username="use-token-auth", password=b"x")))
    async with asyncio.timeout(10):
        assert await reader.readexactly(4) == b"\x20\x02\x00\x00"
        writer.write(encode(Disconnect()))
        assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


@pytest.mark.slow
async def test_a_retained_flood_on_subscribe_is_accounted_for_and_does_not_stall(
    fleet_platform: Platform, spawn: Spawn
) -> None:
    port = str(fleet_platform.port)
    worker = spawn(
        "w1", "--auth-key", API_KEY, "--auth-token", TOKEN, "--app-id", "flood",
        "--host", "127.0.0.1", "--port", port, "--concurrency", "4",
    )  # fmt: skip
    await worker.start(APP)

    async def flood_accounted() -> bool:
        s = await worker.metrics()
        handled = s.get('worker_messages_handled_total{outcome="ok",route="status"}', 0)
        dropped = s.get('worker_messages_dropped_total{reason="intake_full"}', 0)
        return s['worker_messages_received_total{kind="device_status"}'] >= FLEET and (
            handled + dropped >= FLEET
        )

    await until(flood_accounted, "every retained status handled or counted as dropped")
    samples = await worker.metrics()
    # The retained statuses are QoS 0 (W30): what the bounded intake could not hold is counted.
    handled = samples['worker_messages_handled_total{outcome="ok",route="status"}']
    dropped = samples['worker_messages_dropped_total{reason="intake_full"}']
    assert handled + dropped == FLEET, (handled, dropped)
    statuses = [line for line in worker.record.read_text().splitlines() if line.startswith("st")]
    assert len(statuses) == handled
    # No stall: events that come after the flood are handled as usual.
    await publish_events(
        "127.0.0.1", fleet_platform.port, range(200), client_id=f"a:{ORG}:pub",
        username=API_KEY, password=TOKEN,
    )  # fmt: skip
    ok = 'worker_messages_handled_total{outcome="ok",route="event"}'
    await until(lambda: events_ok(worker, ok, 200), "the events after the flood")
    status, body = await worker.readyz()
    assert (status, json.loads(body)["status"]) == (200, "ready")


async def events_ok(worker: WorkerProcess, sample: str, count: int) -> bool:
    return (await worker.metrics()).get(sample, 0) >= count
