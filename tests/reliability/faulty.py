"""The app the fault tests run: it records what it handled and misbehaves on request.

Like ``tests.e2e.recorder``, ``RECORD_FILE`` gets one line per event handled (``{"n": 7}``
writes ``7``), whole and flushed, so the file read after a ``kill -9`` holds exactly what the
handler finished. The faults, from the environment:

``FAULT_RAISE_EVERY=k``    events with ``n % k == 0`` raise
``FAULT_HANG_EVERY=k``     events with ``n % k == 0`` never return (the route's timeout ends them)
``FAULT_BLOCK_AFTER=k``    the k-th event this process handles blocks the event loop
                           (``time.sleep``) for ``FAULT_BLOCK_SECONDS``
``FAULT_TIMEOUT``          the route's timeout in seconds (default 1)
``FAULT_RETRIES``          the route's retries (default 0)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from worker import App, Event

app = App()
_ENV = os.environ
RAISE_EVERY = int(_ENV.get("FAULT_RAISE_EVERY", "0"))
HANG_EVERY = int(_ENV.get("FAULT_HANG_EVERY", "0"))
BLOCK_AFTER = int(_ENV.get("FAULT_BLOCK_AFTER", "0"))
BLOCK_SECONDS = float(_ENV.get("FAULT_BLOCK_SECONDS", "3"))
_record = open(_ENV.get("RECORD_FILE", os.devnull), "a", buffering=1)  # noqa: SIM115
_seen = 0


def failing(n: int, every: int) -> bool:
    """True when event ``n`` is one that ``every`` selects (the tests compute the same set)."""
    return every > 0 and n % every == 0


@app.event(
    timeout=float(_ENV.get("FAULT_TIMEOUT", "1")),
    retries=int(_ENV.get("FAULT_RETRIES", "0")),
    retry_backoff=0.01,
    name="record",
)
async def record(event: Event) -> None:
    global _seen
    data: Any = event.data
    n = int(data["n"])
    _seen += 1
    if _seen == BLOCK_AFTER:
        time.sleep(BLOCK_SECONDS)  # the fault: a blocking call on the event loop  # noqa: ASYNC251
    if failing(n, RAISE_EVERY):
        raise RuntimeError(f"event {n} asked to fail")
    if failing(n, HANG_EVERY):
        await asyncio.sleep(3600)
    _record.write(f"{n}\n")


@app.on_shutdown
async def close_record() -> None:
    _record.close()
