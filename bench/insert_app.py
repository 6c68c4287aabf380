"""The per-event way of storing events, for the storage benchmark to hold the batch route against.

``worker run bench.insert_app --concurrency 64``: one ``INSERT`` per event into the same
table as ``worker.examples.storage`` (its schema, its columns), each its own
transaction, with as many pooled connections as the worker runs lanes (``BENCH_POOL``,
default 64). This is what a handler written one event at a time does; the batch route's
advantage over it is the point of the comparison.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg

from worker import App, ConfigError, Event
from worker.examples.storage import COLUMNS, SCHEMA, TABLE

app = App()
POOL: Final = int(os.environ.get("BENCH_POOL", "64"))
INSERT: Final = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})"
)


class _Storage:
    pool: Any = None


_storage = _Storage()


@app.on_startup
async def open_pool() -> None:
    """Open the pool on ``STORAGE_DSN`` and create the table."""
    dsn = os.environ.get("STORAGE_DSN")
    if not dsn:
        raise ConfigError("STORAGE_DSN is not set")
    _storage.pool = await asyncpg.create_pool(dsn, min_size=POOL, max_size=POOL)
    await _storage.pool.execute(SCHEMA)


@app.on_shutdown
async def close_pool() -> None:
    """Close the pool."""
    if _storage.pool is not None:
        await _storage.pool.close()


@app.event(format="json", timeout=30.0, name="insert")
async def insert(event: Event) -> None:
    """One INSERT, one transaction, then the message is acknowledged."""
    await _storage.pool.execute(INSERT, *row(event))


def row(e: Event) -> tuple[str, str, str, str, datetime, str]:
    """The INSERT's values, in COLUMNS order (as ``copy_binary`` writes them)."""
    at = datetime.fromtimestamp(e.received_at, UTC)
    return (e.device_type, e.device_id, e.event, e.payload.decode(), at, e.key)
