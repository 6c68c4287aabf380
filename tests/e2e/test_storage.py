"""``worker run worker.examples.storage`` against a real PostgreSQL: rows, signals, a dead database.

Every test runs real processes: the worker (``worker run``), a private PostgreSQL cluster
(``tests.support.postgres``) and a broker (Mosquitto, or the local platform in process). On
the platform the tests also keep the broker's books: which events it sent to a worker and
which ones the worker acknowledged (a wrapper around the session's own methods, which still
run), so that "nothing acknowledged that is not stored" is checked event by event.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from tests.conftest import MosquittoFactory
from tests.e2e.conftest import Spawn
from tests.support.credentials import API_KEY, TOKEN
from tests.support.fetch import fetch
from tests.support.ports import free_port
from tests.support.postgres import PostgresCluster, postgres_bindir, postgres_cluster
from tests.support.processes import (
    WorkerProcess,
    clean_env,
    event_topic,
    publish_events,
    run_cli,
)
from tests.support.waiting import NETWORK, until
from worker.batching import BatchFailed
from worker.errors import ConfigError
from worker.messages import Event, message_key
from worker.platform import Platform, PlatformConfig
from worker.platform.session import Session
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions

pytestmark = pytest.mark.slow

APP = "worker.examples.storage"
#: the worker's connection on the platform (shared-durable: its own session per instance)
INSTANCE = "s1"
CLIENT_ID = f"A:abc123:store:{INSTANCE}"
WINDOW = 1000
#: an event published after all the others: once it is stored, the platform has handed
#: the worker everything published before it (one member, delivered in order)
SENTINEL = -1


# --- the database ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """One private cluster for the module; each test gets its own database in it.

    No PostgreSQL is a failure, not a skip: make test installs it (scripts/system-deps.sh).
    """
    if postgres_bindir() is None:
        pytest.fail(
            "PostgreSQL is not installed: run scripts/system-deps.sh (make test runs it first)",
            pytrace=False,
        )
    with postgres_cluster() as running:
        yield running


@pytest.fixture
def dsn(cluster: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A fresh database, named after the test."""
    return cluster.create_database(request.node.name[:60])


async def stored(dsn: str) -> Counter[int]:
    """How many rows each event number has (empty before the table exists)."""
    async with asyncio.timeout(NETWORK):
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT (payload->>'n')::int AS n FROM device_events")
        except asyncpg.UndefinedTableError:
            return Counter()
        finally:
            await conn.close()
    return Counter(row["n"] for row in rows)


async def columns(dsn: str) -> dict[str, Any]:
    """One row, every column."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM device_events ORDER BY received_at LIMIT 1")
    finally:
        await conn.close()
    return dict(row)


async def indexes(dsn: str) -> list[str]:
    """The table's indexes as ``name USING method (columns)``."""
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'device_events'"
        )
    finally:
        await conn.close()
    return [f"{r['indexname']} USING {r['indexdef'].partition(' USING ')[2]}" for r in found]


def duplicates(rows: Counter[int]) -> list[int]:
    return sorted(n for n, count in rows.items() if count > 1)


# --- the broker's books ------------------------------------------------------------------------


@dataclass
class Books:
    """Event numbers the platform sent to the worker's client ID, and those it acknowledged."""

    sent: Counter[int] = field(default_factory=Counter)
    acked: Counter[int] = field(default_factory=Counter)

    def snapshot(self) -> Books:
        return Books(Counter(self.sent), Counter(self.acked))


def number(payload: bytes) -> int:
    value: int = orjson.loads(payload)["n"]
    return value


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Books:
    """Keep the books of the worker's session (the sentinel left out); the session's own
    methods still do the work."""
    kept = Books()
    send, on_puback = Session._send, Session.on_puback

    def sending(self: Session, sub: Any, msg: Any, qos: int, out: Any) -> None:
        if self.client_id == CLIENT_ID and qos and (n := number(msg.payload)) != SENTINEL:
            kept.sent[n] += 1
        send(self, sub, msg, qos, out)

    def acknowledged(self: Session, packet_id: int) -> None:
        out = self.inflight.get(packet_id)
        if (
            self.client_id == CLIENT_ID
            and out is not None
            and (n := number(out.msg.payload)) != SENTINEL
        ):
            kept.acked[n] += 1
        on_puback(self, packet_id)

    monkeypatch.setattr(Session, "_send", sending)
    monkeypatch.setattr(Session, "on_puback", acknowledged)
    return kept


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    config = PlatformConfig(
        host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN}, buffer_size=100_000,
        max_inflight=WINDOW,
    )  # fmt: skip
    async with Platform(config) as running:
        yield running


