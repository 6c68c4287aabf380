"""The pipeline: intake, lanes, ack order, retries, dead letters, outcomes (docs/architecture.md).

::

    pipeline = Pipeline(app, settings, metrics)         # dead letters from WORKER_DEAD_LETTER
    tg.create_task(pipeline.run())                      # the lanes, until stop() or drain()
    await pipeline.put(batch, transport.ack)            # per received batch, on each connection
    await pipeline.idle()                               # nothing queued or running, acks sent
    abandoned = await pipeline.drain(settings.drain_timeout)

Work is one (message, matching route) pair. ``settings.concurrency`` long-lived lanes take it:
an ``ordered`` route's work goes to lane ``hash((device_type, device_id)) % lanes`` (for app
status, the app ID), so one device's messages run one at a time in arrival order; other work
goes to a shared queue that any free lane takes from. No task is created per message.

- QoS 1: acknowledged when every route's run finished, whatever the outcome (a failure is
  dead-lettered or counted first), in arrival order per connection (``worker.acks``). A message
  whose dead letter could not be kept is acknowledged too and counted as dropped: holding it
  back would stall every later ack on the connection.
- QoS 0: at most ``intake_size`` queued; beyond that ``drop-oldest`` drops the oldest queued
  QoS 0 work, ``block`` makes ``put`` wait for room (and so the socket), and ``pace`` (the
  default, see docs/guide/mqtt5.md) waits like ``block`` until the intake has been full for
  ``pace_limit`` seconds without a break (a backlog that stays, not a burst), then drops the
  oldest like ``drop-oldest`` until a message finds room again. QoS 1 is not bounded here: the
  broker's in-flight window bounds it (on MQTT 5, the Receive Maximum the worker announces).
- A message whose MQTT 5 expiry passed while it waited is not handled: outcome ``expired``,
  and acknowledged.
- A message matching no route is counted as dropped (``unrouted``) and, at QoS 1, acknowledged.
- Outcomes and drop reasons are defined in ``worker.metrics``; ``observer`` (tests) gets a
  ``worker.handling.Handled`` per finished (message, route), with the handler's exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Final

from prometheus_client import Counter

from worker import tracing
from worker.acks import Acker, AckQueue, Slot
from worker.app import App
from worker.batching import BatchRunner
from worker.config import Settings
from worker.deadletter import DeadLetters
from worker.filling import Filler, Open
from worker.handling import Observer, RouteRunner
from worker.metrics import DropReason, Kind, Metrics, Outcome
from worker.routes import Entry, InboundLike, Route

log = logging.getLogger("worker.pipeline")

#: seconds the lanes awake may run handlers back to back (shared among them) before they give
#: the loop a turn to read, acknowledge and answer; see ``Pipeline._lane``
TURN: Final = 0.02
#: after the drain timeout, how long cancelled lanes get to unwind
CANCEL_GRACE: Final = 1.0
#: a route whose last this many runs (messages, or batches) all failed makes /readyz say so
DEGRADED_AFTER: Final = 3

_QUEUED, _TAKEN, _DROPPED = 0, 1, 2


class _Work:
    __slots__ = ("entry", "inbound", "received_at", "run", "slot", "state")

    def __init__(
        self,
        run: RouteRunner | BatchRunner,
        entry: Entry,
        inbound: InboundLike,
        at: float,
        slot: Slot | None,
    ) -> None:
        self.run = run
        self.entry = entry
        self.inbound = inbound
        self.received_at = at
        self.slot = slot
        self.state = _QUEUED


class _Batch:
    """Work of a batch route handed over to a lane: one handler run for all its items."""

    __slots__ = ("items", "run", "state")

    def __init__(self, run: BatchRunner, items: list[_Work]) -> None:
        self.run = run
        self.items = items
        self.state = _QUEUED


class _Lane:
    __slots__ = ("index", "listed", "queue", "summoned", "waiter")

    def __init__(self, index: int) -> None:
        self.index = index
        self.queue: deque[_Work | _Batch] = deque()
        self.waiter: asyncio.Future[None] | None = None
        #: in the idle list already (listed once, however often it idles)
        self.listed = False
        #: woken for shared work and not yet running (counted in ``Pipeline._summoned``)
        self.summoned = False


def _oldest_queued(queue: deque[_Work | _Batch]) -> float | None:
    """When the first still-queued work of ``queue`` arrived (its oldest item for a batch)."""
    for work in queue:
        if work.state == _QUEUED:
            return work.items[0].received_at if isinstance(work, _Batch) else work.received_at
    return None


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class Pipeline:
    """Intake and lanes; see the module docstring for the contract."""

    def __init__(
        self,
        app: App,
        settings: Settings,
        metrics: Metrics,
        dead_letters: DeadLetters | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._router = app.compile()
        self._metrics = metrics
        self._dead_letters = dead_letters or DeadLetters(
            settings.dead_letter, publish=app.publish_event
        )
        failed = metrics.dropped[DropReason.DEAD_LETTER_FAILED]
        self._settings = settings
        if settings.tracing == "on":
            tracing.enable()
        #: consumer spans per message (``--tracing on``): one flag read per message otherwise
        self._traced = tracing.enabled()
        self._runs = [self._runner(r, metrics, failed, observer) for r in self._router.routes]
        self._lanes = [_Lane(i) for i in range(settings.concurrency)]
        self._shared: deque[_Work | _Batch] = deque()
        #: per route index: the batches being filled (one per lane when ordered); None: no batch
        self._opens = [self._batch_slots(run) for run in self._runs]
        #: MQTT 5: the Receive Maximum the worker announced, a known bound of the broker's window
        window_bound = settings.receive_maximum if settings.mqtt_version == "5" else 0
        self._filler: Filler[_Work] = Filler(self._queue_batch, self._unacked, window_bound)
        self._idle: deque[_Lane] = deque()
        #: idle lanes woken for shared work that have not run yet; see ``_summon``
        self._summoned = 0
        #: lanes not waiting for work: they share one TURN
        self._awake = len(self._lanes)
        self._qos0: deque[_Work] = deque()
        self._qos0_queued = 0
        self._limit = settings.intake_size
        self._block = settings.overflow == "block"
        self._pace = settings.overflow == "pace"
        self._pace_limit = settings.pace_limit
        #: pace: monotonic time the QoS 0 intake became full without a break since; 0.0: not
        self._full_since = 0.0
        #: set when a lane took QoS 0 work while a blocked ``put`` waits for room
        self._space = asyncio.Event()
        self._space_wanted = False
        self._queued = 0
        self._in_flight = 0
        self._acks: dict[Acker, AckQueue] = {}
        self._ready: list[AckQueue] = []
        self._flush_pending = False
        self._stopping = False
        self._abandoned = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._finished = asyncio.Event()
        self._idle_now = asyncio.Event()
        self._idle_now.set()
        metrics.watch(
            intake_depth=lambda: self._queued,
            in_flight=lambda: self._in_flight,
            handling_lag=self.handling_lag,
        )

    def _runner(
        self,
        route: Route,
        metrics: Metrics,
        failed: Counter,
        observer: Observer | None,
    ) -> RouteRunner | BatchRunner:
        bound = metrics.route(route.name)
        letters, settings = self._dead_letters, self._settings
        if route.batch is None:
            return RouteRunner(route, bound, letters, failed, observer, settings)
        sizes = metrics.batch_size(route.name)
        return BatchRunner(route, bound, letters, failed, sizes, observer, settings)

    def _batch_slots(self, run: RouteRunner | BatchRunner) -> list[Open[_Work]] | None:
        if not isinstance(run, BatchRunner):
            return None
        if run.route.ordered:
            return [Open(run, lane.index) for lane in self._lanes]
        return [Open(run, None)]

    def degraded(self) -> str | None:
        """Why the app is degraded: a route whose last runs all failed; None when none is."""
        failing = [run for run in self._runs if run.failures >= DEGRADED_AFTER]
        if not failing:
            return None
        return "degraded: " + "; ".join(
            f"route {run.route.name!r} failed {run.failures} times in a row "
            f"(last: {run.last_error})"
            for run in failing
        )

    @property
    def intake_depth(self) -> int:
        """Work queued for a lane, not yet started."""
        return self._queued

    @property
    def in_flight(self) -> int:
        """Work a lane has started and not finished (including retries and dead-lettering)."""
        return self._in_flight

    def handling_lag(self) -> float:
        """Seconds the oldest message waiting for a lane has waited (0: none waits).

        Read at scrape time (``/metrics``, ``/readyz``): a look at the head of each queue and
        each filling batch, so the hot path pays nothing for it. Work at a head that was
        taken or dropped is skipped (queues are swept lazily).
        """
        queues: list[deque[_Work | _Batch]] = [self._shared, *(lane.queue for lane in self._lanes)]
        times = [t for t in map(_oldest_queued, queues) if t is not None]
        times += self._filler.oldest()
        return max(0.0, time.time() - min(times)) if times else 0.0

    async def idle(self) -> None:
        """Return once nothing is queued or running and the finished work's acks have left."""
        await self._idle_now.wait()

    # --- intake ------------------------------------------------------------------------

    async def put(self, batch: Sequence[InboundLike], ack: Acker) -> None:
        """Route and queue one received batch; QoS 1 messages are acknowledged through ``ack``.

        Waits only under the ``block`` overflow policy. After ``stop``/``drain`` began, new
        messages are refused: counted as dropped (``draining``) and not acknowledged.
        """
        at = time.time()
        lookup = self._router.lookup
        kinds: dict[Kind | None, int] = {}
        unrouted = refused = 0
        queue: AckQueue | None = None
        try:
            for inbound in batch:
                entry = lookup(inbound.topic)
                kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
                routes = entry.routes
                if self._stopping:
                    refused += 1
                    continue
                slot = None
                if inbound.qos:
                    queue = queue or self._queue_for(ack)
                    slot = queue.add(inbound.packet_id, len(routes))
                if not routes:
                    unrouted += 1
                    continue
                for route in routes:
                    work = _Work(self._runs[route.index], entry, inbound, at, slot)
                    if slot is None and self._qos0_queued >= self._limit:
                        await self._make_room()
                        if self._stopping:
                            refused += 1
                            break
                    elif self._full_since and slot is None:
                        self._full_since = 0.0  # room without waiting: the backlog broke
                    self._enqueue(work, route)
        finally:
            self._count_intake(kinds, unrouted, refused)
            if self._filler.filling:
                self._filler.after_put()
            if queue is not None and queue.releasable():
                self._idle_now.clear()  # idle() also means "the acks have left"
                self._schedule(queue)

    def _queue_for(self, ack: Acker) -> AckQueue:
        queue = self._acks.get(ack)
        if queue is None:
            queue = self._acks[ack] = AckQueue(ack)
        return queue

    def _count_intake(self, kinds: dict[Kind | None, int], unrouted: int, refused: int) -> None:
        received = self._metrics.received
        for kind, n in kinds.items():
            # a topic outside the grammar has no kind: received as ``unknown``, then unrouted
            received[Kind.UNKNOWN if kind is None else kind].inc(n)
        dropped = self._metrics.dropped
        if unrouted:
            dropped[DropReason.UNROUTED].inc(unrouted)
        if refused:
            dropped[DropReason.DRAINING].inc(refused)

    async def _make_room(self) -> None:
        """The QoS 0 intake is full: drop its oldest work, or wait for a lane to take some."""
        if self._pace and await self._paced():
            return
        if not self._block:
            q = self._qos0
            while q:
                work = q.popleft()
                if work.state == _QUEUED:
                    work.state = _DROPPED
                    self._queued -= 1
                    self._qos0_queued -= 1
                    self._metrics.dropped[DropReason.INTAKE_FULL].inc()
                    return
            return
        while self._qos0_queued >= self._limit and not self._stopping:
            self._space.clear()
            self._space_wanted = True
            await self._space.wait()

    async def _paced(self) -> bool:
        """``pace``: wait for room while the intake has been full for less than the limit.

        True when room was made; False when the backlog stayed (the caller drops the oldest).
        The clock starts when a message first finds the intake full and stops when one finds
        room again (``put``): a burst that the lanes work through is never dropped.
        """
        now = time.monotonic()
        if not self._full_since:
            self._full_since = now
        left = self._full_since + self._pace_limit - now
        if left <= 0:
            return False
        try:
            async with asyncio.timeout(left):
                while self._qos0_queued >= self._limit and not self._stopping:
                    self._space.clear()
                    self._space_wanted = True
                    await self._space.wait()
        except TimeoutError:
            return False
        return True

    def _enqueue(self, work: _Work, route: Route) -> None:
        opens = self._opens[route.index]
        if opens is not None:
            self._filler.add(work, opens[work.entry.key % len(opens)], work.slot is not None)
        elif route.ordered:
            lane = self._lanes[work.entry.key % len(self._lanes)]
            lane.queue.append(work)
            _wake(lane.waiter)
        else:
            self._shared.append(work)
            if not self._summoned:
                self._summon()
        self._queued += 1
        self._idle_now.clear()
        if work.slot is None:
            self._qos0_queued += 1
            q = self._qos0
            while q and q[0].state != _QUEUED:
                q.popleft()
            q.append(work)
            if len(q) > 2 * self._limit + 64:
                # work taken out of order (other lanes) piles up behind a slow head; sweep it
                self._qos0 = deque(w for w in q if w.state == _QUEUED)

    # --- batches -----------------------------------------------------------------------

    def _queue_batch(self, open: Open[_Work], items: list[_Work]) -> None:
        """The filler's hand-over: ``items`` become one batch for a lane."""
        batch = _Batch(open.run, items)
        if open.lane is not None:
            lane = self._lanes[open.lane]
            lane.queue.append(batch)
            _wake(lane.waiter)
        else:
            self._shared.append(batch)
            if not self._summoned:
                self._summon()

    def _unacked(self) -> int:
        return sum(len(queue.pending) for queue in self._acks.values())

    def flush_batches(self) -> None:
        """Hand over every batch being filled now, whatever its size and age."""
        self._filler.flush()

    def hurry(self) -> None:
        """Draining: hand over the batches being filled, and later ones as they arrive."""
        self._filler.hurry()

    def _summon(self) -> None:
        """Wake one idle lane for the shared queue.

        One at a time: a woken lane takes shared work until the queue is empty, and when it
        takes some while more waits, it summons the next (``_lane``). A batch of quick handlers
        so wakes one or two lanes, not one per message (each wake is a future, a task step and
        a loop turn); handlers that wait on I/O still fan out over every lane, one per turn.
        """
        idle = self._idle
        while idle:
            lane = idle.popleft()
            lane.listed = False
            if lane.waiter is not None and not lane.waiter.done():
                lane.waiter.set_result(None)
                lane.summoned = True
                self._summoned += 1
                return

    # --- lanes -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the lanes until ``stop()`` or ``drain()`` and the queues are empty."""
        if self._tasks:
            raise RuntimeError("Pipeline.run() is already running or has run")
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = [
                    tg.create_task(self._lane(lane), name=f"worker-lane-{lane.index}")
                    for lane in self._lanes
                ]
        finally:
            self._abandon_queued()
            self._flush()
            self._finished.set()

    async def _lane(self, lane: _Lane) -> None:
        """Take work until stopped; handlers that never wait get a share of one ``TURN``.

        The turn is a balance, not just fairness: under a QoS 0 backlog, every loop turn also
        reads a socket buffer's worth of messages (hundreds to thousands), so short turns
        would make the lanes drop most of what was read instead of handling it, and long
        ones would hold back acks, pings and ``/metrics``. 20 ms over all lanes keeps the
        lanes ahead of the reads and bounds the loop's stall whatever a handler costs.
        """
        own, shared = lane.queue, self._shared
        clock = time.monotonic
        turn_ends = clock() + TURN / self._awake
        while True:
            if own:
                work = own.popleft()
            elif shared:
                work = shared.popleft()
            elif self._stopping:
                return
            else:
                await self._idle_wait(lane)
                turn_ends = clock() + TURN / self._awake
                continue
            if shared and not self._summoned:
                self._summon()  # more waits: the next lane, in case this handler waits
            if work.state != _QUEUED:
                continue
            if isinstance(work, _Batch):
                await self._handle_batch(work)
            else:
                self._take(work)
                await self._handle(work)
            if clock() >= turn_ends:
                await asyncio.sleep(0)
                turn_ends = clock() + TURN / self._awake

    async def _idle_wait(self, lane: _Lane) -> None:
        lane.waiter = asyncio.get_running_loop().create_future()
        if not lane.listed:
            lane.listed = True
            self._idle.append(lane)
        self._awake -= 1
        try:
            await lane.waiter
        finally:
            self._awake += 1
            lane.waiter = None
            if lane.summoned:
                lane.summoned = False
                self._summoned -= 1

    def _take(self, work: _Work) -> None:
        work.state = _TAKEN
        self._queued -= 1
        if work.slot is None:
            self._qos0_queued -= 1
            if self._space_wanted and self._qos0_queued < self._limit:
                self._space_wanted = False
                self._space.set()

    async def _handle(self, work: _Work) -> None:
        run = work.run
        assert isinstance(run, RouteRunner)
        self._in_flight += 1
        try:
            expires = work.inbound.expires_at
            if expires and time.monotonic() >= expires:
                outcome = Outcome.EXPIRED  # waited past its MQTT 5 expiry: not handled
            elif self._traced:
                outcome = await self._handle_traced(run, work)
            else:
                outcome = await run.handle(work.entry, work.inbound, work.received_at)
        except asyncio.CancelledError:
            # drain gave up on it: not acknowledged (the broker may redeliver), but counted
            self._abandoned += 1
            self._metrics.dropped[DropReason.ABANDONED].inc()
            raise
        finally:
            self._in_flight -= 1
        if outcome is not Outcome.DROPPED:  # counted where it was dropped
            run.metrics.outcome[outcome].inc()
        slot = work.slot
        if slot is not None:
            slot.remaining -= 1
            if slot.remaining == 0 and slot.queue.pending[0] is slot:
                self._schedule(slot.queue)
                return
        if not self._flush_pending:
            self._schedule(None)

    async def _handle_batch(self, batch: _Batch) -> None:
        batch.state = _TAKEN
        items = [work for work in batch.items if work.state == _QUEUED]
        if not items:
            return
        for work in items:
            self._take(work)
        run = batch.run
        items = self._unexpired(run, items)
        if not items:
            if not self._flush_pending:
                self._schedule(None)
            return
        count = len(items)
        self._in_flight += count
        try:
            if self._traced:
                outcomes = await self._handle_batch_traced(run, items)
            else:
                outcomes = await run.handle_batch(items)
        except asyncio.CancelledError:
            self._abandoned += count
            self._metrics.dropped[DropReason.ABANDONED].inc(count)
            raise
        finally:
            self._in_flight -= count
        # The messages that went through are counted with one increment (an inc takes a lock).
        counts = run.metrics.outcome
        ok = outcomes.count(Outcome.OK)
        if ok:
            counts[Outcome.OK].inc(ok)
        if ok != count:
            for outcome in outcomes:
                if outcome is not Outcome.OK and outcome is not Outcome.DROPPED:
                    counts[outcome].inc()  # DROPPED is counted where it was dropped
        for work in items:
            slot = work.slot
            if slot is not None:
                slot.remaining -= 1
                if slot.remaining == 0 and slot.queue.pending[0] is slot:
                    self._schedule(slot.queue)
        if not self._flush_pending:
            self._schedule(None)

    async def _handle_traced(self, run: RouteRunner, work: _Work) -> Outcome:
        """``run.handle`` inside a consumer span (``worker.tracing``)."""
        inbound = work.inbound
        size = len(inbound.payload)
        with tracing.consumer_span(run.route.name, inbound.topic, size, inbound.properties) as span:
            outcome = await run.handle(work.entry, inbound, work.received_at)
            tracing.finish(span, outcome.value)
        return outcome

    async def _handle_batch_traced(self, run: BatchRunner, items: list[_Work]) -> list[Outcome]:
        """``run.handle_batch`` inside one consumer span linked to every producer."""
        described = [(w.inbound.topic, len(w.inbound.payload), w.inbound.properties) for w in items]
        with tracing.batch_span(run.route.name, described) as span:
            outcomes = await run.handle_batch(items)
            failed = next((o for o in outcomes if o is not Outcome.OK), Outcome.OK)
            tracing.finish(span, failed.value)
        return outcomes

    def _unexpired(self, run: BatchRunner, items: list[_Work]) -> list[_Work]:
        """The items whose MQTT 5 expiry has not passed; the others count as ``expired``."""
        now = time.monotonic()
        live: list[_Work] = []
        for work in items:
            expires = work.inbound.expires_at
            if not expires or now < expires:
                live.append(work)
                continue
            run.metrics.outcome[Outcome.EXPIRED].inc()
            slot = work.slot
            if slot is not None:
                slot.remaining -= 1
                if slot.remaining == 0 and slot.queue.pending[0] is slot:
                    self._schedule(slot.queue)
        return live

    # --- acks, once per loop turn ------------------------------------------------------

    def _schedule(self, queue: AckQueue | None) -> None:
        if queue is not None and not queue.ready:
            queue.ready = True
            self._ready.append(queue)
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Release finished acks (one call per connection); note when all is done."""
        self._flush_pending = False
        ready, self._ready = self._ready, []
        for queue in ready:
            queue.ready = False
            queue.release()
            if not queue.pending and self._acks.get(queue.ack) is queue:
                del self._acks[queue.ack]
        if not self._queued and not self._in_flight:
            self._idle_now.set()

    # --- stopping ----------------------------------------------------------------------

    def stop(self) -> None:
        """Take no new work; ``run()`` returns once the queued work is done."""
        self._filler.stop()  # the partial batches are handled (and acknowledged) too
        self._stopping = True
        for lane in self._lanes:
            _wake(lane.waiter)
        self._space.set()

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - the runner's budget
        """Stop, finish queued and running work within ``timeout`` s, release the acks.

        Returns how much work was abandoned (queued or running when the time ran out, and
        never acknowledged); each is counted as dropped (``abandoned``).
        """
        self.stop()
        before = self._abandoned
        # Wait even when run() has not started yet: its task may be created and not yet
        # scheduled. With nothing queued or running there is nothing to wait for.
        if self._tasks or self._queued or self._in_flight:
            try:
                async with asyncio.timeout(timeout):
                    await self._finished.wait()
            except TimeoutError:
                for task in self._tasks:
                    task.cancel()
                if self._tasks:
                    await asyncio.wait(self._tasks, timeout=CANCEL_GRACE)
        self._abandon_queued()
        self._flush()
        self._dead_letters.close()
        return self._abandoned - before

    def _abandon_queued(self) -> None:
        self.flush_batches()
        queues = [self._shared, *(lane.queue for lane in self._lanes)]
        for queue in queues:
            for queued in queue:
                works = queued.items if isinstance(queued, _Batch) else (queued,)
                for work in works:
                    if work.state == _QUEUED:
                        work.state = _DROPPED
                        self._abandoned += 1
                        self._metrics.dropped[DropReason.ABANDONED].inc()
            queue.clear()
        self._qos0.clear()
        self._queued = self._qos0_queued = 0
