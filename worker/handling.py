"""Running one route's handler for one message: timeout, retries, dead letter, outcome.

:class:`RouteRunner` is what a pipeline lane calls for each piece of work. It builds the
message from the router's answer (so a status payload that is not JSON is a ``decode_error``
before any handler runs), runs the handler under the route's ``timeout``, retries ``error``
and ``timeout`` with exponential backoff (never ``decode_error``: the same bytes fail the same
way), and gives a final failure to the route's dead-letter sink. It returns the outcome
defined in ``worker.metrics`` and times every run into ``worker_handler_seconds``.

Logging: one WARNING line per failed run that will be retried, then for the last run the
traceback of an ``error`` once (ERROR), or one WARNING line for ``timeout``/``decode_error``.

An optional observer gets a :class:`Handled` record per finished (message, route) pair, with
the exception itself: ``worker.testing`` uses it to hand a handler's error, traceback and all,
to the test that sent the message. Production passes none, so it costs one ``is None`` test.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from worker.config import Settings
from worker.context import Context
from worker.deadletter import DeadLetter, DeadLetters, DeadLetterSink
from worker.errors import CodecError, WorkerError, one_line
from worker.messages import AppStatus, Command, Event, Message
from worker.metrics import Outcome, RouteMetrics
from worker.payloads import PayloadModel
from worker.routes import BACKOFF_CAP, Entry, InboundLike, Route

log = logging.getLogger("worker.pipeline")


@dataclass(frozen=True, slots=True, eq=False)
class Handled:
    """What happened to one message for one route, as the observer of a pipeline sees it."""

    #: the route's name, as in metrics and logs
    route: str
    #: the received message exactly as the transport handed it to the pipeline
    inbound: InboundLike
    #: the final outcome, as counted in ``worker_messages_handled_total``; ``dropped`` when
    #: it failed and its dead letter could not be kept (counted as dropped only)
    outcome: Outcome
    #: the outcome of the last run before any dead-lettering (``ok`` when it succeeded)
    reason: Outcome
    #: what the last run raised (CodecError for ``decode_error``, TimeoutError for ``timeout``)
    error: BaseException | None
    #: handler runs (0 when the message could not be decoded before the first)
    runs: int
    #: the registered route itself: its filter, kind and options
    definition: Route


Observer = Callable[[Handled], None]


class RouteRunnerBase:
    """One route with its bound metrics, its dead-letter sink and the observer."""

    __slots__ = (
        "dead_letter_failed", "dead_letters", "failures", "last_error", "metrics", "observer",
        "route", "settings", "sink",
    )  # fmt: skip

    def __init__(
        self,
        route: Route,
        metrics: RouteMetrics,
        dead_letters: DeadLetters,
        dead_letter_failed: Counter,
        observer: Observer | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.route = route
        #: what a handler's Context carries (``Settings()`` when none is given)
        self.settings = settings or Settings()
        self.metrics = metrics
        self.dead_letters = dead_letters
        self.sink: DeadLetterSink | None = dead_letters.sink_for(route.dead_letter)
        self.dead_letter_failed = dead_letter_failed
        self.observer = observer
        #: runs in a row whose last attempt failed (error or timeout; not a bad payload)
        self.failures = 0
        #: what the last failed run raised, for /readyz
        self.last_error = ""

    def record(self, reason: Outcome, error: BaseException | None) -> None:
        """Note how a message's (or batch's) runs ended, for :meth:`Pipeline.degraded`."""
        if reason is Outcome.OK:
            self.failures = 0
        elif reason is not Outcome.DECODE_ERROR:
            self.failures += 1
            self.last_error = describe(error, timeout_of(self.route, reason)) or reason.value

    def context(self, message: Message | None, run: int, count: int = 0) -> Context:
        """The Context of one run: of ``message``, or of a batch of ``count`` when None."""
        if message is None:
            return Context(self.settings, self.route.name, None, f"batch of {count}", run)
        return Context(self.settings, self.route.name, message.topic, subject_of(message), run)

    async def dead_letter(
        self,
        sink: DeadLetterSink,
        outcome: Outcome,
        error: BaseException | None,
        inbound: InboundLike,
        runs: int,
    ) -> Outcome:
        """Give a final failure to ``sink``; ``dead_lettered`` when it took it, ``dropped``
        (counted once, as ``dead_letter_failed``) when it could not."""
        route = self.route
        letter = DeadLetter(
            route.name, outcome.value, inbound.topic, inbound.payload, inbound.qos,
            describe(error, timeout_of(route, outcome)), runs, time.time(),
        )  # fmt: skip
        if await self.dead_letters.send(sink, letter):
            self.metrics.dead_letters.inc()
            return Outcome.DEAD_LETTERED
        self.dead_letter_failed.inc()
        return Outcome.DROPPED


class RouteRunner(RouteRunnerBase):
    """A route that handles one message a run."""

    __slots__ = ()

    async def handle(self, entry: Entry, inbound: InboundLike, received_at: float) -> Outcome:
        """Handle one message for this route; the final outcome (never raises but cancel).

        The first run is awaited right here, and the retries and the bookkeeping of a failure
        only when it failed: no coroutine more than the handler's own on the path of every
        message that succeeds at once.
        """
        route = self.route
        try:
            message = entry.build(entry.parts, inbound, received_at)
            if route.payload is not None:
                typed(message, route.payload)
        except CodecError as exc:
            log.warning("%s: %s on %s", route.name, exc, inbound.topic)
            return await self._finish(Outcome.DECODE_ERROR, exc, inbound, 0)
        reason, error = await self._once(message, 1)
        if reason is Outcome.OK and self.observer is None:
            self.failures = 0
            return reason
        runs = 1
        if reason is not Outcome.OK:
            reason, error, runs = await self._retries(message, inbound.topic, reason, error)
        return await self._finish(reason, error, inbound, runs)

    async def _finish(
        self, reason: Outcome, error: BaseException | None, inbound: InboundLike, runs: int
    ) -> Outcome:
        """Book a finished message: /readyz's count of failures, its dead letter, the observer."""
        if reason is Outcome.OK:
            self.failures = 0
        else:
            self.record(reason, error)
        outcome, sink = reason, self.sink
        if reason is not Outcome.OK and sink is not None:
            outcome = await self.dead_letter(sink, reason, error, inbound, runs)
        if self.observer is not None:
            route = self.route
            self.observer(Handled(route.name, inbound, outcome, reason, error, runs, route))
        return outcome

    async def _retries(
        self, message: Message, topic: str, outcome: Outcome, error: BaseException | None
    ) -> tuple[Outcome, BaseException | None, int]:
        """After a failed first run: retry while the route allows; (outcome, error, runs)."""
        route = self.route
        run = 1
        while True:
            final = (
                outcome is Outcome.DECODE_ERROR or run > route.retries or not route.retryable(error)
            )
            _log_failure(route, topic, outcome, error, run, final)
            if final:
                return outcome, error, run
            await asyncio.sleep(min(route.retry_backoff * 2 ** (run - 1), BACKOFF_CAP))
            run += 1
            outcome, error = await self._once(message, run)
            if outcome is Outcome.OK:
                return outcome, None, run

    async def _once(self, message: Message, run: int) -> tuple[Outcome, BaseException | None]:
        route = self.route
        call = route.handler(message, self.context(message, run)) if route.wants_context else None
        started = time.perf_counter()
        outcome: Outcome = Outcome.OK
        error: BaseException | None = None
        timer: asyncio.Timeout | None = None
        try:
            if route.timeout is None:
                await (call or route.handler(message))
            else:
                async with asyncio.timeout(route.timeout) as timer:
                    await (call or route.handler(message))
        except CodecError as exc:
            own = own_decode_error(exc, message)
            outcome, error = (Outcome.DECODE_ERROR if own else Outcome.ERROR), exc
        except TimeoutError as exc:
            expired = timer is not None and timer.expired()
            outcome, error = (Outcome.TIMEOUT if expired else Outcome.ERROR), exc
        except Exception as exc:
            outcome, error = Outcome.ERROR, exc
        self.metrics.seconds.observe(time.perf_counter() - started)
        return outcome, error


