"""``worker publish``: messages checked before sending; one event, one command, a replay."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.credentials import API_KEY, TOKEN
from tests.support.listener import listening
from tests.support.processes import clean_env, run_cli
from worker.platform import Platform, PlatformConfig
from worker.tools.publish import (
    PublishError,
    event_message,
    payload_of,
    read_replay,
    replay_message,
)

LIMIT = 131072
EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"
COMMANDS = "iot-2/type/+/id/+/cmd/+/fmt/+"


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    async with Platform(PlatformConfig(host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN})) as p:
        yield p


def login(platform: Platform) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(platform.port), "--auth-key", API_KEY,
            "--auth-token", TOKEN]  # fmt: skip


def test_topic_components_are_checked() -> None:
    with pytest.raises(PublishError, match="device ID 's/1'"):
        event_message("sensor", "s/1", "reading", "json", b"{}")
    with pytest.raises(PublishError, match="event ID"):
        event_message("sensor", "s1", "a+b", "json", b"{}")


def test_the_size_limit_is_the_platforms() -> None:
    assert event_message("t", "d", "e", "bin", b"x" * LIMIT).payload == b"x" * LIMIT
    with pytest.raises(PublishError, match="131073 bytes; the platform accepts at most 131072"):
        event_message("t", "d", "e", "bin", b"x" * (LIMIT + 1))


def test_payloads() -> None:
    assert payload_of("json", '{ "temp": 21.5 }', None) == b'{"temp":21.5}'
    assert payload_of("text", None, "hello") == b"hello"
    with pytest.raises(PublishError, match="not valid JSON"):
        payload_of("json", "{temp", None)
    with pytest.raises(PublishError, match="not both"):
        payload_of("json", "{}", "x")
    with pytest.raises(PublishError, match="use --data"):
        payload_of("text", "{}", None)


def test_replay_lines(tmp_path: Path) -> None:
    ibm = '{"typeId": "sensor", "deviceId": "s2", "eventId": "reading", "data": {"t": 1}}'
    assert replay_message(ibm, "f:1").topic == "iot-2/type/sensor/id/s2/evt/reading/fmt/json"
    text = replay_message(
        '{"type": "a", "id": "b", "event": "c", "format": "text", "data": "hi"}', "f:2"
    )
    assert (text.topic.endswith("/fmt/text"), text.payload) == (True, b"hi")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "a", "id": "b", "event": "c"}\n\n{"type": "a", "event": "c"}\n')
    with pytest.raises(PublishError, match=r"bad.jsonl:3: no device id"):
        read_replay(bad)
    bad.write_text("not json\n")
    with pytest.raises(PublishError, match=r"bad.jsonl:1: not JSON"):
        read_replay(bad)


async def test_publish_an_event_and_a_command(platform: Platform) -> None:
    async with listening(platform.port, EVENTS, COMMANDS) as listener:
        code, out, err = await run_cli(
            "publish", "event", "sensor", "s1", "reading", "--json", '{"temp": 3}', *login(platform)
        )
        assert code == 0, err
        assert "to iot-2/type/sensor/id/s1/evt/reading/fmt/json" in out
        code, _, err = await run_cli(
            "publish", "command", "sensor", "s1", "reboot", "--data", "now", "--format", "text",
            *login(platform),
        )  # fmt: skip
        assert code == 0, err
        await listener.until(lambda got: len(got) == 2, "the event and the command")
    event, command = listener.got
    assert (event.topic, json.loads(event.payload)) == (
        "iot-2/type/sensor/id/s1/evt/reading/fmt/json", {"temp": 3},
    )  # fmt: skip
    assert (command.topic, command.payload) == (
        "iot-2/type/sensor/id/s1/cmd/reboot/fmt/text",
        b"now",
    )


async def test_replay_keeps_the_files_order(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "past.jsonl"
    lines = [
        {"type": "meter", "id": f"m{i % 3}", "event": "usage", "data": {"n": i}} for i in range(40)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    async with listening(platform.port, EVENTS) as listener:
        code, out, err = await run_cli(
            "publish", "replay", str(path), "--rate", "0", *login(platform)
        )
        assert code == 0, err
        await listener.until(lambda got: len(got) == 40, "every replayed event")
    assert [json.loads(m.payload)["n"] for m in listener.got] == list(range(40))
    assert "replayed 40 events" in out


async def test_bad_input_exits_2_before_connecting() -> None:
    code, _, err = await run_cli(
        "publish", "event", "sensor", "s1", "reading", "--json", "{", "--port", "1"
    )
    assert code == 2 and "not valid JSON" in err


async def test_a_refused_login_exits_4(platform: Platform) -> None:
    args = ["--host", "127.0.0.1", "--port", str(platform.port), "--auth-key", API_KEY,
            "--auth-token", "wrong"]  # fmt: skip
    code, _, err = await run_cli("publish", "event", "sensor", "s1", "reading", *args)
    assert code == 4, err


def test_data_on_the_json_format_must_be_json() -> None:
    with pytest.raises(
        PublishError, match=r"--data 'temp=50' is not JSON .* --json '\{\"temp\": 50\}'"
    ):
        payload_of("json", None, "temp=50")
    assert payload_of("json", None, '{"temp": 50}') == b'{"temp": 50}'
    assert payload_of("text", None, "temp=50") == b"temp=50"


#: a command line's bytes that are not UTF-8 (0xff), as Python hands them over (surrogateescape)
NOT_UTF8 = '{"s": "\udcff"}'


def test_bytes_that_are_not_utf8_are_sent_as_given_or_refused_as_json() -> None:
    assert payload_of("text", None, NOT_UTF8) == b'{"s": "\xff"}'
    with pytest.raises(PublishError) as caught:
        payload_of("json", None, NOT_UTF8)
    assert str(caught.value) == (
        """--data '{"s": "\\xff"}' is not UTF-8 (byte 8), but the format is json, which is """
        "UTF-8 text: give JSON, or another format for other bytes (--format bin)"
    )
    with pytest.raises(PublishError, match=r"^--json is not UTF-8 \(byte 8\): JSON is UTF-8 text$"):
        payload_of("json", NOT_UTF8, None)


@pytest.mark.parametrize("flag", ["--data", "--json"])
async def test_the_cli_says_a_payload_is_not_utf8_without_a_traceback(flag: str) -> None:
    args = ("publish", "event", "sensor", "s1", "reading", flag, NOT_UTF8)
    code, _, err = await run_cli(*args, env=clean_env(WORKER_ORG="abc123"))
    assert code == 2, err
    assert "is not UTF-8 (byte 8)" in err and "Traceback" not in err, err


async def test_the_cli_refuses_non_json_data_on_fmt_json() -> None:
    args = ("publish", "event", "sensor", "s1", "reading", "--data", "temp=50")
    code, _, err = await run_cli(*args, env=clean_env(WORKER_ORG="abc123"))
    assert code == 2, err
    assert "is not JSON" in err and "--format text" in err
    assert len(err.strip().splitlines()) == 1, err
