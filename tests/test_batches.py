"""Batch routes: when batches are handed over, acks, retries, partial failures, order, metrics."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.support.pipeline import Acks, event, new_metrics, running, value
from tests.support.waiting import QUICK, until
from worker import (
    App,
    Batch,
    BatchFailed,
    ConnectError,
    Event,
    PermanentError,
    RegistrationError,
)
from worker.deadletter import DeadLetter
from worker.metrics import Metrics
from worker.pipeline import DEGRADED_AFTER
from worker.testing import TestClient

LONG = 30.0  # a max_wait no test may wait for


class Sink:
    """A dead-letter sink that keeps the letters."""

    name = "memory"

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def put(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


def batch_app(
    handler: Callable[[list[Event]], Awaitable[None]], batch: Batch, **options: Any
) -> App:
    app = App()
    app.event(device_type="sensor", batch=batch, name="store", **options)(handler)
    return app


class Recorder:
    """A batch handler that records the batches it got (their ``n``), optionally held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold: asyncio.Event | None = None
        self.got = asyncio.Event()

    async def handle(self, events: list[Event]) -> None:
        self.batches.append([e.data["n"] for e in events])
        self.got.set()
        if self.hold is not None:
            await self.hold.wait()

    @property
    def handled(self) -> list[int]:
        return [n for b in self.batches for n in b]


def handled(metrics: Metrics, outcome: str) -> float:
    return value(metrics, "worker_messages_handled_total", route="store", outcome=outcome)


# --- registration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"max_size": 0}, "Batch(max_size=0): accepted is a whole number from 1 to 100,000"),
        ({"max_size": 2.5}, "max_size=2.5"),
        ({"max_wait": -1}, "Batch(max_wait=-1): accepted is seconds from 0 to 60"),
        ({"max_wait": float("nan")}, "max_wait=nan"),
        ({"decode": "no"}, "Batch(decode='no'): accepted is True or False"),
    ],
)
def test_bad_batch_options_say_what_is_accepted(options: dict[str, Any], says: str) -> None:
    with pytest.raises(RegistrationError, match=re.escape(says)):
        Batch(**options)


def test_batch_must_be_a_batch() -> None:
    app = App()
    with pytest.raises(RegistrationError, match="batch=100: accepted is None or Batch"):
        app.event(batch=100)  # type: ignore[arg-type]


# --- when a batch is handed over --------------------------------------------------------


async def test_a_full_batch_goes_at_once_and_all_its_messages_are_acked() -> None:
    recorder, acks = Recorder(), Acks()
    app = batch_app(recorder.handle, Batch(max_size=3, max_wait=LONG))
    async with running(app, concurrency=2) as pipeline:
        await pipeline.put([event("d1", n) for n in range(7)], acks)
        assert await acks.wait_for(6) == [1, 2, 3, 4, 5, 6]
        assert recorder.batches == [[0, 1, 2], [3, 4, 5]]
    assert recorder.batches[2] == [6]  # the partial batch went with the drain


async def test_a_qos0_batch_waits_max_wait_for_more() -> None:
    recorder = Recorder()
    app = batch_app(recorder.handle, Batch(max_size=100, max_wait=0.2))
    loop = asyncio.get_running_loop()
    async with running(app) as pipeline:
        started = loop.time()
        await pipeline.put([event("d1", 0, qos=0)], Acks())
        await asyncio.sleep(0.05)  # a second read while the batch waits: same batch
        await pipeline.put([event("d1", 1, qos=0)], Acks())
        async with asyncio.timeout(QUICK):
            await recorder.got.wait()
        assert loop.time() - started >= 0.19
        assert recorder.batches == [[0, 1]]


async def test_max_wait_zero_hands_over_what_one_read_brought() -> None:
    recorder = Recorder()
    app = batch_app(recorder.handle, Batch(max_size=100, max_wait=0))
    async with running(app) as pipeline:
        await pipeline.put([event("d1", n, qos=0) for n in range(3)], Acks())
        await until(lambda: recorder.handled == [0, 1, 2], "the read's batch", within=QUICK)
        await pipeline.put([event("d1", 3, qos=0)], Acks())
        await until(lambda: len(recorder.batches) == 2, "the second read's batch", within=QUICK)
    assert recorder.batches == [[0, 1, 2], [3]]


