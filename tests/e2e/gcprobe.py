"""An app whose startup hook writes the garbage collector's settings to ``RECORD_FILE``:
the young generation's threshold, then how many objects are frozen, one number a line."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path

from worker import App, Event

app = App()


@app.on_startup
async def write_settings() -> None:
    text = f"{gc.get_threshold()[0]}\n{gc.get_freeze_count()}\n"
    await asyncio.to_thread(Path(os.environ["RECORD_FILE"]).write_text, text)


@app.event(name="ignore")
async def ignore(event: Event) -> None:
    """A route, so that the worker subscribes and says it is ready."""
