"""Tracing with the real OpenTelemetry SDK and its in-memory exporter (``--tracing on``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.pipeline import Acks, event, running
from worker import App, Batch, Event, tracing
from worker.errors import ConfigError
from worker.messages import MessageProperties

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

EXPORTER = InMemorySpanExporter()
PRODUCER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"


def _provider() -> None:
    """One SDK provider for the process (OpenTelemetry sets the global one once)."""
    if not isinstance(trace.get_tracer_provider(), sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)


@pytest.fixture(autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    _provider()
    EXPORTER.clear()
    yield EXPORTER
    tracing.disable()


class Published:
    """A publisher keeping every call's arguments (properties when given)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def __call__(self, *args: Any) -> None:
        self.sent.append(args)


def traced(n: int, traceparent: str | None = TRACEPARENT) -> Any:
    pairs = (("traceparent", traceparent),) if traceparent else ()
    props = MessageProperties(user_properties=(("origin", "sensor"), *pairs))
    return dataclasses.replace(event(n=n), properties=props)


async def test_a_handled_message_continues_the_producers_trace(
    spans: InMemorySpanExporter,
) -> None:
    app = App()
    sent = Published()
    app.bind_publisher(sent)

    @app.event()
    async def relay(e: Event) -> None:
        await app.publish_event("sensor", "d1", "relayed", {"n": e.data["n"]})

    acks = Acks()
    async with running(app, tracing="on") as pipeline:
        await pipeline.put([traced(1)], acks)
        await acks.wait_for(1)
    (span,) = spans.get_finished_spans()
    assert span.name == "process iot-2/type/sensor/id/d1/evt/reading/fmt/json"
    assert span.kind is trace.SpanKind.CONSUMER
    assert span.parent is not None
    assert format(span.context.trace_id, "032x") == PRODUCER_TRACE
    assert format(span.parent.span_id, "016x") == PRODUCER_SPAN
    attributes = dict(span.attributes or {})
    assert attributes["messaging.system"] == "mqtt"
    assert attributes["messaging.destination.name"] == event().topic
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["worker.route"] == "relay"
    assert attributes["worker.outcome"] == "ok"
    # What the handler published carries the consumer span's context, after its own pairs.
    ((topic, _, _, _, properties),) = sent.sent
    assert topic.endswith("/evt/relayed/fmt/json")
    traceparent = properties.user_property("traceparent")
    assert traceparent == (f"00-{PRODUCER_TRACE}-{format(span.context.span_id, '016x')}-01")


async def test_without_a_traceparent_the_span_starts_a_trace(
    spans: InMemorySpanExporter,
) -> None:
    app = App()

    @app.event()
    async def fails(e: Event) -> None:
        raise RuntimeError("no")

    acks = Acks()
    async with running(app, tracing="on") as pipeline:
        await pipeline.put([traced(1, traceparent=None)], acks)
        await acks.wait_for(1)
    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert span.status.status_code is trace.StatusCode.ERROR
    assert dict(span.attributes or {})["worker.outcome"] == "dead_lettered"


async def test_a_batch_run_is_one_span_linked_to_each_producer(
    spans: InMemorySpanExporter,
) -> None:
    app = App()

    @app.event(batch=Batch(max_size=3, max_wait=0.01))
    async def store(events: list[Event]) -> None:
        pass

    acks = Acks()
    async with running(app, tracing="on") as pipeline:
        await pipeline.put([traced(0), traced(1), traced(2, traceparent=None)], acks)
        await acks.wait_for(3)
    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert [format(link.context.trace_id, "032x") for link in span.links] == [PRODUCER_TRACE] * 2
    assert dict(span.attributes or {})["messaging.batch.message_count"] == 3


async def test_off_by_default_nothing_is_traced_nor_added(
    spans: InMemorySpanExporter,
) -> None:
    app = App()
    sent = Published()
    app.bind_publisher(sent)

    @app.event()
    async def relay(e: Event) -> None:
        await app.publish_event("sensor", "d1", "relayed", {})

    acks = Acks()
    async with running(app) as pipeline:
        await pipeline.put([traced(1)], acks)
        await acks.wait_for(1)
    assert not tracing.enabled()
    assert spans.get_finished_spans() == ()
    assert len(sent.sent[0]) == 4  # no properties: the 3.1.1-shaped call
    props = MessageProperties(content_type="text/plain")
    assert tracing.inject(props) is props


def test_tracing_on_without_opentelemetry_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"install the otel extra"):
        tracing.enable()
    assert not tracing.enabled()
