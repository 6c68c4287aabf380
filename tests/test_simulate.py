"""``worker simulate``: a fleet on the local platform, as devices or as an application."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest

from tests.support.credentials import API_KEY, TOKEN
from tests.support.listener import listening
from tests.support.processes import run_cli
from worker.config import Settings, load_settings
from worker.platform import Platform, PlatformConfig
from worker.tools.sim_payload import Template
from worker.tools.simulate import SimConfig, Simulator, fleet

EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"
STATUS = "iot-2/type/+/id/+/mon"


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    config = PlatformConfig(
        host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN}, accept_any_key=True
    )
    async with Platform(config) as p:
        yield p


def settings(platform: Platform) -> Settings:
    flags = {
        "host": "127.0.0.1",
        "port": str(platform.port),
        "api_key": API_KEY,
        "api_token": TOKEN,
    }
    return load_settings(env={}, flags=flags | {"identity": "standalone"})


def test_the_fleet_spreads_over_the_types() -> None:
    import random

    devices = fleet(SimConfig(devices=5, types=("a", "b")), random.Random(1))
    assert [(d.device_type, d.device_id) for d in devices] == [
        ("a", "a-001"), ("b", "b-001"), ("a", "a-002"), ("b", "b-002"), ("a", "a-003"),
    ]  # fmt: skip


async def test_devices_send_numbered_readings_and_churn(platform: Platform) -> None:
    config = SimConfig(devices=4, rate=200, count=150, churn=0.1, seed=1)
    async with listening(platform.port, EVENTS, STATUS) as listener:
        stats = await Simulator(config, settings(platform)).run()
        await listener.until(lambda got: sum("/evt/" in m.topic for m in got) == 150, "every event")
    assert sorted(stats.acked) == list(range(150)) and stats.errors == 0
    events = [m for m in listener.got if "/evt/" in m.topic]
    readings = [json.loads(m.payload) for m in events]
    assert sorted(r["seq"] for r in readings) == list(range(150))
    assert all(isinstance(r["temp"], float) and r["ts"] > 0 for r in readings)
    assert {m.topic.split("/")[2] for m in events} == {"sensor", "thermostat", "meter"}
    # The platform's own status messages: every device connected, and some came and went.
    actions = [json.loads(m.payload)["Action"] for m in listener.got if m.topic.endswith("/mon")]
    assert actions.count("Connect") >= 4 + stats.churned and stats.churned >= 1
    assert "Disconnect" in actions


async def test_an_event_picked_before_its_device_leaves_is_still_sent(platform: Platform) -> None:
    # The race a loaded machine hits: the pacer picks an online device, then churn takes the
    # device away before the send task first runs. Churn waits for the pending publish.
    sim = Simulator(SimConfig(devices=1, rate=0, count=1, churn=0), settings(platform))
    async with listening(platform.port, EVENTS) as listener:
        await sim._connect()
        device = sim._pick(0)
        await sim._window.acquire()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sim._bounce_connection(device, 0.0))  # runs first
            device.pending.add(tg.create_task(sim._send(0, device)))
        await listener.until(lambda got: len(got) == 1, "the event")
        await sim._disconnect()
    assert (sim.stats.acked, sim.stats.failed) == ([0], [])


async def test_an_application_publishes_for_the_devices(platform: Platform) -> None:
    config = SimConfig(devices=3, rate=0, count=30, mode="app", churn=0)
    async with listening(platform.port, EVENTS) as listener:
        stats = await Simulator(config, settings(platform)).run()
        await listener.until(lambda got: len(got) == 30, "every event")
    assert stats.sent == 30
    assert {m.topic for m in listener.got} == {
        f"iot-2/type/{t}/id/{t}-001/evt/reading/fmt/json" for t in ("sensor", "thermostat", "meter")
    }


@pytest.mark.slow
async def test_the_command_prints_progress_and_a_summary(platform: Platform) -> None:
    code, out, err = await run_cli(
        "simulate", "--host", "127.0.0.1", "--port", str(platform.port), "--auth-key", API_KEY,
        "--auth-token", TOKEN, "--devices", "3", "--count", "120", "--rate", "80",
    )  # fmt: skip
    assert code == 0, err
    assert "sent 120 events" in out and "0 errors" in out
    assert "sent " in err and "/s) · errors 0" in err  # the progress line, about every second


async def test_an_unregistered_device_exits_4() -> None:
    async with Platform(
        PlatformConfig(host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN})
    ) as strict:
        code, _, err = await run_cli(
            "simulate", "--host", "127.0.0.1", "--port", str(strict.port), "--auth-key", API_KEY,
            "--auth-token", TOKEN, "--count", "1",
        )  # fmt: skip
    assert code == 4, err
    assert "d:abc123:" in err or "refused" in err


async def test_refused_devices_get_one_line_that_says_how_to_give_them_tokens() -> None:
    async with Platform(
        PlatformConfig(host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN})
    ) as strict:
        code, _, err = await run_cli(
            "simulate", "--host", "127.0.0.1", "--port", str(strict.port), "--auth-key", API_KEY,
            "--auth-token", TOKEN, "--count", "1",
        )  # fmt: skip
    assert code == 4, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no asyncio traceback (CancelledError, "Exception in callback")
    assert "refused client ID 'd:abc123:" in lines[0]
    assert "--accept-any-key" in lines[0] and "--keys FILE" in lines[0]
    assert "--device-token" in lines[0] and "--as app" in lines[0]


async def test_churn_refused_to_an_application_stops_once_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # --as app on a platform without device tokens: a visit as the device itself is refused,
    # and every later one would be; the events go on.
    async with Platform(
        PlatformConfig(host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN})
    ) as strict:
        config = SimConfig(devices=2, rate=0, count=1, mode="app", churn=0.05)
        sim = Simulator(config, settings(strict))
        await sim._connect()
        try:
            with caplog.at_level(logging.WARNING, logger="worker.tools.simulate"):
                await sim._bounce(sim.devices[0])
                await sim._bounce(sim.devices[1])  # one already under way: not said again
            async with asyncio.timeout(5):
                async with asyncio.TaskGroup() as tg:
                    await sim._churn(tg)  # returns after one period, with no new visit
        finally:
            await sim._disconnect()
    error = sim.stats.last_error or ""
    assert error.startswith("churn stopped: ") and "not authorised" in error
    assert "--accept-any-key" in error and "--churn 0" in error
    assert sim.stats.churned == 0
    assert [r.getMessage() for r in caplog.records] == [error]


async def test_a_temperature_range_and_a_template_shape_the_payload(platform: Platform) -> None:
    template = Template.parse('{"t": "{temp}", "n": "{seq}", "who": "{device_type}/{device_id}"}')
    config = SimConfig(
        devices=2, count=40, rate=0, churn=0, mode="app", seed=3, temp_range=(60.0, 62.0),
        template=template,
    )  # fmt: skip
    async with listening(platform.port, EVENTS) as listener:
        await Simulator(config, settings(platform)).run()
        await listener.until(lambda got: len(got) >= 40, "40 events")
    payloads = [json.loads(m.payload) for m in listener.got]
    assert {p["n"] for p in payloads} == set(range(40))
    assert all(60.0 <= p["t"] <= 62.0 for p in payloads)
    assert {p["who"] for p in payloads} == {"sensor/sensor-001", "thermostat/thermostat-001"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--temp-range", "90"), "expected LOW:HIGH"),
        (("--temp-range", "30:20"), "LOW must be below HIGH"),
        (("--template", "{temp"), "--template is not valid JSON"),
        (("--template", "[1]"), "--template must be a JSON object"),
        (("--template", '{"x": "{pressure}"}'), r"unknown placeholder {pressure}; known: {temp}"),
    ],
)
async def test_bad_payload_options_exit_2(args: tuple[str, ...], message: str) -> None:
    code, _, err = await run_cli("simulate", "--org", "abc123", "--count", "1", *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
