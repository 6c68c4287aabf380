"""Typed payloads, retry control, the handler's Context and the message key."""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Literal, TypedDict

import pydantic
import pytest

from worker import App, Batch, Command, Context, Event, PermanentError, RegistrationError
from worker.config import Settings
from worker.errors import CodecError
from worker.messages import message_key
from worker.payloads import compile_model
from worker.testing import TestClient


@dataclasses.dataclass
class Reading:
    temp: float
    unit: Literal["C", "F"] = "C"
    tags: list[str] = dataclasses.field(default_factory=list)


class ReadingDict(TypedDict, total=False):
    temp: float
    site: str


class Location(pydantic.BaseModel):
    lat: float
    lon: float


# --- typed payloads ---------------------------------------------------------------------


@pytest.mark.parametrize("use_pydantic", [False, None])
def test_a_dataclass_payload_is_built_from_valid_data(use_pydantic: bool | None) -> None:
    model = compile_model(Reading, use_pydantic=use_pydantic)
    assert model.validate({"temp": 21, "unit": "F", "extra": 1}) == Reading(21.0, "F")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"unit": "C"}, "missing field 'temp'"),
        ({"temp": "hot"}, "field 'temp': expected a number, got the string 'hot'"),
        ({"temp": 1, "unit": "K"}, "field 'unit': expected one of ('C', 'F'), got 'K'"),
        ({"temp": 1, "tags": ["a", 2]}, "field 'tags.1': expected a string, got the number 2"),
        ([1, 2], "expected an object, got a list"),
    ],
)
def test_the_built_in_checks_say_what_does_not_fit(data: Any, says: str) -> None:
    with pytest.raises(CodecError, match=r"payload does not match Reading: .*" + re.escape(says)):
        compile_model(Reading, use_pydantic=False).validate(data)


@pytest.mark.parametrize("use_pydantic", [False, None])
def test_a_typed_dict_keeps_the_dict_and_checks_its_types(use_pydantic: bool | None) -> None:
    """With pydantic installed too: pydantic refuses typing.TypedDict on Python 3.11."""
    model = compile_model(ReadingDict, use_pydantic=use_pydantic)
    assert model.validate({"temp": 3, "site": "x"}) == {"temp": 3.0, "site": "x"}
    with pytest.raises(CodecError, match="field 'site': "):
        model.validate({"site": 5})


def test_pydantic_models_validate_with_pydantic() -> None:
    model = compile_model(Location)
    assert model.validate({"lat": "1.5", "lon": 2}) == Location(lat=1.5, lon=2.0)
    with pytest.raises(CodecError, match="payload does not match Location: field 'lon': field req"):
        model.validate({"lat": 1})
    assert model.json_schema()["required"] == ["lat", "lon"]