async def test_a_qos1_batch_never_waits_for_what_the_broker_holds_back() -> None:
    """The broker sends no more until it gets acks: a stalled stream hands the batch over."""
    recorder, acks = Recorder(), Acks()
    app = batch_app(recorder.handle, Batch(max_size=1000, max_wait=LONG))
    async with running(app) as pipeline:
        await pipeline.put([event("d1", n) for n in range(5)], acks)  # a window of 5
        assert await acks.wait_for(5) == [1, 2, 3, 4, 5]
        assert recorder.batches == [[0, 1, 2, 3, 4]]
        # the window was learned: 5 unacknowledged messages hand the batch over at once
        recorder.hold = asyncio.Event()
        await pipeline.put([event("d1", n, packet_id=n + 1) for n in range(5, 10)], acks)
        await until(lambda: len(recorder.batches) == 2, "the second batch", within=QUICK)
        recorder.hold.set()
        await acks.wait_for(10)


async def test_drain_hands_over_the_partial_batch_and_acks_it() -> None:
    recorder, acks = Recorder(), Acks()
    app = batch_app(recorder.handle, Batch(max_size=100, max_wait=LONG))
    async with running(app) as pipeline:
        await pipeline.put([event("d1", n, qos=0) for n in range(3)], acks)
        assert recorder.batches == []
        assert await pipeline.drain(QUICK) == 0
    assert recorder.batches == [[0, 1, 2]]


# --- acknowledgements --------------------------------------------------------------------


async def test_acks_wait_for_the_batch_and_keep_arrival_order_across_routes() -> None:
    recorder, acks = Recorder(), Acks()
    recorder.hold = asyncio.Event()
    app = batch_app(recorder.handle, Batch(max_size=1, max_wait=LONG))
    singles: list[int] = []

    @app.event(device_type="meter")
    async def single(e: Event) -> None:
        singles.append(e.data["n"])

    async with running(app, concurrency=4) as pipeline:
        batch = [event("d1", 0), event("m1", 1, device_type="meter"), event("d1", 2)]
        await pipeline.put(batch, acks)
        await until(lambda: singles == [1] and recorder.batches, "the single route", within=QUICK)
        await asyncio.sleep(0.01)
        assert acks.ids == []  # message 2 is done, but message 1 is still in the batch
        recorder.hold.set()
        assert await acks.wait_for(3) == [1, 2, 3]


# --- failures ---------------------------------------------------------------------------


async def test_an_exception_retries_the_whole_batch_then_dead_letters_each_message() -> None:
    calls: list[int] = []

    async def failing(events: list[Event]) -> None:
        calls.append(len(events))
        raise ConnectionError("database down")

    sink, metrics, acks = Sink(), new_metrics(), Acks()
    app = batch_app(failing, Batch(max_size=3, max_wait=LONG), retries=2, retry_backoff=0,
                    dead_letter=sink)  # fmt: skip
    async with running(app, metrics) as pipeline:
        await pipeline.put([event("d1", n) for n in range(3)], acks)
        assert await acks.wait_for(3) == [1, 2, 3]  # dead-lettered, then acknowledged
    assert calls == [3, 3, 3]
    assert [(d.topic, d.reason, d.attempts) for d in sink.letters] == [
        ("iot-2/type/sensor/id/d1/evt/reading/fmt/json", "error", 3)
    ] * 3
    assert all(d.error == "ConnectionError: database down" for d in sink.letters)
    assert handled(metrics, "dead_lettered") == 3
    assert handled(metrics, "ok") == 0