def platform_args(platform: Platform, *more: str) -> tuple[str, ...]:
    return (
        "--auth-key", API_KEY, "--auth-token", TOKEN, "--app-id", "store",
        "--instance-id", INSTANCE, "--host", "127.0.0.1", "--port", str(platform.port), *more,
    )  # fmt: skip


async def publish(platform: Platform, numbers: range, client_id: str = "a:abc123:pub") -> None:
    await publish_events(
        "127.0.0.1", platform.port, numbers, client_id=client_id, username=API_KEY,
        password=TOKEN,
    )  # fmt: skip


def storage_worker(
    spawn: Spawn, name: str, args: tuple[str, ...], dsn: str, **env: str
) -> WorkerProcess:
    return spawn(name, *args, STORAGE_DSN=dsn, **env)


async def settled(worker: WorkerProcess, platform: Platform, dsn: str) -> Counter[int]:
    """Publish the sentinel, wait until it is stored and the worker has finished everything it
    received; the rows then."""
    await publish(platform, range(SENTINEL, SENTINEL + 1), client_id="a:abc123:sentinel")

    async def done() -> bool:
        samples = await worker.metrics()
        received = samples.get('worker_messages_received_total{kind="event"}', 0.0)
        finished = sum(v for k, v in samples.items()
                       if k.startswith("worker_messages_handled_total{"))  # fmt: skip
        return finished >= received and SENTINEL in await stored(dsn)

    await until(done, "the sentinel stored and every received event finished")
    rows = await stored(dsn)
    del rows[SENTINEL]
    return rows


async def start(worker: WorkerProcess) -> None:
    await worker.start(APP)


# --- the tests ---------------------------------------------------------------------------------


@pytest.mark.mosquitto
async def test_every_qos1_event_is_one_row(
    mosquitto_factory: MosquittoFactory, spawn: Spawn, dsn: str
) -> None:
    broker = mosquitto_factory(max_inflight=WINDOW)
    args = ("--profile", "mqtt", "--host", broker.host, "--port", str(broker.port),
            "--org", "abc123", "--app-id", "store", "--instance", "w1")  # fmt: skip
    worker = storage_worker(spawn, "w1", args, dsn)
    await start(worker)
    numbers = range(20_000)
    await publish_events(broker.host, broker.port, numbers)

    async def all_stored() -> bool:
        return sum((await stored(dsn)).values()) >= len(numbers)

    await until(all_stored, "a row for every event")
    rows = await stored(dsn)
    assert set(rows) == set(numbers)
    assert not duplicates(rows)
    row = await columns(dsn)
    assert set(row) == {"device_type", "device_id", "event", "payload", "received_at", "key"}
    assert await indexes(dsn) == ["device_events_received_at USING brin (received_at)"]
    assert (row["device_type"], row["event"]) == ("sensor", "reading")
    assert row["device_id"] == f"d{orjson.loads(row['payload'])['n'] % 50}"
    assert row["received_at"].tzinfo is not None
    n = orjson.loads(row["payload"])["n"]
    assert row["key"] == message_key(event_topic(n), b'{"n": %d}' % n)
    samples = await worker.metrics()
    assert samples['worker_messages_handled_total{outcome="ok",route="store"}'] == len(numbers)


async def test_without_storage_dsn_the_worker_exits_3_naming_it(platform: Platform) -> None:
    code, _, err = await run_cli("run", APP, *platform_args(platform), "--metrics-port", "0")
    assert code == 3, err
    assert "STORAGE_DSN is not set" in err


