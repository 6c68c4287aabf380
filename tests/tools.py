"""An application that records what the platform sends it: for the publishing tools' tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Final

from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Inbound

KEY: Final = "a-abc123-k1"
TOKEN: Final = "tok"
DEADLINE: Final = 15.0


@dataclass
class Listener:
    """Everything received on the filters, in arrival order."""

    got: list[Inbound] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, check: Callable[[list[Inbound]], bool], what: str) -> None:
        """Wait until ``check(got)``; AssertionError naming ``what`` past the deadline."""
        try:
            async with asyncio.timeout(DEADLINE):
                while not check(self.got):
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {len(self.got)}") from None


@contextlib.asynccontextmanager
async def listening(port: int, *filters: str) -> AsyncIterator[Listener]:
    """An application ``a:abc123:listener`` subscribed to ``filters`` (QoS 1, acked at once)."""
    transport = AiomqttTransport()
    await transport.connect(ConnectOptions("127.0.0.1", port, "a:abc123:listener", KEY, TOKEN))
    listener = Listener()

    async def pump() -> None:
        async for batch in transport.batches():
            listener.got.extend(batch)
            transport.ack([m.packet_id for m in batch if m.qos])
            listener.arrived.set()

    task: asyncio.Task[None] | None = None
    try:
        await transport.subscribe([(f, 1) for f in filters])
        task = asyncio.create_task(pump())
        yield listener
    finally:
        await transport.disconnect()
        if task is not None:
            await asyncio.wait_for(task, DEADLINE)
