"""``--overflow block`` with handlers that publish at QoS 1, on both transports.

A blocked intake stops the connection taking reads, and the transport then pauses the socket;
the PUBACK a handler waits for is on that same socket. The transport must go on reading while
an answer is awaited, or the handler, the lane and the intake wait for each other forever.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from worker import App, Event
from worker.testing.fixtures import RunApp, publish_event

pytest_plugins = ["worker.testing"]

COUNT = 200


@pytest.mark.parametrize("transport", ["native", "aiomqtt"])
async def test_handlers_publishing_at_qos_1_finish_while_a_full_blocking_intake_pauses_reads(
    running_app: RunApp, mqtt_client: aiomqtt.Client, transport: str
) -> None:
    app = App()

    @app.event(event="reading")
    async def relay(event: Event) -> None:
        await asyncio.sleep(0.002)  # slower than the arrivals: the intake fills and blocks
        await app.publish_event("relay", event.device_id, "copy", {"from": "relay"}, qos=1)

    serving = await running_app(
        app, qos=0, overflow="block", intake_size=2, concurrency=1, transport=transport
    )
    for n in range(COUNT):  # one at a time: many small reads, so the socket does get paused
        await publish_event(mqtt_client, "sensor", f"s{n}", "reading", {"n": n}, qos=1)
    handled = await serving.handled(COUNT)
    assert [h.outcome.value for h in handled].count("ok") == COUNT
