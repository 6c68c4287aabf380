"""Log lines a client cannot flood: its values clipped, repeated refusals rate-limited.

Anything a client sends (a client ID, a topic, a user name) can be as long as a packet, and a
client can send thousands of bad CONNECTs a second. So every client-supplied value in a log
line goes through :func:`clip`, and refusals go through :class:`Throttle`: the first of a kind
is logged, the rest within ``interval`` seconds are only counted, and the next line says how
many were left out.
"""

from __future__ import annotations

import logging
import time
from typing import Final

CLIP: Final = 80
"""Characters of a client-supplied value kept in a log line."""
INTERVAL: Final = 10.0
"""Seconds between two log lines of the same kind of refusal."""


def clip(value: object, limit: int = CLIP) -> str:
    """``repr(value)``, cut to ``limit`` characters with the length of what was left out."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"


class Throttle:
    """At most one log line per kind and interval; the next one counts those left out."""

    __slots__ = ("_clock", "_interval", "_log", "_state")

    def __init__(self, log: logging.Logger, interval: float = INTERVAL) -> None:
        self._log = log
        self._interval = interval
        self._clock = time.monotonic
        #: kind -> (when it was last logged, lines left out since)
        self._state: dict[str, tuple[float, int]] = {}

    def info(self, kind: str, msg: str, *args: object) -> bool:
        """Log ``msg`` at info unless ``kind`` was logged within the interval; True if logged."""
        now = self._clock()
        last, skipped = self._state.get(kind, (-self._interval, 0))
        if now - last < self._interval:
            self._state[kind] = (last, skipped + 1)
            return False
        if len(self._state) > 256:
            self._state.clear()  # kinds are a closed set; this only bounds a bug
        self._state[kind] = (now, 0)
        if skipped:
            msg += " (and %d more like it in the last %g s)"
            args = (*args, skipped, self._interval)
        self._log.info(msg, *args)
        return True
