"""What only the native transport does: its read path, flow control, keepalive and refusals.

The behaviour every transport shares runs in tests/test_transport_interop.py. Here the protocol
callbacks are driven directly (a fake asyncio transport) where the point is per-read work, and
scripted servers stand in where the point is the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.support.waiting import NETWORK
from worker.connection import transport_factory
from worker.errors import ConfigError, ConnectError, NotAuthorized
from worker.mqtt import MQTT_3_1_1, MQTT_5, encode_publish
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions
from worker.transports.native import NativeTransport

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class FakeSocket:
    """Just enough of an asyncio transport to see what the protocol asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.writes: list[bytes] = []

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def fed(transport: NativeTransport) -> FakeSocket:
    sock = FakeSocket()
    transport.connection_made(sock)  # type: ignore[arg-type]
    return sock


def publishes(*ids: int) -> bytes:
    return b"".join(encode_publish(f"t/{i}", b"p%d" % i, 1, i) for i in ids)


async def test_one_batch_per_read_and_a_split_packet_waits_for_its_tail() -> None:
    transport = NativeTransport()
    fed(transport)
    data = publishes(1, 2, 3, 4)
    transport.data_received(data[:-3])
    transport.data_received(data[-3:])
    batches = transport.batches()
    first = await anext(batches)  # both reads were waiting: handed over as one
    assert [m.packet_id for m in first] == [1, 2, 3, 4]
    assert [m.topic for m in first] == ["t/1", "t/2", "t/3", "t/4"]
    assert transport.received == 4


async def test_reading_pauses_while_the_consumer_is_behind() -> None:
    transport = NativeTransport(max_pending=2)
    sock = fed(transport)
    transport.data_received(publishes(1, 2))
    assert sock.calls == []
    transport.data_received(publishes(3))
    assert sock.calls == ["pause"]
    batches = transport.batches()
    assert [m.packet_id for m in await anext(batches)] == [1, 2, 3]
    assert sock.calls == ["pause", "resume"]


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
async def test_reading_pauses_beyond_the_receive_maximum_until_acks(level: int) -> None:
    # On 3.1.1 too: the broker cannot be told a window, and Mosquitto 2.0 sends beyond its own
    # once acknowledgements flow. The worker holds at most the bound plus one read.
    transport = NativeTransport()
    transport._speak(level, 2, 0)  # what connect() does with receive_maximum=2
    transport._live = True  # as after CONNACK
    sock = fed(transport)

    def sent(*ids: int) -> bytes:
        return b"".join(encode_publish("t", b"p", 1, i, protocol_level=level) for i in ids)

    transport.data_received(sent(1, 2))
    assert sock.calls == []
    transport.data_received(sent(3))
    assert sock.calls == ["pause"] and transport.window_overruns == 1
    batches = transport.batches()
    assert [m.packet_id for m in await anext(batches)] == [1, 2, 3]
    assert sock.calls == ["pause"]  # handed over, still unacknowledged: still paused
    transport.ack([1])
    assert sock.calls == ["pause", "resume"]


def test_websockets_are_not_native() -> None:
    assert transport_factory("native") is NativeTransport
    assert transport_factory("native", websockets=True) is AiomqttTransport
    assert transport_factory("aiomqtt") is AiomqttTransport


async def test_asking_native_for_websockets_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="aiomqtt"):
        await NativeTransport().connect(ConnectOptions("127.0.0.1", 1, "c", websockets=True))


