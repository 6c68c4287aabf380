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
beforehand with a ``jsonb`` payload is written as ``jsonb`` (the columns' types are checked
at startup, and a payload column changed while the worker runs is followed). A row the
database refuses (not JSON, not UTF-8, nested too deep, against a constraint) fails alone:
the batch is then stored in halves until the refused rows are alone, and only their events
are dead-lettered, at once (the same rows would be refused again, so they are not retried);
so is a payload json would store but no query could read back (``\\u0000`` or half a
surrogate pair in a string).
Delivery is at least once: a message whose COPY committed but whose acknowledgement never
reached the broker (the worker was killed in between) is stored again if the broker delivers
it again, with the same ``key`` (a digest of the topic and the payload);
``docs/guide/storage.md`` shows how to make rows unique.

``STORAGE_DSN`` is required: without it (or without asyncpg) ``worker run`` exits 3 saying so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from worker import (
    App,
    Batch,
    BatchFailed,
    ConfigError,
    ConnectError,
    Event,
    PermanentError,
    WorkerError,
)
from worker.routes import MAX_BATCH_SIZE, MAX_BATCH_WAIT

# relative: a copy of this folder, under a name of its own, uses its own modules
from .rows import copy_binary, unreadable
from .table import (
    COLUMN_TYPES,
    COLUMNS,
    SCHEMA,
    TABLE,
    TABLE_COLUMNS,
    TABLE_FOUND,
    check_table,
)

#: what this module is for a user who imports it (the table and the rows are in their own)
__all__ = [
    "COLUMNS", "COLUMN_TYPES", "SCHEMA", "TABLE", "TABLE_COLUMNS", "RefusedRow", "StorageError",
    "app", "check_table", "close_pool", "copy_binary", "open_pool", "store", "unreadable",
    "write_rows",
]  # fmt: skip

try:
    import asyncpg
except ImportError:  # the startup hook says what to install; importing stays possible
    asyncpg = None

#: PostgreSQL refusing a row for what it holds: a data exception (not JSON, not UTF-8, ...),
#: a limit (JSON nested deeper than its stack allows) or a constraint of the table (a CHECK,
#: a unique index). The same row would be refused again, and the others are not at fault.
ROW_REFUSED: Final = (
    (
        asyncpg.DataError,
        asyncpg.ProgramLimitExceededError,
        asyncpg.IntegrityConstraintViolationError,
    )
    if asyncpg
    else ()
)

#: connections at most; a batch holds one for its COPY
POOL_SIZE: Final = 4
#: seconds one COPY (with waiting for a connection) may take before the batch counts as failed
TIMEOUT: Final = 30.0
#: seconds to close the pool at shutdown before its connections are cut
CLOSE_DEADLINE: Final = 10.0


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
log = logging.getLogger(__name__)


class _Storage:
    """The connection pool, open between the startup and the shutdown hooks."""

    pool: Any = None
    #: whether the table's payload column is jsonb (else json)
    jsonb: bool = False
    #: the database's host and port (or socket folder), for messages: never the whole DSN
    where: str = ""
    #: the table as the search path found it, schema and all, for messages
    table: str = TABLE


_storage = _Storage()


@app.on_startup
async def open_pool() -> None:
    """Connect to ``STORAGE_DSN``, create the table if there is none, and check it."""
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
    where, pool = _where(dsn), None
    try:
        # No connection floor (min_size=0): while the database is down, asyncpg would log a
        # traceback each time it fails to restore the floor; the batches' retries say it.
        pool = await asyncpg.create_pool(dsn, min_size=0, max_size=POOL_SIZE, reset=_keep_session)
        table, jsonb = await _prepare(pool, where)
    except BaseException as exc:
        if pool is not None:
            pool.terminate()
        if isinstance(exc, ValueError):
            raise ConfigError(
                f"STORAGE_DSN is not a PostgreSQL URL that asyncpg can read ({exc}): accepted "
                "is postgresql://user:password@host:5432/database"
            ) from exc
        if isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError):
            # the message names the host, never the whole DSN: a DSN may carry a password
            raise ConnectError(f"cannot use the database of STORAGE_DSN ({where}): {exc}") from exc
        raise
    _storage.pool, _storage.jsonb, _storage.where, _storage.table = pool, jsonb, where, table
    log.info("storing into %s at %s (payload %s)", table, where, _payload_type())


async def _prepare(pool: Any, where: str) -> tuple[str, bool]:
    """The table's schema-qualified name and whether its payload is jsonb, after creating it
    if the search path finds none; ConfigError when the database or the table cannot take
    the rows."""
    found = await pool.fetchrow(TABLE_FOUND)
    if found["encoding"] != "UTF8":
        # in another encoding PostgreSQL stores JSON text whose escapes it then cannot read
        # (\u20ac in LATIN1), or refuses whole batches
        raise ConfigError(
            f"the database of STORAGE_DSN ({where}) is encoded in {found['encoding']}: "
            "accepted is UTF8, the encoding of JSON (CREATE DATABASE ... ENCODING 'UTF8')"
        )
    if found["name"] is None:
        # only when missing: a table made beforehand needs no right to create or own it
        await pool.execute(SCHEMA)
        found = await pool.fetchrow(TABLE_FOUND)
    name: str = found["name"]
    if not found["may_insert"]:
        raise ConfigError(
            f"the role of STORAGE_DSN may not INSERT into {name}: accepted is a role that may "
            f"(GRANT INSERT ON {name} TO ...)"
        )
    return name, check_table(await pool.fetch(TABLE_COLUMNS))


def _payload_type() -> str:
    return "jsonb" if _storage.jsonb else "json"


