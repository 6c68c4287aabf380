"""The storage example's rows: COPY's binary format, and payloads PostgreSQL could not read back."""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from worker import Event

from .table import COLUMNS

#: a JSON escape: a backslash and what it escapes, the four hex digits of a \u one apart. Read
#: from the left, an escaped backslash is one escape, so the "\u" after it is plain text.
_ESCAPE: Final = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_NUL: Final = "\\u0000"
_HALF: Final = "half a surrogate pair"


def unreadable(payload: bytes) -> str | None:
    """Why PostgreSQL would store ``payload`` as ``json`` but fail to read it back, or None.

    ``json`` keeps the text as sent and checks only its syntax, so a string escaping NUL
    (``\\u0000``) or half a surrogate pair (``\\ud800`` alone) is stored, and then every
    ``->>`` on that row fails (``cannot be converted to text``), which breaks each query that
    reads it; ``jsonb`` refuses such text when it is stored. So the row is refused for either
    column type, before the COPY: the event is dead-lettered with its bytes instead.

    The escapes are read as PostgreSQL reads them, one after the other: not by parsing the
    JSON, which would miss one in a key given twice (a parser keeps the last value) or in a
    document Python cannot parse but PostgreSQL stores (nested 10,000 deep, an integer of
    5,000 digits). A payload that is not JSON is left for PostgreSQL to refuse.
    """
    high_ends = -1  # where a high surrogate's escape ended, while it waits for its low half
    for escape in _ESCAPE.finditer(payload):
        digits = escape.group(1)
        code = int(digits, 16) if digits is not None else -1
        if high_ends >= 0:
            # the low half must come right after the high one, as the next escape
            if escape.start() != high_ends or not 0xDC00 <= code <= 0xDFFF:
                return _refusal(_HALF)
            high_ends = -1
        elif code == 0:
            return _refusal(_NUL)
        elif 0xD800 <= code <= 0xDBFF:
            high_ends = escape.end()
        elif 0xDC00 <= code <= 0xDFFF:
            return _refusal(_HALF)
    return _refusal(_HALF) if high_ends >= 0 else None


def _refusal(what: str) -> str:
    return f"the payload has {what} in a string, which PostgreSQL cannot read as text"


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
    last_at: float | None = None  # no value a received_at can have
    stamp = b""
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