# --- scripted servers ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scripted(
    script: Script, connack: bytes | None = b"\x20\x02\x00\x00"
) -> AsyncIterator[int]:
    """A server that reads the CONNECT, answers ``connack`` (if any), then runs ``script``."""
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            header = await reader.readexactly(2)
            await reader.readexactly(header[1])
            if connack is not None:
                writer.write(connack)
            await script(reader, writer)
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def packets(reader: asyncio.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """(first byte, body) of every packet the client sends (short packets only)."""
    while True:
        kind, length = await reader.readexactly(2)
        yield kind, await reader.readexactly(length)


async def until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


async def test_all_acks_of_one_call_leave_in_one_write() -> None:
    seen: asyncio.Queue[int] = asyncio.Queue()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(publishes(1, 2, 3))
        async for kind, body in packets(reader):
            if kind == 0x40:
                seen.put_nowait(struct.unpack("!H", body)[0])

    async with scripted(script) as port:
        transport = NativeTransport()
        await transport.connect(ConnectOptions("127.0.0.1", port, "c"))
        batch = await asyncio.wait_for(anext(transport.batches()), NETWORK)
        sock = transport._transport
        assert sock is not None
        writes: list[bytes] = []
        write = sock.write

        def counting(data: bytes | bytearray | memoryview) -> None:
            writes.append(bytes(data))
            write(data)

        sock.write = counting  # type: ignore[method-assign]
        transport.ack([m.packet_id for m in reversed(batch)])
        assert writes == [b"\x40\x02\x00\x03\x40\x02\x00\x02\x40\x02\x00\x01"]
        async with asyncio.timeout(NETWORK):
            assert [await seen.get() for _ in range(3)] == [3, 2, 1]
        await transport.disconnect()


@pytest.mark.slow
async def test_a_silent_server_is_declared_dead_within_the_keepalive() -> None:
    pings = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pings
        async for kind, _ in packets(reader):
            pings += kind == 0xC0  # PINGREQ, never answered

    async with scripted(script) as port:
        transport = NativeTransport()
        await transport.connect(ConnectOptions("127.0.0.1", port, "c", keepalive=1))
        with pytest.raises(ConnectError, match="did not answer PINGREQ within 1s"):
            async with asyncio.timeout(NETWORK):
                await drain(transport)
        assert pings == 1
        await transport.disconnect()


@pytest.mark.slow
async def test_an_answering_server_keeps_the_connection() -> None:
    pings: asyncio.Queue[None] = asyncio.Queue()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for kind, _ in packets(reader):
            if kind == 0xC0:
                writer.write(b"\xd0\x00")
                pings.put_nowait(None)

    async with scripted(script) as port:
        transport = NativeTransport()
        await transport.connect(ConnectOptions("127.0.0.1", port, "c", keepalive=1))
        consumer = asyncio.create_task(drain(transport))
        async with asyncio.timeout(NETWORK):
            for _ in range(3):  # a dead verdict would come a keepalive after a lost answer
                await pings.get()
            assert not consumer.done()
            await transport.disconnect()
            await consumer  # ends quietly: closed by us, not lost


async def drain(transport: NativeTransport) -> None:
    async for _ in transport.batches():
        pass


async def test_no_connack_is_a_connect_error_after_the_timeout() -> None:
    async with scripted(until_closed, connack=None) as port:
        with pytest.raises(ConnectError, match=r"no CONNACK within 0\.3s"):
            await NativeTransport().connect(
                ConnectOptions("127.0.0.1", port, "c", connect_timeout=0.3)
            )


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        (2, NotAuthorized, "the client ID is not accepted"),
        (5, NotAuthorized, "not authorised"),
        (3, ConnectError, "server unavailable"),
    ],
)
async def test_refusals(code: int, error: type[ConnectError], text: str) -> None:
    async with scripted(until_closed, connack=bytes((0x20, 2, 0, code))) as port:
        with pytest.raises(ConnectError, match=text) as caught:
            await NativeTransport().connect(ConnectOptions("127.0.0.1", port, "c", "u", "pw"))
    assert type(caught.value) is error
    assert "'pw'" not in str(caught.value)


@pytest.mark.parametrize(
    ("sent", "text"),
    [(b"\x00\x00", "malformed MQTT"), (b"\x34\x05\x00\x01t\x00\x01", "QoS 2")],
)
async def test_a_broken_server_is_a_lost_connection(sent: bytes, text: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(sent)
        await reader.read()

    async with scripted(script) as port:
        transport = NativeTransport()
        with pytest.raises(ConnectError, match=text):
            await asyncio.wait_for(connect_and_drain(transport, port), NETWORK)
        await transport.disconnect()


async def test_the_whole_packets_before_malformed_bytes_are_still_handed_over() -> None:
    connected = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await connected.wait()  # not in the CONNACK's read
        writer.write(encode_publish("t/0", b"before") + b"\x00\x00")
        await reader.read()

    received: list[bytes] = []

    async def receive(transport: NativeTransport) -> None:
        async for batch in transport.batches():
            received.extend(message.payload for message in batch)

    async with scripted(script) as port:
        transport = NativeTransport()
        await transport.connect(ConnectOptions("127.0.0.1", port, "c"))
        connected.set()
        with pytest.raises(ConnectError, match="malformed MQTT"):
            await asyncio.wait_for(receive(transport), NETWORK)
        await transport.disconnect()
    assert received == [b"before"]


async def connect_and_drain(transport: NativeTransport, port: int) -> None:
    # The bytes may come in the CONNACK's read: then connect itself fails.
    await transport.connect(ConnectOptions("127.0.0.1", port, "c"))
    await drain(transport)
