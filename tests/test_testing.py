"""The testing toolkit: TestClient in memory, and what a user's failing handler looks like."""

from __future__ import annotations

import asyncio
import traceback

import aiomqtt
import pytest

from tests.support.waiting import SCENARIO
from worker import App, AppStatus, Command, ConnectError, DeviceStatus, Event, NotAuthorized
from worker.config import Settings
from worker.testing import TestClient
from worker.testing.fixtures import LocalPlatform, RunApp, publish_event

pytest_plugins = ["pytester", "worker.testing"]

#: short waits, for tests that expect one to run out
SHORT = 0.3


class Boom(Exception):
    """A handler bug."""


def alerting_app() -> App:
    app = App()

    @app.event(device_type="sensor", event="reading")
    async def on_reading(event: Event) -> None:
        if event.data["temp"] > 80:
            await app.publish_command(event.device_type, event.device_id, "cool", {"level": 2})

    return app


async def test_an_event_runs_its_handler_and_captures_the_command() -> None:
    async with TestClient(alerting_app()) as client:
        cool = await client.send_event("sensor", "s1", "reading", {"temp": 95})
        calm = await client.send_event("sensor", "s2", "reading", {"temp": 20})
    assert (cool.outcome, calm.outcome) == ("ok", "ok")
    assert cool.ok and cool.routed and cool.outcomes == {"on_reading": "ok"}
    [command] = client.commands
    assert isinstance(command, Command)
    assert (command.device_id, command.command, command.data) == ("s1", "cool", {"level": 2})
    assert command.topic == "iot-2/type/sensor/id/s1/cmd/cool/fmt/json"
    assert client.events == [] and client.dead_letters == []
    assert client.acked == [1, 2]
    assert [h.outcome for h in client.outcomes] == ["ok", "ok"]


async def test_outcomes_are_counted_in_the_worker_metrics() -> None:
    async with TestClient(alerting_app()) as client:
        await client.send_event("sensor", "s1", "reading", {"temp": 1})
        await client.send_event("sensor", "s1", "reading", b"not json")
        await client.send("iot-2/type/other/id/o1/evt/reading/fmt/json", b"{}")
    sample = client.registry.get_sample_value
    handled = "worker_messages_handled_total"
    assert sample(handled, {"route": "on_reading", "outcome": "ok"}) == 1
    assert sample(handled, {"route": "on_reading", "outcome": "dead_lettered"}) == 1
    assert sample("worker_messages_received_total", {"kind": "event"}) == 3
    assert sample("worker_messages_dropped_total", {"reason": "unrouted"}) == 1


async def test_a_handler_bug_is_raised_with_the_handlers_traceback() -> None:
    app = App()

    @app.event()
    async def buggy(event: Event) -> None:
        raise Boom(f"cannot handle {event.device_id}")

    async with TestClient(app) as client:
        with pytest.raises(Boom, match="cannot handle d1") as caught:
            await client.send_event("t", "d1", "e", {})
    frames = [f.name for f in traceback.extract_tb(caught.value.__traceback__)]
    assert "buggy" in frames
    assert caught.value.__notes__ == [
        "raised by handler 'buggy' for iot-2/type/t/id/d1/evt/e/fmt/json (run 1)"
    ]
    # the failure went the production way too: logged, dead-lettered by the default sink
    assert [letter.reason for letter in client.dead_letters] == ["error"]


async def test_raise_errors_false_returns_the_failure_to_assert_on() -> None:
    app = App()

    @app.event(dead_letter="none", retries=1, retry_backoff=0)
    async def buggy(event: Event) -> None:
        raise Boom("no")

    async with TestClient(app, raise_errors=False) as client:
        result = await client.send_event("t", "d", "e", {})
        assert isinstance(result.error, Boom)
        with pytest.raises(Boom):
            await client.send_event("t", "d", "e", {}, raise_errors=True)
    assert result.outcome == "error" and not result.ok
    [handled] = result.handled
    assert (handled.reason, handled.runs) == ("error", 2)
    assert client.dead_letters == []