@pytest.mark.parametrize(
    ("variable", "value", "code", "message"),
    [
        (
            "STORAGE_DSN",
            "postgresql://u:s3cret@127.0.0.1:notaport/db",
            3,
            "STORAGE_DSN is not a PostgreSQL URL that asyncpg can read",
        ),
        (
            "STORAGE_DSN",
            "postgresql://u:s3cret@127.0.0.1:{closed}/db",
            3,
            "cannot use the database of STORAGE_DSN (127.0.0.1:{closed}): ",
        ),
        (
            "STORAGE_BATCH_SIZE",
            "1000000",
            3,
            "STORAGE_BATCH_SIZE='1000000': accepted is a whole number from 1 to 100,000",
        ),
        (
            "STORAGE_RETRY_BACKOFF",
            "nan",
            3,
            "STORAGE_RETRY_BACKOFF='nan': accepted is a number of at least 0",
        ),
    ],
)
async def test_bad_storage_settings_say_what_is_wrong(
    platform: Platform, variable: str, value: str, code: int, message: str
) -> None:
    closed = str(free_port())
    env = clean_env(STORAGE_DSN="postgresql://u@127.0.0.1/db")
    env[variable] = value.format(closed=closed)
    args = (*platform_args(platform), "--metrics-port", "0")
    got, _, err = await run_cli("run", APP, *args, env=env)
    assert got == code, err
    assert message.format(closed=closed) in err
    assert "Traceback" not in err and "s3cret" not in err


async def test_sigterm_mid_stream_stores_what_reached_the_worker_once(
    platform: Platform, spawn: Spawn, dsn: str, books: Books
) -> None:
    # A long max_wait keeps a partial batch open at any moment: SIGTERM must flush it.
    env = {"STORAGE_BATCH_WAIT": "2"}
    first = storage_worker(spawn, "first", platform_args(platform), dsn, **env)
    await start(first)
    numbers = range(20_000)
    stream = asyncio.create_task(publish(platform, numbers))

    async def busy() -> bool:
        return len(await stored(dsn)) >= 1000

    await until(busy, "the first worker storing")
    first.signal(signal.SIGTERM)
    assert await first.wait() == 0
    assert "stopped (0 messages abandoned)" in first.log_text()
    before = books.snapshot()
    at_exit = await stored(dsn)
    await stream

    # Everything the platform sent to the first worker was acknowledged and stored once.
    assert before.sent == before.acked
    assert set(before.acked) <= set(at_exit)
    assert not duplicates(at_exit)

    second = storage_worker(spawn, "second", platform_args(platform), dsn)
    await start(second)
    rows = await settled(second, platform, dsn)
    assert not duplicates(rows), f"stored twice: {duplicates(rows)[:10]}"
    # The rest: delivered to the restarted worker, or lost at the broker and counted here.
    lost = set(numbers) - set(rows)
    assert not lost & set(books.sent), "sent to a worker yet not stored"
    assert set(rows) == set(books.acked)


async def kill_9_mid_stream(
    platform: Platform, spawn: Spawn, dsn: str, books: Books
) -> tuple[Books, Counter[int], range]:
    """Kill -9 the worker while it stores a stream, restart it: (books at the kill, rows at
    the end, the numbers published)."""
    first = storage_worker(spawn, "first", platform_args(platform), dsn)
    await start(first)
    numbers = range(20_000)
    stream = asyncio.create_task(publish(platform, numbers))

    async def busy() -> bool:
        return len(await stored(dsn)) >= 2000

    await until(busy, "the first worker storing")
    first.signal(signal.SIGKILL)
    await first.wait()
    at_kill = books.snapshot()
    await stream
    second = storage_worker(spawn, "second", platform_args(platform), dsn)
    await start(second)
    return at_kill, await settled(second, platform, dsn), numbers


async def test_kill_9_every_acknowledged_event_is_stored(
    platform: Platform, spawn: Spawn, dsn: str, books: Books
) -> None:
    at_kill, rows, _ = await kill_9_mid_stream(platform, spawn, dsn, books)
    assert set(books.acked) <= set(rows), "acknowledged, yet not stored"
    # A second row only for an event the broker had not seen acknowledged at the kill.
    assert not set(duplicates(rows)) & set(at_kill.acked)
    assert len(duplicates(rows)) <= WINDOW


