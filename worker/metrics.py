"""The worker's Prometheus metrics (docs/observability.md), on an injected CollectorRegistry.

Labels are bounded: ``kind`` and ``outcome`` and ``reason`` are closed sets, ``route`` is a
handler's name. Never a device ID or a raw topic. Every labelled child the hot path touches is
bound once (:meth:`Metrics.route` per route at compile time, the kinds and reasons here), so a
per-message update is an attribute access and an increment, and counters that can be summed
are incremented once per batch::

    metrics = Metrics(registry, app=..., client_id=..., instance=..., profile=..., version=...)
    metrics.watch(intake_depth=lambda: pipeline.intake_depth, in_flight=...)  # read at scrape
    metrics.received[Kind.EVENT].inc(n)            # once per batch and kind
    r = metrics.route("on_reading")                # once per route
    r.outcome[Outcome.OK].inc(); r.seconds.observe(dt)
    metrics.set_connected(True); metrics.set_subscribed(True); metrics.reconnected()

Outcomes (``worker_messages_handled_total``), one per message and matching route:

``ok``             the handler returned
``error``          the handler raised on its last attempt and no dead-letter sink took it
``timeout``        the handler outlived the route's ``timeout`` on its last attempt, likewise
``decode_error``   the payload could not be decoded for its format, likewise
``dead_lettered``  it failed (error, timeout or decode_error) and a dead-letter sink took it;
                   the reason is in the dead letter and in the log

Each drop is counted once, in ``worker_messages_dropped_total{reason}`` and never as an outcome
(``Outcome.DROPPED`` is what a pipeline observer sees, not a series): intake overflow
(``intake_full``), refused while draining (``draining``), abandoned at the drain timeout
(``abandoned``), a failure whose dead letter could not be kept (``dead_letter_failed``), and a
message no route matches (``unrouted``, once per message). A topic outside the grammar is
received as kind ``unknown`` and then dropped as ``unrouted``. So every (message, route) pair
ends exactly once, and for an application with one route per message::

    sum(received) == sum(handled) + sum(dropped)
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class Kind(enum.StrEnum):
    """What a received message is (the ``kind`` label)."""

    EVENT = "event"
    COMMAND = "command"
    DEVICE_STATUS = "device_status"
    APP_STATUS = "app_status"
    #: a topic outside the grammar (counted as received, then dropped as ``unrouted``)
    UNKNOWN = "unknown"


class Outcome(enum.StrEnum):
    """What happened to one message for one route (the ``outcome`` label)."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    DECODE_ERROR = "decode_error"
    DROPPED = "dropped"
    DEAD_LETTERED = "dead_lettered"
    #: its MQTT 5 message expiry passed while it waited in the intake: not handled, acknowledged
    EXPIRED = "expired"


class DropReason(enum.StrEnum):
    """Why a message was not handled (the ``reason`` label of the dropped counter)."""

    #: QoS 0 intake full, overflow policy drop-oldest (or pace, past its limit): the oldest went
    INTAKE_FULL = "intake_full"
    #: no route matches the topic, or it is not an application topic at all (kind ``unknown``)
    UNROUTED = "unrouted"
    #: arrived after draining began
    DRAINING = "draining"
    #: still queued or running when the drain timeout ran out
    ABANDONED = "abandoned"
    #: failed, and the dead-letter sink could not take it (disk full, not connected, ...)
    DEAD_LETTER_FAILED = "dead_letter_failed"


#: handler durations from 10 microseconds (a handler that only looks at the message) to a minute
HANDLER_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


#: messages per batch, up to the largest batch a route may ask for
BATCH_SIZE_BUCKETS: Final = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000,
)  # fmt: skip

#: the ``le`` labels of the buckets as prometheus_client's Histogram writes them (``repr`` for
#: these bounds; a test compares), with +Inf last
_LE: Final = (*(repr(b) for b in HANDLER_BUCKETS), "+Inf")


class Count:
    """One series of ``worker_messages_handled_total`` kept as a plain int.

    The two per-message families (this one and ``worker_handler_seconds``) are not
    prometheus_client's metrics: those take a lock per increment and check their state, about
    1 µs an update, a fifth of a no-op message's whole path. The loop is their only writer
    and ``/metrics`` is served on the loop, so plain numbers suffice; collectors write them
    out at scrape time as prometheus_client would, line for line (tests compare), except for
    its ``_created`` series, which nothing here reads.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        """Add ``amount`` (one message by default)."""
        self.value += amount


class _HandledCollector(Collector):
    """``worker_messages_handled_total{route,outcome}`` from every route's :class:`Count`."""

    NAME: Final = "worker_messages_handled"
    DOC: Final = "Messages handled, by route and outcome"

    def __init__(self) -> None:
        self.routes: dict[str, dict[Outcome, Count]] = {}

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.NAME, self.DOC, labels=["route", "outcome"])]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.NAME, self.DOC, labels=["route", "outcome"])
        for route, outcomes in list(self.routes.items()):
            for outcome, count in outcomes.items():
                family.add_metric([route, outcome.value], float(count.value))
        return [family]


class Durations:
    """One route's handler run times: ``worker_handler_seconds`` as plain bucket counts (see
    :class:`Count` for why)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        #: per bucket (not cumulative), the last one for +Inf
        self.counts = [0] * len(_LE)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one run of ``seconds`` (in the first bucket whose bound is >= it)."""
        self.counts[bisect_left(HANDLER_BUCKETS, seconds)] += 1
        self.total += seconds


