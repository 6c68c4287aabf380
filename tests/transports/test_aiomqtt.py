"""What only the aiomqtt transport needs checked; tests/test_transport_interop.py runs the
behaviour every transport shares (against Mosquitto and the platform)."""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import version

import pytest

from tests.support.waiting import NETWORK
from worker.mqtt import MQTT_3_1_1, MQTT_5, Connack, Connect, PacketReader, encode, encode_publish
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, ProtocolViolation


def test_verified_versions_are_installed() -> None:
    # The manual-ack reach into paho is verified for exactly these ranges (pyproject.toml).
    aiomqtt = tuple(int(p) for p in version("aiomqtt").split(".")[:2])
    paho = tuple(int(p) for p in version("paho-mqtt").split(".")[:2])
    assert (2, 3) <= aiomqtt < (2, 6)
    assert (2, 1) <= paho < (2, 3)


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
async def test_an_oversized_packet_is_refused_from_its_header(level: int) -> None:
    # paho alone would read a 200 MB PUBLISH whole (and wait here for the rest of it).
    header = bytes([0x30, 0x80, 0x80, 0x80, 0x64])  # remaining length 209,715,200

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = PacketReader(1 << 20, level)
        while not any(isinstance(p, Connect) for p in decoder.feed(await reader.read(65536))):
            if reader.at_eof():  # the client left before its CONNECT: nothing to answer
                writer.close()
                return
        writer.write(encode(Connack(), level) + encode_publish("t", b"m1", protocol_level=level))
        writer.write(header + b"\x00\x01t" + b"\x00" * 1000)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiomqttTransport()
    got: list[bytes] = []
    try:
        await transport.connect(
            ConnectOptions("127.0.0.1", port, "c", connect_timeout=NETWORK,
                           protocol_level=level, max_packet_size=1 << 20)
        )  # fmt: skip
        with pytest.raises(ProtocolViolation) as caught:
            await _drain(transport, got)
    finally:
        await transport.disconnect()
        server.close()
        await server.wait_closed()
    assert got == [b"m1"]
    assert caught.value.reason == "packet_too_large"
    assert "remaining length 209715200 above the limit of 1048576" in str(caught.value)


async def _drain(transport: AiomqttTransport, payloads: list[bytes]) -> None:
    """Every payload handed over, until the connection ends (with a deadline)."""
    async with asyncio.timeout(NETWORK):
        async for batch in transport.batches():
            payloads.extend(m.payload for m in batch)
