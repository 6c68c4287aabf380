"""The storage example's table: its schema, and the check that a table can take its rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from worker import ConfigError

TABLE: Final = "device_events"
COLUMNS: Final = ("device_type", "device_id", "event", "payload", "received_at", "key")
#: An append-only log. No surrogate key: nothing refers to a row, and ``key`` identifies an
#: event (a bigint identity primary key would cost PostgreSQL about 1.2 us more per row). A
#: BRIN index serves time ranges: rows arrive in ``received_at`` order, so it stays a few
#: pages for millions of rows and costs next to nothing to keep up to date. The payload is
#: ``json``: the device's text as sent (key order, duplicate keys and all), which PostgreSQL
#: only checks; ``jsonb`` would cost it about half as much work again per row.
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
#: the types each column written may have (as format_type names them, without a length);
#: the table's are checked at startup, and the payload's decides the form its values take
COLUMN_TYPES: Final = {
    "device_type": ("text", "character varying"),
    "device_id": ("text", "character varying"),
    "event": ("text", "character varying"),
    "payload": ("json", "jsonb"),
    "received_at": ("timestamp with time zone",),
    "key": ("text", "character varying"),
}
#: the database's encoding; the table's schema-qualified name as the search path finds it
#: (null when there is none: the worker creates it), and whether the role may INSERT into it
TABLE_FOUND: Final = f"""
SELECT current_setting('server_encoding') AS encoding,
       n.nspname || '.' || c.relname AS name,
       has_table_privilege(c.oid, 'INSERT') AS may_insert
  FROM (SELECT to_regclass('{TABLE}') AS oid) AS found
  LEFT JOIN pg_class c ON c.oid = found.oid
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace"""
#: the table's columns: name, type, and whether a row must give it a value (NOT NULL, with
#: no default, identity or generated value)
TABLE_COLUMNS: Final = f"""
SELECT attname::text, format_type(atttypid, atttypmod),
       attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = ''
  FROM pg_attribute
 WHERE attrelid = '{TABLE}'::regclass AND attnum > 0 AND NOT attisdropped"""


def check_table(columns: Sequence[tuple[str, str, bool]]) -> bool:
    """Whether the payload is jsonb (else json), from TABLE_COLUMNS's rows; ConfigError when
    the table cannot take the rows this module writes (naming the column and what it takes).
    """
    types = {name: kind.partition("(")[0] for name, kind, _ in columns}
    for name, accepted in COLUMN_TYPES.items():
        if types.get(name) not in accepted:
            raise ConfigError(
                f"{TABLE}.{name} is {types.get(name) or 'missing'}: accepted is a column of "
                f"type {' or '.join(accepted)}"
            )
    for name, _, required in columns:
        if required and name not in COLUMN_TYPES:
            raise ConfigError(
                f"{TABLE}.{name} is NOT NULL without a default, and the rows written here "
                f"have no value for it: accepted are only {', '.join(COLUMN_TYPES)}, and other "
                "columns that are nullable or have a default"
            )
    return types["payload"] == "jsonb"
