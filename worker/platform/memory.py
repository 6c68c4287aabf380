"""Giving freed memory back to the operating system after sockets went.

Thousands of sockets that come and go (a flood of connections, half-open TLS handshakes)
leave the C heap fragmented: Python frees their buffers, but glibc keeps the pages, so the
platform's resident memory stays at its peak long after the attackers left. Once closed
sockets have freed about :data:`MIN_FREED` bytes, :class:`Trimmer` calls glibc's
``malloc_trim`` once, :data:`DELAY` seconds later (one call for the whole burst, not one per
socket; it costs well under a millisecond on the platform's heap). So at most ``MIN_FREED``
of freed heap is ever left untrimmed, whatever the size of the burst and however it ends.
Elsewhere than glibc there is no trim.

Python's own allocator is the other half. It gives a 1 MiB arena of small objects back only
once nothing in it is alive, and a burst leaves a few survivors in most of the arenas it
took: the statuses retained for its clients, and the objects kept in the interpreter's free
lists. So once the burst is over (less than :data:`QUIET_BYTES` freed in ``DELAY``), a
clean-up follows the trim: a full collection, which also empties the free lists; then
``compact``, with which the platform rebuilds its retained statuses in fresh memory (see
worker.platform.retained); then the trim. After 10,000 idle connections went, that brought
the platform from 82 MB to 57 MB (41 MB idle), and to 47 MB on the C allocator that
``worker platform`` uses (:func:`use_c_allocator`). A collection walks every live object that
was not frozen at start (worker.collector), so it is skipped when the last one took longer
than a hundredth of the time since: a platform holding a million objects is not stalled
every second by its edges' churn.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
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
QUIET_BYTES: Final = MIN_FREED // 8
"""Freed in :data:`DELAY` seconds, less than this means the burst is over (a dozen sockets
a second): a platform whose clients come and go now and then still gets its clean-up."""


ALLOCATOR_VARIABLE: Final = "PYTHONMALLOC"


def use_c_allocator() -> None:
    """Run this process again, once, with Python's objects on the C library's allocator.

    For ``worker platform`` on glibc, where nothing set ``PYTHONMALLOC``. Python's allocator
    frees a 1 MiB arena only when nothing in it is alive, and the values a long-lived platform
    keeps changing (its counters, times and retained statuses) move into the arenas a burst
    of connections took and keep them: after 2,000 offline durable sessions expired, 11 MB of
    arenas stayed for 20 KB of objects. glibc's heap, trimmed after each burst, gives back
    every free page instead: 44.6 MB after, 42.2 MB idle. It costs about 8% of the platform's
    QoS 1 message rate (65,500/s against 71,200/s in ``python -m bench --only platform``);
    ``PYTHONMALLOC=pymalloc`` keeps Python's allocator.
    """
    if ALLOCATOR_VARIABLE in os.environ or _malloc_trim() is None:
        return
    env = {**os.environ, ALLOCATOR_VARIABLE: "malloc"}
    # orig_argv holds the interpreter's own options and ``-m worker.cli`` or the script.
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


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
    """Counts what closed sockets freed; trims the heap once after each burst of them, and
    cleans up once the burst is over."""

    def __init__(self, compact: Callable[[], None] | None = None) -> None:
        self._trim = _malloc_trim()
        self._compact = compact
        #: bytes freed since the last trim, and since the last look at whether a burst is over
        self._freed = 0
        self._recent = 0
        #: the trim DELAY after MIN_FREED, and the clean-up once the burst is over
        self._timer: asyncio.TimerHandle | None = None
        self._quiet: asyncio.TimerHandle | None = None
        #: the loop time before which a clean-up does not collect (see the module)
        self._collect_after = 0.0
        #: trims and clean-ups done (for tests and curiosity)
        self.trims = 0
        self.cleanups = 0

    def closed(self, freed: int = SOCKET_BYTES) -> None:
        """A socket (or a handshake) is gone; it held about ``freed`` bytes."""
        self._freed += freed
        self._recent += freed
        if self._freed >= MIN_FREED and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(DELAY, self._run)

    def handshake_ended(self) -> None:
        """A TLS handshake finished, failed or was dropped."""
        self.closed(HANDSHAKE_BYTES)

    def _run(self) -> None:
        self._timer = None
        self._give_back()
        if self._quiet is None:
            self._recent = 0
            self._quiet = asyncio.get_running_loop().call_later(DELAY, self._settle)

    def _settle(self) -> None:
        loop = asyncio.get_running_loop()
        if self._recent >= QUIET_BYTES or self._timer is not None:  # the burst goes on
            self._recent = 0
            self._quiet = loop.call_later(DELAY, self._settle)
            return
        self._quiet = None
        started = loop.time()
        if started >= self._collect_after:
            gc.collect()
            self._collect_after = loop.time() + 100 * (loop.time() - started)
        if self._compact is not None:
            self._compact()
        self._give_back()
        self.cleanups += 1

    def _give_back(self) -> None:
        self._freed = 0
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def cancel(self) -> None:
        """Stop a pending trim (the platform is closing)."""
        for timer in (self._timer, self._quiet):
            if timer is not None:
                timer.cancel()
        self._timer = self._quiet = None
