"""The event-loop watchdog: says *why* liveness fails when a handler blocks the loop.

``/livez`` is answered by the event loop itself, on purpose: what a liveness probe must
detect is precisely a loop that no longer turns, and a loop that cannot answer is the most
direct evidence of it. So when a handler calls something blocking (``time.sleep``, a
synchronous HTTP client, a CPU-bound loop), ``/livez`` gets no answer, the kubelet's
``timeoutSeconds`` (2 s in ``deploy/k8s``) marks each probe failed, and after
``failureThreshold`` failures the pod is restarted. That is what a Kubernetes operator
expects from a liveness endpoint; answering from another thread would report "alive" for a
process that handles nothing.

A probe timeout says *that* something is wrong, not *what*. This watchdog is a daemon thread
that asks the loop for a turn every ``interval`` seconds (``call_soon_threadsafe``). When the
loop has not taken its turn for ``blocked_after`` seconds it logs a WARNING with how long the
loop has been blocked and the main thread's stack at that moment (the blocking call, with the
handler's file and line), and when the loop turns again it logs how long the block lasted.
``/livez`` reports the longest block seen since the previous probe, so a block shorter than
the probe's timeout still leaves a trace. The thread only reads clocks and formats a stack:
it never touches the loop's state.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from typing import Final

log = logging.getLogger("worker.watchdog")

#: a loop that has not turned for this long is reported
BLOCKED_AFTER: Final = 1.0
#: how often the thread asks the loop for a turn
INTERVAL: Final = 0.25
_STACK_LINES: Final = 12


class LoopWatchdog:
    """A daemon thread that reports a blocked event loop; ``start`` and ``stop`` on the loop."""

    def __init__(self, *, blocked_after: float = BLOCKED_AFTER, interval: float = INTERVAL) -> None:
        self.blocked_after = blocked_after
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main = threading.main_thread().ident
        self._turned = time.monotonic()  # written by the loop, read by the thread
        self._longest = 0.0  # the longest block since the last take_longest(), in seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching the running loop."""
        self._loop = asyncio.get_running_loop()
        self._main = threading.get_ident()  # the loop's thread, whose stack we report
        self._turned = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="worker-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it wakes within ``interval``)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.interval * 4)

    def take_longest(self) -> float:
        """The longest block (seconds) seen since the previous call; /livez reports it."""
        longest, self._longest = self._longest, 0.0
        return round(longest, 3)

    def _turn(self) -> None:
        """Runs on the loop: it turned."""
        self._turned = time.monotonic()

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        peak = 0.0  # the current block's length so far; 0 while the loop turns
        while not self._stop.wait(self.interval):
            try:
                loop.call_soon_threadsafe(self._turn)
            except RuntimeError:
                return  # the loop is closed
            blocked = time.monotonic() - self._turned - self.interval
            if blocked >= self.blocked_after:
                self._longest = max(self._longest, blocked)
                if not peak:
                    log.warning(
                        "event loop blocked for %.1fs: /livez cannot answer until it turns "
                        "again; a handler is making a blocking call here:\n%s",
                        blocked, self._stack(),
                    )  # fmt: skip
                peak = blocked
            elif peak:
                log.warning("event loop turned again (it was blocked for %.1fs or more)", peak)
                peak = 0.0

    def _stack(self) -> str:
        frame = sys._current_frames().get(self._main or 0)
        if frame is None:
            return "  (stack not available)"
        lines = traceback.format_stack(frame)[-_STACK_LINES:]
        return "".join(lines).rstrip()