async def four_in_one_batch(
    handler: Callable[[list[Event]], Awaitable[None]],
) -> tuple[Sink, Metrics]:
    """Events n=0..3 of one device as one batch (one retry, no backoff), until all are acked."""
    sink, metrics, acks = Sink(), new_metrics(), Acks()
    app = batch_app(handler, Batch(max_size=4, max_wait=LONG), retries=1, retry_backoff=0,
                    dead_letter=sink)  # fmt: skip
    async with running(app, metrics) as pipeline:
        await pipeline.put([event("d1", n) for n in range(4)], acks)
        await acks.wait_for(4)
    return sink, metrics


async def test_batch_failed_retries_and_dead_letters_only_the_messages_it_names() -> None:
    runs: list[list[int]] = []

    async def partly(events: list[Event]) -> None:
        runs.append([e.data["n"] for e in events])
        bad = [e for e in events if e.data["n"] % 2]
        if bad:
            raise BatchFailed(bad, "constraint violated")

    sink, metrics = await four_in_one_batch(partly)
    assert runs == [[0, 1, 2, 3], [1, 3]]
    assert [d.payload for d in sink.letters] == [b'{"n": 1}', b'{"n": 3}']
    assert {d.error for d in sink.letters} == {"BatchFailed: 2 messages of the batch failed: " +
                                                "constraint violated"}  # fmt: skip
    assert handled(metrics, "ok") == 2
    assert handled(metrics, "dead_lettered") == 2


async def test_batch_failed_gives_each_message_its_own_error_and_retry_decision() -> None:
    runs: list[list[int]] = []

    async def partly(events: list[Event]) -> None:
        runs.append([e.data["n"] for e in events])
        errors: list[tuple[Event, BaseException | str]] = []
        for e in events:
            n = e.data["n"]
            if n == 1:
                errors.append((e, PermanentError("n=1 can never be stored")))  # not retried
            elif n == 2:
                errors.append((e, ValueError("n=2 refused")))
            elif n == 3:
                errors.append((e, "n=3 refused"))
        if errors:
            raise BatchFailed(errors=errors)

    sink, metrics = await four_in_one_batch(partly)
    assert runs == [[0, 1, 2, 3], [2, 3]]
    assert sorted((d.payload, d.error, d.attempts) for d in sink.letters) == [
        (b'{"n": 1}', "PermanentError: n=1 can never be stored", 1),
        (b'{"n": 2}', "ValueError: n=2 refused", 2),
        (b'{"n": 3}', "BatchFailed: 1 message of the batch failed: n=3 refused", 2),
    ]
    assert handled(metrics, "ok") == 1
    assert handled(metrics, "dead_lettered") == 3


async def test_a_batch_failure_is_logged_with_how_many_of_how_many_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def odd(events: list[Event]) -> None:
        if len(events) == 4:
            raise BatchFailed([e for e in events if e.data["n"] % 2], "odd")
        raise ConnectError("the database cannot be reached")

    with caplog.at_level(logging.WARNING, logger="worker"):
        await four_in_one_batch(odd)
    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records
             if r.name == "worker.pipeline"]  # fmt: skip
    failed = "BatchFailed: 2 messages of the batch failed: odd"
    assert lines == [
        ("WARNING", f"store: {failed} on 2 of a batch of 4 (run 1); retrying", None),
        # a WorkerError says what happened: one line, no traceback
        ("ERROR", "store failed on a batch of 2 (run 2): ConnectError: the database cannot "
                  "be reached", None),
    ]  # fmt: skip


async def test_a_batch_that_gets_through_on_a_retry_is_ok() -> None:
    runs: list[list[int]] = []

    async def flaky(events: list[Event]) -> None:
        runs.append([e.data["n"] for e in events])
        if len(runs) == 1:
            raise ConnectError("the database cannot be reached")

    sink, metrics = await four_in_one_batch(flaky)
    assert runs == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert sink.letters == []
    assert handled(metrics, "ok") == 4
    assert handled(metrics, "dead_lettered") == 0