def _where(dsn: str) -> str:
    """``host:port`` of a DSN (its first host), without the user or the password."""
    try:
        parts = urlsplit(dsn)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "its host"
    query = parse_qs(parts.query)
    where = query.get("host", [host or "localhost"])[0]
    return f"{where}:{query.get('port', [port or 5432])[0]}"


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
    jsonb = _storage.jsonb
    rows = copy_binary(events, jsonb=jsonb)
    # What json would store but no query could read is behind a \u escape, and escapes are
    # rare: one search of the batch's rows says whether any payload needs a closer look.
    if b"\\u" in rows:
        refused = _unreadable_events(events)
        if refused:
            out = {id(e) for e, _ in refused}
            events = [e for e in events if id(e) not in out]
            rows = copy_binary(events, jsonb=jsonb)
    try:
        if events:
            await _copy_rows(events, rows, jsonb)
    except ROW_REFUSED:
        # One row the database refuses (not JSON, not even UTF-8, nested too deep) must not
        # fail the others: store the rest and report only the refused ones (they alone are
        # dead-lettered).
        refused += await _copy_apart(events)
    if refused:
        raise BatchFailed(errors=refused)


async def _copy_rows(events: Sequence[Event], rows: bytes, jsonb: bool) -> None:
    """COPY ``rows``, the rows of ``events`` made for a jsonb payload or not (``jsonb``); made
    again if the payload column is of the other type now.

    A payload column altered (json to jsonb, say) while the worker runs refuses rows made for
    the type it had. The type is read again when a COPY fails; every batch whose rows were
    made for the old type, the one that noticed and those in flight beside it, is made again
    for the new one and copied at once: nothing is refused or retried for the change.
    """
    try:
        await _copy(rows, jsonb)
    except (StorageError, *ROW_REFUSED):
        await _follow_payload_type()
        if _storage.jsonb == jsonb:
            raise
        await _copy(copy_binary(events, jsonb=_storage.jsonb), _storage.jsonb)


async def _follow_payload_type() -> None:
    """Read the payload column's type again, and follow it if it changed."""
    try:
        jsonb = check_table(await _storage.pool.fetch(TABLE_COLUMNS))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return  # the COPY's own error says what is wrong
    if jsonb != _storage.jsonb:
        _storage.jsonb = jsonb
        log.warning("%s.payload is %s now: writing %s", _storage.table, *(_payload_type(),) * 2)


#: what a COPY raises when the database cannot be reached or went away mid-COPY
UNREACHABLE: Final = (
    (OSError, asyncpg.ConnectionDoesNotExistError, asyncpg.OperatorInterventionError)
    if asyncpg
    else ()
)


class StorageError(WorkerError):
    """PostgreSQL refused a COPY for a reason of its own, not one row's: the table is gone, a
    right is missing, ... The batch is retried, then dead-lettered; as one of the framework's
    errors, it is logged on one line."""


async def _copy(rows: bytes, jsonb: bool) -> None:
    """``rows`` (``copy_binary``'s, made for a jsonb payload or not) written by
    ``write_rows``, committed when this returns.

    Raises ConnectError when the database cannot be reached, ROW_REFUSED's errors as they
    are, and StorageError for any other refusal.
    """
    pool = _storage.pool
    if pool is None:
        raise ConnectError("the pool is closed (the worker is shutting down)")
    try:
        await write_rows(pool, rows, jsonb)
    except UNREACHABLE as exc:
        # said as the database it is (an error such as FileNotFoundError names no socket)
        raise ConnectError(
            f"the database of STORAGE_DSN ({_storage.where}) cannot be reached: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    except ROW_REFUSED:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageError(
            f"PostgreSQL refused the COPY into {_storage.table}: {type(exc).__name__}: {exc}"
        ) from exc


async def write_rows(pool: Any, rows: bytes, jsonb: bool) -> None:
    """One COPY of ``rows`` into the table, in one transaction.

    The place to change how rows are written (the storage guide's recipe for storing each
    event once replaces it); ``jsonb`` says which payload type the rows were made for.
    """
    # a memoryview, because asyncpg takes bytes for a file's path
    await pool.copy_to_table(TABLE, source=memoryview(rows), columns=COLUMNS, format="binary")


class RefusedRow(PermanentError):
    """An event whose row PostgreSQL refuses (ROW_REFUSED: not JSON, not UTF-8, ...).

    The same bytes would be refused again, so it is dead-lettered at once, not retried.
    """


async def _copy_apart(events: Sequence[Event]) -> list[tuple[Event, BaseException]]:
    """Store ``events`` in halves, and the halves of a refused half, until each refused row
    is alone; those, each with why.

    One refused row in a batch of 250 costs 16 COPYs (two per halving), where storing the
    batch event by event cost 250 commits: at a few milliseconds each, that was seconds.
    """
    refused: list[tuple[Event, BaseException]] = []
    middle = len(events) // 2
    for part in (events[:middle], events[middle:]):
        if not part:
            continue
        try:
            await _copy(copy_binary(part, jsonb=_storage.jsonb), _storage.jsonb)
        except ROW_REFUSED as exc:
            if len(part) > 1:
                refused += await _copy_apart(part)
            else:  # each dead letter says why its own event was refused
                refused.append((part[0], RefusedRow(f"{type(exc).__name__}: {exc}")))
    return refused


def _unreadable_events(events: Sequence[Event]) -> list[tuple[Event, BaseException]]:
    """The events whose payload json would store but no query could read, each with why."""
    return [
        (e, RefusedRow(why))
        for e in events
        if b"\\u" in e.payload and (why := unreadable(e.payload))
    ]
