"""Giving freed memory back to the operating system after a burst of sockets went.

Thousands of sockets that come and go (a flood of connections, half-open TLS handshakes)
leave the C heap fragmented: Python frees their buffers, but glibc keeps the pages, so the
platform's resident memory stays at its peak long after the attackers left. After
:data:`BURST` sockets closed, :class:`Trimmer` calls glibc's ``malloc_trim`` once, a few
seconds later (one call, not one per socket; it costs a few milliseconds). Elsewhere than
glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Final

BURST: Final = 1000
"""Sockets closed since the last trim that make the next one worth it."""
DELAY: Final = 5.0
"""Seconds after the burst's threshold before trimming (the burst is usually still going)."""


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


class Trimmer:
    """Counts closed sockets; trims the heap once after each burst of them."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._closed = 0
        self._timer: asyncio.TimerHandle | None = None
        #: trims done (for tests and curiosity)
        self.trims = 0

    def closed(self) -> None:
        """A socket is gone."""
        self._closed += 1
        if self._closed >= BURST and self._timer is None and self._trim is not None:
            self._timer = asyncio.get_running_loop().call_later(DELAY, self._run)

    def _run(self) -> None:
        self._timer = None
        self._closed = 0
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def cancel(self) -> None:
        """Stop a pending trim (the platform is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
