"""Store every device event as a row in PostgreSQL; a message is acknowledged once it is stored.

Run it (QoS 1, the default, so that the broker redelivers what was not stored)::

    pip install -e '.[postgres]'    # from a checkout; or pip install 'asyncpg>=0.30'
    export STORAGE_DSN=postgresql://telemetry:secret@db.example.com/telemetry
    worker run worker.examples.storage --profile mqtt --host broker.example.com

Every JSON event (``iot-2/type/+/id/+/evt/+/fmt/json``) becomes one row of ``device_events``
(created at startup if it does not exist). Events come to the handler in batches of up to
``STORAGE_BATCH_SIZE`` (default 250), or whatever arrived within ``STORAGE_BATCH_WAIT``
seconds (default 0.05) of the first. 250 is a quarter of the usual in-flight window (1,000
messages a broker sends before it waits for acknowledgements): four batches are stored at
once while the broker keeps sending, where a batch as large as the window would leave the
worker waiting for each commit before the broker sent more. Each batch is one ``COPY`` of
its rows in COPY's binary format (``copy_binary``), and the worker acknowledges its messages only
after the COPY committed. When the COPY fails (the database is down, say), the whole batch is
retried (``STORAGE_RETRIES``, default 3, with a backoff from ``STORAGE_RETRY_BACKOFF``
seconds, default 0.5, doubling), then each of its messages goes to the dead-letter sink
(``--dead-letter`` / ``WORKER_DEAD_LETTER``) and is acknowledged: nothing is acknowledged that
is neither stored nor dead-lettered. Payloads reach the handler undecoded
(``Batch(decode=False)``): PostgreSQL checks the JSON itself, so the worker does not parse it
first. The ``payload`` column is ``json``, the device's text exactly as sent; a table made
beforehand with a ``jsonb`` payload is written as ``jsonb`` (the type is read at startup).
A payload the database refuses (not JSON, not UTF-8, or ``\\u0000`` in a ``jsonb`` column)
fails alone: the batch is then stored event by event, and only the refused events are
dead-lettered, at once (the same bytes would be refused again, so they are not retried).
Delivery is at least once: a message whose COPY committed but whose acknowledgement never
reached the broker (the worker was killed in between) is stored again if the broker delivers
it again, with the same ``key`` (a digest of the topic and the payload);
``docs/guide/storage.md`` shows how to make rows unique.

``STORAGE_DSN`` is required: without it (or without asyncpg) ``worker run`` exits 3 saying so.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from worker import App, Batch, BatchFailed, ConfigError, ConnectError, Event, PermanentError
from worker.routes import MAX_BATCH_SIZE, MAX_BATCH_WAIT

try:
    import asyncpg
except ImportError:  # the startup hook says what to install; importing stays possible
    asyncpg = None

#: PostgreSQL refusing a row for what it holds: a data exception (not JSON, not UTF-8, ...)
#: or a limit (JSON nested deeper than its stack allows). The same bytes would be refused
#: again, and the other rows of the batch are not at fault.
ROW_REFUSED: Final = (asyncpg.DataError, asyncpg.ProgramLimitExceededError) if asyncpg else ()

TABLE: Final = "device_events"
COLUMNS: Final = ("device_type", "device_id", "event", "payload", "received_at", "key")
#: An append-only log. No surrogate key: nothing refers to a row, and ``key`` identifies an
#: event (a bigint identity primary key would cost PostgreSQL about 1.2 us more per row). A
#: BRIN index serves time ranges: rows arrive in ``received_at`` order, so it stays a few
#: pages for millions of rows and costs next to nothing to keep up to date. The payload is
#: ``json``: the device's text as sent (key order, duplicate keys and all), which PostgreSQL
#: only checks; ``jsonb`` would cost it twice the work per row (PAYLOAD_TYPES).
SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    device_type text        NOT NULL,
    device_id   text        NOT NULL,
    event       text        NOT NULL,
    payload     json        NOT NULL,
    received_at timestamptz NOT NULL,
    key         text        NOT NULL
);
CREATE INDEX IF NOT EXISTS {TABLE}_received_at ON {TABLE} USING brin (received_at)"""
#: connections at most; a batch holds one for its COPY
POOL_SIZE: Final = 4
#: seconds one COPY (with waiting for a connection) may take before the batch counts as failed
TIMEOUT: Final = 30.0
#: seconds to close the pool at shutdown before its connections are cut
CLOSE_DEADLINE: Final = 10.0
#: the payload column's types this module writes; the table's own is read at startup
PAYLOAD_TYPES: Final = ("json", "jsonb")
PAYLOAD_TYPE: Final = f"""
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = '{TABLE}'::regclass AND attname = 'payload' AND NOT attisdropped"""