async def test_kill_9_durable_identity_gets_every_event_after_restart(
    platform: Platform, spawn: Spawn, dsn: str, books: Books
) -> None:
    at_kill, rows, numbers = await kill_9_mid_stream(platform, spawn, dsn, books)
    missing = set(numbers) - set(rows)
    in_flight = missing & set(at_kill.sent)
    assert not missing, (
        f"{len(missing)} events never stored: {len(in_flight)} sent to the killed worker and "
        f"not acknowledged, {len(missing - in_flight)} published while no instance was there"
    )


async def test_database_stopped_mid_stream_retries_then_dead_letters(
    platform: Platform, spawn: Spawn, books: Books, tmp_path: Path
) -> None:
    letters = tmp_path / "dead.jsonl"
    env = {"STORAGE_RETRIES": "2", "STORAGE_RETRY_BACKOFF": "0.1",
           "WORKER_DEAD_LETTER": f"file:{letters}"}  # fmt: skip
    with postgres_cluster() as own:  # this test stops its database: not the module's
        dsn = own.dsn()
        worker = storage_worker(spawn, "w", platform_args(platform), dsn, **env)
        await start(worker)
        await publish(platform, range(2000))

        async def first_stored() -> bool:
            return len(await stored(dsn)) >= 2000

        await until(first_stored, "the first events stored")
        own.stop("fast")
        down = range(2000, 2500)
        await publish(platform, down)

        def dead_lettered() -> set[int]:
            if not letters.exists():
                return set()
            lines = letters.read_bytes().splitlines()
            return {number(orjson.loads(line)["payload"].encode()) for line in lines}

        await until(lambda: set(down) <= dead_lettered(), "the events dead-lettered")
        assert worker.proc is not None and worker.proc.returncode is None, "the worker exited"
        status, body = await worker.readyz()
        assert status == 503
        assert "degraded" in body and "store" in body, body
        records = [orjson.loads(line) for line in letters.read_bytes().splitlines()]
        assert {r["route"] for r in records} == {"store"}
        assert all(r["attempts"] == 3 for r in records), {r["attempts"] for r in records}
        # said as the database that went away, whatever asyncpg raised (a socket's
        # FileNotFoundError, a connection closed mid-COPY, the server shutting down)
        why = "ConnectError: the database of STORAGE_DSN ("
        assert all(r["error"].startswith(why) for r in records), {r["error"] for r in records}
        assert all("cannot be reached: " in r["error"] for r in records)
        assert "cannot be reached" in body, body
        live, _, _ = await fetch(worker.port, "/livez")
        assert live == 200

        own.start()
        up = range(2500, 3000)
        await publish(platform, up)

        async def back() -> bool:
            return set(up) <= set(await stored(dsn))

        await until(back, "storing again once the database is back")
        await until(lambda: _ready(worker), "/readyz 200 again")
        rows = await stored(dsn)
        # Nothing acknowledged that is neither stored nor dead-lettered.
        assert set(books.acked) <= set(rows) | dead_lettered()
        assert not duplicates(rows)


#: payloads refused, each alone: NUL escaped in a string (json would store it, and every
#: ``->>`` on the row would then fail; jsonb refuses it), half a surrogate pair (the same),
#: not JSON, not even UTF-8, nested deeper than PostgreSQL's stack allows
REFUSED = {
    20: (b'{"n": 1000, "note": "\\u0000"}', "\\u0000 in a string"),
    35: (b'{"n": 1001, "note": "\\ud800"}', "half a surrogate pair"),
    50: (b'{"n": 1002, oops}', "json"),
    80: (b"\xff\xfe{}", "UTF8"),
    90: (b"[" * 20_000 + b"]" * 20_000, "StatementTooComplexError: stack depth limit exceeded"),
}


