"""Storing events in PostgreSQL: events stored per second, QoS 1, all on one Mosquitto.

Four figures against the same broker (``max_inflight_messages 1000``) and the same private
PostgreSQL cluster (``tests.support.postgres``, default settings: every commit is fsynced):

- the batch route, ``worker run worker.examples.storage`` (one COPY per batch of up to 250);
- the same into a table whose payload column is ``jsonb`` (the example's is ``json``): what
  PostgreSQL's parsing of every payload costs;
- a per-event route, ``worker run bench.insert_app --concurrency 64`` (one INSERT per event);
- the database's own limit: COPY of the same rows in 1,000-row batches on one connection,
  from this process, with nothing else running;
- the no-op worker (``bench.apps:noop``), the ceiling of any route;
- the batch route with 1,000-event batches (``STORAGE_BATCH_SIZE=1000``, the whole window):
  what the example's smaller default batch is for.

Then the batch route in a live stream (``--seconds`` of events published at a steady rate to
a fresh worker): at half its drain rate, for its peak RSS, and at its drain rate on this
Mosquitto and on one with Mosquitto's default window (20 messages in flight per client): a
batch can hold no more than the broker lets out before acknowledgements, so that pair shows
what the window costs. The rate of a live row is events over the time until the last one was
stored. On MQTT 5 (the ``mqtt`` profile's default) the worker announces a Receive Maximum
(``--receive-maximum``, 1000), which bounds what it holds unacknowledged in a drain as in a
live stream.

Workers are timed as in the throughput section (fill while the worker is stopped, time the
drain), the no-op worker and the two batch routes in turn within each run
(``measure_workers``), so that load from elsewhere on the machine weighs on each alike; a
message counts once the worker acknowledged it, which for the storage routes means once its
row was committed. The per-event route uses a quarter of the messages (it is the slow one).
Every worker's rows are counted afterwards, and its peak RSS (VmHWM) and the CPU seconds of
the worker and of PostgreSQL (all its processes) over the drains are recorded: that says
where the time goes.

The section is written into BENCHMARKS.md between its own markers by a full run of it
(``python -m bench --only storage``, or the whole suite); a quick run only prints.
"""

from __future__ import annotations

import datetime
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Final

from bench import payloads
from bench.broker import BenchMosquitto, mosquitto_version
from bench.machine import cpu_seconds, describe, measure_load
from bench.procs import BenchError, WorkerProc
from bench.publisher import Publisher
from bench.report import MB, Target, rate, table
from bench.sections import replace_section
from bench.throughput import SLOWEST, worker_args
from tests.support.postgres import PostgresCluster, PostgresError, postgres_bindir
from worker.messages import Event

BEGIN: Final = "<!-- storage: written by python -m bench --only storage -->"
END: Final = "<!-- /storage -->"
#: Mosquitto's own default window (max_inflight_messages)
DEFAULT_WINDOW: Final = 20
WINDOW: Final = 1000
COPY_BATCH: Final = 1000
BATCH: Final = "batch route: worker.examples.storage"
BATCH_1000: Final = "batch route, STORAGE_BATCH_SIZE=1000 (the whole window)"
BATCH_JSONB: Final = "batch route, payload column jsonb"
PER_EVENT: Final = "per-event route: bench.insert_app, --concurrency 64"
COPY: Final = "PostgreSQL COPY, 1,000-row batches, one connection"
NOOP: Final = "no-op worker: bench.apps:noop"
LIVE: Final = "batch route, live stream at half its drain rate"
#: the same at the full drain rate
LIVE_FULL: Final = "batch route, live stream at its drain rate"
#: ... by an MQTT 3.1.1 worker, on each window: what the window costs. Mosquitto 2.0 applies
#: ``max_inflight_messages`` to MQTT 3.1.1 clients only; an MQTT 5 client's window is its own
#: Receive Maximum (measured: 1,000 unacknowledged messages on a broker set to 20).
LIVE_V3: Final = "batch route, live stream at its drain rate, --mqtt-version 3.1.1"
V3: Final = ("--mqtt-version", "3.1.1")
Say = Callable[[str], None]