def test_the_built_in_schema_describes_the_model() -> None:
    schema = compile_model(Reading, use_pydantic=False).json_schema()
    assert schema == {
        "title": "Reading",
        "type": "object",
        "properties": {
            "temp": {"type": "number"},
            "unit": {"enum": ["C", "F"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["temp"],
    }


def test_a_payload_option_that_is_no_model_is_refused() -> None:
    with pytest.raises(RegistrationError, match="payload=int: accepted is a pydantic model"):
        App().event(payload=int)


async def test_the_handler_gets_the_model_and_a_bad_payload_is_a_decode_error() -> None:
    app = App()
    got: list[Reading] = []
    runs = 0

    @app.event(event="reading", payload=Reading, retries=3, dead_letter="none")
    async def on_reading(event: Event) -> None:
        nonlocal runs
        runs += 1
        got.append(event.data)

    async with TestClient(app) as client:
        ok = await client.send_event("sensor", "s1", "reading", {"temp": 20.5})
        bad = await client.send_event("sensor", "s1", "reading", {"temp": "warm"})
    assert ok.ok and got == [Reading(20.5)]
    assert bad.outcome == "decode_error"
    assert "payload does not match Reading: field 'temp': " in str(bad.error)
    assert runs == 1  # never retried: the same bytes fail the same way


async def test_batch_routes_validate_each_message_and_leave_the_bad_ones_out() -> None:
    app = App()
    batches: list[list[Location]] = []

    @app.command(command="goto", payload=Location, batch=Batch(max_size=10), dead_letter="none")
    async def go(commands: list[Command]) -> None:
        batches.append([c.data for c in commands])

    async with TestClient(app) as client:
        topic = "iot-2/type/robot/id/r1/cmd/goto/fmt/json"
        pairs = [(topic, b'{"lat": 1, "lon": 2}'), (topic, b'{"lat": 1}')]
        good, bad = await client.send_many(pairs)
    assert batches == [[Location(lat=1, lon=2)]]
    assert (good.outcome, bad.outcome) == ("ok", "decode_error")


# --- retry control ------------------------------------------------------------------------


async def test_a_permanent_error_is_not_retried() -> None:
    app = App()
    runs = 0

    @app.event(retries=5, retry_backoff=0, dead_letter="none")
    async def reject(event: Event) -> None:
        nonlocal runs
        runs += 1
        raise PermanentError("unknown device")

    async with TestClient(app, raise_errors=False) as client:
        delivery = await client.send_event("sensor", "s1", "reading", {})
    assert runs == 1
    assert delivery.outcome == "error"


async def test_retry_on_names_the_only_errors_worth_another_run() -> None:
    app = App()
    runs: dict[str, int] = {"transient": 0, "bug": 0}

    @app.event(event="e", retries=2, retry_backoff=0, retry_on=ConnectionError, dead_letter="none")
    async def handler(event: Event) -> None:
        kind = event.data["kind"]
        runs[kind] += 1
        raise ConnectionResetError("reset") if kind == "transient" else KeyError("bug")

    async with TestClient(app, raise_errors=False) as client:
        await client.send_event("t", "d", "e", {"kind": "transient"})
        await client.send_event("t", "d", "e", {"kind": "bug"})
    assert runs == {"transient": 3, "bug": 1}


async def test_batches_follow_retry_on_too() -> None:
    app = App()
    runs = 0

    @app.event(batch=Batch(max_size=5), retries=3, retry_backoff=0, retry_on=(OSError,),
               dead_letter="none")  # fmt: skip
    async def store(events: list[Event]) -> None:
        nonlocal runs
        runs += 1
        raise ValueError("constraint")

    async with TestClient(app, raise_errors=False) as client:
        await client.send_events("t", "d", "e", [{}, {}])
    assert runs == 1


@pytest.mark.parametrize("bad", [ValueError("x"), (), (int,), "OSError"])
def test_retry_on_accepts_exception_classes_only(bad: Any) -> None:
    with pytest.raises(RegistrationError, match=r"accepted is None .* an exception class"):
        App().event(retry_on=bad)


# --- the handler's context --------------------------------------------------------------


async def test_a_handler_with_a_second_argument_gets_its_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    seen: list[tuple[str, str, str | None, str, int]] = []

    @app.event(event="reading", retries=1, retry_backoff=0)
    async def on_reading(event: Event, ctx: Context) -> None:
        seen.append((ctx.route, ctx.instance, ctx.topic, ctx.subject, ctx.attempt))
        ctx.log.info("temp %s", event.data["temp"])
        if ctx.attempt == 1:
            raise ConnectionError("first run fails")

    settings = Settings(instance="w7")
    caplog.set_level(logging.INFO, logger="worker.handlers")
    async with TestClient(app, settings) as client:
        assert (await client.send_event("sensor", "s1", "reading", {"temp": 21})).ok
    topic = "iot-2/type/sensor/id/s1/evt/reading/fmt/json"
    assert seen == [
        ("on_reading", "w7", topic, "sensor/s1", 1),
        ("on_reading", "w7", topic, "sensor/s1", 2),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.handlers.on_reading"]
    assert lines == ["on_reading sensor/s1: temp 21"] * 2


async def test_a_batch_handler_gets_a_context_too() -> None:
    app = App()
    contexts: list[Context] = []

    @app.event(batch=Batch(max_size=10))
    async def store(events: list[Event], ctx: Context) -> None:
        contexts.append(ctx)

    async with TestClient(app) as client:
        await client.send_events("t", "d", "e", [{}, {}, {}])
    [ctx] = contexts
    assert (ctx.subject, ctx.topic, ctx.attempt) == ("batch of 3", None, 1)


def test_a_handler_of_one_argument_gets_no_context() -> None:
    app = App()

    @app.event()
    async def plain(event: Event) -> None: ...

    @app.event(event="x")
    async def with_context(event: Event, ctx: Context) -> None: ...

    assert [r.wants_context for r in app.routes] == [False, True]


# --- the message key ------------------------------------------------------------------------


async def test_the_key_is_the_same_for_the_same_bytes_on_the_same_topic() -> None:
    app = App()
    keys: list[str] = []

    @app.event()
    async def remember(event: Event) -> None:
        keys.append(event.key)

    async with TestClient(app) as client:
        for data in ({"n": 1}, {"n": 1}, {"n": 2}):
            await client.send_event("t", "d", "e", data)
        await client.send_event("t", "other", "e", {"n": 1})
    assert keys[0] == keys[1] != keys[2]
    assert keys[3] != keys[0]
    assert keys[0] == message_key("iot-2/type/t/id/d/evt/e/fmt/json", b'{"n":1}')
    assert len(keys[0]) == 32
