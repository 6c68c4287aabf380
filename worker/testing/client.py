"""``TestClient``: an App's handlers under test, in memory, through the production pipeline.

::

    async with TestClient(app) as client:
        result = await client.send_event("sensor", "s1", "reading", {"temp": 95})
        assert result.outcome == "ok"
        assert [c.command for c in client.commands] == ["alert"]

Every message goes through what a worker does with it: the app's compiled router, the
``worker.pipeline.Pipeline`` with its lanes, timeouts, retries, dead letters and metrics. Only
the two network boundaries are replaced: received messages are handed to ``Pipeline.put``
with an in-memory acker, and what handlers publish is captured instead of sent.

A send waits until every matching route has finished with the message and returns a
:class:`Delivery`. When a handler raised (its last run, after any retries), the send raises
that exception itself, so the test fails with the handler's traceback; ``raise_errors=False``
(per client or per send) returns the Delivery instead, to assert on ``error`` outcomes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from prometheus_client import CollectorRegistry

from worker import messages, topics
from worker.app import App
from worker.config import Settings
from worker.deadletter import DeadLetter, DeadLetters, DeadLetterSink
from worker.handling import Handled
from worker.messages import Command, Event, MessageProperties
from worker.metrics import Metrics, Outcome
from worker.pipeline import Pipeline
from worker.platform import status
from worker.routes import parse_topic
from worker.runner import worker_metrics
from worker.transports.base import Inbound

#: seconds a send waits for its outcome, and the exit for the drain, unless told otherwise
DEFAULT_DEADLINE: Final = 30.0
#: QoS 1 packet IDs are 1..65535, as on the wire
_MAX_PACKET_ID: Final = 65_535


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message sent into the app, and what each matching route made of it."""

    topic: str
    payload: bytes
    qos: int
    #: one record per matching route, in registration order; empty when no route matched
    handled: tuple[Handled, ...]

    @property
    def routed(self) -> bool:
        """Whether any route matched (unmatched messages are counted as dropped)."""
        return bool(self.handled)

    @property
    def outcomes(self) -> dict[str, Outcome]:
        """Route name -> final outcome."""
        return {h.route: h.outcome for h in self.handled}

    @property
    def outcome(self) -> Outcome | None:
        """The outcome, when every matching route had the same one; None when unrouted.

        ValueError when routes disagree: read :attr:`outcomes` then.
        """
        found = set(self.outcomes.values())
        if len(found) > 1:
            raise ValueError(f"{self.topic}: routes ended differently: {self.outcomes}")
        return found.pop() if found else None

    @property
    def ok(self) -> bool:
        """Whether at least one route matched and every one ended ``ok``."""
        return self.routed and all(h.outcome is Outcome.OK for h in self.handled)

    @property
    def error(self) -> BaseException | None:
        """What the first failing route's last run raised, if any."""
        return next((h.error for h in self.handled if h.error is not None), None)


def raise_handler_error(handled: Iterable[Handled]) -> None:
    """Raise the exception of the first run whose handler raised (reason ``error``).

    The exception is raised as itself, so its traceback still shows the handler's frames; a
    note says which route and topic it came from. Timeouts and decode errors are outcomes the
    framework produces on purpose and are not raised.
    """
    __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
    for h in handled:
        if h.reason is Outcome.ERROR and h.error is not None:
            note = f"raised by handler {h.route!r} for {h.inbound.topic} (run {h.runs})"
            if note not in getattr(h.error, "__notes__", ()):
                h.error.add_note(note)
            raise h.error


class _Pending:
    """One sent message waiting for its routes to report."""

    __slots__ = ("done", "expected", "handled", "inbound")

    def __init__(self, inbound: Inbound, expected: int) -> None:
        self.inbound = inbound
        self.expected = expected
        self.handled: list[Handled] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if expected == 0:
            self.done.set_result(None)

    def add(self, handled: Handled) -> None:
        self.handled.append(handled)
        if len(self.handled) >= self.expected and not self.done.done():
            self.done.set_result(None)


class _RecordingDeadLetters(DeadLetters):
    """The production dead-letter routing, also keeping every letter a sink accepted."""

    def __init__(self, default: str, client: TestClient) -> None:
        super().__init__(default, publish=client.app.publish_event)
        self._client = client

    async def send(self, sink: DeadLetterSink, letter: DeadLetter) -> bool:
        kept = await super().send(sink, letter)
        if kept:
            self._client.dead_letters.append(letter)
        return kept


