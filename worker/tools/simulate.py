"""A fleet of simulated devices publishing ``reading`` events at a steady rate.

Two ways to publish, both allowed by the platform (W8, W10):

- ``device``: every device is its own MQTT connection (``d:org:type:id``, user
  ``use-token-auth``, its token) publishing ``iot-2/evt/reading/fmt/json``; the platform adds
  type and ID, and sends a status message whenever a device connects or disconnects.
- ``app``: one application connection publishes ``iot-2/type/T/id/D/evt/reading/fmt/json`` on
  every device's behalf (the only way on a standard broker, which rewrites nothing).

Churn keeps status messages flowing: every ``churn`` seconds one device goes away and comes
back. On a Watson IoT platform that is a real device connection; a standard broker sends no
status messages of its own, so in the ``mqtt`` profile the simulator publishes the ones the
platform would have sent.

Each event is ``{"temp": 21.4, "seq": 17, "ts": 1700000000.123}``: ``seq`` numbers every event
of the run from 0, so whoever handles them can prove that each was handled exactly once, and
``ts`` is when it was sent. The simulator keeps the numbers the platform acknowledged. The
temperature range and the payload's shape can be chosen (``worker.tools.sim_payload``).

A platform that refuses the devices' client IDs stops the run with one line that says how to
give devices tokens (or to publish for them as an application).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import orjson

from worker.config import Settings
from worker.errors import ConnectError, NotAuthorized
from worker.identity import QUICKSTART_ORG
from worker.options import Profile
from worker.tools.publish import tool_options
from worker.tools.sim_payload import Template
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Transport

log = logging.getLogger(__name__)

Mode = Literal["device", "app"]
DEVICE_USER: Final = "use-token-auth"
#: the chance that one reading is a hot spike (above the example app's alert threshold)
SPIKE_CHANCE: Final = 0.002
#: how long a churned device stays away, as a share of the churn interval
AWAY: Final = 0.5
#: seconds to wait for a device's publishes before it is disconnected for churn
_QUIET_DEADLINE: Final = 5.0
#: where a device's temperature starts, and the bounds of its walk, unless --temp-range
_START: Final = (18.0, 24.0)
_BOUNDS: Final = (5.0, 35.0)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate; ``count`` and ``duration`` bound the run (None: until stopped)."""

    devices: int = 12
    types: tuple[str, ...] = ("sensor", "thermostat", "meter")
    rate: float = 50.0
    count: int | None = None
    duration: float | None = None
    mode: Mode = "device"
    churn: float = 5.0
    device_token: str = "demo-token"
    qos: int = 1
    event: str = "reading"
    in_flight: int = 200
    seed: int | None = None
    client_id: str | None = None
    #: LOW, HIGH: where temperatures start and stay (None: start 18-24, walk within 5-35)
    temp_range: tuple[float, float] | None = None
    #: the payload's shape (None: {"temp", "seq", "ts"})
    template: Template | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        """The range a temperature walks within."""
        return self.temp_range or _BOUNDS


@dataclass
class Device:
    """One simulated device: its identity, connection (device mode) and temperature walk."""

    device_type: str
    device_id: str
    temp: float
    online: bool = False
    transport: Transport | None = None
    pending: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass
class SimStats:
    """What the run did so far; ``acked`` are the sequence numbers the platform accepted."""

    started: float = field(default_factory=time.monotonic)
    acked: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    in_flight: int = 0
    online: int = 0
    devices: int = 0
    churned: int = 0
    last_error: str | None = None
    finished: bool = False
    ended: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds from the first event to the end of the run (or to now)."""
        return (self.ended or time.monotonic()) - self.started

    @property
    def sent(self) -> int:
        """Events the platform acknowledged."""
        return len(self.acked)

    @property
    def errors(self) -> int:
        """Events that could not be published."""
        return len(self.failed)

    def line(self, rate: float) -> str:
        """The progress line: ``sent 1200 (50.0/s) · errors 0 · in flight 2 · online 11/12``."""
        text = (
            f"sent {self.sent} ({rate:.1f}/s) · errors {self.errors} · in flight {self.in_flight}"
            f" · devices online {self.online}/{self.devices} · reconnects {self.churned}"
        )
        return text + (f" · last error: {self.last_error}" if self.last_error else "")


def fleet(config: SimConfig, rng: random.Random) -> list[Device]:
    """``config.devices`` devices spread over the types: ``sensor-001``, ``meter-002`` ..."""
    low, high = config.temp_range or _START
    return [
        Device(kind, f"{kind}-{i // len(config.types) + 1:03d}", rng.uniform(low, high))
        for i, kind in ((i, config.types[i % len(config.types)]) for i in range(config.devices))
    ]


def device_options(settings: Settings, config: SimConfig, device: Device) -> ConnectOptions:
    """How one device connects: ``d:org:type:id`` with its token (none in quickstart)."""
    quickstart = settings.org == QUICKSTART_ORG
    return ConnectOptions(
        host=settings.host,
        port=settings.port,
        client_id=f"d:{settings.org}:{device.device_type}:{device.device_id}",
        username=None if quickstart else DEVICE_USER,
        password=None if quickstart else config.device_token,
        keepalive=settings.keepalive,
        tls=settings.tls,
        cafile=settings.cafile,
        websockets=settings.mqtt_transport == "websockets",
    )


def status_payload(action: str, client_id: str) -> bytes:
    """A device status message as the platform words it (for brokers that send none)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps({"Action": action, "Time": now, "ClientID": client_id})