class _DurationsCollector(Collector):
    """``worker_handler_seconds{route}``: every route's :class:`Durations` as a histogram."""

    NAME: Final = "worker_handler_seconds"
    DOC: Final = "Time spent in each handler run, by route"

    def __init__(self) -> None:
        self.routes: dict[str, Durations] = {}

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.NAME, self.DOC, labels=["route"])]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.NAME, self.DOC, labels=["route"])
        for route, durations in list(self.routes.items()):
            cumulative, buckets = 0, []
            for le, count in zip(_LE, durations.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric([route], buckets, durations.total)
        return [family]


class RouteMetrics:
    """The children of one route, bound once; the pipeline keeps one per route."""

    __slots__ = ("dead_letters", "name", "outcome", "seconds")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        #: one count per outcome; all exist (at 0) from the start so rates are defined
        self.outcome: dict[Outcome, Count] = metrics.handled.routes.setdefault(
            name, {o: Count() for o in Outcome if o is not Outcome.DROPPED}
        )
        self.seconds: Durations = metrics.handler_seconds.routes.setdefault(name, Durations())
        self.dead_letters: Counter = metrics.dead_letters_total.labels(route=name)


class Metrics:
    """Every worker metric, registered on ``registry``; see the module docstring."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        app: str,
        client_id: str,
        instance: str,
        profile: str,
        version: str,
    ) -> None:
        self.registry = registry
        self._message_families(registry)
        self._state_families(registry)
        info = Gauge(
            "worker_info",
            "Who this worker is",
            ["app", "client_id", "instance", "profile", "version"],
            registry=registry,
        )
        info.labels(app, client_id, instance, profile, version).set(1)
        self._routes: dict[str, RouteMetrics] = {}

    def _message_families(self, r: CollectorRegistry) -> None:
        received = Counter(
            "worker_messages_received", "Messages received, by kind", ["kind"], registry=r
        )
        self.handled = _HandledCollector()
        r.register(self.handled)
        self.handler_seconds = _DurationsCollector()
        r.register(self.handler_seconds)
        dropped = Counter(
            "worker_messages_dropped", "Messages not handled, by reason", ["reason"], registry=r
        )
        self.dead_letters_total = Counter(
            "worker_dead_letters", "Messages a dead-letter sink took, by route", ["route"],
            registry=r,
        )  # fmt: skip
        self.batch_sizes = Histogram(
            "worker_batch_size", "Messages per handler run of a batch route, by route",
            ["route"], buckets=BATCH_SIZE_BUCKETS, registry=r,
        )  # fmt: skip
        #: bound per kind; increment once per batch with the batch's count
        self.received: dict[Kind, Counter] = {k: received.labels(kind=k.value) for k in Kind}
        #: bound per reason
        self.dropped: dict[DropReason, Counter] = {
            d: dropped.labels(reason=d.value) for d in DropReason
        }

    def _state_families(self, r: CollectorRegistry) -> None:
        self.intake_depth = Gauge("worker_intake_depth", "Messages queued for a lane", registry=r)
        self.in_flight = Gauge("worker_in_flight", "Handler runs in progress", registry=r)
        self.handling_lag = Gauge(
            "worker_handling_lag_seconds",
            "Age of the oldest message waiting for a handler lane (0 when none waits): the "
            "worker is falling behind when it grows",
            registry=r,
        )
        self.connected = Gauge("worker_connected", "1 while connected", registry=r)
        self.subscribed = Gauge("worker_subscribed", "1 while subscribed", registry=r)
        self.reconnects = Counter("worker_reconnects", "Reconnections after a loss", registry=r)
        self.protocol_errors = Counter(
            "worker_protocol_errors",
            "Connections closed because the server broke the protocol (or sent DISCONNECT), "
            "by reason",
            ["reason"],
            registry=r,
        )
        self.refusals = Counter(
            "worker_refusals",
            "Requests an MQTT 5 server refused, by answering packet and reason code",
            ["packet", "reason_code"],
            registry=r,
        )

    def route(self, name: str) -> RouteMetrics:
        """The bound children of route ``name`` (created once, then shared)."""
        found = self._routes.get(name)
        if found is None:
            found = self._routes[name] = RouteMetrics(self, name)
        return found

    def batch_size(self, name: str) -> Histogram:
        """The batch size histogram of batch route ``name`` (observed once per handler run)."""
        child: Histogram = self.batch_sizes.labels(route=name)
        return child

    def watch(
        self,
        *,
        intake_depth: Callable[[], float],
        in_flight: Callable[[], float],
        handling_lag: Callable[[], float] | None = None,
    ) -> None:
        """Read these gauges from these functions at scrape time: nothing on the hot path."""
        self.intake_depth.set_function(intake_depth)
        self.in_flight.set_function(in_flight)
        if handling_lag is not None:
            self.handling_lag.set_function(handling_lag)

    def set_connected(self, connected: bool) -> None:
        """The connection supervisor reports connect (True) and loss (False)."""
        self.connected.set(1 if connected else 0)

    def set_subscribed(self, subscribed: bool) -> None:
        """1 from SUBACK until UNSUBSCRIBE, pause or connection loss."""
        self.subscribed.set(1 if subscribed else 0)

    def reconnected(self) -> None:
        """Count one reconnection (not the first connect)."""
        self.reconnects.inc()

    def protocol_error(self, reason: str) -> None:
        """Count a connection closed for a protocol error (``ProtocolViolation.reason``)."""
        self.protocol_errors.labels(reason=reason).inc()

    def refused(self, packet: str, reason_code: int) -> None:
        """Count a refusal: SUBACK, UNSUBACK or PUBACK with a failure code (``0x87``)."""
        self.refusals.labels(packet=packet, reason_code=f"{reason_code:#04x}").inc()