async def test_after_a_failed_run_only_what_the_last_run_refused_is_dead_lettered() -> None:
    runs: list[list[int]] = []

    async def then_one(events: list[Event]) -> None:
        runs.append([e.data["n"] for e in events])
        if len(runs) == 1:
            raise ConnectError("the database cannot be reached")
        raise BatchFailed(errors=[(events[1], PermanentError("n=1 can never be stored"))])

    sink, metrics = await four_in_one_batch(then_one)
    assert runs == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert [(d.payload, d.attempts) for d in sink.letters] == [(b'{"n": 1}', 2)]
    assert handled(metrics, "ok") == 3


async def test_batch_failed_names_messages_whatever_the_handler_did_to_its_list() -> None:
    """Sorted in place, then grown: the messages it names are still the ones that fail."""

    async def reorder(events: list[Event]) -> None:
        events.sort(key=lambda e: -e.data["n"])  # n=3 first
        events.append(events[-1])  # n=0, twice
        refused = [e for e in events if e.data["n"] == 3]
        raise BatchFailed(errors=[(refused[0], PermanentError("n=3 can never be stored"))])

    sink, metrics = await four_in_one_batch(reorder)
    assert [(d.payload, d.attempts) for d in sink.letters] == [(b'{"n": 3}', 1)]
    assert handled(metrics, "ok") == 3


async def test_a_timeout_error_of_the_handlers_own_keeps_its_message() -> None:
    async def own(events: list[Event]) -> None:
        raise TimeoutError("statement_timeout hit")

    sink, metrics, acks = Sink(), new_metrics(), Acks()
    app = batch_app(own, Batch(max_size=2, max_wait=LONG), timeout=LONG, dead_letter=sink)
    async with running(app, metrics) as pipeline:
        await pipeline.put([event("d1", n) for n in range(2)], acks)
        await acks.wait_for(2)
    # not "timed out after ...": the route's timeout did not end the run
    assert {(d.reason, d.error) for d in sink.letters} == {
        ("error", "TimeoutError: statement_timeout hit")
    }


async def test_a_payload_that_fails_to_decode_in_the_handler_is_its_decode_error_alone() -> None:
    """decode=False: the handler reads ``data``, one payload is not JSON. That message is a
    decode_error, not retried; the others' run failed with it and they are run again."""
    runs: list[list[bytes]] = []

    async def reads(events: list[Event]) -> None:
        runs.append([e.payload for e in events])
        for e in events:
            e.data  # noqa: B018 - the read that fails on the bad payload

    sink, metrics, acks = Sink(), new_metrics(), Acks()
    app = batch_app(reads, Batch(max_size=3, max_wait=LONG, decode=False), retries=1,
                    retry_backoff=0, dead_letter=sink)  # fmt: skip
    async with running(app, metrics) as pipeline:
        batch = [event("d1", 0), event("d1", 1, payload=b"{not json"), event("d1", 2)]
        await pipeline.put(batch, acks)
        await acks.wait_for(3)
    assert runs == [[b'{"n": 0}', b"{not json", b'{"n": 2}'], [b'{"n": 0}', b'{"n": 2}']]
    assert [(d.reason, d.payload, d.attempts) for d in sink.letters] == [
        ("decode_error", b"{not json", 1)
    ]
    assert handled(metrics, "ok") == 2


async def test_messages_given_up_while_others_are_retried_get_their_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def mixed(events: list[Event]) -> None:
        if len(events) == 4:
            raise BatchFailed(errors=[(events[0], PermanentError("n=0 can never be stored")),
                                      (events[1], ValueError("n=1 not yet"))])  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="worker"):
        sink, _ = await four_in_one_batch(mixed)
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.pipeline"]
    assert lines == [
        "store: BatchFailed: 2 messages of the batch failed: PermanentError: n=0 can never be "
        "stored (and 1 other reason: see the dead letters) on 2 of a batch of 4 (run 1); retrying",
        "store: giving up on 1 of them (run 1): PermanentError: n=0 can never be stored",
    ]
    assert [d.payload for d in sink.letters] == [b'{"n": 0}']


