"""QoS 1 acknowledgements released in arrival order, per connection (MQTT-4.6.0-2).

Each connection's ``ack`` function gets its own :class:`AckQueue`. A message takes a
:class:`Slot` when it arrives, holding how many route runs it still waits for. Acks leave as a
contiguous prefix: a finished message waits for every earlier one on its connection, so the
broker's in-flight window is the back-pressure, and a message from a connection that was lost
is only ever acknowledged through that connection's own ``ack`` (never with a packet ID that
the new connection has reused).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

log = logging.getLogger("worker.pipeline")

Acker = Callable[[Sequence[int]], None]


class Slot:
    """One QoS 1 message waiting for ``remaining`` route runs."""

    __slots__ = ("packet_id", "queue", "remaining")

    def __init__(self, queue: AckQueue, packet_id: int, remaining: int) -> None:
        self.queue = queue
        self.packet_id = packet_id
        self.remaining = remaining


class AckQueue:
    """The unacknowledged messages of one connection, in arrival order."""

    __slots__ = ("ack", "pending", "ready")

    def __init__(self, ack: Acker) -> None:
        self.ack = ack
        self.pending: deque[Slot] = deque()
        #: already listed for the next release (so it is listed once)
        self.ready = False

    def add(self, packet_id: int, remaining: int) -> Slot:
        """Take a slot for a message that waits for ``remaining`` runs (0: ack when its turn)."""
        slot = Slot(self, packet_id, remaining)
        self.pending.append(slot)
        return slot

    def releasable(self) -> bool:
        """Whether the oldest message is finished."""
        pending = self.pending
        return bool(pending) and pending[0].remaining <= 0

    def release(self) -> int:
        """Send one ack for the finished prefix; the number of packet IDs acknowledged."""
        pending = self.pending
        ids: list[int] = []
        while pending and pending[0].remaining <= 0:
            ids.append(pending.popleft().packet_id)
        if ids:
            try:
                self.ack(ids)
            except Exception:
                # The connection is gone; the broker redelivers what was not acknowledged.
                log.warning("could not acknowledge %d messages", len(ids), exc_info=True)
        return len(ids)