async def test_a_retry_that_succeeds_is_ok() -> None:
    app = App()
    runs: list[int] = []

    @app.event(retries=2, retry_backoff=0)
    async def flaky(event: Event) -> None:
        runs.append(1)
        if len(runs) < 2:
            raise Boom("first run fails")

    async with TestClient(app) as client:
        result = await client.send_event("t", "d", "e", {})
    assert result.outcome == "ok" and result.handled[0].runs == 2


async def test_decode_errors_and_timeouts_are_outcomes_not_exceptions() -> None:
    app = App()
    never = asyncio.Event()

    @app.event(event="reading")
    async def reading(event: Event) -> None:
        assert event.data is not None

    @app.event(event="slow", timeout=0.05)
    async def slow(event: Event) -> None:
        await never.wait()

    async with TestClient(app, Settings(dead_letter="none")) as client:
        bad = await client.send_event("t", "d", "reading", b"\xff{")
        late = await client.send_event("t", "d", "slow", {})
    assert bad.outcome == "decode_error" and late.outcome == "timeout"
    assert isinstance(late.error, TimeoutError)


async def test_several_routes_report_separately() -> None:
    app = App()

    @app.event()
    async def everything(event: Event) -> None: ...

    @app.event(event="reading")
    async def readings(event: Event) -> None:
        raise Boom("bad reading")

    async with TestClient(app, raise_errors=False) as client:
        result = await client.send_event("t", "d", "reading", {})
        other = await client.send_event("t", "d", "other", {})
    assert result.outcomes == {"everything": "ok", "readings": "dead_lettered"}
    with pytest.raises(ValueError, match="routes ended differently"):
        _ = result.outcome
    assert other.outcomes == {"everything": "ok"}


async def test_mqtt_dead_letters_are_captured_as_published_events() -> None:
    app = App()

    @app.event(event="reading", dead_letter="mqtt:ops/dlq/dead")
    async def buggy(event: Event) -> None:
        raise Boom("lost")

    async with TestClient(app, raise_errors=False) as client:
        result = await client.send_event("t", "d", "reading", {"n": 1})
    assert result.outcome == "dead_lettered"
    [letter] = client.events
    assert (letter.device_type, letter.device_id, letter.event) == ("ops", "dlq", "dead")
    assert letter.data["error"] == "Boom: lost" and letter.data["payload"] == '{"n":1}'


async def test_status_messages_and_commands_reach_their_handlers() -> None:
    app = App()
    seen: list[object] = []

    @app.device_status()
    async def device(status: DeviceStatus) -> None:
        seen.append(("device", status.connected, status.client_id, status.taken_over))

    @app.app_status()
    async def application(status: AppStatus) -> None:
        seen.append(("app", status.app_id, status.action))

    @app.command(command="reboot")
    async def reboot(command: Command) -> None:
        seen.append(("command", command.device_id, command.data))

    async with TestClient(app, Settings(org="abc123")) as client:
        await client.send_device_status("sensor", "s1")
        await client.send_device_status("sensor", "s1", "Disconnect", close_code=288)
        await client.send_app_status("other", "Connect")
        await client.send_command("sensor", "s1", "reboot", "now", format="text")
    assert seen == [
        ("device", True, "d:abc123:sensor:s1", False),
        ("device", False, "d:abc123:sensor:s1", True),
        ("app", "other", "Connect"),
        ("command", "s1", "now"),
    ]


async def test_concurrent_sends_keep_one_devices_order() -> None:
    app = App()
    order: list[int] = []

    @app.event(ordered=True)
    async def handle(event: Event) -> None:
        for _ in range(3 - event.data % 3):  # uneven work: unordered lanes would reorder
            await asyncio.sleep(0)
        order.append(event.data)

    async with TestClient(app, Settings(concurrency=4)) as client:
        results = await asyncio.gather(*(client.send_event("t", "d", "e", n) for n in range(20)))
    assert all(r.ok for r in results)
    assert order == list(range(20))


