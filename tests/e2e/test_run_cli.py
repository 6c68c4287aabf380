"""``worker run`` exit codes and signals, as a user and Kubernetes see them."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.conftest import MosquittoFactory
from tests.e2e.conftest import Spawn
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port
from tests.support.processes import publish_events, run_cli
from tests.support.waiting import until

MQTT = ("--profile", "mqtt", "--org", "abc123", "--app-id", "app", "--instance", "i1")


async def test_module_that_does_not_exist_exits_3() -> None:
    code, _, err = await run_cli("run", "tests.e2e.no_such_module", *MQTT)
    assert code == 3
    assert "cannot import 'tests.e2e.no_such_module'" in err
    assert "Traceback" not in err


async def test_module_without_app_exits_3() -> None:
    code, _, err = await run_cli("run", "tests.e2e.noapp", *MQTT)
    assert code == 3
    assert "module 'tests.e2e.noapp' has no App" in err


async def test_an_app_without_handlers_exits_3_before_connecting() -> None:
    # Nothing listens on the port: the refusal comes before any attempt to connect.
    where = ("--host", "127.0.0.1", "--port", str(free_port()), "--startup-timeout", "30")
    code, _, err = await run_cli("run", "tests.e2e.emptyapp", *MQTT, *where)
    assert code == 3
    assert "tests.e2e.emptyapp: the App has no handlers" in err
    assert "@app.event(...)" in err
    assert "Traceback" not in err


async def test_module_that_fails_to_import_exits_3_with_its_message() -> None:
    code, _, err = await run_cli("run", "tests.e2e.broken", *MQTT)
    assert code == 3
    assert "cannot import 'tests.e2e.broken'" in err
    assert "coroutine function" in err
    assert "Traceback" not in err


async def test_attribute_that_is_not_an_app_exits_3() -> None:
    code, _, err = await run_cli("run", "tests.e2e.noapp:VALUE", *MQTT)
    assert code == 3
    assert "tests.e2e.noapp:VALUE: not an App (it is an int)" in err


async def test_bad_setting_exits_2() -> None:
    code, _, err = await run_cli("run", "tests.e2e.recorder", *MQTT, "--qos", "7")
    assert code == 2
    assert "--qos" in err


@pytest.mark.mosquitto
async def test_bad_credentials_exit_4_with_one_line(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(users={"alice": "right-pw"})
    where = ("--host", broker.host, "--port", str(broker.port), "--metrics-port", "0")
    creds = ("--username", "alice", "--password", "wrong-pw")
    code, out, err = await run_cli("run", "tests.e2e.recorder", *MQTT, *where, *creds)
    assert code == 4
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    # Mosquitto 2.0 answers a wrong password with "not authorised" (5), not 4.
    assert errors == [
        f"error: {broker.host}:{broker.port} refused client ID 'app-i1' as user 'alice': "
        "not authorised (CONNACK return code 5)"
    ]
    assert "wrong-pw" not in err
    assert "Traceback" not in err


async def test_unreachable_within_startup_timeout_exits_4() -> None:
    where = ("--host", "127.0.0.1", "--port", str(free_port()), "--startup-timeout", "1")
    code, _, err = await run_cli("run", "tests.e2e.recorder", *MQTT, *where)
    assert code == 4
    assert "could not connect to 127.0.0.1" in err


@pytest.mark.mosquitto
async def test_second_sigint_gives_up_the_drain(mosquitto: Mosquitto, spawn: Spawn) -> None:
    where = ("--host", mosquitto.host, "--port", str(mosquitto.port))
    worker = spawn("slow", *MQTT, *where, "--concurrency", "1", RECORD_DELAY="0.5")
    await worker.start()
    await publish_events(mosquitto.host, mosquitto.port, range(40))
    await until(lambda: len(worker.handled()) >= 1, "the slow worker to start")
    worker.signal(signal.SIGINT)
    await until(lambda: "draining" in worker.log_text(), "the drain to begin")
    worker.signal(signal.SIGINT)
    assert await asyncio.wait_for(worker.wait(), 5) == 130
    assert "giving up the drain" in worker.log_text()
    assert len(worker.handled()) < 40


async def test_failing_startup_hook_exits_3_naming_it(mosquitto: Mosquitto) -> None:
    code, _, err = await run_cli(
        "run", "tests.e2e.badstart", *MQTT, "--host", "127.0.0.1", "--port", str(mosquitto.port)
    )
    assert code == 3, err
    assert "error: startup hook open_database failed: RuntimeError('database unreachable')" in err


async def test_a_startup_hook_that_says_what_is_wrong_gets_one_line(mosquitto: Mosquitto) -> None:
    code, _, err = await run_cli(
        "run", "tests.e2e.badstart:config_app", *MQTT,
        "--host", "127.0.0.1", "--port", str(mosquitto.port),
    )  # fmt: skip
    assert code == 3, err
    assert "error: startup hook read_settings: DATABASE_URL is not set: accepted is" in err
    assert "Traceback" not in err
