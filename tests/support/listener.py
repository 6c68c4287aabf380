"""An application that records what the platform sends it: for the publishing tools' tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from tests.support.credentials import API_KEY, ORG, TOKEN
from tests.support.waiting import PROCESS, until
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Inbound


@dataclass
class Listener:
    """Everything received on the filters, in arrival order."""

    got: list[Inbound] = field(default_factory=list)

    async def until(self, check: Callable[[list[Inbound]], bool], what: str) -> None:
        """Wait until ``check(got)``; AssertionError naming ``what`` and the count past the
        deadline (the publishing tools run as processes)."""
        try:
            await until(lambda: check(self.got), what, within=PROCESS, every=0.01)
        except AssertionError as failed:
            raise AssertionError(f"{failed}; got {len(self.got)}") from None


@contextlib.asynccontextmanager
async def listening(port: int, *filters: str) -> AsyncIterator[Listener]:
    """An application ``a:{ORG}:listener`` subscribed to ``filters`` (QoS 1, acked at once)."""
    transport = AiomqttTransport()
    await transport.connect(ConnectOptions("127.0.0.1", port, f"a:{ORG}:listener", API_KEY, TOKEN))
    listener = Listener()

    async def pump() -> None:
        async for batch in transport.batches():
            listener.got.extend(batch)
            transport.ack([m.packet_id for m in batch if m.qos])

    task: asyncio.Task[None] | None = None
    try:
        await transport.subscribe([(f, 1) for f in filters])
        task = asyncio.create_task(pump())
        yield listener
    finally:
        await transport.disconnect()
        if task is not None:
            await asyncio.wait_for(task, PROCESS)