def typed(message: Message, model: PayloadModel) -> None:
    """Validate an event's or command's ``data`` into the route's model; CodecError if not."""
    if isinstance(message, Event | Command):
        value = model.validate(message.data)
        object.__setattr__(message, "_data", value)  # frozen: the one place data is set


def subject_of(message: Message) -> str:
    """Who a message is about, for a Context: ``type/id``, or the app ID."""
    if isinstance(message, AppStatus):
        return message.app_id
    return f"{message.device_type}/{message.device_id}"


def own_decode_error(error: BaseException | None, message: Message | None) -> bool:
    """Whether ``error`` is ``message``'s own payload failing to decode (the handler read its
    ``data``): its decode_error. A CodecError from elsewhere (say, encoding a publish) is the
    handler's error."""
    return isinstance(error, CodecError) and getattr(message, "decode_failed", False)


def timeout_of(route: Route, outcome: Outcome) -> float | None:
    """The route's timeout when it is what ended the run, for ``describe``; else None, so a
    TimeoutError the handler raised itself keeps its own message."""
    return route.timeout if outcome is Outcome.TIMEOUT else None


def describe(error: BaseException | str | None, timeout: float | None = None) -> str | None:
    """The ``error`` text of a dead letter and of a log line, on one line."""
    if error is None:
        return None
    if isinstance(error, str):
        return one_line(error)
    if isinstance(error, TimeoutError) and timeout is not None:
        return f"timed out after {timeout:g} s"
    return one_line(f"{type(error).__name__}: {error}")


def _log_failure(
    route: Route,
    topic: str,
    outcome: Outcome,
    error: BaseException | None,
    run: int,
    final: bool,
) -> None:
    what = describe(error, timeout_of(route, outcome)) or outcome.value
    if not final:
        log.warning("%s: %s on %s (run %d); retrying", route.name, what, topic, run)
    elif outcome is Outcome.ERROR and not on_purpose(error):
        log.error("%s failed on %s (run %d)", route.name, topic, run, exc_info=error)
    elif outcome is Outcome.ERROR:
        log.error("%s failed on %s (run %d): %s", route.name, topic, run, what)
    else:
        log.warning("%s: %s on %s (run %d, giving up)", route.name, what, topic, run)


def on_purpose(error: BaseException | None) -> bool:
    """Whether ``error`` was raised on purpose (a WorkerError, such as a handler's
    ConnectError for a database it cannot reach): its message says what happened, so its
    final failure is logged on one line; any other error is logged with its traceback, once,
    since it is a bug to find."""
    return isinstance(error, WorkerError)
