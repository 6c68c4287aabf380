"""The worker's Prometheus metrics (DESIGN.md section 8), on an injected CollectorRegistry.

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
``dropped``        never handled: intake overflow, refused while draining, or abandoned
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Kind(enum.StrEnum):
    """What a received message is (the ``kind`` label)."""

    EVENT = "event"
    COMMAND = "command"
    DEVICE_STATUS = "device_status"
    APP_STATUS = "app_status"


class Outcome(enum.StrEnum):
    """What happened to one message for one route (the ``outcome`` label)."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    DECODE_ERROR = "decode_error"
    DROPPED = "dropped"
    DEAD_LETTERED = "dead_lettered"


class DropReason(enum.StrEnum):
    """Why a message was not handled (the ``reason`` label of the dropped counter)."""

    #: QoS 0 intake full, overflow policy drop-oldest: the oldest queued message went
    INTAKE_FULL = "intake_full"
    #: no route matches the topic, or it is not an application topic at all
    UNROUTED = "unrouted"
    #: arrived after draining began
    DRAINING = "draining"
    #: still queued or running when the drain timeout ran out
    ABANDONED = "abandoned"
    #: failed, and the dead-letter sink could not take it (disk full, not connected, ...)
    DEAD_LETTER_FAILED = "dead_letter_failed"


#: handler durations from 100 microseconds (no-op handlers) to a minute
HANDLER_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class RouteMetrics:
    """The children of one route, bound once; the pipeline keeps one per route."""

    __slots__ = ("dead_letters", "name", "outcome", "seconds")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.name = name
        #: one bound counter per outcome; all exist (at 0) from the start so rates are defined
        self.outcome: dict[Outcome, Counter] = {
            o: metrics.handled.labels(route=name, outcome=o.value) for o in Outcome
        }
        self.seconds: Histogram = metrics.handler_seconds.labels(route=name)
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
        self.handled = Counter(
            "worker_messages_handled",
            "Messages handled, by route and outcome",
            ["route", "outcome"],
            registry=r,
        )
        self.handler_seconds = Histogram(
            "worker_handler_seconds",
            "Time spent in each handler run, by route",
            ["route"],
            buckets=HANDLER_BUCKETS,
            registry=r,
        )
        dropped = Counter(
            "worker_messages_dropped", "Messages not handled, by reason", ["reason"], registry=r
        )
        self.dead_letters_total = Counter(
            "worker_dead_letters", "Messages a dead-letter sink took, by route", ["route"],
            registry=r,
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
        self.connected = Gauge("worker_connected", "1 while connected", registry=r)
        self.subscribed = Gauge("worker_subscribed", "1 while subscribed", registry=r)
        self.reconnects = Counter("worker_reconnects", "Reconnections after a loss", registry=r)

    def route(self, name: str) -> RouteMetrics:
        """The bound children of route ``name`` (created once, then shared)."""
        found = self._routes.get(name)
        if found is None:
            found = self._routes[name] = RouteMetrics(self, name)
        return found

    def watch(self, *, intake_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        """Read the two gauges from these functions at scrape time: nothing on the hot path."""
        self.intake_depth.set_function(intake_depth)
        self.in_flight.set_function(in_flight)

    def set_connected(self, connected: bool) -> None:
        """The connection supervisor reports connect (True) and loss (False)."""
        self.connected.set(1 if connected else 0)

    def set_subscribed(self, subscribed: bool) -> None:
        """1 from SUBACK until UNSUBSCRIBE, pause or connection loss."""
        self.subscribed.set(1 if subscribed else 0)

    def reconnected(self) -> None:
        """Count one reconnection (not the first connect)."""
        self.reconnects.inc()