class Simulator:
    """Runs a fleet: connect, publish at the rate, churn, stop; see the module docstring."""

    def __init__(self, config: SimConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.stats = SimStats()
        self._rng = random.Random(config.seed)
        self.devices = fleet(config, self._rng)
        self.stats.devices = len(self.devices)
        self._app: Transport | None = None
        self._window = asyncio.Semaphore(config.in_flight)
        self._stop = asyncio.Event()
        #: events per second from now on (``worker demo --autoscale`` changes it as it runs)
        self.rate = config.rate
        #: set once every connection is up and the first event may leave
        self.publishing = asyncio.Event()
        #: app mode: the platform refused a device's own connection, so churn has stopped
        self._churn_refused = False

    def stop(self) -> None:
        """End the run: no new events; those in flight finish."""
        self._stop.set()

    async def run(self, report: Callable[[SimStats], None] | None = None) -> SimStats:
        """Connect, publish until the count, the duration or ``stop``; disconnect.

        ConnectError (NotAuthorized included) when the fleet cannot connect at the start;
        failures later are counted in ``stats`` and the run goes on.
        """
        try:
            await self._connect()
            self.publishing.set()
            async with asyncio.TaskGroup() as tg:
                side = [tg.create_task(self._churn(tg))]
                if report is not None:
                    side.append(tg.create_task(self._report(report)))
                await self._pace(tg)
                for task in side:
                    task.cancel()
        finally:
            self.stats.ended = time.monotonic()
            await self._disconnect()
            self.stats.finished = True
        return self.stats

    async def _connect(self) -> None:
        cfg = self.config
        if cfg.mode == "app":
            self._app = await _open(tool_options(self.settings, "simulate", cfg.client_id))
            for device in self.devices:
                device.online = True
        else:
            await self._connect_devices()
        self.stats.online = sum(d.online for d in self.devices)

    async def _connect_devices(self) -> None:
        """Connect every device; on a failure, the first one's error, explained.

        Every attempt is let finish (none is cancelled mid-handshake, which aiomqtt reports
        as a traceback of its own), and the devices that did connect are disconnected.
        """
        outcomes = await asyncio.gather(
            *(self._connect_device(d) for d in self.devices), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if not errors:
            return
        await self._disconnect()
        first = errors[0]
        if isinstance(first, NotAuthorized):
            raise ConnectError(
                f"{first}; {refused_devices_hint(self.settings.org, self.devices)}"
            ) from first
        raise first

    async def _connect_device(self, device: Device) -> None:
        device.transport = await _open(device_options(self.settings, self.config, device))
        device.online = True

    async def _disconnect(self) -> None:
        transports = [self._app, *(d.transport for d in self.devices)]
        await asyncio.gather(*(t.disconnect() for t in transports if t is not None))
        for device in self.devices:
            device.online, device.transport = False, None
        self.stats.online = 0

    def _done(self, seq: int, started: float) -> bool:
        cfg = self.config
        if self._stop.is_set() or (cfg.count is not None and seq >= cfg.count):
            return True
        return cfg.duration is not None and time.monotonic() - started >= cfg.duration

    async def _pace(self, tg: asyncio.TaskGroup) -> None:
        """Start event ``seq`` at ``seq / rate`` seconds into the run (0 rate: no pause); when
        ``self.rate`` changes, the events after it follow the new rate from that moment."""
        started = time.monotonic()
        self.stats.started = started
        seq = 0
        base, base_seq, rate = started, 0, self.rate
        while not self._done(seq, started):
            if self.rate != rate:  # a new pace counts from the event it changed at
                base, base_seq, rate = time.monotonic(), seq, self.rate
            if rate > 0:
                # The pace of the fleet: waiting for the next event's due time is the point.
                due = base + (seq - base_seq) / rate
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, due - time.monotonic())):
                        await self._stop.wait()
                if self._done(seq, started):
                    return
            await self._window.acquire()
            device = self._pick(seq)
            task = tg.create_task(self._send(seq, device))
            device.pending.add(task)
            task.add_done_callback(device.pending.discard)
            seq += 1

    def _pick(self, seq: int) -> Device:
        """Device ``seq mod n``, or the next one online when that one is away."""
        n = len(self.devices)
        for step in range(n):
            device = self.devices[(seq + step) % n]
            if device.online:
                return device
        return self.devices[seq % n]  # all away: the send fails and is counted

    def _reading(self, device: Device, seq: int) -> bytes:
        low, high = self.config.bounds
        device.temp += self._rng.gauss(0.0, 0.3)
        device.temp = min(high, max(low, device.temp))
        temp = device.temp
        if self.config.temp_range is None and self._rng.random() < SPIKE_CHANCE:
            temp = self._rng.uniform(81.0, 95.0)  # a hot spike, for the example's alert
        values = {"temp": round(temp, 2), "seq": seq, "ts": round(time.time(), 3)}
        if self.config.template is None:
            return orjson.dumps(values)
        ids = {"device_type": device.device_type, "device_id": device.device_id}
        return self.config.template.render(values | ids)

    def _route(self, device: Device) -> tuple[Transport | None, str]:
        event = self.config.event
        if self.config.mode == "app":
            topic = f"iot-2/type/{device.device_type}/id/{device.device_id}/evt/{event}/fmt/json"
            return self._app, topic
        return device.transport, f"iot-2/evt/{event}/fmt/json"

    async def _send(self, seq: int, device: Device) -> None:
        stats = self.stats
        stats.in_flight += 1
        try:
            transport, topic = self._route(device)
            # Not ``device.online``: a device picked while online may go away before this
            # task runs, and its churn waits for these pending publishes before disconnecting.
            if transport is None:
                raise ConnectError(f"{device.device_id} is not connected")
            await transport.publish(topic, self._reading(device, seq), qos=self.config.qos)
            stats.acked.append(seq)
        except ConnectError as exc:
            stats.failed.append(seq)
            stats.last_error = str(exc)
        finally:
            stats.in_flight -= 1
            self._window.release()

    async def _report(self, report: Callable[[SimStats], None]) -> None:
        while True:
            await asyncio.sleep(1.0)  # the progress line's period
            report(self.stats)

    async def _churn(self, tg: asyncio.TaskGroup) -> None:
        """Every ``churn`` seconds, one device (in turn) goes away and comes back."""
        if self.config.churn <= 0:
            return
        turn = 0
        while True:
            await asyncio.sleep(self.config.churn)  # the churn's period
            if self._churn_refused:
                return
            device = self.devices[turn % len(self.devices)]
            turn += 1
            tg.create_task(self._bounce(device))

    async def _bounce(self, device: Device) -> None:
        away = self.config.churn * AWAY
        try:
            if self.config.mode == "device":
                await self._bounce_connection(device, away)
            elif self.settings.profile is Profile.MQTT:
                await self._bounce_status(device, away)
            else:
                await self._bounce_visit(device, away)
            self.stats.churned += 1
        except ConnectError as exc:
            if isinstance(exc, NotAuthorized) and self.config.mode == "app":
                # A visit as the device itself, refused: every later one would be too. Visits
                # already under way when the first was refused are not reported again.
                if self._churn_refused:
                    return
                self._churn_refused = True
                self.stats.last_error = f"churn stopped: {exc}; {_VISITS_NEED_TOKENS}"
                log.warning("%s", self.stats.last_error)
                return
            # Churn is scenery: a failed reconnect is reported, and the device is retried.
            self.stats.last_error = f"churn of {device.device_id}: {exc}"
            log.info("churn of %s failed: %s", device.device_id, exc)

    async def _bounce_connection(self, device: Device, away: float) -> None:
        """Device mode: stop using the device, let its publishes finish, reconnect later."""
        device.online = False
        self.stats.online -= 1
        try:
            if device.pending:
                await asyncio.wait(set(device.pending), timeout=_QUIET_DEADLINE)
            transport, device.transport = device.transport, None
            if transport is not None:
                await transport.disconnect()
            await asyncio.sleep(away)  # how long the device is away
            await self._connect_device(device)
        finally:
            self.stats.online = sum(d.online for d in self.devices)

    async def _bounce_visit(self, device: Device, away: float) -> None:
        """App mode on a platform: the device connects for a moment as itself, then leaves."""
        transport = await _open(device_options(self.settings, self.config, device))
        try:
            await asyncio.sleep(away)  # how long the device stays
        finally:
            await transport.disconnect()

    async def _bounce_status(self, device: Device, away: float) -> None:
        """App mode on a standard broker: publish the status messages a platform would send."""
        assert self._app is not None
        client_id = f"d:{self.settings.org}:{device.device_type}:{device.device_id}"
        topic = f"iot-2/type/{device.device_type}/id/{device.device_id}/mon"
        await self._app.publish(topic, status_payload("Disconnect", client_id), qos=1)
        await asyncio.sleep(away)  # how long the device is away
        await self._app.publish(topic, status_payload("Connect", client_id), qos=1)


#: why churn stops when the platform refuses a device's visit in app mode
_VISITS_NEED_TOKENS: Final = (
    "device status messages need the devices to connect as themselves: give them tokens "
    "(worker platform --accept-any-key, or --keys FILE), or pass --churn 0"
)


def refused_devices_hint(org: str, devices: list[Device]) -> str:
    """How to let the simulated devices in: tokens on the platform, or publish as an app."""
    sample = devices[0] if devices else Device("sensor", "sensor-001", 0.0)
    return (
        "the platform does not know the simulated devices. Give them tokens: start "
        "`worker platform` with --accept-any-key, or with --keys FILE listing each device "
        f'("device_tokens": {{"d:{org}:{sample.device_type}:{sample.device_id}": "TOKEN"}}) and '
        "pass the same --device-token here; or publish for the devices as an application: --as app"
    )


async def _open(options: ConnectOptions) -> Transport:
    transport = AiomqttTransport()
    await transport.connect(options)
    return transport
