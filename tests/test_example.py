"""The example application, through its handlers and the publisher boundary."""

from __future__ import annotations

import orjson

from tests.support.pipeline import Acks, Published, event, new_metrics, running, value
from worker import DeviceStatus, Event
from worker.deadletter import DeadLetters
from worker.examples import fleet as example


def test_the_example_app_registers_its_routes() -> None:
    assert {r.name for r in example.app.routes} == {"on_reading", "on_status"}
    assert example.app.filters() == [
        "iot-2/type/+/id/+/evt/reading/fmt/json",
        "iot-2/type/+/id/+/mon",
    ]


async def test_the_example_app_alerts_a_hot_device_once_per_cooldown() -> None:
    sent = Published()
    example.app.bind_publisher(sent)
    try:
        for temp in (20.0, 95.0, 96.0):
            await example.on_reading(
                Event("sensor", "hot1", "reading", "json", b'{"temp": %a}' % temp)
            )
        await example.on_reading(Event("sensor", "hot1", "reading", "json", b'{"x": 1}'))
    finally:
        example.app.bind_publisher(None)
    assert [s[0] for s in sent.sent] == ["iot-2/type/sensor/id/hot1/cmd/alert/fmt/json"]
    alert = orjson.loads(sent.sent[0][1])
    assert alert["temp"] == 95.0 and alert["n"] == 2
    await example.on_status(
        DeviceStatus(device_type="sensor", device_id="hot1", action="Connect", payload=b"{}")
    )
    assert example.presence[("sensor", "hot1")] is True


async def test_odd_payloads_through_the_real_pipeline() -> None:
    metrics, acks = new_metrics(), Acks()
    batch = [
        event("odd1", payload=b'{"temp": 21}', packet_id=1),
        event("odd1", payload=b"\x00garbage", packet_id=2),
        event("odd1", payload=b'{"temp": "warm"}', packet_id=3),
        event("odd1", payload=b"[1, 2]", packet_id=4),
    ]
    async with running(example.app, metrics, dead_letters=DeadLetters("none")) as pipeline:
        await pipeline.put(batch, acks)
        assert await acks.wait_for(4) == [1, 2, 3, 4]
    labels = {"route": "on_reading"}
    assert value(metrics, "worker_messages_handled_total", outcome="ok", **labels) == 3
    assert value(metrics, "worker_messages_handled_total", outcome="decode_error", **labels) == 1
    assert list(example.stats[("sensor", "odd1")].values) == [21.0]