@dataclass
class StorageFigure:
    """One consumer's runs."""

    name: str
    window: int | None
    command: str
    messages: int
    rates: list[float] = field(default_factory=list)
    #: rows in the table after its runs (None: it stores nothing)
    rows: int | None = None
    peak_rss: int = 0
    #: CPU seconds per 100,000 events during the timed drains: (worker, PostgreSQL)
    cpu: tuple[float, float] = (0.0, 0.0)
    #: a live stream's rate: (asked, published), events a second
    paced: tuple[float, float] = (0.0, 0.0)

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


@dataclass
class StorageResults:
    """The section's figures and what they were measured on."""

    date: str
    machine: dict[str, str]
    runs: int
    figures: list[StorageFigure] = field(default_factory=list)
    #: the machine's load just before the section (other people's work on a shared machine)
    load: str = ""

    def get(self, name: str, window: int | None = WINDOW) -> StorageFigure | None:
        found = [f for f in self.figures if f.name == name and f.window == window]
        return found[0] if found else None

    def ratio(self, name: str, other: str, window: int | None = WINDOW) -> float:
        """The median of ``name`` over that of ``other`` (0 when either is missing)."""
        a, b = self.get(name), self.get(other, window)
        return a.median / b.median if a and b and b.median else 0.0


# --- measuring ---------------------------------------------------------------------------------


def problem() -> str | None:
    """Why the section cannot run here, or None."""
    if postgres_bindir() is None:
        return "PostgreSQL is not installed (scripts/system-deps.sh installs it)"
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "asyncpg is not installed (make install, or pip install 'asyncpg>=0.30')"
    return None


async def reset(dsn: str, payload_type: str = "json") -> None:
    """Drop the table: each consumer starts from an empty one (its app creates it, or this
    does, with a payload column of ``payload_type`` when it is not the example's json)."""
    import asyncpg

    from worker.examples.storage import SCHEMA

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS device_events")
        if payload_type != "json":
            await conn.execute(SCHEMA.replace(" json ", f" {payload_type} ", 1))
    finally:
        await conn.close()