async def test_batch_failed_naming_a_copy_fails_the_whole_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def copies(events: list[Event]) -> None:
        e = events[0]
        raise BatchFailed([Event(e.device_type, e.device_id, e.event, e.format, e.payload)], "x")

    with caplog.at_level(logging.WARNING, logger="worker"):
        sink, metrics = await four_in_one_batch(copies)
    assert len(sink.letters) == 4  # none acknowledged as handled on a guess
    assert handled(metrics, "ok") == 0
    assert "named 1 messages that are not in the batch it was given, so the whole batch" in (
        caplog.text
    )


def test_batch_failed_says_when_its_messages_failed_for_other_reasons_too() -> None:
    first, second, third = (Event("sensor", f"d{n}", "reading", "json", b"{}") for n in range(3))
    one = BatchFailed(errors=[(first, ValueError("x")), (second, ValueError("x"))])
    assert str(one) == "2 messages of the batch failed: ValueError: x"
    twice = BatchFailed([first, first], "x")
    assert str(twice) == "1 message of the batch failed: x"
    two = BatchFailed(errors=[(first, ValueError("x")), (second, KeyError("k")), (third, "y")])
    assert str(two) == (
        "3 messages of the batch failed: ValueError: x (and 2 other reasons: see the dead letters)"
    )


async def test_a_timeout_fails_the_batch() -> None:
    async def slow(events: list[Event]) -> None:
        await asyncio.sleep(LONG)

    sink, metrics = Sink(), new_metrics()
    app = batch_app(slow, Batch(max_size=2, max_wait=LONG), timeout=0.05, dead_letter=sink)
    async with running(app, metrics) as pipeline:
        await pipeline.put([event("d1", n) for n in range(2)], Acks())
        await until(lambda: len(sink.letters) == 2, "two dead letters", within=QUICK)
    assert {(d.reason, d.error) for d in sink.letters} == {("timeout", "timed out after 0.05 s")}


async def test_a_payload_that_does_not_decode_stays_out_of_the_batch() -> None:
    recorder, metrics, acks = Recorder(), new_metrics(), Acks()
    app = batch_app(recorder.handle, Batch(max_size=3, max_wait=LONG), dead_letter="none")
    async with running(app, metrics) as pipeline:
        batch = [event("d1", 0), event("d1", 1, payload=b"{not json"), event("d1", 2)]
        await pipeline.put(batch, acks)
        assert await acks.wait_for(3) == [1, 2, 3]
    assert recorder.batches == [[0, 2]]
    assert handled(metrics, "decode_error") == 1
    assert handled(metrics, "ok") == 2


async def test_with_decode_false_every_payload_reaches_the_handler_as_it_came() -> None:
    got: list[list[bytes]] = []

    async def keep(events: list[Event]) -> None:
        got.append([e.payload for e in events])

    metrics, acks = new_metrics(), Acks()
    app = batch_app(keep, Batch(max_size=3, max_wait=LONG, decode=False), dead_letter="none")
    async with running(app, metrics) as pipeline:
        batch = [event("d1", 0), event("d1", 1, payload=b"{not json"), event("d1", 2)]
        await pipeline.put(batch, acks)
        assert await acks.wait_for(3) == [1, 2, 3]
    assert got == [[b'{"n": 0}', b"{not json", b'{"n": 2}']]
    assert handled(metrics, "ok") == 3
    assert handled(metrics, "decode_error") == 0


async def test_a_route_that_keeps_failing_is_degraded_until_it_succeeds() -> None:
    failing = True

    async def store(events: list[Event]) -> None:
        if failing:
            raise ConnectionRefusedError("connection refused")

    app = batch_app(store, Batch(max_size=1, max_wait=LONG), dead_letter="none")
    async with running(app) as pipeline:
        acks = Acks()
        for n in range(DEGRADED_AFTER - 1):
            await pipeline.put([event("d1", n)], acks)
        await acks.wait_for(DEGRADED_AFTER - 1)
        assert pipeline.degraded() is None
        await pipeline.put([event("d1", 9)], acks)
        await acks.wait_for(DEGRADED_AFTER)
        assert pipeline.degraded() == (
            f"degraded: route 'store' failed {DEGRADED_AFTER} times in a row "
            "(last: ConnectionRefusedError: connection refused)"
        )
        failing = False
        await pipeline.put([event("d1", 10)], acks)
        await acks.wait_for(DEGRADED_AFTER + 1)
        assert pipeline.degraded() is None