class TestClient:
    """Feeds messages to an App in memory and captures what its handlers did.

    ``settings`` are the worker's (concurrency, dead letters, ...); default ``Settings()``,
    whose app-wide dead-letter sink is ``log``. ``lifespan`` runs the app's startup hooks on
    entry and its shutdown hooks on exit. ``deadline`` bounds every wait.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(
        self,
        app: App,
        settings: Settings | None = None,
        *,
        raise_errors: bool = True,
        lifespan: bool = True,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self.app = app
        self.settings = settings or Settings()
        self.raise_errors = raise_errors
        self.lifespan = lifespan
        self.deadline = deadline
        self.registry = CollectorRegistry()
        #: the worker's metrics, as ``/metrics`` would show them
        self.metrics: Metrics = worker_metrics(self.registry, self.settings)
        #: what handlers published (``publish_event``/``publish_command``), in order
        self.published: list[Event | Command] = []
        #: every dead letter a sink accepted, in order
        self.dead_letters: list[DeadLetter] = []
        #: every (message, route) that finished, in the order they finished
        self.outcomes: list[Handled] = []
        #: QoS 1 packet IDs acknowledged by the pipeline, in order
        self.acked: list[int] = []
        self._pending: dict[int, _Pending] = {}
        self._packet_ids = itertools.cycle(range(1, _MAX_PACKET_ID + 1))
        self._pipeline: Pipeline | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- captures ------------------------------------------------------------------------

    @property
    def commands(self) -> list[Command]:
        """The commands handlers sent."""
        return [m for m in self.published if isinstance(m, Command)]

    @property
    def events(self) -> list[Event]:
        """The events handlers published (including ``mqtt:`` dead letters)."""
        return [m for m in self.published if isinstance(m, Event)]

    def clear(self) -> None:
        """Forget what was captured so far (published, dead letters, outcomes, acks)."""
        self.published.clear()
        self.dead_letters.clear()
        self.outcomes.clear()
        self.acked.clear()

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> TestClient:
        if self._pipeline is not None:
            raise RuntimeError("a TestClient runs once; make a new one")
        dead_letters = _RecordingDeadLetters(self.settings.dead_letter, self)
        self._pipeline = Pipeline(
            self.app, self.settings, self.metrics, dead_letters, observer=self._observe
        )
        self.app.bind_publisher(self._capture)
        self._task = asyncio.create_task(self._pipeline.run(), name="worker-testing-pipeline")
        try:
            if self.lifespan:
                async with asyncio.timeout(self.deadline):
                    await self.app.startup()
        except BaseException:
            await self._close(run_hooks=False)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close(run_hooks=self.lifespan)

    async def _close(self, *, run_hooks: bool) -> None:
        """Drain as a worker does at shutdown, then the shutdown hooks, then unbind."""
        if self._closed or self._pipeline is None or self._task is None:
            return
        self._closed = True
        try:
            await self._pipeline.drain(self.deadline)
            async with asyncio.timeout(self.deadline):
                await self._task
            if run_hooks:
                async with asyncio.timeout(self.deadline):
                    await self.app.shutdown()
        finally:
            self._task.cancel()
            self.app.bind_publisher(None)

    # --- sending -------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        payload: bytes | str = b"",
        *,
        qos: int = 1,
        retain: bool = False,
        raise_errors: bool | None = None,
    ) -> Delivery:
        """Deliver one message on ``topic`` as the platform would; wait for its outcome.

        Any topic is accepted: one that no route matches (or that is not an application
        topic at all) is counted as dropped (``unrouted``) and returns an unrouted Delivery.
        """
        __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
        [delivery] = await self.send_many([(topic, payload)], qos=qos, retain=retain,
                                          raise_errors=raise_errors)  # fmt: skip
        return delivery

    async def send_many(
        self,
        messages: Iterable[tuple[str, bytes | str]],
        *,
        qos: int = 1,
        retain: bool = False,
        raise_errors: bool | None = None,
    ) -> list[Delivery]:
        """Deliver ``(topic, payload)`` pairs as one read from the socket; wait for them all.

        A batch route gets them in one batch (several when there are more than its
        ``max_size``); the batch is handed over at once, not after its ``max_wait``. The
        deliveries come back in the order sent.
        """
        __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
        pipeline = self._open_pipeline()
        if qos not in (0, 1):
            raise ValueError(f"qos {qos!r}: a worker receives at QoS 0 or 1")
        inbounds = [
            Inbound(topic, _body(payload), qos, retain, next(self._packet_ids) if qos else 0)
            for topic, payload in messages
        ]
        waiting = [self._expect(inbound) for inbound in inbounds]
        try:
            await pipeline.put(inbounds, self._ack)
            pipeline.flush_batches()
            for pending in waiting:
                await self._wait(pending)
        finally:
            for inbound in inbounds:
                del self._pending[id(inbound)]
        order = {r.name: i for i, r in enumerate(self.app.routes)}
        deliveries = []
        for pending in waiting:
            handled = tuple(sorted(pending.handled, key=lambda h: order[h.route]))
            if self.raise_errors if raise_errors is None else raise_errors:
                raise_handler_error(handled)
            inbound = pending.inbound
            deliveries.append(Delivery(inbound.topic, inbound.payload, qos, handled))
        return deliveries

    def _expect(self, inbound: Inbound) -> _Pending:
        expected = len(self.app.router.lookup(inbound.topic).routes)
        pending = self._pending[id(inbound)] = _Pending(inbound, expected)
        return pending

    async def _wait(self, pending: _Pending) -> None:
        """Until the routes reported, within the deadline; the pipeline's own failure wins."""
        task = self._task
        waits: set[asyncio.Future[None]] = {pending.done} if task is None else {pending.done, task}
        done, _ = await asyncio.wait(waits, timeout=self.deadline, return_when="FIRST_COMPLETED")
        if pending.done in done:
            return
        if task is not None and task in done:
            task.result()  # raises what stopped the pipeline
            raise RuntimeError("the pipeline stopped before the message was handled")
        raise TimeoutError(
            f"{pending.inbound.topic}: no outcome within {self.deadline:g} s; a handler is "
            "still running (give the route a timeout=, or the TestClient a longer deadline=)"
        )

    async def send_event(
        self,
        device_type: str,
        device_id: str,
        event: str,
        data: Any,
        format: str = "json",
        **options: Any,
    ) -> Delivery:
        """Deliver a device event; ``data`` is encoded by ``format`` (bytes go as they are).

        ``options``: ``qos``, ``retain``, ``raise_errors`` as for :meth:`send`.
        """
        __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
        topic = topics.device_event(device_type, device_id, event, format)
        return await self.send(str(topic), messages.encode(format, data), **options)

    async def send_events(
        self,
        device_type: str,
        device_id: str,
        event: str,
        data: Iterable[Any],
        format: str = "json",
        **options: Any,
    ) -> list[Delivery]:
        """Deliver one device event per item of ``data``, as one read (see :meth:`send_many`)."""
        __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
        topic = str(topics.device_event(device_type, device_id, event, format))
        pairs = [(topic, messages.encode(format, item)) for item in data]
        return await self.send_many(pairs, **options)

    async def send_command(
        self,
        device_type: str,
        device_id: str,
        command: str,
        data: Any,
        format: str = "json",
        **options: Any,
    ) -> Delivery:
        """Deliver a device command (as routes registered with ``@app.command`` get them)."""
        __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
        topic = topics.device_command(device_type, device_id, command, format)
        return await self.send(str(topic), messages.encode(format, data), **options)

    async def send_device_status(
        self,
        device_type: str,
        device_id: str,
        action: str = "Connect",
        *,
        close_code: int = 0,
        org: str | None = None,
        **options: Any,
    ) -> Delivery:
        """Deliver the platform's status message of a device that connected or disconnected.

        The JSON is the local platform's own (``Action``, ``ClientID``, ``CloseCode``, ...);
        ``close_code`` 288 is a takeover. To send other bytes, use :meth:`send`.
        """
        __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
        topic = topics.device_status(device_type, device_id)
        client_id = f"d:{org or self.settings.org}:{device_type}:{device_id}"
        payload = _status_payload(client_id, action, close_code)
        return await self.send(str(topic), payload, **options)

    async def send_app_status(
        self, app_id: str, action: str = "Connect", *, close_code: int = 0, **options: Any
    ) -> Delivery:
        """Deliver the platform's status message of an application (``iot-2/app/ID/mon``)."""
        __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
        topic = topics.app_status(app_id)
        client_id = f"a:{self.settings.org}:{app_id}"
        payload = _status_payload(client_id, action, close_code)
        return await self.send(str(topic), payload, **options)

    # --- the boundaries --------------------------------------------------------------------

    def _open_pipeline(self) -> Pipeline:
        if self._pipeline is None or self._closed:
            raise RuntimeError("use the TestClient inside 'async with TestClient(app) as client'")
        return self._pipeline

    def _observe(self, handled: Handled) -> None:
        self.outcomes.append(handled)
        pending = self._pending.get(id(handled.inbound))
        if pending is not None and pending.inbound is handled.inbound:
            pending.add(handled)

    def _ack(self, packet_ids: Sequence[int]) -> None:
        self.acked.extend(packet_ids)

    async def _capture(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: MessageProperties | None = None,
    ) -> None:
        """The app's publisher: keep the message as a handler of it would receive it."""
        _, parts, build = parse_topic(topic)
        inbound = Inbound(topic, payload, qos, retain, properties=properties)
        message = build(parts, inbound, time.time())
        if not isinstance(message, Event | Command):  # App.publish_* builds no other topics
            raise ValueError(f"unexpected publish to {topic}")
        self.published.append(message)


def _body(payload: bytes | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def _status_payload(client_id: str, action: str, close_code: int) -> bytes:
    """A status message body as the local platform writes it (W32)."""
    now = status.timestamp()
    info = status.ConnectionInfo(
        client_addr="127.0.0.1", client_id=client_id, port=1883, secure=False,
        protocol="mqtt4", user=None, connect_time=now,
    )  # fmt: skip
    return status.status_payload(action, info, close_code, now=now)
