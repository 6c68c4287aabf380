"""App: registration checks, filters, the compiled router, hooks and publish helpers."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest

from tests.support.pipeline import Published
from worker import (
    App,
    AppStatus,
    CodecError,
    Command,
    ConnectError,
    DeviceStatus,
    Event,
    PayloadTooLarge,
    RegistrationError,
    TopicError,
)
from worker.metrics import Kind
from worker.routes import RouteTable


async def on_event(e: Event) -> None:
    """A module-level handler to register in several tests."""


def test_decorators_return_the_function_and_fill_omitted_components_with_plus() -> None:
    app = App()

    async def cmd(c: Command) -> None: ...
    async def dev(s: DeviceStatus) -> None: ...
    async def apps(s: AppStatus) -> None: ...

    assert app.event(device_type="sensor", event="reading")(on_event) is on_event
    assert app.command(command="reboot")(cmd) is cmd
    assert app.device_status(device_id="d1")(dev) is dev
    assert app.app_status()(apps) is apps
    assert [(r.name, r.kind, r.topic_filter) for r in app.routes] == [
        ("on_event", Kind.EVENT, "iot-2/type/sensor/id/+/evt/reading/fmt/+"),
        ("cmd", Kind.COMMAND, "iot-2/type/+/id/+/cmd/reboot/fmt/+"),
        ("dev", Kind.DEVICE_STATUS, "iot-2/type/+/id/d1/mon"),
        ("apps", Kind.APP_STATUS, "iot-2/app/+/mon"),
    ]


def test_route_options_are_kept() -> None:
    app = App()
    app.event(ordered=True, timeout=2, retries=3, retry_backoff=0.5, dead_letter="file:/x")(
        on_event
    )
    (route,) = app.routes
    assert (route.ordered, route.timeout, route.retries, route.retry_backoff) == (
        True,
        2.0,
        3,
        0.5,
    )
    assert route.dead_letter == "file:/x"


def sync_handler(e: Event) -> None: ...


async def no_argument() -> None: ...


async def three_arguments(a: Event, b: int, c: int) -> None: ...


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (sync_handler, "must be a coroutine function"),
        (lambda e: None, "must be a coroutine function"),
        (no_argument, "the message as its one positional argument"),
        (three_arguments, "optionally a worker.Context as a second"),
    ],
)
def test_handlers_that_cannot_be_called_with_a_message_are_refused(func: Any, message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        App().event()(func)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device_type": "#"}, "'#' is not allowed"),
        ({"event": "a/#"}, "'#' is not allowed"),
        ({"device_id": "bad id!"}, "device ID 'bad id!'"),
        ({"event": "a/b"}, "event ID 'a/b'"),
        ({"format": ""}, "format ''"),
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": float("inf")}, "timeout=inf"),
        ({"retries": -1}, "retries=-1"),
        ({"retries": True}, "retries=True"),
        ({"retry_backoff": -0.1}, "retry_backoff=-0.1"),
        ({"ordered": "yes"}, "ordered='yes'"),
        ({"dead_letter": "s3:bucket"}, "log, none, file:PATH, mqtt:TYPE/ID/EVENT"),
        ({"dead_letter": "mqtt:a/b"}, "dead_letter='mqtt:a/b'"),
        ({"name": ""}, "name=''"),
    ],
)
def test_bad_components_and_options_fail_at_the_decorator(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(RegistrationError, match=message):
        App().event(**kwargs)(on_event)


def test_duplicate_routes_and_clashing_names_are_refused() -> None:
    app = App()
    app.event(event="reading")(on_event)
    with pytest.raises(RegistrationError, match="already registered"):
        app.event(event="reading")(on_event)

    async def other(e: Event) -> None: ...

    other.__name__ = "on_event"
    with pytest.raises(RegistrationError, match="taken by another handler"):
        app.event(event="alarm")(other)
    app.event(event="alarm", name="on_alarm")(other)
    # one function on two filters is one route name: its metrics add up
    app.event(event="status")(on_event)
    assert [r.name for r in app.routes] == ["on_event", "on_alarm", "on_event"]


def test_no_registration_after_compiling() -> None:
    app = App()
    app.event()(on_event)
    app.compile()
    with pytest.raises(RegistrationError, match="before the worker starts"):
        app.event(event="x")(on_event)


def test_filters_are_distinct_and_skip_covered_ones(caplog: pytest.LogCaptureFixture) -> None:
    app = App()

    async def a(e: Event) -> None: ...
    async def b(e: Event) -> None: ...
    async def c(e: Event) -> None: ...
    async def d(e: Event) -> None: ...

    app.event(device_type="sensor", event="reading")(a)
    app.event(device_type="sensor", event="reading")(b)  # same filter: one subscription
    app.event(device_type="sensor")(c)  # covers the first
    app.event(event="alarm")(d)  # overlaps the third without covering it
    with caplog.at_level(logging.WARNING):
        app.compile()
    assert app.filters() == [
        "iot-2/type/sensor/id/+/evt/+/fmt/+",
        "iot-2/type/+/id/+/evt/alarm/fmt/+",
    ]
    assert "overlap" in caplog.text


def test_router_gives_a_topic_every_matching_route_in_registration_order() -> None:
    app = App()

    async def first(e: Event) -> None: ...
    async def second(e: Event) -> None: ...

    app.event()(first)
    app.event(event="reading")(second)
    entry = app.router.lookup("iot-2/type/sensor/id/d1/evt/reading/fmt/json")
    assert [r.name for r in entry.routes] == ["first", "second"]
    assert entry.kind is Kind.EVENT
    assert entry.parts == ("sensor", "d1", "reading", "json")
    assert app.router.lookup("iot-2/type/sensor/id/d1/evt/reading/fmt/json") is entry
    assert [r.name for r in app.router.lookup("iot-2/type/s/id/d/evt/x/fmt/j").routes] == ["first"]
    other = app.router.lookup("iot-2/type/s/id/d/mon")
    assert (other.kind, other.routes) == (Kind.DEVICE_STATUS, ())
    junk = app.router.lookup("iot-2/type/s/id/a/b/mon")
    assert (junk.kind, junk.routes) == (None, ())


def test_router_cache_is_bounded_and_lookup_does_not_scan_routes() -> None:
    app = App()
    for n in range(500):

        async def handler(e: Event) -> None: ...

        app.event(device_id=f"d{n}", name=f"h{n}")(handler)
    router = RouteTable(app.routes, cache_size=3)
    for n in range(10):
        entry = router.lookup(f"iot-2/type/t/id/d{n}/evt/e/fmt/json")
        assert [r.name for r in entry.routes] == [f"h{n}"]
    assert len(router._cache) == 3


def test_hooks_must_be_coroutines_without_arguments() -> None:
    app = App()

    def sync() -> None: ...

    async def needs(x: int) -> None: ...

    with pytest.raises(RegistrationError, match="coroutine function"):
        app.on_startup(sync)
    with pytest.raises(RegistrationError, match="no arguments"):
        app.on_shutdown(needs)


async def test_startup_in_order_shutdown_in_reverse_and_failures_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    calls: list[str] = []

    @app.on_startup
    async def open_db() -> None:
        calls.append("open db")

    @app.on_startup
    async def warm_cache() -> None:
        calls.append("warm cache")

    @app.on_shutdown
    async def close_db() -> None:
        calls.append("close db")

    @app.on_shutdown
    async def flush() -> None:
        raise OSError("disk gone")

    await app.startup()
    await app.shutdown()
    assert calls == ["open db", "warm cache", "close db"]
    assert "shutdown hook flush failed" in caplog.text


async def test_publish_encodes_by_format_and_sends_through_the_bound_publisher() -> None:
    app = App()
    sent = Published()
    app.bind_publisher(sent)
    await app.publish_event("sensor", "d1", "reading", {"temp": 21.5})
    await app.publish_command("sensor", "d1", "cool", "on", format="text", qos=0)
    await app.publish_command("sensor", "d1", "raw", b"\x00\x01", format="bin")
    assert sent.sent == [
        ("iot-2/type/sensor/id/d1/evt/reading/fmt/json", b'{"temp":21.5}', 0, False),
        ("iot-2/type/sensor/id/d1/cmd/cool/fmt/text", b"on", 0, False),
        ("iot-2/type/sensor/id/d1/cmd/raw/fmt/bin", b"\x00\x01", 1, False),  # commands: QoS 1
    ]


async def test_publish_refuses_what_the_platform_would_refuse() -> None:
    app = App()
    sent = Published()
    app.bind_publisher(sent)
    with pytest.raises(TopicError):
        await app.publish_event("sensor", "+", "reading", {})
    with pytest.raises(TopicError):
        await app.publish_command("sensor", "d1", "a/b", {})
    with pytest.raises(CodecError):
        await app.publish_event("sensor", "d1", "reading", object())
    with pytest.raises(ValueError, match="qos"):
        await app.publish_event("sensor", "d1", "reading", {}, qos=3)
    await app.publish_event("sensor", "d1", "blob", b"x" * 131_072, format="bin")
    with pytest.raises(PayloadTooLarge, match="131072"):
        await app.publish_event("sensor", "d1", "blob", b"x" * 131_073, format="bin")
    # the platform counts topic bytes past 200 as payload
    long_type = "t" * 36
    long_event = "e" * 160
    with pytest.raises(PayloadTooLarge):
        await app.publish_event(long_type, "d1", long_event, b"x" * 131_060, format="bin")
    assert len(sent.sent) == 1


async def test_publish_without_a_publisher_says_how_to_bind_one() -> None:
    app = App()
    with pytest.raises(ConnectError, match="bind_publisher"):
        await app.publish_event("sensor", "d1", "reading", {"a": 1})


def test_a_positional_topic_component_is_refused_saying_where_and_what_to_write() -> None:
    app = App()
    line = sys._getframe().f_lineno + 2
    with pytest.raises(RegistrationError) as raised:
        app.event("reading")  # type: ignore[call-arg]
    assert str(raised.value) == (
        f"@app.event(...) at {__file__}:{line}: 'reading' was given by position; every "
        "argument is a keyword, so name the topic component (device_type=, device_id=, "
        "event=, format=) or the option it is"
    )


def test_a_misspelt_option_gets_a_did_you_mean_and_the_accepted_names() -> None:
    app = App()
    with pytest.raises(
        RegistrationError,
        match=r"unknown option 'retry' \(did you mean 'retry_on' or 'retries'\?\)",
    ):
        app.device_status(retry=2)  # type: ignore[call-arg]
    with pytest.raises(
        RegistrationError,
        match=r"at .*test_app.py:\d+: unknown option 'colour'\. Accepted: app_id, ordered",
    ):
        app.app_status(colour="red")  # type: ignore[call-arg]
