"""A paced QoS 1 publisher that knows, per message, what the broker confirmed.

The accounting invariant starts from the publisher's truth: a number is *confirmed* when the
broker's PUBACK came back (the broker took responsibility for it) and *unconfirmed* when the
publisher's connection was lost before that (the broker may or may not have routed it). The
publisher never resends: a resend would be a second copy the ledger could not tell apart.

On a lost connection it reconnects by itself once ``reconnect`` is set (a test clears it to
hold the publisher back while the broker restarts and the group resubscribes; MQTT discards
a message that no subscription matches, which is not a fault of the workers). Pacing is a
schedule, not a synchronisation: message ``i`` leaves at ``start + i / rate``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from tests.support.waiting import NETWORK
from worker.errors import ConnectError
from worker.transports.base import ConnectOptions
from worker.transports.native import NativeTransport

_RETRY: Final = 0.05


def reading_topic(n: int) -> str:
    """Fifty devices, one event type: what the group subscribes to."""
    return f"iot-2/type/sensor/id/d{n % 50}/evt/reading/fmt/json"


def plain(n: int) -> bytes:
    """The payload of event ``n``."""
    return b'{"n": %d}' % n


@dataclass
class Load:
    """Publishes ``numbers`` at ``rate`` per second with up to ``window`` awaiting PUBACK."""

    host: str
    port: int
    rate: float = 1000.0
    window: int = 100
    payload: Callable[[int], bytes] = plain
    client_id: str = "reliability-load"
    #: numbers the broker acknowledged
    confirmed: set[int] = field(default_factory=set)
    #: numbers sent on a connection that was lost before their PUBACK
    unconfirmed: set[int] = field(default_factory=set)
    #: connections lost while publishing
    losses: int = 0
    #: cleared: after a loss, wait before reconnecting
    reconnect: asyncio.Event = field(default_factory=asyncio.Event)
    #: how many numbers have been handed to the broker so far (confirmed or not)
    sent: int = 0

    def __post_init__(self) -> None:
        self.reconnect.set()
        self._transport: NativeTransport | None = None
        self._slots = asyncio.Semaphore(self.window)

    @property
    def published(self) -> set[int]:
        """Every number handed to the broker."""
        return self.confirmed | self.unconfirmed

    async def run(self, numbers: range) -> None:
        """Publish every number on schedule; returns when each has its answer (or loss)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            async with asyncio.TaskGroup() as tg:
                for i, n in enumerate(numbers):
                    delay = start + i / self.rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._slots.acquire()
                    transport = self._transport
                    if transport is None:
                        transport = await self._connect()
                        start = loop.time() - i / self.rate  # no burst to catch up
                    tg.create_task(self._one(transport, n))
                    self.sent += 1
        finally:
            if self._transport is not None:
                await self._transport.disconnect()

    async def _one(self, transport: NativeTransport, n: int) -> None:
        try:
            async with asyncio.timeout(NETWORK):
                await transport.publish(reading_topic(n), self.payload(n), qos=1)
        except (ConnectError, TimeoutError):
            self.unconfirmed.add(n)
            if self._transport is transport:
                self._transport = None
                self.losses += 1
                await transport.disconnect()
        else:
            self.confirmed.add(n)
        finally:
            self._slots.release()

    async def _connect(self) -> NativeTransport:
        """A new connection, once allowed; retried until the deadline."""
        async with asyncio.timeout(NETWORK * 3):
            await self.reconnect.wait()
            while True:
                transport = NativeTransport()
                try:
                    await transport.connect(ConnectOptions(self.host, self.port, self.client_id))
                except ConnectError:
                    await asyncio.sleep(_RETRY)  # pacing the retries, not synchronising
                    continue
                self._transport = transport
                return transport