def _setting(
    name: str, default: str, kind: type[int] | type[float], low: float, high: float | None = None
) -> Any:
    """An environment variable as a number from ``low`` (to ``high``); ConfigError naming it."""
    raw = os.environ.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= (high or math.inf):
        accepted = "a whole number" if kind is int else "a number"
        bounds = f"of at least {low:g}" if high is None else f"from {low:g} to {high:,g}"
        raise ConfigError(f"{name}={raw!r}: accepted is {accepted} {bounds}")
    return value


BATCH_SIZE: Final[int] = _setting("STORAGE_BATCH_SIZE", "250", int, 1, MAX_BATCH_SIZE)
BATCH_WAIT: Final[float] = _setting("STORAGE_BATCH_WAIT", "0.05", float, 0, MAX_BATCH_WAIT)
RETRIES: Final[int] = _setting("STORAGE_RETRIES", "3", int, 0)
RETRY_BACKOFF: Final[float] = _setting("STORAGE_RETRY_BACKOFF", "0.5", float, 0)

app = App()


class _Storage:
    """The connection pool, open between the startup and the shutdown hooks."""

    pool: Any = None
    #: whether the table's payload column is jsonb (else json)
    jsonb: bool = False


_storage = _Storage()


@app.on_startup
async def open_pool() -> None:
    """Connect to ``STORAGE_DSN`` and create the table if it is not there."""
    if asyncpg is None:
        raise ConfigError(
            "worker.examples.storage needs asyncpg (the postgres extra): "
            "pip install 'asyncpg>=0.30'"
        )
    dsn = os.environ.get("STORAGE_DSN", "").strip()
    if not dsn:
        raise ConfigError(
            "STORAGE_DSN is not set: accepted is a PostgreSQL URL such as "
            "postgresql://user:password@host:5432/database"
        )
    try:
        # No connection floor (min_size=0): while the database is down, asyncpg would log a
        # traceback each time it fails to restore the floor; the batches' retries say it.
        pool = await asyncpg.create_pool(dsn, min_size=0, max_size=POOL_SIZE, reset=_keep_session)
        await pool.execute(SCHEMA)
        payload_type = await pool.fetchval(PAYLOAD_TYPE)
    except ValueError as exc:
        raise ConfigError(
            f"STORAGE_DSN is not a PostgreSQL URL that asyncpg can read ({exc}): accepted is "
            "postgresql://user:password@host:5432/database"
        ) from exc
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # the message names the host, never the whole DSN: a DSN may carry a password
        raise ConnectError(
            f"cannot use the database of STORAGE_DSN ({_where(dsn)}): {exc}"
        ) from exc
    if payload_type not in PAYLOAD_TYPES:
        await pool.close()
        raise ConfigError(
            f"{TABLE}.payload is {payload_type or 'missing'}: accepted is a payload column "
            f"of type {' or '.join(PAYLOAD_TYPES)}"
        )
    _storage.pool, _storage.jsonb = pool, payload_type == "jsonb"


def _where(dsn: str) -> str:
    """``host:port`` of a DSN (its first host), without the user or the password."""
    try:
        parts = urlsplit(dsn)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "its host"
    socket = parse_qs(parts.query).get("host")
    where = socket[0] if socket else host or "localhost"
    return f"{where}:{port or 5432}"


