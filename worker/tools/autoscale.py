"""The autoscaling policy of docs/scaling.md, computed from the workers' own ``/metrics``.

The same formula as the recording rule ``worker:app_desired_replicas:count`` and KEDA's
AverageValue target::

    busy lanes = sum over instances of d(worker_handler_seconds_sum) / dt
    desired    = clamp(ceil(busy lanes / (target x lanes per replica)), min, max)

and the same behaviour as the HorizontalPodAutoscaler's: up at once, down only when every
wish of the last ``down_window`` seconds was lower, one replica per ``down_period``. The only
difference is the time scale: ``worker demo --autoscale`` runs in a minute, so its windows are
seconds where a cluster's are minutes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

#: the share of its lanes' time a replica is sized to spend in handlers
TARGET: Final = 0.7


@dataclass(frozen=True)
class Policy:
    """The scaling policy's parameters."""

    target: float = TARGET
    min_replicas: int = 1
    max_replicas: int = 3
    #: seconds every wish must have been lower before a replica is removed
    down_window: float = 300.0
    #: seconds between two removals (each replica drains first)
    down_period: float = 60.0


def desired(busy: float, lanes_per_replica: float, policy: Policy) -> int:
    """The replicas that keep saturation at the target: ceil(busy / (target x lanes))."""
    wanted = math.ceil(busy / (policy.target * lanes_per_replica)) if lanes_per_replica else 0
    return max(policy.min_replicas, min(policy.max_replicas, wanted))


@dataclass
class Autoscaler:
    """Turns a stream of (time, busy lanes) into replica counts, without flapping."""

    policy: Policy
    #: (when, desired) of the last ``down_window`` seconds
    wishes: deque[tuple[float, int]] = field(default_factory=deque)
    last_change: float = -math.inf
    #: when the first wish was made: a window is whole only after down_window seconds
    since: float | None = None

    def decide(self, now: float, busy: float, lanes_per_replica: float, current: int) -> int:
        """The replica count to have now (``current`` when nothing should change)."""
        wish = desired(busy, lanes_per_replica, self.policy)
        self.since = now if self.since is None else self.since
        self.wishes.append((now, wish))
        while self.wishes and self.wishes[0][0] < now - self.policy.down_window:
            self.wishes.popleft()
        if wish > current:
            self.last_change = now
            return wish
        # Down: the highest wish of the window decides, and one replica at a time.
        highest = max(w for _, w in self.wishes)
        whole = now - self.since >= self.policy.down_window
        if highest < current and whole and now - self.last_change >= self.policy.down_period:
            self.last_change = now
            return current - 1
        return current


@dataclass(frozen=True)
class Load:
    """What one scrape of one worker says about its load."""

    #: handler seconds so far, every route
    handler_seconds: float
    lanes: float


def read_load(text: str) -> Load:
    """The handler-time total and the lanes of a worker's ``/metrics`` page."""
    seconds = lanes = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "worker_handler_seconds_sum":
                seconds += sample.value
            elif sample.name == "worker_concurrency" and not sample.labels:
                lanes += sample.value
    return Load(seconds, lanes)


@dataclass
class BusyMeter:
    """Lanes busy on average over the last ``window`` seconds, per instance, summed."""

    window: float
    samples: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)

    def add(self, instance: str, now: float, load: Load) -> None:
        """Record one scrape of ``instance``."""
        found = self.samples.setdefault(instance, deque())
        found.append((now, load.handler_seconds))
        while len(found) > 2 and found[1][0] <= now - self.window:
            found.popleft()

    def forget(self, instance: str) -> None:
        """Leave out an instance that is draining or gone."""
        self.samples.pop(instance, None)

    def busy(self) -> float:
        """Handler seconds per second, all instances."""
        total = 0.0
        for found in self.samples.values():
            (then, before), (now, after) = found[0], found[-1]
            if now > then:
                total += max(0.0, after - before) / (now - then)
        return total
