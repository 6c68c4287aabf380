"""Dead-letter sinks: records, file, MQTT, failures reported and counted, never a crash."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.pipeline import Acks, Published, event, new_metrics, running, value
from worker import App, ConfigError, Event
from worker.config import load_settings
from worker.deadletter import DeadLetter, DeadLetters, FileSink, LogSink, MqttSink, check_choice
from worker.testing import TestClient

LETTER = DeadLetter(
    "on_reading",
    "error",
    "iot-2/type/s/id/d1/evt/reading/fmt/json",
    b'{"temp": 1}',
    qos=1,
    error="ValueError: x",
    attempts=2,
    time=1_700_000_000.0,
)


def test_record_has_every_field_and_text_or_base64_payload() -> None:
    record = LETTER.record()
    assert record == {
        "time": "2023-11-14T22:13:20.000+00:00",
        "route": "on_reading",
        "reason": "error",
        "topic": "iot-2/type/s/id/d1/evt/reading/fmt/json",
        "qos": 1,
        "attempts": 2,
        "error": "ValueError: x",
        "payload": '{"temp": 1}',
        "payload_encoding": "utf-8",
    }
    binary = DeadLetter("r", "decode_error", "t", b"\xff\x00").record()
    assert binary["payload_encoding"] == "base64"
    assert base64.b64decode(binary["payload"]) == b"\xff\x00"


async def test_file_sink_appends_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    sinks = DeadLetters(f"file:{path}")
    assert sinks.default is not None
    assert await sinks.send(sinks.default, LETTER)
    assert await sinks.send(sinks.default, LETTER)
    sinks.close()
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["route"] for line in lines] == ["on_reading", "on_reading"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_a_full_disk_is_reported_once_and_returns_false(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sinks = DeadLetters("file:/dev/full")
    assert sinks.default is not None
    with caplog.at_level(logging.ERROR):
        assert not await sinks.send(sinks.default, LETTER)
        assert not await sinks.send(sinks.default, LETTER)
    reports = [r for r in caplog.records if r.name == "worker.deadletter"]
    assert len(reports) == 1  # the second failure waits for the next report
    assert "file:/dev/full" in reports[0].getMessage()


async def test_a_torn_line_does_not_glue_records(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path / "missing-dir" / "dead.jsonl"))
    with pytest.raises(OSError, match="No such file"):
        await sink.put(LETTER)
    sink.path = str(tmp_path / "dead.jsonl")
    await sink.put(LETTER)
    sink.close()
    lines = [x for x in (tmp_path / "dead.jsonl").read_bytes().split(b"\n") if x]
    assert [orjson.loads(x)["reason"] for x in lines] == ["error"]


async def test_failed_handler_with_an_unwritable_sink_is_counted_and_still_acked(
    tmp_path: Path,
) -> None:
    app = App()

    @app.event(dead_letter=f"file:{tmp_path}/no/such/dir/dead.jsonl")
    async def broken(e: Event) -> None:
        raise RuntimeError("boom")

    metrics, acks = new_metrics(), Acks()
    async with running(app, metrics) as pipeline:
        await pipeline.put([event()], acks)
        assert await acks.wait_for(1) == [1]
    # counted once, as dropped: it was neither handled nor kept
    labels = {"route": "broken", "outcome": "error"}
    assert value(metrics, "worker_messages_handled_total", **labels) == 0
    assert value(metrics, "worker_messages_dropped_total", reason="dead_letter_failed") == 1
    assert value(metrics, "worker_dead_letters_total", route="broken") == 0


async def test_route_sink_overrides_the_app_wide_one(tmp_path: Path) -> None:
    app = App()

    @app.event(event="a", dead_letter=f"file:{tmp_path}/a.jsonl")
    async def route_a(e: Event) -> None:
        raise ValueError("a")

    @app.event(event="b")
    async def route_b(e: Event) -> None:
        raise ValueError("b")

    @app.event(event="c", dead_letter="none")
    async def route_c(e: Event) -> None:
        raise ValueError("c")

    metrics, acks = new_metrics(), Acks()
    sinks = DeadLetters(f"file:{tmp_path}/all.jsonl")
    async with running(app, metrics, dead_letters=sinks) as pipeline:
        await pipeline.put([event(name=n, packet_id=i) for i, n in enumerate("abc", 1)], acks)
        await acks.wait_for(3)
    assert orjson.loads((tmp_path / "a.jsonl").read_bytes())["route"] == "route_a"
    assert orjson.loads((tmp_path / "all.jsonl").read_bytes())["route"] == "route_b"
    labels = {"route": "route_c", "outcome": "error"}
    assert value(metrics, "worker_messages_handled_total", **labels) == 1


async def test_mqtt_sink_publishes_a_json_event_through_the_app() -> None:
    app = App()
    sent = Published()
    app.bind_publisher(sent)
    sinks = DeadLetters("mqtt:deadletters/w1/failed", publish=app.publish_event)
    assert isinstance(sinks.default, MqttSink)
    assert await sinks.send(sinks.default, LETTER)
    big = DeadLetter("r", "error", "t", b"\xff" * 120_000)
    assert await sinks.send(sinks.default, big)  # base64 would not fit: sent without it
    topics = {s[0] for s in sent.sent}
    assert topics == {"iot-2/type/deadletters/id/w1/evt/failed/fmt/json"}
    assert orjson.loads(sent.sent[0][1])["error"] == "ValueError: x"
    assert orjson.loads(sent.sent[1][1])["payload"] is None
    assert all(s[2] == 1 for s in sent.sent)


async def test_mqtt_sink_never_resends_its_own_dead_letters() -> None:
    sent = Published()
    app = App()
    app.bind_publisher(sent)
    sink = MqttSink(app.publish_event, "dl", "w1", "failed")
    own = DeadLetter("audit", "error", sink.topic, b"{}")
    sinks = DeadLetters(sink)
    assert not await sinks.send(sink, own)
    assert sent.sent == []


async def test_mqtt_sink_when_not_connected_is_a_failure_not_a_crash() -> None:
    app = App()
    sinks = DeadLetters("mqtt:dl/w1/failed", publish=app.publish_event)
    assert sinks.default is not None
    assert not await sinks.send(sinks.default, LETTER)


async def test_log_sink_writes_a_warning_with_route_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.deadletter"):
        await LogSink().put(LETTER)
    assert "route=on_reading reason=error" in caplog.text


async def test_an_error_that_spans_lines_is_one_line_in_the_letter_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # PostgreSQL's errors carry a DETAIL line; a line-oriented log shipper would split them.
    app = App()

    @app.event(event="reading", retries=1, retry_backoff=0, dead_letter="mqtt:ops/dlq/dead")
    async def store(event: Event) -> None:
        raise ValueError('invalid input syntax for type json\nDETAIL:  Token "x" is invalid.\n')

    with caplog.at_level(logging.WARNING, logger="worker.pipeline"):
        async with TestClient(app, raise_errors=False) as client:
            await client.send_event("t", "d", "reading", {"n": 1})
    [letter] = client.events
    text = 'ValueError: invalid input syntax for type json; DETAIL:  Token "x" is invalid.'
    assert letter.data["error"] == text
    retrying = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retrying == [
        f"store: {text} on iot-2/type/t/id/d/evt/reading/fmt/json (run 1); retrying"
    ]


@pytest.mark.parametrize(
    ("spec", "normal"),
    [
        ("log", "log"),
        (" LOG ", "log"),
        ("none", "none"),
        ("File:/tmp/x", "file:/tmp/x"),
        ("mqtt:a/b/c", "mqtt:a/b/c"),
    ],
)
def test_sink_specs(spec: str, normal: str) -> None:
    assert check_choice(spec) == normal


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("s3:bucket", "accepted are log, none, file:PATH, mqtt:TYPE/ID/EVENT"),
        ("file:", "accepted are"),
        ("mqtt:a/b", "TYPE/ID/EVENT"),
        ("mqtt:a/b c/d", "device ID"),
    ],
)
def test_bad_specs_name_the_accepted_forms(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_choice(spec)


def test_bad_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="WORKER_DEAD_LETTER='kafka:x': accepted are"):
        load_settings({"WORKER_ORG": "abc123", "WORKER_DEAD_LETTER": "kafka:x"})
    env: dict[str, Any] = {"WORKER_ORG": "abc123", "WORKER_DEAD_LETTER": "file:/var/dl.jsonl"}
    assert load_settings(env).dead_letter == "file:/var/dl.jsonl"


def test_mqtt_sink_needs_a_publisher() -> None:
    with pytest.raises(ValueError, match="publisher"):
        DeadLetters("mqtt:a/b/c")
