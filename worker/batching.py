"""Batch routes: one handler run for many messages, each message still with its own outcome.

::

    @app.event(device_type="sensor", event="reading", batch=Batch(max_size=1000, max_wait=0.05))
    async def store(events: list[Event]) -> None:
        await pool.copy_records_to_table("readings", records=[row(e) for e in events])

:class:`~worker.routes.Batch` is the route option. :class:`BatchRunner` runs one batch of a
route: it builds every message first (a payload that does not decode for its format is that
message's ``decode_error`` and stays out of the batch, so one bad payload never fails the
rest), runs the handler under the route's ``timeout``, retries per ``retries`` and
``retry_backoff``, and gives each message that failed its last run to the route's dead-letter
sink, one letter each.

A handler reports that only some messages failed by raising :class:`BatchFailed` with them
(each with its own error, if it likes): the others are ``ok``, and only the failed ones are
retried (as a smaller batch) and, if they still fail, dead-lettered. When and how batches are
formed is the pipeline's job (``worker.pipeline``): by size, by age, when the broker's
in-flight window is full, and on drain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from prometheus_client import Counter, Histogram

from worker import messages
from worker.config import Settings
from worker.deadletter import DeadLetters
from worker.errors import CodecError
from worker.handling import (
    Handled,
    Observer,
    RouteRunnerBase,
    describe,
    on_purpose,
    own_decode_error,
    timeout_of,
    typed,
)
from worker.messages import Command, Event, Message
from worker.metrics import Outcome, RouteMetrics
from worker.routes import BACKOFF_CAP, Entry, InboundLike, Route

log = logging.getLogger("worker.pipeline")


class BatchFailed(Exception):
    """Raised by a batch handler when only some of its messages failed.

    ``failed`` are messages of the batch the handler was given (the same objects); the rest
    of the batch counts as handled (``ok``). ``error`` says why, for the log and the dead
    letters (an exception, or text). When they failed for different reasons, ``errors``
    pairs messages with their own error instead: ``BatchFailed(errors=[(event, exc), ...])``.
    Whether a message is retried is decided by its own error (``retry_on``,
    ``PermanentError``).
    """

    def __init__(
        self,
        failed: Iterable[Message] = (),
        error: BaseException | str | None = None,
        *,
        errors: Iterable[tuple[Message, BaseException | str]] = (),
    ) -> None:
        self.errors: tuple[tuple[Message, BaseException | str], ...] = tuple(errors)
        self.failed: tuple[Message, ...] = (*failed, *(m for m, _ in self.errors))
        self.error = error
        others = ""
        if error is None and self.errors:
            error = self.errors[0][1]
            texts = {describe(e) for _, e in self.errors}
            if len(texts) > 1:
                others = f" (and {_count(len(texts) - 1, 'other reason')}: see the dead letters)"
        why = f": {describe(error)}{others}" if error is not None else ""
        count = len({id(m) for m in self.failed})  # a message named twice is one
        super().__init__(f"{_count(count, 'message')} of the batch failed{why}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class BatchItem(Protocol):
    """What the runner reads of one queued message (the pipeline's work item)."""

    @property
    def entry(self) -> Entry: ...
    @property
    def inbound(self) -> InboundLike: ...
    @property
    def received_at(self) -> float: ...


class _Result:
    """One message's state through the runs of its batch."""

    __slots__ = ("error", "message", "outcome", "runs")

    def __init__(self, message: Message | None) -> None:
        self.message = message
        self.outcome = Outcome.OK
        self.error: BaseException | None = None
        self.runs = 0


class BatchRunner(RouteRunnerBase):
    """One batch route with its bound metrics and dead-letter sink."""

    __slots__ = ("_decode", "batch_size")

    def __init__(
        self,
        route: Route,
        metrics: RouteMetrics,
        dead_letters: DeadLetters,
        dead_letter_failed: Counter,
        batch_size: Histogram,
        observer: Observer | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__(route, metrics, dead_letters, dead_letter_failed, observer, settings)
        self.batch_size = batch_size
        self._decode = route.batch is None or route.batch.decode

    async def handle_batch(self, items: Sequence[BatchItem]) -> list[Outcome]:
        """Handle ``items`` as one batch; each one's final outcome, in order (never raises
        but cancel)."""
        results = [self._build(item) for item in items]
        pending = [r for r in results if r.message is not None]
        await self._runs(pending)
        self._record(pending)
        outcomes: list[Outcome] = []
        for item, result in zip(items, results, strict=True):
            outcome = result.outcome
            if outcome is not Outcome.OK and self.sink is not None:
                outcome = await self.dead_letter(
                    self.sink, outcome, result.error, item.inbound, result.runs
                )
            if self.observer is not None:
                self.observer(
                    Handled(self.route.name, item.inbound, outcome, result.outcome,
                            result.error, result.runs, self.route)
                )  # fmt: skip
            outcomes.append(outcome)
        return outcomes

    def _record(self, ran: list[_Result]) -> None:
        """A batch counts as one run for /readyz: failed when none of its messages got through."""
        if not ran:
            return
        if any(r.outcome is Outcome.OK for r in ran):
            self.record(Outcome.OK, None)
        else:
            self.record(ran[-1].outcome, ran[-1].error)

    def _build(self, item: BatchItem) -> _Result:
        """The message, decoded now (unless ``Batch(decode=False)``): a payload that does not
        decode stays out of the batch."""
        entry, inbound = item.entry, item.inbound
        try:
            message = entry.build(entry.parts, inbound, item.received_at)
            if self.route.payload is not None:
                typed(message, self.route.payload)
            elif (
                self._decode
                and isinstance(message, Event | Command)
                and messages.codec(message.format)
            ):
                message.data  # noqa: B018 - decode now; the handler gets it decoded
        except CodecError as exc:
            log.warning("%s: %s on %s", self.route.name, exc, inbound.topic)
            result = _Result(None)
            result.outcome, result.error = Outcome.DECODE_ERROR, exc
            return result
        return _Result(message)

    async def _runs(self, pending: list[_Result]) -> None:
        """Run the handler until every message is ok or out of retries."""
        route = self.route
        run = 0
        while pending:
            run += 1
            for result in pending:
                # what a run says of a message replaces what the run before said: a message
                # that fails once and then gets through is ok, not dead-lettered
                result.runs, result.outcome, result.error = run, Outcome.OK, None
            outcome, error, failed, own = await self._once([r.message for r in pending], run)
            if outcome is Outcome.OK:
                return
            again: list[_Result] = []
            done: list[_Result] = []
            for i in failed:
                result = pending[i]
                result.outcome, result.error = outcome, own.get(i, error)
                if own_decode_error(result.error, result.message):
                    result.outcome = Outcome.DECODE_ERROR  # as on a single route: not retried
                retry = result.outcome is not Outcome.DECODE_ERROR and run <= route.retries
                (again if retry and route.retryable(result.error) else done).append(result)
            final = not again
            _log_batch_failure(route, (len(failed), len(pending)), outcome, error, run, final)
            if again and done:
                _log_given_up(route, done, run)
            pending = again
            if final:
                return
            await asyncio.sleep(min(route.retry_backoff * 2 ** (run - 1), BACKOFF_CAP))

    async def _once(
        self, batch: list[Message | None], run: int
    ) -> tuple[Outcome, BaseException | None, list[int], dict[int, BaseException]]:
        """One handler run: (outcome, error, indices of the failed messages in ``batch``, the
        errors of those that have their own)."""
        route = self.route
        args: tuple[object, ...] = (batch,)
        if route.wants_context:
            args = (batch, self.context(None, run, len(batch)))
        self.batch_size.observe(len(batch))
        started = time.perf_counter()
        everything = list(range(len(batch)))
        # what was handed over, as it was: the handler may sort or filter its list in place
        given = tuple(batch)
        timer: asyncio.Timeout | None = None
        try:
            if route.timeout is None:
                await route.handler(*args)
            else:
                async with asyncio.timeout(route.timeout) as timer:
                    await route.handler(*args)
            result: tuple[Outcome, BaseException | None, list[int], dict[int, BaseException]]
            result = (Outcome.OK, None, [], {})
        except BatchFailed as exc:
            where = {id(m): i for i, m in enumerate(given)}
            failed = _positions(where, exc.failed, route.name)
            own = _own_errors(where, exc.errors)
            # failing closed: a message it may have meant is not acknowledged as handled
            result = Outcome.ERROR, _cause(exc), everything if failed is None else failed, own
        except TimeoutError as exc:
            expired = timer is not None and timer.expired()
            result = (Outcome.TIMEOUT if expired else Outcome.ERROR), exc, everything, {}
        except Exception as exc:
            result = Outcome.ERROR, exc, everything, {}
        self.metrics.seconds.observe(time.perf_counter() - started)
        return result


def _log_given_up(route: Route, done: list[_Result], run: int) -> None:
    """One line for the messages of a run that are not retried (PermanentError, outside
    ``retry_on``, a decode_error) while the others of the batch are: their run is final."""
    first = done[0]
    what = describe(first.error, timeout_of(route, first.outcome)) or first.outcome.value
    log.warning("%s: giving up on %d of them (run %d): %s", route.name, len(done), run, what)


def _cause(exc: BatchFailed) -> BaseException:
    """What a dead letter and the log say about messages a handler reported as failed."""
    if isinstance(exc.error, BaseException):
        return exc.error
    return exc


def _own_errors(
    where: dict[int, int], errors: Sequence[tuple[Message, BaseException | str]]
) -> dict[int, BaseException]:
    """Where (``where``: the batch's positions by identity) the messages with their own error
    are, and that error (text as a BatchFailed of that one message, as ``error`` text is)."""
    return {
        where[id(m)]: error if isinstance(error, BaseException) else BatchFailed((m,), error)
        for m, error in errors
        if id(m) in where
    }


def _positions(where: dict[int, int], failed: Sequence[Message], route: str) -> list[int] | None:
    """Where (``where``: the batch's positions by identity) the reported messages are; None
    when some are strangers (logged): which of the batch those meant cannot be known."""
    found = sorted({where[id(m)] for m in failed if id(m) in where})
    strangers = len(failed) - sum(1 for m in failed if id(m) in where)
    if not strangers:
        return found
    log.warning(
        "%s: BatchFailed named %d messages that are not in the batch it was given, so the "
        "whole batch counts as failed (name the message objects the handler received)",
        route, strangers,
    )  # fmt: skip
    return None


def _log_batch_failure(
    route: Route,
    counts: tuple[int, int],
    outcome: Outcome,
    error: BaseException | None,
    run: int,
    final: bool,
) -> None:
    """One line (or one traceback) for a run of a batch that failed, ``counts`` being
    (messages that failed, messages in the run)."""
    what = describe(error, timeout_of(route, outcome)) or outcome.value
    failed, total = counts
    if not failed:
        return
    which = f"a batch of {total}" if failed == total else f"{failed} of a batch of {total}"
    if not final:
        log.warning("%s: %s on %s (run %d); retrying", route.name, what, which, run)
    elif outcome is not Outcome.ERROR or isinstance(error, BatchFailed):
        log.warning("%s: %s on %s (run %d, giving up)", route.name, what, which, run)
    elif on_purpose(error):
        log.error("%s failed on %s (run %d): %s", route.name, which, run, what)
    else:
        log.error("%s failed on %s (run %d)", route.name, which, run, exc_info=error)
