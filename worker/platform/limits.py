"""The platform's resource limits: each one named, with its default, checked and counted.

Every limit bounds memory or work that a client (or many clients) could otherwise make grow
without end; docs/platform/index.md lists them with the metric that counts each hit. When a
limit is hit the platform does one of three things, always counted: it refuses (a new socket,
a CONNECT), it evicts the oldest (a socket still connecting, an offline session, a retained
status), or it drops a message (counted as a drop with its reason and, for an MQTT 5
publisher, reported in the PUBACK's reason code).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from worker.platform.router import Envelope

ENTRY_OVERHEAD: Final = 160
"""Bytes a queued message costs besides its topic and payload (the objects that hold it)."""

KIB: Final = 1024
MIB: Final = 1024 * KIB


class Limit(enum.StrEnum):
    """The ``limit`` label of ``worker_platform_limit_hits_total``."""

    SUBSCRIPTION_MESSAGES = "subscription_messages"
    SESSION_QUEUE_BYTES = "session_queue_bytes"
    QUEUED_BYTES = "queued_bytes"
    SESSIONS = "sessions"
    SESSION_EXPIRY = "session_expiry"
    RETAINED = "retained"
    CONNECT_BYTES = "connect_bytes"
    CONNECTING = "connecting"
    HANDSHAKES = "handshakes"
    BACKPRESSURE = "backpressure"


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one platform (``PlatformConfig.limits``); see docs/platform/index.md."""

    #: bytes of messages one session may hold queued (offline, slow, or window full) or sent
    #: and not yet acknowledged
    session_queue_bytes: int = 4 * MIB
    #: bytes of queued messages in the whole platform, every session and shared group
    queued_bytes: int = 64 * MIB
    #: sessions, connected and offline durable; the oldest offline one goes first
    sessions: int = 20_000
    #: seconds an offline durable session is kept: the default of MQTT 3.1.1 sessions and the
    #: most an MQTT 5 client's Session Expiry Interval gets (the CONNACK says so)
    session_expiry: int = 3600
    #: retained status messages; the one kept longest goes first (each costs about 1.1 KB,
    #: and a new status subscriber gets all of them at once: sized for a development fleet)
    retained: int = 1_000
    #: bytes a socket may send before its CONNECT is accepted
    connect_bytes: int = 16 * KIB
    #: sockets that have not completed CONNECT (and TLS handshakes); the oldest goes first
    connecting: int = 1_000
    #: TLS handshakes in progress; the oldest goes first (each holds about 100 KB)
    handshakes: int = 100
    #: seconds a publisher is held (its socket not read) while a subscriber catches up
    backpressure_wait: float = 2.0

    def problems(self) -> list[str]:
        """What is wrong with these values, one line each (empty when all is well)."""
        found = []
        for name in (
            "session_queue_bytes",
            "queued_bytes",
            "sessions",
            "retained",
            "connect_bytes",
            "connecting",
            "handshakes",
        ):
            if getattr(self, name) < 1:
                found.append(f"limits.{name} must be at least 1")
        if self.session_expiry < 0:
            found.append("limits.session_expiry must be 0 or more seconds")
        if self.backpressure_wait < 0:
            found.append("limits.backpressure_wait must be 0 or more seconds")
        return found


def entry_size(msg: Envelope) -> int:
    """What one queued copy of ``msg`` counts against the byte limits."""
    return len(msg.payload) + len(msg.topic) + ENTRY_OVERHEAD


def parse_limits(items: Iterable[str], base: Limits | None = None) -> tuple[Limits, list[str]]:
    """``--limit NAME=VALUE`` flags over ``base``: the limits, and a problem per bad flag."""
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    values: dict[str, Any] = {}
    problems = []
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            accepted = ", ".join(sorted(fields))
            problems.append(f"--limit {item!r}: expected NAME=VALUE with NAME one of {accepted}")
            continue
        kind = float if fields[name].type in (float, "float") else int
        try:
            values[name] = kind(raw)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            problems.append(f"--limit {item!r}: {name} takes {what}, not {raw!r}")
    limits = dataclasses.replace(base or Limits(), **values)
    problems += [f"--limit: {problem}" for problem in limits.problems()]
    return limits, problems
