"""The app that the process tests run: it records what it handled, one line per event.

``RECORD_FILE`` names this process's file. A payload ``{"n": 7}`` writes ``7``; ``"fail":
true`` raises; ``"sleep": s`` waits first (beyond 1 s: the route's timeout); ``RECORD_DELAY``
seconds are waited for every event. Lines are written whole and flushed, so a file read after
the process ended holds exactly what the handler finished.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from worker import App, Event

app = App()
#: seconds every event takes (a slow instance lets the broker queue work for it)
DELAY = float(os.environ.get("RECORD_DELAY", "0"))
_record = open(os.environ.get("RECORD_FILE", os.devnull), "a", buffering=1)  # noqa: SIM115


@app.event(timeout=1.0, name="record")
async def record(event: Event) -> None:
    data: Any = event.data
    if data.get("fail"):
        raise RuntimeError("asked to fail")
    if data.get("sleep") or DELAY:
        await asyncio.sleep(float(data.get("sleep") or DELAY))
    _record.write(f"{data['n']}\n")


@app.on_shutdown
async def close_record() -> None:
    _record.close()
