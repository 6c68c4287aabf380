"""``worker subscribe``: prints the messages on a filter with the worker's own settings."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.conftest import MosquittoFactory
from tests.support.credentials import API_KEY, TOKEN
from tests.support.platform import platform_config
from tests.support.processes import ROOT, clean_env, run_cli
from tests.support.waiting import PROCESS
from worker.platform import Platform
from worker.tools.subscribe import DEFAULT_FILTER, line
from worker.transports.base import Inbound


@asynccontextmanager
async def subscriber(*args: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """``worker subscribe ARGS``, started and subscribed (its first stderr line says so)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "subscribe", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = await asyncio.wait_for(proc.stderr.readline(), PROCESS)
        assert b"subscribed to" in first, first
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def finish(proc: asyncio.subprocess.Process) -> list[str]:
    out, err = await asyncio.wait_for(proc.communicate(), PROCESS)
    assert proc.returncode == 0, err
    return out.decode().splitlines()


async def test_events_on_the_local_platform_are_printed_one_a_line() -> None:
    env = clean_env(WIOTP_AUTH_KEY=API_KEY, WIOTP_AUTH_TOKEN=TOKEN, WORKER_HOST="127.0.0.1")
    async with Platform(platform_config()) as platform:
        env["WIOTP_OPTIONS_MQTT_PORT"] = str(platform.port)
        async with subscriber("--count", "2", env=env) as proc:
            for temp in (21, 22):
                code, _, err = await run_cli(
                    "publish", "event", "sensor", "s1", "reading", "--json", f'{{"temp": {temp}}}',
                    env=env,
                )  # fmt: skip
                assert code == 0, err
            lines = await finish(proc)
    topic = "iot-2/type/sensor/id/s1/evt/reading/fmt/json"
    assert lines == [f'{topic} {{"temp":21}}', f'{topic} {{"temp":22}}']


async def test_on_a_broker_with_the_mqtt_profile_and_a_login(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(users={"dev": "pw"})
    env = clean_env(
        WORKER_PROFILE="mqtt", WORKER_ORG="myorg1", WORKER_HOST="127.0.0.1",
        WIOTP_OPTIONS_MQTT_PORT=str(broker.port), WORKER_USERNAME="dev", WORKER_PASSWORD="pw",
    )  # fmt: skip
    async with subscriber("--json", "--count", "1", "iot-2/type/+/id/+/cmd/#", env=env) as proc:
        code, _, err = await run_cli(
            "publish", "command", "sensor", "s1", "reboot", "--data", "now", "--format", "text",
            env=env,
        )  # fmt: skip
        assert code == 0, err
        [printed] = await finish(proc)
    record = json.loads(printed)
    assert record["topic"] == "iot-2/type/sensor/id/s1/cmd/reboot/fmt/text"
    assert record["payload"] == "now" and record["qos"] == 1


async def test_a_bad_filter_exits_2_and_a_refused_login_exits_4(
    mosquitto_factory: MosquittoFactory,
) -> None:
    code, _, err = await run_cli("subscribe", "--org", "abc123", "iot-2/type/+/id/+/cmd/#")
    assert code == 2 and "'#' is not allowed for applications; use '+'" in err, err
    code, _, err = await run_cli("subscribe", "--profile", "mqtt", "--org", "abc123", "a/#/b")
    assert code == 2 and "'#' must be the last level" in err, err
    broker = mosquitto_factory(users={"dev": "pw"})
    code, _, err = await run_cli(
        "subscribe", "--profile", "mqtt", "--org", "myorg1", "--host", "127.0.0.1",
        "--port", str(broker.port), "--username", "dev", "--password", "wrong",
    )  # fmt: skip
    assert code == 4, err
    assert len(err.strip().splitlines()) == 1, err


def test_lines_show_text_as_is_and_binary_as_hex() -> None:
    text = Inbound(DEFAULT_FILTER, b'{"a": 1}\n', 1, False)
    assert line(text) == DEFAULT_FILTER + ' {"a": 1}\\n'
    binary = Inbound("t", bytes(range(40)), 0, True)
    assert line(binary).startswith("t <40 bytes: 000102")
    assert line(binary).endswith("…> (retained)")
    assert json.loads(line(binary, as_json=True))["payload_hex"] == bytes(range(40)).hex()


async def test_tls_against_a_plain_port_says_so_in_one_line() -> None:
    async with Platform(platform_config()) as platform:
        port = platform.port
        code, _, err = await run_cli(
            "subscribe", "--org", "abc123", "--host", "127.0.0.1", "--port", str(port),
            "--tls", "--auth-key", API_KEY, "--auth-token", TOKEN,
        )  # fmt: skip
    assert code == 4, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"is {port} a plain MQTT port? Use --no-tls" in err
