"""An example application: rolling temperature statistics, alerts and device presence.

Run it with ``worker run worker.examples.fleet``. Devices send ``reading`` events such as
``{"temp": 21.5}`` (``temperature`` and ``t`` are understood too). Per device the app keeps
the last readings and their mean, minimum and maximum; when a reading is above the threshold
it sends that device an ``alert`` command, at most once per cool-down. Status messages keep
a presence table. Payloads that are not JSON are the framework's business (``decode_error``);
JSON without a usable temperature is logged here and skipped.

``EXAMPLE_ALERT_TEMP`` (default 80) and ``EXAMPLE_ALERT_COOLDOWN`` seconds (default 60)
tune the alert. ``EXAMPLE_LEDGER=PATH`` appends the ``seq`` number of every reading handled to
PATH, one a line, written after the reading was fully handled: ``worker demo`` reads these
files to prove that each simulated event was handled exactly once. ``EXAMPLE_WORK`` seconds
(default 0) are awaited per reading, as a database call would take them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

from worker import App, DeviceStatus, Event

log = logging.getLogger("worker.examples.fleet")

app = App()

WINDOW = 60
ALERT_TEMP = float(os.environ.get("EXAMPLE_ALERT_TEMP", "80"))
ALERT_COOLDOWN = float(os.environ.get("EXAMPLE_ALERT_COOLDOWN", "60"))
TEMP_KEYS = ("temp", "temperature", "t")
LEDGER = os.environ.get("EXAMPLE_LEDGER")
#: seconds each reading also waits, as if it called a database (``worker demo --autoscale``)
WORK = float(os.environ.get("EXAMPLE_WORK", "0"))


@dataclass
class Alert:
    """The ``alert`` command sent to a device that runs hot."""

    temp: float
    threshold: float
    mean: float
    min: float
    max: float
    n: int


# Declared so that `worker asyncapi worker.examples.fleet` lists it; fold() sends it.
app.publishes_command(
    "alert", payload=Alert, description="a reading above the threshold, with the recent statistics"
)


@dataclass
class Rolling:
    """The last ``WINDOW`` readings of one device."""

    values: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    last_alert: float = -math.inf

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    def summary(self) -> dict[str, float]:
        return {
            "mean": round(self.mean, 3),
            "min": min(self.values),
            "max": max(self.values),
            "n": len(self.values),
        }


#: (device type, device ID) -> rolling statistics; this instance's share of the fleet
stats: dict[tuple[str, str], Rolling] = {}
#: (device type, device ID) -> connected?, from the platform's status messages
presence: dict[tuple[str, str], bool] = {}
#: the open EXAMPLE_LEDGER file, between startup and shutdown
ledger: list[TextIO] = []


def temperature(data: Any) -> float | None:
    """The temperature in a reading, or None when there is no finite number to find."""
    if isinstance(data, dict):
        if isinstance(data.get("d"), dict):  # the IBM SDKs' {"d": {...}} envelope
            data = data["d"]
        for key in TEMP_KEYS:
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value) if math.isfinite(value) else None
    return None


@app.on_startup
async def announce() -> None:
    """Say what this instance will do."""
    log.info("example app: alert above %.1f, cool-down %.0f s", ALERT_TEMP, ALERT_COOLDOWN)
    if LEDGER:
        # Line-buffered: every line is whole on disk once written, even if the process dies.
        opened = await asyncio.to_thread(open, LEDGER, "a", buffering=1, encoding="utf-8")
        ledger.append(opened)


@app.on_shutdown
async def close_ledger() -> None:
    """Close the ledger after the drain, so it holds every reading this instance handled."""
    while ledger:
        ledger.pop().close()


def record(event: Event) -> None:
    """Note a handled reading's ``seq`` in the ledger (when there is one and it has a seq)."""
    if ledger and isinstance(event.data, dict):
        seq = event.data.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            ledger[0].write(f"{seq}\n")


# ordered: one device's readings are counted in the order they arrived
@app.event(event="reading", format="json", ordered=True, timeout=10, retries=1)
async def on_reading(event: Event) -> None:
    """Fold a reading into its device's statistics; alert the device when it runs hot."""
    if WORK:
        await asyncio.sleep(WORK)
    await fold(event)
    record(event)  # only now: a reading that raised is retried, and must not count twice


async def fold(event: Event) -> None:
    """The statistics and the alert of one reading."""
    value = temperature(event.data)
    if value is None:
        log.info("%s/%s: reading without a temperature", event.device_type, event.device_id)
        return
    key = (event.device_type, event.device_id)
    rolling = stats.setdefault(key, Rolling())
    rolling.add(value)
    now = time.monotonic()
    if value > ALERT_TEMP and now - rolling.last_alert >= ALERT_COOLDOWN:
        rolling.last_alert = now
        await app.publish_command(
            event.device_type,
            event.device_id,
            "alert",
            {"temp": value, "threshold": ALERT_TEMP, **rolling.summary()},
            qos=1,
        )
        log.warning("%s/%s is at %.1f: alert sent", *key, value)


@app.device_status()
async def on_status(status: DeviceStatus) -> None:
    """Track which devices are connected; a takeover (288) is not a disconnect."""
    key = (status.device_type, status.device_id)
    if status.cleared or status.taken_over:
        return
    if status.action in ("Connect", "Disconnect"):
        was = presence.get(key)
        presence[key] = status.connected
        if was != presence[key]:
            log.info("%s/%s %s", *key, "connected" if status.connected else "disconnected")