async def test_lifespan_hooks_run_and_the_publisher_is_unbound_after() -> None:
    app = App()
    calls: list[str] = []

    @app.on_startup
    async def hello() -> None:
        calls.append("startup")
        await app.publish_event("t", "d", "hello", {})

    @app.on_shutdown
    async def bye() -> None:
        calls.append("shutdown")

    async with TestClient(app) as client:
        assert calls == ["startup"]
    assert calls == ["startup", "shutdown"]
    assert [e.event for e in client.events] == ["hello"]
    with pytest.raises(ConnectError):
        await app.publish_event("t", "d", "late", {})


async def test_a_hung_handler_is_a_timeout_error_at_the_clients_deadline() -> None:
    app = App()
    never = asyncio.Event()

    @app.event()
    async def stuck(event: Event) -> None:
        await never.wait()

    async with TestClient(app, deadline=SHORT) as client:
        with pytest.raises(TimeoutError, match=r"no outcome within 0\.3 s"):
            await client.send_event("t", "d", "e", {})
    assert (
        client.registry.get_sample_value("worker_messages_dropped_total", {"reason": "abandoned"})
        == 1
    )


async def test_the_client_is_used_inside_its_block_once() -> None:
    client = TestClient(alerting_app())
    with pytest.raises(RuntimeError, match="inside 'async with"):
        await client.send_event("sensor", "s", "reading", {"temp": 1})
    async with client:
        pass
    with pytest.raises(RuntimeError, match="inside 'async with"):
        await client.send_event("sensor", "s", "reading", {"temp": 1})
    with pytest.raises(RuntimeError, match="runs once"):
        await client.__aenter__()


async def test_clear_forgets_the_captures() -> None:
    async with TestClient(alerting_app()) as client:
        await client.send_event("sensor", "s1", "reading", {"temp": 99})
        client.clear()
        assert (client.published, client.outcomes, client.acked) == ([], [], [])


# --- the fixtures ----------------------------------------------------------------------------


async def test_running_app_hands_a_handler_bug_to_the_test(
    running_app: RunApp, mqtt_client: aiomqtt.Client
) -> None:
    app = App()

    @app.event(event="reading")
    async def buggy(event: Event) -> None:
        raise Boom(f"bad {event.device_id}")

    serving = await running_app(app, concurrency=2)
    assert serving.worker.settings.concurrency == 2
    await publish_event(mqtt_client, "sensor", "s9", "reading", {"temp": 1})
    with pytest.raises(Boom, match="bad s9") as caught:
        await serving.handled(1)
    assert "buggy" in [f.name for f in traceback.extract_tb(caught.value.__traceback__)]


async def test_running_app_with_a_wrong_token_is_refused(
    platform: LocalPlatform, running_app: RunApp
) -> None:
    app = App()

    @app.event()
    async def handle(event: Event) -> None: ...

    assert platform.settings().org == "test01"
    with pytest.raises(NotAuthorized):
        await running_app(app, api_token="not-the-token")


async def test_a_device_of_the_org_connects_with_the_device_token(platform: LocalPlatform) -> None:
    async with platform.device_client("sensor", "s1") as device:
        await device.publish("iot-2/evt/reading/fmt/json", b"{}", qos=1)
    foreign = aiomqtt.Client(
        platform.host, platform.port, identifier="d:other1:sensor:s1",
        username="use-token-auth", password=platform.device_token, timeout=5,
    )  # fmt: skip
    with pytest.raises(aiomqtt.MqttError):
        async with foreign:
            pass


# --- in a user's project: a pytest session of its own ---------------------------------------

USER_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

BUGGY_HANDLERS = """
from worker import App, Event

app = App()

@app.event(event="reading")
async def on_reading(event: Event) -> None:
    celsius = event.data["temperature"]  # the bug: devices send "temp"
    print(celsius)
"""

USER_TEST = """
from handlers_under_test import app
from worker.testing import TestClient

async def test_reading() -> None:
    async with TestClient(app) as client:
        result = await client.send_event("sensor", "s1", "reading", {"temp": 21.5})
    assert result.ok
"""