@pytest.mark.parametrize("payload_type", ["json", "jsonb"])
async def test_a_payload_the_database_refuses_fails_alone(
    platform: Platform, spawn: Spawn, dsn: str, tmp_path: Path, payload_type: str
) -> None:
    await make_table(dsn, payload_type)
    letters = tmp_path / "dead.jsonl"
    env = {"STORAGE_RETRIES": "1", "STORAGE_RETRY_BACKOFF": "0.05",
           "WORKER_DEAD_LETTER": f"file:{letters}"}  # fmt: skip
    worker = storage_worker(spawn, "w", platform_args(platform), dsn, **env)
    await start(worker)
    # The route hands payloads over undecoded: each of these is refused, alone, whatever
    # the payload column's type.
    pub = AiomqttTransport()
    await pub.connect(ConnectOptions("127.0.0.1", platform.port, "a:abc123:pub",
                                     username=API_KEY, password=TOKEN))  # fmt: skip
    try:
        for n in range(100):
            if n in REFUSED:
                await pub.publish(event_topic(1000 + n), REFUSED[n][0], qos=1)
            await pub.publish(event_topic(n), b'{"n": %d}' % n, qos=1)
    finally:
        await pub.disconnect()
    await until(letters.exists, "the refused events dead-lettered")
    await until(lambda: len(letters.read_bytes().splitlines()) >= len(REFUSED), "whole letters")
    records = [orjson.loads(line) for line in letters.read_bytes().splitlines()]
    # Refused bytes would be refused again: dead-lettered after one run, not retried.
    sent = {_as_recorded(payload): why for payload, why in REFUSED.values()}
    assert sorted((r["route"], r["payload"], r["attempts"]) for r in records) == sorted(
        ("store", payload, 1) for payload in sent
    )
    # Each dead letter says why its own event was refused, on one line.
    got = {r["payload"]: r["error"] for r in records}
    assert all(e.startswith("RefusedRow: ") and "\n" not in e for e in got.values()), got
    assert all(why in got[payload] for payload, why in sent.items()), got

    async def the_rest_stored() -> bool:
        return set(await stored(dsn)) == set(range(100))

    await until(the_rest_stored, "the other 100 events stored")
    samples = await worker.metrics()
    handled = 'worker_messages_handled_total{outcome="%s",route="store"}'
    assert samples[handled % "ok"] == 100
    assert samples[handled % "dead_lettered"] == len(REFUSED)
    assert await payload_type_of(dsn) == payload_type


async def test_postgresql_reads_back_exactly_the_json_unreadable_lets_through(dsn: str) -> None:
    from tests.test_storage_example import UNREADABLE_CASES

    conn = await asyncpg.connect(dsn)
    checked = 0
    try:
        for payload, why in UNREADABLE_CASES:
            try:
                text = payload.decode()
                await conn.fetchval("SELECT $1::json IS NOT NULL", text)
            except (UnicodeDecodeError, asyncpg.DataError):
                continue  # not JSON: PostgreSQL refuses it itself, nothing to agree on
            # jsonb takes every string apart, as ->> does on a json row
            try:
                await conn.fetchval("SELECT $1::json::jsonb IS NOT NULL", text)
                readable = True
            except (asyncpg.DataError, asyncpg.ProgramLimitExceededError):
                readable = False
            assert readable == (why is None), (payload[:60], why)
            checked += 1
    finally:
        await conn.close()
    assert checked >= 20


def _as_recorded(payload: bytes) -> str:
    """A payload as the dead-letter record holds it: text, or base64 when not UTF-8."""
    try:
        return payload.decode()
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode()


async def make_table(dsn: str, payload_type: str) -> None:
    """Create the example's table beforehand, with a payload column of ``payload_type``."""
    from worker.examples.storage import SCHEMA

    schema = SCHEMA.replace("payload     json ", f"payload     {payload_type} ")
    assert f"payload     {payload_type} " in schema
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(schema)
    finally:
        await conn.close()


