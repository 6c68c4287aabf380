"""The example app's ledger: the ``seq`` of each reading it finished, for the demo's check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pipeline import Published
from worker import Event
from worker.examples import fleet as example


async def test_the_ledger_holds_each_finished_reading_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.ledger"
    monkeypatch.setattr(example, "LEDGER", str(path))
    monkeypatch.setattr(example, "ledger", [])
    await example.announce()
    sent = Published()
    example.app.bind_publisher(sent)
    try:
        for seq, body in enumerate(
            (b'{"temp": 20, "seq": 0}', b'{"x": 1, "seq": 1}', b'{"temp": 21}')
        ):
            await example.on_reading(Event("sensor", f"led{seq}", "reading", "json", body))
        await example.on_reading(Event("sensor", "led", "reading", "json", b'{"seq": true}'))
    finally:
        example.app.bind_publisher(None)
        await example.close_ledger()
    # A reading without a temperature is still handled; one without an integer seq is not noted.
    assert path.read_text() == "0\n1\n"


async def test_no_ledger_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example, "LEDGER", None)
    monkeypatch.setattr(example, "ledger", [])
    await example.announce()
    assert example.ledger == []
    example.record(Event("sensor", "s", "reading", "json", b'{"temp": 1, "seq": 5}'))