async def _keep_session(connection: Any) -> None:
    """What the pool does to a connection it gets back: nothing.

    By default it resets the session (one more round trip per batch); the handler never
    changes session state (no SET, LISTEN, cursors or advisory locks), so there is nothing
    to reset.
    """


@app.on_shutdown
async def close_pool() -> None:
    """Close the pool (after the worker drained, so no COPY is running)."""
    pool, _storage.pool = _storage.pool, None
    if pool is None:
        return
    try:
        await asyncio.wait_for(pool.close(), CLOSE_DEADLINE)
    except TimeoutError:
        pool.terminate()


@app.event(
    format="json",
    # decode=False: PostgreSQL checks the JSON; the worker need not parse it first
    batch=Batch(max_size=BATCH_SIZE, max_wait=BATCH_WAIT, decode=False),
    timeout=TIMEOUT,
    retries=RETRIES,
    retry_backoff=RETRY_BACKOFF,
    name="store",
)
async def store(events: list[Event]) -> None:
    """Store the batch with one COPY; its messages are acknowledged when this returns."""
    refused: list[tuple[Event, BaseException]] = []
    rows = copy_binary(events, jsonb=_storage.jsonb)
    # What json would store but no query could read is behind a \u escape, and escapes are
    # rare: one search of the batch's rows says whether any payload needs a closer look.
    if b"\\u" in rows:
        refused = _unreadable_events(events)
        if refused:
            out = {id(e) for e, _ in refused}
            events = [e for e in events if id(e) not in out]
            rows = copy_binary(events, jsonb=_storage.jsonb)
    try:
        if events:
            await _copy(rows)
    except ROW_REFUSED:
        # One payload the database refuses (not JSON, not even UTF-8, nested too deep) must
        # not fail the others: store them one by one and report only the refused ones (they
        # alone are dead-lettered).
        refused += await _copy_each(events)
    if refused:
        raise BatchFailed(errors=refused)


async def _copy(rows: bytes) -> None:
    """One COPY of ``rows`` (``copy_binary``'s), committed when this returns."""
    pool = _storage.pool
    if pool is None:
        raise ConnectError("the pool is closed (the worker is shutting down)")
    # a memoryview, because asyncpg takes bytes for a file's path
    await pool.copy_to_table(TABLE, source=memoryview(rows), columns=COLUMNS, format="binary")


class RefusedRow(PermanentError):
    """An event whose row PostgreSQL refuses (ROW_REFUSED: not JSON, not UTF-8, ...).

    The same bytes would be refused again, so it is dead-lettered at once, not retried.
    """


async def _copy_each(events: Sequence[Event]) -> list[tuple[Event, BaseException]]:
    """Store ``events`` one by one; those the database refused, each with why."""
    refused: list[tuple[Event, BaseException]] = []
    for event in events:
        try:
            await _copy(copy_binary([event], jsonb=_storage.jsonb))
        except ROW_REFUSED as exc:
            # each dead letter says why its own event was refused
            refused.append((event, RefusedRow(f"{type(exc).__name__}: {exc}")))
    return refused


def _unreadable_events(events: Sequence[Event]) -> list[tuple[Event, BaseException]]:
    """The events whose payload json would store but no query could read, each with why."""
    return [
        (e, RefusedRow(why))
        for e in events
        if b"\\u" in e.payload and (why := unreadable(e.payload))
    ]


#: what a JSON string may hold that PostgreSQL cannot turn into text: NUL, half a surrogate pair
_UNREADABLE: Final = re.compile("[\x00\ud800-\udfff]")


