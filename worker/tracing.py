"""Optional OpenTelemetry tracing: a consumer span per handled message, context in and out.

Off by default, and free when off: nothing here imports OpenTelemetry until :func:`enable` is
called (``--tracing on``), :func:`inject` then returns its argument unchanged and the pipeline
checks one flag per message. Install the ``otel`` extra to use it (the OpenTelemetry API and
SDK: ``pip install 'opentelemetry-api>=1.20' 'opentelemetry-sdk>=1.20'``); the application
configures the SDK (its ``TracerProvider`` and exporters) as for any other library.

When on:

- each handled message gets a ``CONSUMER`` span ``process {topic}`` following the messaging
  semantic conventions (``messaging.system`` ``mqtt``, ``messaging.destination.name`` the topic,
  ``messaging.operation.type`` ``process``, ``messaging.message.body.size``) plus the route
  (``worker.route``) and outcome (``worker.outcome``); it continues the producer's trace when
  the message carries a W3C ``traceparent`` (and ``tracestate``) user property (MQTT 5);
- a batch route's run is one span with a link to each message's producer context;
- ``App.publish_event``/``publish_command`` add the current context as ``traceparent`` and
  ``tracestate`` user properties, so the device or service that reads them can continue it.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from typing import Any

from worker.errors import ConfigError
from worker.messages import NO_PROPERTIES, MessageProperties

#: the W3C trace context headers carried as MQTT 5 user properties
HEADERS = ("traceparent", "tracestate")

_state: dict[str, Any] = {}


def available() -> bool:
    """Whether the OpenTelemetry API is installed (the ``otel`` extra)."""
    return importlib.util.find_spec("opentelemetry") is not None


def enabled() -> bool:
    """Whether :func:`enable` was called (and :func:`disable` not since)."""
    return bool(_state)


def enable() -> None:
    """Start tracing, process-wide; ConfigError when OpenTelemetry is not installed."""
    if not available():
        raise ConfigError(
            "--tracing on needs OpenTelemetry, which is not installed: "
            "install the otel extra, or pip install 'opentelemetry-api>=1.20' "
            "'opentelemetry-sdk>=1.20' (or set WORKER_TRACING=off)"
        )
    from opentelemetry import propagate, trace

    _state["tracer"] = trace.get_tracer("worker")
    _state["propagate"] = propagate
    _state["trace"] = trace


def disable() -> None:
    """Stop tracing (tests switch it off again)."""
    _state.clear()


def inject(properties: MessageProperties | None) -> MessageProperties | None:
    """``properties`` with the current trace context added (unchanged when tracing is off)."""
    if not _state:
        return properties
    carrier: dict[str, str] = {}
    _state["propagate"].inject(carrier)
    if not carrier:
        return properties
    base = properties or NO_PROPERTIES
    kept = tuple(pair for pair in base.user_properties if pair[0] not in HEADERS)
    added = tuple((key, carrier[key]) for key in HEADERS if key in carrier)
    return MessageProperties(
        user_properties=kept + added,
        content_type=base.content_type,
        payload_format_indicator=base.payload_format_indicator,
        correlation_data=base.correlation_data,
        response_topic=base.response_topic,
        message_expiry_interval=base.message_expiry_interval,
    )


def _context_of(properties: MessageProperties | None) -> Any:
    """The producer's context from a message's ``traceparent`` user property, or None."""
    if properties is None:
        return None
    carrier = {k: v for k, v in properties.user_properties if k in HEADERS}
    if "traceparent" not in carrier:
        return None
    return _state["propagate"].extract(carrier)


def _attributes(topic: str, size: int, route: str) -> dict[str, Any]:
    return {
        "messaging.system": "mqtt",
        "messaging.destination.name": topic,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.body.size": size,
        "worker.route": route,
    }


@contextlib.contextmanager
def consumer_span(
    route: str, topic: str, payload_size: int, properties: MessageProperties | None
) -> Iterator[Any]:
    """A current CONSUMER span around one message's handling; yields it (see :func:`finish`)."""
    trace = _state["trace"]
    with _state["tracer"].start_as_current_span(
        f"process {topic}",
        context=_context_of(properties),
        kind=trace.SpanKind.CONSUMER,
        attributes=_attributes(topic, payload_size, route),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


@contextlib.contextmanager
def batch_span(
    route: str, items: Sequence[tuple[str, int, MessageProperties | None]]
) -> Iterator[Any]:
    """One CONSUMER span around a batch route's run, linked to every producer's context.

    ``items`` are (topic, payload size, properties) of the messages in the batch.
    """
    trace = _state["trace"]
    links = []
    for _, _, properties in items:
        context = _context_of(properties)
        if context is not None:
            span_context = trace.get_current_span(context).get_span_context()
            if span_context.is_valid:
                links.append(trace.Link(span_context))
    topics = {topic for topic, _, _ in items}
    topic = topics.pop() if len(topics) == 1 else "(several topics)"
    attributes = _attributes(topic, sum(size for _, size, _ in items), route)
    attributes["messaging.batch.message_count"] = len(items)
    with _state["tracer"].start_as_current_span(
        f"process {topic}",
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def finish(span: Any, outcome: str) -> None:
    """Record the outcome on a span: ``ok`` is fine, any other an error status."""
    span.set_attribute("worker.outcome", outcome)
    if outcome != "ok":
        status = _state["trace"].Status(_state["trace"].StatusCode.ERROR, outcome)
        span.set_status(status)
