"""The storage example's parts that need no database (the rest: ``tests/e2e/test_storage.py``).

``unreadable``: what json would store but PostgreSQL cannot read back. What PostgreSQL itself
does with such payloads (json stores them, jsonb refuses them, ``->>`` on a json row fails)
is checked against a real database in the e2e tests; here, the cases a device can send
around them. ``_where``: how the database is named in messages, never with its password.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest

from worker.examples import storage
from worker.examples.storage import _where, unreadable

NUL = "the payload has \\u0000 in a string, which PostgreSQL cannot read as text"
HALF = "the payload has half a surrogate pair in a string, which PostgreSQL cannot read as text"


#: payloads and what ``unreadable`` says of each; the e2e tests hold PostgreSQL to the same
UNREADABLE_CASES: list[tuple[bytes, str | None]] = [
    (rb'{"n": 1}', None),
    (rb'{"note": "\u0000"}', NUL),
    (rb'{"\u0000": 1}', NUL),  # in a key as well
    (rb'{"deep": [1, {"x": ["a", "b\u0000c"]}]}', NUL),
    (rb'{"note": "\\u0000"}', None),  # an escaped backslash, then the text u0000
    (rb'{"note": "\\\u0000"}', NUL),  # an escaped backslash, then an escaped NUL
    (rb'{"s": "\ud800"}', HALF),  # high half alone
    (rb'{"s": "\udc00x"}', HALF),  # low half alone
    (rb'{"s": "\ud83d"} ', HALF),
    (rb'{"s": "\ud83d\ude00"}', None),  # a whole pair: one character
    (rb'{"s": "\u00e9t\u00e9"}', None),
    (rb'{"s": "\u0000", oops}', NUL),  # not JSON either: refused all the same
    (b"\xff\\u0000", NUL),  # nor UTF-8
    # what a JSON parser would miss, but PostgreSQL stores as json:
    (rb'{"k": "\u0000", "k": 1}', NUL),  # a key given twice: a parser keeps the last
    (rb'{"k": "\ud800", "k": 1}', HALF),
    (b"[" * 10_000 + b'"\\u0000"' + b"]" * 10_000, NUL),  # deeper than Python parses
    (b'{"n": ' + b"9" * 5_000 + b', "s": "\\u0000"}', NUL),  # an integer Python refuses
    # the halves of a pair: the low one right after the high one, as the next escape
    (rb'{"s": "\ud800\u0041"}', HALF),
    (rb'{"s": "\ud800\udbff"}', HALF),  # two high halves
    (rb'{"s": "\ud800x\udc00"}', HALF),  # a character between them
    (rb'{"s": "\ud800\\udc00"}', HALF),  # an escaped backslash between them
    (rb'{"s": "\uD83D\uDE00", "t": "\u00e9\n\"\\\/"}', None),  # upper case, other escapes
]


@pytest.mark.parametrize(("payload", "why"), UNREADABLE_CASES)
def test_unreadable(payload: bytes, why: str | None) -> None:
    assert unreadable(payload) == why


@pytest.mark.parametrize(
    ("dsn", "where"),
    [
        ("postgresql://u:s3cret@db.example.com/telemetry", "db.example.com:5432"),
        ("postgresql://u:s3cret@db.example.com:6543/telemetry", "db.example.com:6543"),
        ("postgresql://nobody@/postgres?host=/run/pg&port=54329", "/run/pg:54329"),
        ("postgresql:///postgres?host=/run/pg", "/run/pg:5432"),
        ("postgresql://u@[::1]:5433/db", "::1:5433"),
        ("postgresql://u@host:notaport/db", "its host"),
    ],
)
def test_the_database_is_named_by_host_and_port_only(dsn: str, where: str) -> None:
    assert _where(dsn) == where


def test_a_copy_of_the_folder_uses_its_own_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's advice: copy the folder under a name of your own and change the table."""
    shutil.copytree(Path(storage.__file__).parent, tmp_path / "mystore")
    table = tmp_path / "mystore" / "table.py"
    table.write_text(table.read_text().replace('TABLE: Final = "device_events"',
                                               'TABLE: Final = "readings"'))  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        mine = importlib.import_module("mystore")
        assert (mine.TABLE, mine.copy_binary.__module__) == ("readings", "mystore.rows")
        assert "CREATE TABLE IF NOT EXISTS readings" in mine.SCHEMA
        assert storage.TABLE == "device_events"
    finally:
        for name in [n for n in sys.modules if n == "mystore" or n.startswith("mystore.")]:
            del sys.modules[name]
