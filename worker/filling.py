"""Filling the batches of batch routes, and deciding when each is handed to a lane.

The pipeline (``worker.pipeline``) gives each message of a batch route to a :class:`Filler`,
which keeps one open batch per route (per route and lane when the route is ordered) and
hands a batch over - through the pipeline's callback - at the first of:

- it holds ``max_size`` messages;
- its first message has waited ``max_wait`` (a timer per batch, not per message);
- after a read, for ``max_wait=0``: whatever that read brought;
- QoS 1: the connection has as many unacknowledged messages as the broker's in-flight window
  (the Receive Maximum announced on MQTT 5, or learned: how many were unacknowledged when the
  stream last stalled), since the broker sends nothing more until it gets acknowledgements;
- QoS 1: no message arrived for ``STALL`` seconds (the window may be full, or the stream quiet);
- draining (:meth:`Filler.hurry`): at once, and every later message too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar

from worker.batching import BatchRunner
from worker.routes import Batch

#: seconds without a new message after which a batch holding QoS 1 messages is handed over:
#: the broker may be waiting for acknowledgements before it sends more (its in-flight window)
STALL: Final = 0.002


class Item(Protocol):
    """What the filler reads of a queued message."""

    @property
    def received_at(self) -> float: ...


W = TypeVar("W", bound=Item)


class Open(Generic[W]):
    """A batch being filled: one per batch route, or per route and lane when ordered."""

    __slots__ = ("batch", "items", "lane", "qos1", "run", "timer")

    def __init__(self, run: BatchRunner, lane: int | None) -> None:
        self.run = run
        assert run.route.batch is not None
        self.batch: Batch = run.route.batch
        #: the lane whose own queue gets the batch (ordered routes), else None (shared)
        self.lane = lane
        self.items: list[W] = []
        #: how many of the items are QoS 1 (the broker waits for their acks)
        self.qos1 = 0
        self.timer: asyncio.TimerHandle | None = None


#: ``hand_over(open, items)``: queue ``items`` as one batch of ``open``'s route and lane
HandOver = Callable[[Open[W], list[W]], None]


class Filler(Generic[W]):
    """The open batches of one pipeline; see the module docstring."""

    def __init__(
        self, hand_over: HandOver[W], unacked: Callable[[], int], window_bound: int
    ) -> None:
        self._hand_over_to = hand_over
        self._unacked = unacked
        #: the Receive Maximum announced (MQTT 5): an upper bound of the window; 0: none
        self._window_bound = window_bound
        #: the open batches that hold items, in the order they began
        self.filling: dict[Open[W], None] = {}
        #: unacknowledged QoS 1 messages at which the broker stopped sending (learned)
        self._window = 0
        self._last_arrival = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._hurry = False

    def add(self, item: W, open: Open[W], qos1: bool) -> None:
        """Put ``item`` in ``open``; hand it over when that made it full."""
        items, batch = open.items, open.batch
        if not items:
            self.filling[open] = None
            if batch.max_wait > 0:
                loop = asyncio.get_running_loop()
                open.timer = loop.call_later(batch.max_wait, self._due, open)
        items.append(item)
        if qos1:
            open.qos1 += 1
        if len(items) >= batch.max_size:
            self._hand_over(open)

    def after_put(self) -> None:
        """After a read: hand over what no further message can complete."""
        filling = self.filling
        if self._hurry:
            self.flush()
            return
        for open in [o for o in filling if o.batch.max_wait == 0]:
            self._hand_over(open)
        if not any(o.qos1 for o in filling):
            return
        window = self._known_window()
        if window and self._unacked() >= window:
            self._hand_over_qos1()
            return
        loop = asyncio.get_running_loop()
        self._last_arrival = loop.time()
        if self._stall_timer is None:
            self._stall_timer = loop.call_later(STALL, self._stalled)

    def flush(self) -> None:
        """Hand over every batch being filled now, whatever its size and age."""
        for open in list(self.filling):
            self._hand_over(open)

    def hurry(self) -> None:
        """Draining: hand over the batches being filled, and later ones as they arrive."""
        self._hurry = True
        self.flush()

    def stop(self) -> None:
        """Hand over what is being filled and forget the stall timer."""
        self.flush()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def oldest(self) -> list[float]:
        """When the first item of each open batch arrived (for the handling lag)."""
        return [o.items[0].received_at for o in self.filling if o.items]

    def _due(self, open: Open[W]) -> None:
        """The first item of ``open`` has waited ``max_wait``."""
        open.timer = None
        if open.items:
            self._hand_over(open)

    def _hand_over(self, open: Open[W]) -> None:
        if open.timer is not None:
            open.timer.cancel()
            open.timer = None
        items = open.items
        open.items, open.qos1 = [], 0
        del self.filling[open]
        self._hand_over_to(open, items)

    def _stalled(self) -> None:
        """No message for ``STALL`` seconds (else wait again): learn the window, hand over."""
        loop = asyncio.get_running_loop()
        left = self._last_arrival + STALL - loop.time()
        if left > 0.0001:
            self._stall_timer = loop.call_later(left, self._stalled)
            return
        self._stall_timer = None
        self._window = max(self._window, self._unacked())
        self._hand_over_qos1()

    def _known_window(self) -> int:
        """The broker's window as known: learned, announced (MQTT 5), the smaller; 0: unknown."""
        learned, bound = self._window, self._window_bound
        if learned and bound:
            return min(learned, bound)
        return learned or bound

    def _hand_over_qos1(self) -> None:
        for open in [o for o in self.filling if o.qos1]:
            self._hand_over(open)
