"""Giving freed memory back to the operating system after sockets went.

Thousands of sockets that come and go (a flood of connections, half-open TLS handshakes)
leave the C heap fragmented: Python frees their buffers, but glibc keeps the pages, so the
platform's resident memory stays at its peak long after the attackers left. Once closed
sockets have freed about :data:`MIN_FREED` bytes, :class:`Trimmer` calls glibc's
``malloc_trim`` once, :data:`DELAY` seconds later (one call for the whole burst, not one per
socket; it costs well under a millisecond on the platform's heap). So at most ``MIN_FREED``
of freed heap is ever left untrimmed, whatever the size of the burst and however it ends.
Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Final

SOCKET_BYTES: Final = 5 * 1024
"""About what a closed plain connection gave back: its objects and buffers."""
HANDSHAKE_BYTES: Final = 100 * 1024
"""About what an ended TLS handshake gave back: a 32 KiB read buffer and OpenSSL's state."""
MIN_FREED: Final = 512 * 1024
"""Bytes freed since the last trim that make the next one worth it (100 sockets, or five
handshakes): below it the trim would give back too little to matter."""
DELAY: Final = 1.0
"""Seconds between reaching :data:`MIN_FREED` and trimming, so that one trim covers the rest
of a burst that is still going."""


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
    """Counts what closed sockets freed; trims the heap once after each burst of them."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._freed = 0
        self._timer: asyncio.TimerHandle | None = None
        #: trims done (for tests and curiosity)
        self.trims = 0

    def closed(self, freed: int = SOCKET_BYTES) -> None:
        """A socket (or a handshake) is gone; it held about ``freed`` bytes."""
        self._freed += freed
        if self._freed >= MIN_FREED and self._timer is None and self._trim is not None:
            self._timer = asyncio.get_running_loop().call_later(DELAY, self._run)

    def handshake_ended(self) -> None:
        """A TLS handshake finished, failed or was dropped."""
        self.closed(HANDSHAKE_BYTES)

    def _run(self) -> None:
        self._timer = None
        self._freed = 0
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def cancel(self) -> None:
        """Stop a pending trim (the platform is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
