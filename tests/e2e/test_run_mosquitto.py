"""``worker run`` processes on Mosquitto (mqtt profile, one ``$share`` group)."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest

from tests.conftest import MosquittoFactory
from tests.e2e.conftest import Spawn
from tests.support.mosquitto import Mosquitto
from tests.support.processes import WorkerProcess, event_topic, exactly_once, publish_events
from tests.support.waiting import until
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions

pytestmark = pytest.mark.mosquitto


def mqtt_args(broker: Mosquitto, instance: str, *more: str) -> tuple[str, ...]:
    return (
        "--profile", "mqtt", "--host", broker.host, "--port", str(broker.port),
        "--org", "abc123", "--app-id", "shared", "--instance", instance, *more,
    )  # fmt: skip


async def group(spawn: Spawn, broker: Mosquitto, n: int, *more: str) -> list[WorkerProcess]:
    workers = [spawn(f"w{i}", *mqtt_args(broker, f"w{i}", *more)) for i in range(1, n + 1)]
    await asyncio.gather(*(w.start() for w in workers))
    return workers


def total(workers: list[WorkerProcess]) -> int:
    return sum(len(w.handled()) for w in workers)


async def test_three_processes_share_qos1_events_exactly_once(
    mosquitto_factory: MosquittoFactory, spawn: Spawn
) -> None:
    broker = mosquitto_factory(max_inflight=100)
    workers = await group(spawn, broker, 3)
    assert "client ID app" not in workers[0].ready_line
    assert "$share/abc123:shared/iot-2/type/+/id/+/evt/+/fmt/+" in workers[0].ready_line
    numbers = range(30_000)  # enough for the round-robin shares to settle inside the band
    await publish_events(broker.host, broker.port, numbers)
    await until(lambda: total(workers) >= len(numbers), "every event handled")
    seen = exactly_once(workers, numbers)
    assert sum(seen.values()) == len(numbers)
    for w in workers:
        share = len(w.handled()) / len(numbers)
        assert 0.25 <= share <= 0.42, f"{w.name} handled {share:.1%}"
        received = (await w.metrics())['worker_messages_received_total{kind="event"}']
        assert received == len(w.handled())


async def test_sigterm_mid_stream_loses_nothing_it_received(
    mosquitto_factory: MosquittoFactory, spawn: Spawn
) -> None:
    broker = mosquitto_factory(max_inflight=20)
    # A slow instance: the broker queues its round-robin share behind its in-flight window,
    # and all of that is lost (clean session) unless the drain takes it before DISCONNECT.
    leaving = spawn("w1", *mqtt_args(broker, "w1", "--concurrency", "1"), RECORD_DELAY="0.003")
    staying = [spawn(f"w{i}", *mqtt_args(broker, f"w{i}")) for i in (2, 3)]
    workers = [leaving, *staying]
    await asyncio.gather(*(w.start() for w in workers))
    numbers = range(3000)
    stream = asyncio.create_task(publish_events(broker.host, broker.port, numbers))
    await until(lambda: len(leaving.handled()) >= 100, "the slow worker to be busy")
    at_sigterm = len(leaving.handled())
    leaving.signal(signal.SIGTERM)
    assert await leaving.wait() == 0
    await stream
    await until(lambda: total(workers) >= len(numbers), "every event handled")
    exactly_once(workers, numbers)
    log = leaving.log_text()
    assert "stopped (0 messages abandoned)" in log
    # More than its in-flight window (20) after SIGTERM: the drain took what was queued.
    assert len(leaving.handled()) - at_sigterm > 40


async def test_broker_restart_workers_reconnect_and_carry_on(
    mosquitto: Mosquitto, spawn: Spawn
) -> None:
    workers = await group(spawn, mosquitto, 2)
    first, second = range(1000), range(1000, 2000)
    await publish_events(mosquitto.host, mosquitto.port, first)
    await until(lambda: total(workers) >= len(first), "the first stream handled")
    await asyncio.to_thread(mosquitto.restart)

    async def resubscribed() -> bool:
        for w in workers:
            samples = await w.metrics()
            if samples["worker_reconnects_total"] < 1 or samples["worker_subscribed"] != 1:
                return False
        return True

    await until(resubscribed, "both workers to reconnect and resubscribe")
    await publish_events(mosquitto.host, mosquitto.port, second)
    await until(lambda: total(workers) >= 2000, "the second stream handled")
    seen = exactly_once(workers, range(2000))
    assert all(len(w.handled()) > 0 for w in workers), seen


async def test_bad_payloads_and_handlers_are_counted_outcomes(
    mosquitto: Mosquitto, spawn: Spawn
) -> None:
    (worker,) = await group(spawn, mosquitto, 1, "--dead-letter", "none")
    pub = AiomqttTransport()
    await pub.connect(ConnectOptions(host=mosquitto.host, port=mosquitto.port, client_id="pub"))
    await pub.publish(event_topic(1), b"{not json", qos=1)
    await pub.publish(event_topic(2, fmt="xml"), b"<n>2</n>", qos=1)
    await pub.publish(event_topic(3), b'{"n": 3, "fail": true}', qos=1)
    await pub.publish(event_topic(4), b'{"n": 4, "sleep": 5}', qos=1)  # the route's timeout: 1 s
    await pub.publish(event_topic(5), b'{"n": 5, "sleep": 0.2}', qos=1)
    await publish_events(mosquitto.host, mosquitto.port, range(100, 200))
    await pub.disconnect()
    route = 'worker_messages_handled_total{outcome="%s",route="record"}'

    async def counted() -> bool:
        samples = await worker.metrics()
        return samples[route % "timeout"] == 1 and samples[route % "ok"] == 101

    await until(counted, "every outcome counted")
    samples = await worker.metrics()
    assert samples[route % "decode_error"] == 2
    assert samples[route % "error"] == 1
    assert samples['worker_messages_received_total{kind="event"}'] == 105
    status, body = await worker.readyz()
    assert (status, json.loads(body)["status"]) == (200, "ready")
    assert worker.proc is not None and worker.proc.returncode is None


async def test_sigusr1_pauses_and_sigusr2_resumes(mosquitto: Mosquitto, spawn: Spawn) -> None:
    active, paused = await group(spawn, mosquitto, 2)
    paused.signal(signal.SIGUSR1)

    async def unsubscribed() -> bool:
        # /readyz says 503 at once; the gauge drops when the UNSUBACK is back.
        samples = await paused.metrics()
        return (samples["worker_connected"], samples["worker_subscribed"]) == (1, 0)

    await until(unsubscribed, "the paused worker to unsubscribe")
    status, body = await paused.readyz()
    assert status == 503
    assert "paused" in body
    await publish_events(mosquitto.host, mosquitto.port, range(500))
    await until(lambda: len(active.handled()) >= 500, "the active worker to take everything")
    assert paused.handled() == []
    paused.signal(signal.SIGUSR2)

    async def ready() -> bool:
        return (await paused.readyz())[0] == 200

    await until(ready, "/readyz 200 after resuming")
    await publish_events(mosquitto.host, mosquitto.port, range(500, 1000))
    await until(lambda: total([active, paused]) >= 1000, "the second stream handled")
    exactly_once([active, paused], range(1000))
    assert len(paused.handled()) > 100


async def test_taken_over_standalone_id_is_reported(mosquitto: Mosquitto, spawn: Spawn) -> None:
    args = (
        "--profile", "wiotp", "--identity", "standalone", "--org", "abc123", "--app-id", "solo",
        "--host", mosquitto.host, "--port", str(mosquitto.port),
    )  # fmt: skip
    one, two = spawn("one", *args), spawn("two", *args)
    await one.start()
    assert "client ID a:abc123:solo" in one.ready_line
    await two.start()
    message = "another process uses the same client ID"
    await until(lambda: message in one.log_text() + two.log_text(), "the takeover report")
