"""worker/examples/fleet.py, tested as its users would: in memory, then on the local platform."""

from __future__ import annotations

import asyncio

import aiomqtt
import orjson

from worker.config import Settings
from worker.examples import fleet as example
from worker.testing import TestClient
from worker.testing.fixtures import DEADLINE, LocalPlatform, RunApp, publish_event

pytest_plugins = ["worker.testing"]


async def test_a_hot_reading_alerts_its_device_once_per_cooldown() -> None:
    async with TestClient(example.app) as client:
        for temp in (20.0, 95.0, 96.0):
            result = await client.send_event("sensor", "hot-a", "reading", {"temp": temp})
            assert result.ok
    [alert] = client.commands
    assert (alert.device_id, alert.command, alert.qos) == ("hot-a", "alert", 1)
    assert alert.data == {
        "temp": 95.0, "threshold": example.ALERT_TEMP, "mean": 57.5, "min": 20.0,
        "max": 95.0, "n": 2,
    }  # fmt: skip


async def test_readings_in_other_shapes_are_understood() -> None:
    async with TestClient(example.app) as client:
        await client.send_event("sensor", "shapes", "reading", {"d": {"temperature": 10}})
        await client.send_event("sensor", "shapes", "reading", {"t": 30})
        await client.send_event("sensor", "shapes", "reading", {"temp": "warm"})
    assert example.stats[("sensor", "shapes")].summary() == {
        "mean": 20.0, "min": 10.0, "max": 30.0, "n": 2,
    }  # fmt: skip


async def test_a_payload_that_is_not_json_is_a_decode_error_for_the_dead_letters() -> None:
    async with TestClient(example.app) as client:
        result = await client.send_event("sensor", "odd", "reading", b"\x00garbage")
    assert result.outcome == "dead_lettered"
    [letter] = client.dead_letters
    assert (letter.route, letter.reason, letter.attempts) == ("on_reading", "decode_error", 1)
    assert client.commands == []


async def test_other_formats_and_events_are_not_the_apps_business() -> None:
    async with TestClient(example.app, Settings(dead_letter="none")) as client:
        text = await client.send_event("sensor", "fmt", "reading", "21.5", format="text")
        other = await client.send_event("sensor", "fmt", "heartbeat", {})
    assert not text.routed and not other.routed
    assert client.outcomes == []


async def test_presence_follows_status_messages_but_not_takeovers() -> None:
    key = ("sensor", "present")
    async with TestClient(example.app) as client:
        await client.send_device_status(*key, "Connect")
        assert example.presence[key] is True
        await client.send_device_status(*key, "Disconnect", close_code=288)
        assert example.presence[key] is True  # taken over: connected elsewhere
        await client.send_device_status(*key, "Disconnect")
        assert example.presence[key] is False
        await client.send(f"iot-2/type/{key[0]}/id/{key[1]}/mon", b"")  # a cleared status
    assert example.presence[key] is False


async def test_on_the_local_platform_an_alert_reaches_the_device(
    platform: LocalPlatform, running_app: RunApp, mqtt_client: aiomqtt.Client
) -> None:
    serving = await running_app(example.app, app_id="example")
    assert serving.worker.settings.client_id == "A:test01:example"
    await mqtt_client.subscribe("iot-2/type/sensor/id/+/cmd/alert/fmt/json", qos=1)
    await publish_event(mqtt_client, "sensor", "hot-live", "reading", {"temp": 99.5})
    async with asyncio.timeout(DEADLINE):
        message = await anext(aiter(mqtt_client.messages))
    assert str(message.topic) == "iot-2/type/sensor/id/hot-live/cmd/alert/fmt/json"
    assert isinstance(message.payload, bytes)
    assert orjson.loads(message.payload)["temp"] == 99.5
    [handled] = await serving.handled(1)
    assert (handled.route, handled.outcome) == ("on_reading", "ok")


async def test_on_the_local_platform_a_device_reports_readings(
    platform: LocalPlatform, running_app: RunApp
) -> None:
    serving = await running_app(example.app)
    async with platform.device_client("sensor", "dev-live") as device:
        for temp in (1, 2, 3):
            await device.publish("iot-2/evt/reading/fmt/json", orjson.dumps({"temp": temp}), 1)
        # three readings and the platform's Connect status for the device, in either order
        outcomes = await serving.handled(4)
    readings = [h.outcome for h in outcomes if h.route == "on_reading"]
    assert readings == ["ok"] * 3
    assert example.presence[("sensor", "dev-live")] is not None
    assert list(example.stats[("sensor", "dev-live")].values) == [1.0, 2.0, 3.0]