@pytest.mark.slow
def test_a_handler_bug_fails_the_users_test_with_the_handlers_traceback(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(USER_INI)
    pytester.makepyfile(handlers_under_test=BUGGY_HANDLERS, test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=SCENARIO)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*async def on_reading(event: Event) -> None:",
            '>*celsius = event.data?"temperature"?*',  # ? for brackets: fnmatch classes
            "E*KeyError: 'temperature'",
            "*handlers_under_test.py:7: KeyError",
        ]
    )
    result.stdout.fnmatch_lines(["*raised by handler 'on_reading' for iot-2/type/sensor/*"])


FIXTURE_TEST = """
async def test_platform(platform) -> None:
    assert platform.port > 0
"""


@pytest.mark.slow
def test_the_fixtures_are_not_loaded_unless_asked_for(pytester: pytest.Pytester) -> None:
    pytester.makeini(USER_INI)
    pytester.makepyfile(test_fixture=FIXTURE_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=SCENARIO)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'platform' not found*"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ini", "args"),
    [
        ("worker_fixtures = true\n", ()),
        ("", ("--worker-fixtures",)),
        ("", ("-p", "worker.testing")),
    ],
    ids=["ini", "flag", "plugin"],
)
def test_the_fixtures_load_when_asked_for(
    pytester: pytest.Pytester, ini: str, args: tuple[str, ...]
) -> None:
    pytester.makeini(USER_INI + ini)
    pytester.makepyfile(test_fixture=FIXTURE_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=SCENARIO)
    result.assert_outcomes(passed=1)


async def test_handled_returns_the_outcomes_awaited_not_everything_so_far(
    platform: LocalPlatform, running_app: RunApp
) -> None:
    app = App()

    @app.event(event="reading")
    async def on_reading(event: Event) -> None: ...

    @app.device_status()
    async def on_status(status: DeviceStatus) -> None: ...

    serving = await running_app(app)
    async with platform.device_client("sensor", "s7") as device:  # a Connect status, too
        await device.publish("iot-2/evt/reading/fmt/json", b'{"temp": 1}', qos=1)
        [reading] = await serving.handled(1, route="on_reading")
        await device.publish("iot-2/evt/reading/fmt/json", b'{"temp": 2}', qos=1)
        [second] = await serving.handled(1, route="on_reading")
    assert (reading.route, second.route) == ("on_reading", "on_reading")
    assert reading is not second  # each call takes outcomes no earlier call returned
    [status] = await serving.handled(1, route="on_status")
    assert status.route == "on_status"
    [first] = await serving.handled(1)  # the status handler's Disconnect, or its Connect
    assert first.route == "on_status" and first is not status
    with pytest.raises(TimeoutError, match=r"0 of 1 outcomes of route 'on_reading' within"):
        await serving.handled(1, within=SHORT, route="on_reading")


MINIMAL_INI = """
[pytest]
worker_fixtures = true
filterwarnings = error
asyncio_default_fixture_loop_scope = function
"""

RUNNING_APP_TEST = """
from worker import App, Event

app = App()

@app.event(event="reading")
async def on_reading(event: Event) -> None: ...

async def test_serving(running_app) -> None:
    serving = await running_app(app)
    assert serving.worker.started.is_set()
"""


@pytest.mark.slow
def test_without_asyncio_mode_auto_the_plugin_says_what_to_add(pytester: pytest.Pytester) -> None:
    pytester.makeini(MINIMAL_INI)
    pytester.makepyfile(test_user=RUNNING_APP_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=SCENARIO)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*test_serving is an async test that pytest-asyncio does not run*asyncio_mode*auto*"]
    )


@pytest.mark.slow
def test_with_the_documented_minimal_configuration_the_fixtures_work(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(MINIMAL_INI + "asyncio_mode = auto\n")
    pytester.makepyfile(test_user=RUNNING_APP_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=SCENARIO)
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_a_worker_fixture_without_the_switch_says_what_to_add(pytester: pytest.Pytester) -> None:
    pytester.makeini(USER_INI)
    pytester.makepyfile(test_user=RUNNING_APP_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=SCENARIO)
    result.assert_outcomes(errors=1)
    wanted = "*fixture 'running_app' not found: the worker fixtures are off; add `worker_fixtures*"
    result.stdout.fnmatch_lines([wanted])
