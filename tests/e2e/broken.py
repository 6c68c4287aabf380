"""A module that fails on import: a handler that is not a coroutine function."""

from __future__ import annotations

from worker import App, Event

app = App()


@app.event()
def not_async(event: Event) -> None:
    """Registration refuses this at import time."""