def unreadable(payload: bytes) -> str | None:
    """Why PostgreSQL would store ``payload`` as ``json`` but fail to read it back, or None.

    ``json`` keeps the text as sent and checks only its syntax, so a string escaping NUL
    (``\\u0000``) or half a surrogate pair (``\\ud800``) is stored, and then every ``->>``
    on that row fails (``cannot be converted to text``), which breaks each query that reads
    it. ``jsonb`` refuses such text when it is stored. So the row is refused for either
    column type, before the COPY: the event is dead-lettered with its bytes instead. Only a
    payload with an escape can hold one; a payload that is not JSON is left for PostgreSQL
    to refuse, with its own message.
    """
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending += item.keys()
            pending += item.values()
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str) and (found := _UNREADABLE.search(item)):
            what = "\\u0000" if found.group() == "\x00" else "half a surrogate pair"
            return f"the payload has {what} in a string, which PostgreSQL cannot read as text"
    return None


#: COPY's binary format: a signature, flags and a header extension length (both 0) ...
_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
#: ... then per row its number of fields, per field its length and bytes; -1 fields ends it
_TRAILER: Final = b"\xff\xff"
_ROW: Final = len(COLUMNS).to_bytes(2, "big")
_pack_length = struct.Struct(">i").pack
#: json's binary form is the JSON text; jsonb's is a version number (1), then the text
_JSONB: Final = b"\x01"
#: a timestamptz is microseconds since PostgreSQL's epoch, as a 64-bit integer
_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_TIMESTAMP: Final = _pack_length(8)
#: the first three fields of a row, per topic (or per device type, device ID and event, for
#: an Event made without a topic); cleared when full
_starts: dict[object, bytes] = {}
STARTS_KEPT: Final = 10_000


def copy_binary(events: Sequence[Event], jsonb: bool = False) -> bytes:
    """The rows of ``events`` in COPY's binary format, COLUMNS order, for a ``json`` payload
    column (or ``jsonb`` when ``jsonb``).

    The payload goes as the device's bytes, which PostgreSQL checks (a payload that is not
    UTF-8 JSON is refused, a DataError); no value needs escaping, whatever it holds.
    ``received_at`` is converted once per distinct value (a batch's events mostly arrived in
    the same read from the socket, so they share it), and the first three fields once per
    topic. ``key`` is ``Event.key``, a digest of the topic and the payload bytes: a
    redelivered message has the same key as its first copy.

    Why binary: PostgreSQL reads it with less work than COPY's text format (no delimiters to
    find, no timestamp to parse): 5.8 to 7.1 us of its CPU a row against 7.0 to 8.6 for text
    lines, in five alternating runs of the same 200,000 rows into the same table (then with
    a jsonb payload) on the 2-core machine of BENCHMARKS.md. Made this way it costs the
    worker about what the text lines did (1.0 to 1.2 us an event, the key included). asyncpg's
    ``copy_records_to_table`` writes the binary format too, but encodes each value of each
    record on its own: 4.8 us an event.
    """
    out = [_HEADER]
    extend = out.extend
    version = _JSONB if jsonb else b""
    starts = _starts
    last_at, stamp = -1.0, b""
    for e in events:
        where = e.topic or (e.device_type, e.device_id, e.event)
        start = starts.get(where)
        if start is None:
            start = _start(e, where)
        if e.received_at != last_at:
            last_at = e.received_at
            at = datetime.fromtimestamp(last_at, UTC) - _PG_EPOCH
            stamp = _TIMESTAMP + (at // _MICROSECOND).to_bytes(8, "big", signed=True)
        payload, key = e.payload, e.key.encode()
        length = _pack_length(len(payload) + len(version))
        extend((start, length, version, payload, stamp, _pack_length(len(key)), key))
    out.append(_TRAILER)
    return b"".join(out)


def _start(e: Event, where: object) -> bytes:
    """A row's field count and its first three fields, kept for the next rows alike."""
    fields = [_ROW]
    for value in (e.device_type, e.device_id, e.event):
        data = value.encode()
        fields += (_pack_length(len(data)), data)
    if len(_starts) >= STARTS_KEPT:
        _starts.clear()
    start = _starts[where] = b"".join(fields)
    return start