async def payload_type_of(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        found: str = await conn.fetchval(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'device_events' AND column_name = 'payload'"
        )
    finally:
        await conn.close()
    return found


EXAMPLE_COLUMNS = [
    "device_type text NOT NULL", "device_id text NOT NULL", "event text NOT NULL",
    "payload json NOT NULL", "received_at timestamptz NOT NULL", "key text NOT NULL",
]  # fmt: skip


def table_of(changed: dict[str, str | None], added: tuple[str, ...] = ()) -> str:
    """The example's columns, some changed (None: left out), then ``added`` ones."""
    columns = [changed.get(c.split()[0], c) for c in EXAMPLE_COLUMNS]
    return ", ".join([c for c in columns if c is not None] + list(added))


#: tables made beforehand, and what the startup hook says of each (None: it takes them)
TABLES = {
    "payload text": (table_of({"payload": "payload text NOT NULL"}),
                     "device_events.payload is text: accepted is a column of type json or jsonb"),
    "key uuid": (table_of({"key": "key uuid NOT NULL"}),
                 "device_events.key is uuid: accepted is a column of type text or character "
                 "varying"),
    "no key": (table_of({"key": None}),
               "device_events.key is missing: accepted is a column of type text or character "
               "varying"),
    "site NOT NULL": (table_of({}, ("site text NOT NULL",)),
                      "device_events.site is NOT NULL without a default, and the rows written "
                      "here have no value for it: accepted are only device_type, device_id, "
                      "event, payload, received_at, key, and other columns that are nullable or "
                      "have a default"),
    "columns it does not write": (table_of({}, (
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "site text NOT NULL DEFAULT 'x'",
        "note text", "doubled bigint GENERATED ALWAYS AS (2) STORED")), None),
    "varchar device_id": (table_of({"device_id": "device_id varchar(64) NOT NULL"}), None),
}  # fmt: skip


@pytest.mark.parametrize("table", TABLES)
async def test_the_table_is_checked_at_startup(
    dsn: str, monkeypatch: pytest.MonkeyPatch, table: str
) -> None:
    from worker.examples import storage

    columns, message = TABLES[table]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE TABLE device_events ({columns})")
    finally:
        await conn.close()
    monkeypatch.setenv("STORAGE_DSN", dsn)
    if message is None:
        await storage.open_pool()
        try:
            await storage.store([Event("sensor", "d1", "reading", "json", b'{"n": 1}')])
        finally:
            await storage.close_pool()
        assert await stored(dsn) == Counter({1: 1})
        return
    with pytest.raises(ConfigError) as caught:
        await storage.open_pool()
    assert str(caught.value) == message
    assert storage._storage.pool is None


async def test_a_payload_column_altered_while_running_is_followed(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from worker.examples import storage

    def batch(n: int) -> list[Event]:
        return [Event("sensor", "d1", "reading", "json", b'{"n": %d}' % n)]

    monkeypatch.setenv("STORAGE_DSN", dsn)
    conn = await asyncpg.connect(dsn)
    await storage.open_pool()
    try:
        await storage.store(batch(1))
        for first, kind in ((10, "jsonb"), (20, "json")):
            await conn.execute(
                f"ALTER TABLE device_events ALTER payload TYPE {kind} USING payload::{kind}"
            )
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="worker.examples.storage"):
                # four batches in flight at once, as the pool allows: all made for the old
                # type; the first to be refused notices, and every one is made again
                await asyncio.gather(*(storage.store(batch(first + i)) for i in range(4)))
            assert [r.getMessage() for r in caplog.records] == [
                f"public.device_events.payload is {kind} now: writing {kind}"
            ]
    finally:
        await storage.close_pool()
        await conn.close()
    assert await stored(dsn) == Counter([1, 10, 11, 12, 13, 20, 21, 22, 23])


async def _ready(worker: WorkerProcess) -> bool:
    return (await worker.readyz())[0] == 200


# --- the COPY rows, value by value ----------------------------------------------------------


#: values a text format would have to escape (a backslash in a JSON string, JSON whitespace
#: that is a line break, a carriage return or a tab, an event name with a tab and a
#: backslash), and text beyond ASCII
AWKWARD = [
    ("sensor", "d-1", "reading", b'{"note": "a\\"b\\\\c\\n", "n": 1}'),
    ("sensor", "d-2", "reading", b'{\n\t"n": 2,\r\n "s": "\\u00e9t\xc3\xa9"\n}'),
    ("sensor", "d.3", "tab\there\\", b'{"n": 3}'),
    ("sensor", "d_4", "reading", '{"n": 4, "s": "\u00e9\u20ac\U0001f600"}'.encode()),
]


@pytest.mark.parametrize("payload_type", ["json", "jsonb"])
async def test_store_writes_each_value_as_it_came(
    dsn: str, monkeypatch: pytest.MonkeyPatch, payload_type: str
) -> None:
    from worker.examples import storage
    from worker.messages import Event

    if payload_type != "json":
        await make_table(dsn, payload_type)
    events = [
        Event(kind, device, name, "json", payload, received_at=1_700_000_000.25 + i // 2)
        for i, (kind, device, name, payload) in enumerate(AWKWARD + [AWKWARD[3]] * 3)
    ]
    monkeypatch.setenv("STORAGE_DSN", dsn)
    await storage.open_pool()
    try:
        await storage.store(events)
    finally:
        await storage.close_pool()
    conn = await asyncpg.connect(dsn)
    try:
        got = await conn.fetch(f"SELECT {', '.join(storage.COLUMNS)} FROM device_events")
    finally:
        await conn.close()
    # json keeps the device's text byte for byte, jsonb its meaning (compared keys sorted)
    exact = payload_type == "json"

    def same(text: str | bytes) -> bytes:
        data = text.encode() if isinstance(text, str) else text
        return data if exact else _canonical(data)

    stored_rows = sorted(
        (r["device_type"], r["device_id"], r["event"], same(r["payload"]),
         r["received_at"].timestamp(), r["key"])
        for r in got
    )  # fmt: skip
    sent = sorted(
        (e.device_type, e.device_id, e.event, same(e.payload), e.received_at, e.key) for e in events
    )
    assert stored_rows == sent
    assert await payload_type_of(dsn) == payload_type


def _canonical(text: str | bytes) -> bytes:
    """JSON with its keys sorted: the same for jsonb's text and the device's."""
    return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS)


# --- the guide's recipe for storing each event once -------------------------------------------

GUIDE = Path(__file__).parents[2] / "docs" / "guide" / "storage.md"


def guide_block(language: str, after: str) -> str:
    """The first ``language`` code block of the storage guide after the text ``after``."""
    text = GUIDE.read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```", start)]


async def test_the_guides_store_once_recipe_skips_duplicates(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.examples import storage

    def event(n: int, device: str = "d1") -> Event:
        return Event("sensor", device, "reading", "json", b'{"n": %d}' % n)

    monkeypatch.setenv("STORAGE_DSN", dsn)
    await storage.open_pool()
    conn = await asyncpg.connect(dsn)
    try:
        await storage.store([event(1), event(2), event(2)])  # the plain COPY: 2 stored twice
        # the switch-over: duplicates removed, the index made, the recipe's _copy in place
        await conn.execute(guide_block("sql", "keeping each event's first copy"))
        recipe: dict[str, Any] = dict(vars(storage))
        exec(guide_block("python", "replace `write_rows` in `__init__.py`"), recipe)
        monkeypatch.setattr(storage, "write_rows", recipe["write_rows"])
        await storage.store([event(2), event(3), event(3), event(4, "d2")])
        for n, kind in ((5, "jsonb"), (6, "json")):  # followed, staging and all
            await conn.execute(
                f"ALTER TABLE device_events ALTER payload TYPE {kind} USING payload::{kind}"
            )
            await storage.store([event(4, "d2"), event(n), event(n)])
    finally:
        await storage.close_pool()
        await conn.close()
    assert await stored(dsn) == Counter({1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1})


# --- the database the example is given, and what it does with it ------------------------------


async def test_a_database_not_in_utf8_is_refused_at_startup(
    cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.examples import storage

    cluster.psql("CREATE DATABASE latin TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'")
    monkeypatch.setenv("STORAGE_DSN", cluster.dsn("latin"))
    with pytest.raises(ConfigError) as caught:
        await storage.open_pool()
    assert str(caught.value) == (
        f"the database of STORAGE_DSN ({cluster.folder}:5432) is encoded in LATIN1: accepted is "
        "UTF8, the encoding of JSON (CREATE DATABASE ... ENCODING 'UTF8')"
    )
    assert storage._storage.pool is None
    conn = await asyncpg.connect(cluster.dsn("latin"))
    try:  # refused before anything was made in it
        assert await conn.fetchval("SELECT to_regclass('device_events')") is None
    finally:
        await conn.close()


async def test_a_table_made_beforehand_needs_only_the_right_to_insert(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An administrator's table in a schema of its own, on a search path of two schemas:
    the worker's role may only INSERT into it, and creates nothing."""
    from worker.examples import storage

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE SCHEMA a; CREATE SCHEMA b; "
            f"CREATE TABLE b.device_events ({table_of({})}); "
            "CREATE ROLE writer LOGIN; ALTER ROLE writer SET search_path = a, b; "
            "GRANT USAGE ON SCHEMA a, b TO writer; GRANT INSERT ON b.device_events TO writer"
        )
        monkeypatch.setenv("STORAGE_DSN", dsn.replace("postgres@", "writer@", 1))
        with caplog.at_level(logging.INFO, logger="worker.examples.storage"):
            await storage.open_pool()
        try:
            await storage.store([Event("sensor", "d1", "reading", "json", b'{"n": 1}')])
        finally:
            await storage.close_pool()
        assert "storing into b.device_events at " in caplog.text
        assert await conn.fetchval("SELECT count(*) FROM b.device_events") == 1
        assert await conn.fetchval("SELECT to_regclass('a.device_events')") is None
    finally:
        await conn.close()


async def test_a_role_that_may_not_insert_is_refused_at_startup(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.examples import storage

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"CREATE TABLE device_events ({table_of({})}); CREATE ROLE reader LOGIN; "
            "GRANT SELECT ON device_events TO reader"
        )
    finally:
        await conn.close()
    monkeypatch.setenv("STORAGE_DSN", dsn.replace("postgres@", "reader@", 1))
    with pytest.raises(ConfigError) as caught:
        await storage.open_pool()
    assert str(caught.value) == (
        "the role of STORAGE_DSN may not INSERT into public.device_events: accepted is a role "
        "that may (GRANT INSERT ON public.device_events TO ...)"
    )


async def test_one_refused_row_is_found_by_halving_the_batch(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row a CHECK constraint refuses, in a batch of 250: it alone is refused, in 16
    COPYs after the batch's own (one per event would be 250)."""
    from worker.examples import storage

    conn = await asyncpg.connect(dsn)
    await conn.execute(
        f"CREATE TABLE device_events ({table_of({}, ('CHECK (device_id <> $$bad$$)',))})"
    )
    await conn.close()
    events = [Event("sensor", f"d{n}", "reading", "json", b'{"n": %d}' % n) for n in range(250)]
    events[137] = Event("sensor", "bad", "reading", "json", b'{"n": 137}')
    copies: list[bytes] = []
    copy = storage._copy

    async def counted(rows: bytes, jsonb: bool) -> None:
        copies.append(rows)
        await copy(rows, jsonb)

    monkeypatch.setattr(storage, "_copy", counted)
    monkeypatch.setenv("STORAGE_DSN", dsn)
    await storage.open_pool()
    try:
        with pytest.raises(BatchFailed) as caught:
            await storage.store(events)
    finally:
        await storage.close_pool()
    assert [(e, type(why).__name__) for e, why in caught.value.errors] == [
        (events[137], "RefusedRow")
    ]
    assert "CheckViolationError" in str(caught.value.errors[0][1])
    assert len(copies) == 1 + 16
    assert sum((await stored(dsn)).values()) == 249


async def test_a_table_dropped_while_running_is_a_storage_error_on_one_line(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.examples import storage

    monkeypatch.setenv("STORAGE_DSN", dsn)
    await storage.open_pool()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE device_events")
        with pytest.raises(storage.StorageError) as caught:
            await storage.store([Event("sensor", "d1", "reading", "json", b'{"n": 1}')])
    finally:
        await storage.close_pool()
        await conn.close()
    assert str(caught.value) == (
        "PostgreSQL refused the COPY into public.device_events: UndefinedTableError: relation "
        '"device_events" does not exist'
    )
