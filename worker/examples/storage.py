"""Store every device event as a row in PostgreSQL; a message is acknowledged once it is stored.

Run it (QoS 1, the default, so that the broker redelivers what was not stored)::

    pip install 'worker[postgres]'
    export STORAGE_DSN=postgresql://telemetry:secret@db.example.com/telemetry
    worker run worker.examples.storage --profile mqtt --host broker.example.com

Every JSON event (``iot-2/type/+/id/+/evt/+/fmt/json``) becomes one row of ``device_events``
(created at startup if it does not exist). Events come to the handler in batches of up to
``STORAGE_BATCH_SIZE`` (default 250), or whatever arrived within ``STORAGE_BATCH_WAIT``
seconds (default 0.05) of the first. 250 is a quarter of the usual in-flight window (1,000
messages a broker sends before it waits for acknowledgements): four batches are stored at
once while the broker keeps sending, where a batch as large as the window would leave the
worker waiting for each commit before the broker sent more. Each batch is one ``COPY`` of
its rows in COPY's text format (``copy_text``), and the worker acknowledges its messages only
after the COPY committed. When the COPY fails (the database is down, say), the whole batch is
retried (``STORAGE_RETRIES``, default 3, with a backoff from ``STORAGE_RETRY_BACKOFF``
seconds, default 0.5, doubling), then each of its messages goes to the dead-letter sink
(``--dead-letter`` / ``WORKER_DEAD_LETTER``) and is acknowledged: nothing is acknowledged that
is neither stored nor dead-lettered. Payloads reach the handler undecoded
(``Batch(decode=False)``): PostgreSQL parses the JSON itself, so the worker does not parse it
first. A payload it refuses (not JSON, not UTF-8, or jsonb's ``\\u0000``) fails alone: the
batch is then stored event by event, and only the refused events are retried and
dead-lettered. Delivery is at least once: a message whose COPY committed but
whose acknowledgement never reached the broker (the worker was killed in between) is stored
again if the broker delivers it again, with the same ``key`` (a digest of the topic and the
payload); ``docs/guide/storage.md`` shows how to make rows unique.

``STORAGE_DSN`` is required: without it (or without asyncpg) ``worker run`` exits 3 saying so.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from worker import App, Batch, BatchFailed, ConfigError, ConnectError, Event

try:
    import asyncpg
except ImportError:  # the startup hook says what to install; importing stays possible
    asyncpg = None

TABLE: Final = "device_events"
COLUMNS: Final = ("device_type", "device_id", "event", "payload", "received_at", "key")
#: An append-only log. No surrogate key: nothing refers to a row, and ``key`` identifies an
#: event (a bigint identity primary key would cost PostgreSQL a fifth more work per row). A
#: BRIN index serves time ranges: rows arrive in ``received_at`` order, so it stays a few
#: pages for millions of rows and costs next to nothing to keep up to date.
SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    device_type text        NOT NULL,
    device_id   text        NOT NULL,
    event       text        NOT NULL,
    payload     jsonb       NOT NULL,
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


def _setting(name: str, default: str, kind: type[int] | type[float], low: float) -> Any:
    """An environment variable as a number of at least ``low``; ConfigError naming it."""
    raw = os.environ.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < low:
        accepted = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name}={raw!r}: accepted is {accepted} of at least {low:g}")
    return value


BATCH_SIZE: Final[int] = _setting("STORAGE_BATCH_SIZE", "250", int, 1)
BATCH_WAIT: Final[float] = _setting("STORAGE_BATCH_WAIT", "0.05", float, 0)
RETRIES: Final[int] = _setting("STORAGE_RETRIES", "3", int, 0)
RETRY_BACKOFF: Final[float] = _setting("STORAGE_RETRY_BACKOFF", "0.5", float, 0)

app = App()


class _Storage:
    """The connection pool, open between the startup and the shutdown hooks."""

    pool: Any = None


_storage = _Storage()


@app.on_startup
async def open_pool() -> None:
    """Connect to ``STORAGE_DSN`` and create the table if it is not there."""
    if asyncpg is None:
        raise ConfigError("worker.examples.storage needs asyncpg: pip install 'worker[postgres]'")
    dsn = os.environ.get("STORAGE_DSN", "").strip()
    if not dsn:
        raise ConfigError(
            "STORAGE_DSN is not set: accepted is a PostgreSQL URL such as "
            "postgresql://user:password@host:5432/database"
        )
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=POOL_SIZE, reset=_keep_session)
        await pool.execute(SCHEMA)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        # the message names the variable, never its value: a DSN may carry a password
        raise ConnectError(f"cannot use the database of STORAGE_DSN: {exc}") from exc
    _storage.pool = pool


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
    # decode=False: jsonb parses the payload; the worker need not parse it first
    batch=Batch(max_size=BATCH_SIZE, max_wait=BATCH_WAIT, decode=False),
    timeout=TIMEOUT,
    retries=RETRIES,
    retry_backoff=RETRY_BACKOFF,
    name="store",
)
async def store(events: list[Event]) -> None:
    """Store the batch with one COPY; its messages are acknowledged when this returns."""
    try:
        await _copy(events)
    except (asyncpg.DataError, UnicodeDecodeError):
        # One payload the database refuses (or that is not even text) must not fail the
        # others: store them one by one and report only the refused ones (they alone are
        # retried, then dead-lettered).
        await _copy_each(events)


async def _copy(events: Sequence[Event]) -> None:
    pool = _storage.pool
    if pool is None:
        raise ConnectError("the pool is closed (the worker is shutting down)")
    # a memoryview, because asyncpg takes bytes for a file's path
    await pool.copy_to_table(TABLE, source=memoryview(copy_text(events)), columns=COLUMNS)


async def _copy_each(events: Sequence[Event]) -> None:
    refused: list[tuple[Event, BaseException]] = []
    for event in events:
        try:
            await _copy([event])
        except (asyncpg.DataError, UnicodeDecodeError) as exc:
            refused.append((event, exc))  # each dead letter says why its event was refused
    if refused:
        raise BatchFailed(errors=refused)


#: COPY's text format: a backslash starts an escape, tab separates columns, newline ends a row
_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(events: Sequence[Event]) -> bytes:
    """The rows of ``events`` in COPY's text format, COLUMNS order: one line per event.

    The payload goes as the device's JSON text, which PostgreSQL parses (UnicodeDecodeError
    when it is not UTF-8), and ``received_at`` as ISO 8601, converted once per distinct
    value: a batch's events mostly arrived in the same read from the socket, so they share
    it. ``key`` is ``Event.key``, a digest of the topic and the payload bytes: a redelivered
    message has the same key as its first copy.

    Why text and not asyncpg's ``copy_records_to_table``: that encodes each value of each
    record on its own. COPYing 250-event batches, the client's CPU per event (the key
    included) was 3.3 us with these lines against 4.8 us with records. Most batches need no
    escaping at all; one that does (a backslash in a JSON string, a line break between JSON
    tokens) is made again with every value escaped.
    """
    lines = _lines(events)
    text = "".join(lines)
    rows = len(lines)
    if text.count("\t") != 5 * rows or text.count("\n") != rows or "\\" in text or "\r" in text:
        text = "".join(map(_escaped_line, events))
    return text.encode()


def _lines(events: Sequence[Event]) -> list[str]:
    out = []
    last_ts, last_at = -1.0, ""
    for e in events:
        if e.received_at != last_ts:
            last_ts = e.received_at
            last_at = datetime.fromtimestamp(last_ts, UTC).isoformat()
        payload = e.payload.decode()
        out.append(f"{e.device_type}\t{e.device_id}\t{e.event}\t{payload}\t{last_at}\t{e.key}\n")
    return out


def _escaped_line(e: Event) -> str:
    at = datetime.fromtimestamp(e.received_at, UTC).isoformat()
    kind, device, event, payload = (
        value.translate(_ESCAPES)
        for value in (e.device_type, e.device_id, e.event, e.payload.decode())
    )
    return f"{kind}\t{device}\t{event}\t{payload}\t{at}\t{e.key}\n"