async def count_rows(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        value: int = await conn.fetchval("SELECT count(*) FROM device_events")
    finally:
        await conn.close()
    return value


def postgres_cpu(cluster: PostgresCluster) -> float:
    """CPU seconds of the postmaster and all its children so far."""
    try:
        master = int((cluster.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = cpu_seconds(master)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            total += cpu_seconds(int(stat.parent.name))
    return total


@dataclass(frozen=True)
class Consumer:
    """A ``worker run`` to measure: its target, flags and environment."""

    name: str
    target: str
    extra: tuple[str, ...] = ()
    stores: bool = True
    env: tuple[tuple[str, str], ...] = ()
    #: the database it stores into (each consumer of one measurement its own)
    database: str = "postgres"
    #: the type of the table's payload column (the table is made beforehand when not json)
    payload_type: str = "json"


async def measure_workers(
    consumers: Sequence[Consumer],
    broker: BenchMosquitto,
    packets: Sequence[bytes],
    runs: int,
    folder: Path,
    cluster: PostgresCluster,
) -> list[StorageFigure]:
    """Start the workers together and drain them in turn, run after run; their figures.

    Each run publishes once while all of them are stopped (each has its own ``$share`` group,
    so each gets every message), then resumes and times one worker after the other: load
    from elsewhere on a shared machine comes and goes, and this way it weighs on each alike.
    Each stores into its own database (``Consumer.database``), where its rows are counted.
    """
    dsns = [cluster.dsn(c.database) for c in consumers]
    for consumer, dsn in zip(consumers, dsns, strict=True):
        await reset(dsn, consumer.payload_type)
    started = [
        await _start(c, i, broker, folder, dsn, len(packets))
        for i, (c, dsn) in enumerate(zip(consumers, dsns, strict=True))
    ]
    pub = await Publisher.connect("127.0.0.1", broker.port, "bench-storage-pub")
    try:
        for run in range(runs + 1):  # the first is a warm-up
            counts = [await proc.counted() for proc, _ in started]  # a stopped one cannot say
            for proc, _ in started:
                proc.pause()
            await pub.send_all(packets, 1)
            for (proc, figure), before in zip(started, counts, strict=True):
                target = before + len(packets)
                await _drain(proc, figure, target, cluster, timed=run > 0)
        for proc, figure in started:
            per = 100_000 / (len(packets) * (runs + 1))
            figure.cpu = (figure.cpu[0] * per, figure.cpu[1] * per)
            figure.peak_rss = proc.peak_rss()
    finally:
        await pub.close()
        for proc, _ in started:
            await proc.stop()
    for consumer, (_, figure), dsn in zip(consumers, started, dsns, strict=True):
        if consumer.stores:
            figure.rows = await count_rows(dsn)
    return [figure for _, figure in started]


async def _start(
    consumer: Consumer, index: int, broker: BenchMosquitto, folder: Path, dsn: str, messages: int
) -> tuple[WorkerProc, StorageFigure]:
    slug = f"w{index}-{broker.max_inflight}-{consumer.target.replace(':', '-')}"[:36]
    # the app ID names the $share group: one group per worker, so each gets every message
    extra = (*consumer.extra, "--app-id", slug)
    proc = WorkerProc(consumer.name, folder / f"{slug}.log", consumer.target,
                      worker_args(broker.port, 1, slug, *extra), STORAGE_DSN=dsn,
                      **dict(consumer.env))  # fmt: skip
    command = " ".join(["worker run", consumer.target, *worker_args(0, 1, "ID", *consumer.extra)])
    await proc.start()
    return proc, StorageFigure(consumer.name, broker.max_inflight, command, messages)


async def _drain(
    proc: WorkerProc, figure: StorageFigure, target: int, cluster: PostgresCluster, timed: bool
) -> None:
    """Resume ``proc`` and wait until its count reached ``target``; rate and CPU into
    ``figure`` (whose ``messages`` is the count per run)."""
    count = figure.messages
    worker0, pg0 = cpu_seconds(proc.pid), postgres_cpu(cluster)
    started = time.monotonic()
    proc.resume()
    finished = await proc.finished_at(target, 30.0 + count / SLOWEST)
    worker, db = figure.cpu
    figure.cpu = (worker + cpu_seconds(proc.pid) - worker0, db + postgres_cpu(cluster) - pg0)
    if timed:
        figure.rates.append(count / (finished - started))


def device(seq: int) -> str:
    """The device ID of ``bench.payloads.topic(seq)``."""
    return f"d{seq % payloads.DEVICES:03d}"


def copy_chunks(count: int) -> list[bytes]:
    """The example's COPY rows for ``count`` benchmark events, in COPY_BATCH-row chunks."""
    from worker.examples.storage import copy_binary

    now = time.time()
    events = [
        Event("sensor", device(seq), "reading", "json", payloads.payload(seq), received_at=now)
        for seq in range(count)
    ]
    return [copy_binary(events[i : i + COPY_BATCH]) for i in range(0, count, COPY_BATCH)]


async def copy_limit(cluster: PostgresCluster, count: int, runs: int) -> StorageFigure:
    """COPY ``count`` rows in 1,000-row batches on one connection, ``runs`` times (one warm-up)."""
    import asyncpg

    from worker.examples.storage import COLUMNS, SCHEMA, TABLE

    dsn = cluster.dsn()
    await reset(dsn)
    chunks = copy_chunks(count)
    figure = StorageFigure(COPY, None, "asyncpg copy_to_table, bench/storage.py", count)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        pg0 = postgres_cpu(cluster)
        for run in range(runs + 1):
            started = time.monotonic()
            for chunk in chunks:
                await conn.copy_to_table(
                    TABLE, source=memoryview(chunk), columns=COLUMNS, format="binary"
                )
            if run:
                figure.rates.append(count / (time.monotonic() - started))
        figure.cpu = (0.0, (postgres_cpu(cluster) - pg0) * 100_000 / (count * (runs + 1)))
        figure.rows = await conn.fetchval(f"SELECT count(*) FROM {TABLE}")
    finally:
        await conn.close()
    return figure


async def live(
    name: str,
    broker: BenchMosquitto,
    rate: float,
    seconds: float,
    folder: Path,
    cluster: PostgresCluster,
    extra: tuple[str, ...] = (),
) -> StorageFigure:
    """A fresh batch worker (with the flags ``extra``) fed ``rate`` events a second for
    ``seconds``: the rate at which they were stored (until the last one) and its peak RSS."""
    dsn = cluster.dsn()
    await reset(dsn)
    args = worker_args(broker.port, 1, "storage-live", *extra)
    log = folder / f"storage-live-{broker.max_inflight}-{rate:.0f}{''.join(extra)}.log"
    proc = WorkerProc(name, log, "worker.examples.storage", args, STORAGE_DSN=dsn)
    command = " ".join(["worker run worker.examples.storage", *worker_args(0, 1, "ID", *extra)])
    figure = StorageFigure(name, broker.max_inflight, command, 0)
    await proc.start()
    pub = await Publisher.connect("127.0.0.1", broker.port, "bench-live-publisher")
    try:
        started = time.monotonic()
        figure.messages = await pub.paced(rate, seconds, 1)
        figure.paced = (rate, figure.messages / seconds)
        finished = await proc.finished_at(figure.messages, 30.0 + figure.messages / SLOWEST)
        figure.rates = [figure.messages / (finished - started)]
        figure.peak_rss = proc.peak_rss()
    finally:
        await pub.close()
        await proc.stop()
    figure.rows = await count_rows(dsn)
    return figure


async def run_section(
    messages: int, runs: int, seconds: float, binary: str, folder: Path, say: Say
) -> StorageResults | None:
    """Every figure of the section; None (said why) when it cannot run here."""
    why = problem()
    if why:
        say(f"  skipped: {why}")
        return None
    from tests.support.postgres import postgres_cluster

    results = StorageResults(
        datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        describe(mosquitto_version(binary)) | software(),
        runs,
        load=measure_load("storage").describe(),
    )
    slow = max(1, messages // 4)
    try:
        with postgres_cluster(settings={}) as cluster:
            results.machine["PostgreSQL"] = cluster.psql("SHOW server_version").strip()
            await _figures(results, (messages, slow, seconds), binary, folder, cluster, say)
    except PostgresError as exc:
        raise BenchError(f"PostgreSQL: {exc}") from exc
    return results


def software() -> dict[str, str]:
    try:
        return {"asyncpg": metadata.version("asyncpg")}
    except metadata.PackageNotFoundError:
        return {"asyncpg": "not installed"}


async def _figures(
    results: StorageResults,
    sizes: tuple[int, int, float],
    binary: str,
    folder: Path,
    cluster: PostgresCluster,
    say: Say,
) -> None:
    messages, slow, seconds = sizes
    full, fewer = payloads.encode_many(messages, 1), payloads.encode_many(slow, 1)
    brokers = {w: BenchMosquitto(binary, folder / f"storage-{w}", max_inflight=w)
               for w in (WINDOW, DEFAULT_WINDOW)}  # fmt: skip
    batch = Consumer(BATCH, "worker.examples.storage")
    whole = Consumer(BATCH_1000, "worker.examples.storage", env=(("STORAGE_BATCH_SIZE", "1000"),),
                     database="whole")  # fmt: skip
    jsonb = Consumer(BATCH_JSONB, "worker.examples.storage", database="jsonb",
                     payload_type="jsonb")  # fmt: skip
    noop = Consumer(NOOP, "bench.apps:noop", stores=False, database="noop")
    per_event = Consumer(PER_EVENT, "bench.insert_app", ("--concurrency", "64"))
    for name in ("noop", "whole", "jsonb"):
        cluster.create_database(name)
    plan = [((noop, batch, jsonb, whole), WINDOW, full), ((per_event,), WINDOW, fewer)]
    for broker in brokers.values():
        broker.folder.mkdir(exist_ok=True)
        broker.start()
    try:
        for consumers, window, packets in plan:
            for figure in await measure_workers(
                consumers, brokers[window], packets, results.runs, folder, cluster
            ):
                results.figures.append(figure)
                say(line(figure))
        drained = results.get(BATCH)
        full_rate = drained.median if drained and drained.median else 2000.0
        for name, window, rate_, extra in ((LIVE, WINDOW, full_rate / 2, ()),
                                           (LIVE_FULL, WINDOW, full_rate, ()),
                                           (LIVE_V3, WINDOW, full_rate, V3),
                                           (LIVE_V3, DEFAULT_WINDOW, full_rate, V3)):  # fmt: skip
            figure = await live(name, brokers[window], rate_, seconds, folder, cluster, extra)
            results.figures.append(figure)
            say(line(figure))
        figure = await copy_limit(cluster, messages, results.runs)
        results.figures.append(figure)
        say(line(figure))
    finally:
        for broker in brokers.values():
            broker.stop()
    for target in targets(results):
        say(f"  {target.what}: {target.figure} ({target.goal}: {target.status})")
    cost = window_cost(results)
    say(f"  window {DEFAULT_WINDOW} vs {WINDOW}, MQTT 3.1.1, live at the drain rate: {cost:.2f}x"
        f" ({published(results)})")  # fmt: skip
    say(f"  batches of 250 vs 1,000 on the 1,000 window: {results.ratio(BATCH, BATCH_1000):.2f}x")
    say(f"  payload column jsonb vs json: {results.ratio(BATCH_JSONB, BATCH):.2f}x")


def cpu_note(r: StorageResults) -> list[str]:
    """Where the time goes, per event, from the CPU columns."""
    batch, noop, jsonb = r.get(BATCH), r.get(NOOP), r.get(BATCH_JSONB)
    if batch is None or noop is None:
        return []
    per = 1e6 / 100_000  # CPU seconds per 100k events -> microseconds per event
    worker, db, bare = batch.cpu[0] * per, batch.cpu[1] * per, noop.cpu[0] * per
    parsed = f" ({jsonb.cpu[1] * per:.1f} us into the jsonb column)" if jsonb else ""
    return [
        f"Per event, the batch route's worker used {worker:.1f} us of CPU (the no-op worker "
        f"{bare:.1f} us) and PostgreSQL {db:.1f} us{parsed}; with Mosquitto, all of it "
        "shares the same two cores.",
        "",
    ]


def window_cost(r: StorageResults) -> float:
    """The live stored rate of an MQTT 3.1.1 worker on Mosquitto's default window over that on
    the 1,000 window."""
    small, large = r.get(LIVE_V3, DEFAULT_WINDOW), r.get(LIVE_V3)
    return small.median / large.median if small and large and large.median else 0.0


def published(r: StorageResults) -> str:
    """What the live streams at the drain rate were asked for and what was published."""
    streams = [f for f in r.figures if f.name in (LIVE_FULL, LIVE_V3)]
    if not streams:
        return "no live stream"
    asked = max(f.paced[0] for f in streams)
    sent = ", ".join(rate(f.paced[1]) for f in streams)
    return f"asked {rate(asked)} events/s, published {sent}"


def line(f: StorageFigure) -> str:
    """One figure as the run prints it."""
    where = f"window {f.window}" if f.window else "no broker"
    stored = f"; {f.rows:,} rows" if f.rows is not None else ""
    rss = f"; peak RSS {f.peak_rss / MB:.1f} MB" if f.peak_rss else ""
    return (f"  {f.name} ({where}): {rate(f.median)} events/s "
            f"(runs {', '.join(rate(x) for x in f.rates)}{stored}{rss})")  # fmt: skip


# --- targets and the section -------------------------------------------------------------------


def _status(ok: bool | None) -> str:
    return "not measured" if ok is None else "met" if ok else "**not met**"


def targets(r: StorageResults) -> list[Target]:
    """Batch route: >= 50,000 events/s, >= 0.7x the no-op worker, >= 8x per event; RSS."""
    batch = r.get(BATCH)
    if batch is None:
        return []
    to_noop, to_each = r.ratio(BATCH, NOOP), r.ratio(BATCH, PER_EVENT)
    rss = batch.peak_rss / MB
    stream = r.get(LIVE)
    live_rss = stream.peak_rss / MB if stream else 0.0
    return [
        Target("batch route, events stored/s", ">= 50,000", rate(batch.median),
               _status(batch.median >= 50_000)),
        Target("batch route vs the no-op worker", ">= 0.70x", f"{to_noop:.2f}x",
               _status(to_noop >= 0.7 if to_noop else None)),
        Target("batch route vs the per-event route", ">= 8x", f"{to_each:.2f}x",
               _status(to_each >= 8 if to_each else None)),
        Target("batch route, peak RSS while draining a backlog", "< 80 MB", f"{rss:.1f} MB",
               _status(rss < 80 if batch.peak_rss else None)),
        Target("batch route, peak RSS in a live stream", "< 80 MB", f"{live_rss:.1f} MB",
               _status(live_rss < 80 if live_rss else None)),
    ]  # fmt: skip


def section(r: StorageResults, command: str) -> str:
    """The section of BENCHMARKS.md, between its markers."""
    rows = []
    noop = r.get(NOOP)
    for f in r.figures:
        drain = noop and noop.median and f.name not in (LIVE, LIVE_FULL, LIVE_V3)
        ratio = f"{f.median / noop.median:.2f}x" if noop and drain else "-"
        rows.append([
            f.name, str(f.window) if f.window else "-", f"{f.messages:,}", rate(f.median), ratio,
            ", ".join(rate(x) for x in f.rates), f"{f.rows:,}" if f.rows is not None else "-",
            f"{f.peak_rss / MB:.1f}" if f.peak_rss else "-",
            f"{f.cpu[0]:.2f} / {f.cpu[1]:.2f}" if any(f.cpu) else "-",
        ])  # fmt: skip
    header = ["consumer", "Mosquitto window", "events per run", "events/s (median)", "x no-op",
              "runs", "rows after", "peak RSS MB", "CPU s per 100k: worker / db"]  # fmt: skip
    target_rows = [[t.what, t.goal, t.figure, t.status] for t in targets(r)]
    lines = [
        BEGIN,
        "## Storing events in PostgreSQL (QoS 1)",
        "",
        f"Written by `{command}` on {r.date}; {r.runs} timed runs per figure after a warm-up.",
        f"Load just before the section (the machine is shared): {r.load}.",
        "",
        *table(["", ""], [[k, v] for k, v in r.machine.items()]),
        *table(["target", "goal", "measured", "status"], target_rows),
        *table(header, rows),
        f"Window {DEFAULT_WINDOW} vs {WINDOW} (an MQTT 3.1.1 worker, live, at the drain rate): "
        f"{window_cost(r):.2f}x the events stored per second. The live streams at the drain "
        f"rate were {published(r)}: the publisher shares the two cores with the worker, "
        "Mosquitto and PostgreSQL, so the windows are compared at the rate it reached. "
        f"Batches of 250 (the example's default) vs 1,000 on the 1,000 window: "
        f"{r.ratio(BATCH, BATCH_1000):.2f}x. A jsonb payload column vs the example's json: "
        f"{r.ratio(BATCH_JSONB, BATCH):.2f}x.",
        "",
        *cpu_note(r),
        "Commands (port, instance and app ID vary; every worker has `STORAGE_DSN`):",
        "",
        *sorted({f"    {f.command}" for f in r.figures}),
        "",
        METHOD,
        END,
    ]
    return "\n".join(lines) + "\n"


METHOD: Final = """\
Method: one private PostgreSQL cluster with its default settings (every commit fsynced), on
a Unix socket, and the table of `worker.examples.storage` (text columns, the payload as
json, a timestamptz, the message key; a BRIN index on the timestamp, no primary key),
dropped before each measurement; the jsonb row's table is the same with a jsonb payload,
made before its worker starts (the example writes the type it finds). Every `worker run`
process freezes its startup objects and raises the young generation's GC threshold
(`worker/collector.py`). Workers are timed as in the throughput section: the broker is
filled while the worker is stopped, then the drain is timed; the no-op worker and the three
batch routes are started together (each its own `$share` group, so each gets every event,
and its own database) and drained in turn within each run, so that load from elsewhere
weighs on each alike. An event counts once the worker acknowledged it, and the storage
routes acknowledge only committed rows ("rows after" counts them: every run plus the
warm-up). The COPY limit is this process sending the same rows, pre-built, in 1,000-row
COPYs on one connection. CPU is user plus system seconds over the drains (warm-up included),
per 100,000 events, of the worker process and of all PostgreSQL processes. Both Mosquittos
have `max_queued_messages 1000000` (a stopped worker's backlog must not be dropped) and
`set_tcp_nodelay true`, as in the rest of `make bench`; "window 20" is Mosquitto's default
`max_inflight_messages`, which Mosquitto applies to MQTT 3.1.1 clients only, hence the 3.1.1
worker on it. A live row publishes at a steady rate for `--seconds` (this process publishes,
so it shares the cores) into a fresh worker; its rate is events over the time until the last
one was stored, its peak RSS that of the fresh worker. The other workers speak MQTT 5 and
announce a Receive Maximum of 1000 (the default of `--receive-maximum`), which Mosquitto
takes as their window whatever its `max_inflight_messages`; it then sends beyond it once
acknowledgements flow, and the worker stops reading until it is back under, so it holds at
most about that many unacknowledged messages plus one socket read, in a drain as in a live
stream."""


def record(text: str, path: Path) -> None:
    """Replace the storage section of ``path`` (or append it)."""
    replace_section(path, text, BEGIN, END)