# --- order, overflow, metrics -------------------------------------------------------------


async def test_ordered_keeps_each_devices_messages_in_order_across_batches() -> None:
    seen: dict[str, list[int]] = {}

    async def store(events: list[Event]) -> None:
        for _ in range(len(events) % 3):
            await asyncio.sleep(0)  # batches take different times
        for e in events:
            seen.setdefault(e.device_id, []).append(e.data["n"])

    app = batch_app(store, Batch(max_size=3, max_wait=0), ordered=True)
    async with running(app, concurrency=4) as pipeline:
        acks = Acks()
        reads = [[event(f"d{n % 5}", n, packet_id=n + 1) for n in range(i, i + 7)]
                 for i in range(0, 70, 7)]  # fmt: skip
        for read in reads:
            await pipeline.put(read, acks)
        await acks.wait_for(70)
    for device, ns in seen.items():
        assert ns == sorted(ns), device
    assert sum(len(ns) for ns in seen.values()) == 70


async def test_qos0_overflow_drops_the_oldest_batched_messages_and_counts_them() -> None:
    recorder, metrics = Recorder(), new_metrics()
    recorder.hold = asyncio.Event()
    app = batch_app(recorder.handle, Batch(max_size=5, max_wait=LONG))
    async with running(app, metrics, intake_size=10, overflow="drop-oldest") as pipeline:
        await pipeline.put([event("d1", n, qos=0) for n in range(5)], Acks())  # a full batch
        await until(lambda: recorder.batches, "the first batch to run", within=QUICK)
        await pipeline.put([event("d1", n, qos=0) for n in range(5, 25)], Acks())
        assert pipeline.intake_depth <= 10
        recorder.hold.set()
    dropped = value(metrics, "worker_messages_dropped_total", reason="intake_full")
    assert dropped == 10
    assert handled(metrics, "ok") + dropped == 25  # each message counted once, as one or other
    assert recorder.handled == [0, 1, 2, 3, 4, *range(15, 25)]


async def test_the_batch_size_histogram_counts_each_handler_run() -> None:
    recorder, metrics = Recorder(), new_metrics()
    app = batch_app(recorder.handle, Batch(max_size=4, max_wait=LONG))
    async with running(app, metrics) as pipeline:
        acks = Acks()
        await pipeline.put([event("d1", n) for n in range(10)], acks)
        await acks.wait_for(10)
    assert value(metrics, "worker_batch_size_count", route="store") == 3
    assert value(metrics, "worker_batch_size_sum", route="store") == 10
    assert value(metrics, "worker_batch_size_bucket", route="store", le="2.0") == 1
    assert value(metrics, "worker_handler_seconds_count", route="store") == 3
    assert handled(metrics, "ok") == 10


# --- the testing toolkit ------------------------------------------------------------------


async def test_test_client_sends_a_batch_and_reports_each_message() -> None:
    recorder = Recorder()
    app = batch_app(recorder.handle, Batch(max_size=10, max_wait=LONG))
    async with TestClient(app) as client:
        deliveries = await client.send_events(
            "sensor", "s1", "reading", [{"n": n} for n in range(3)]
        )
        single = await client.send_event("sensor", "s1", "reading", {"n": 3})
    assert recorder.batches == [[0, 1, 2], [3]]
    assert [d.outcome for d in deliveries] == ["ok"] * 3
    assert single.ok


async def test_test_client_raises_the_batch_handlers_error() -> None:
    async def broken(events: list[Event]) -> None:
        raise ValueError("no table")

    app = batch_app(broken, Batch(max_size=10, max_wait=LONG))
    async with TestClient(app) as client:
        with pytest.raises(ValueError, match="no table"):
            await client.send_events("sensor", "s1", "reading", [{"n": 0}, {"n": 1}])
