"""The native transport on MQTT 5 against scripted brokers: what it announces and honours,
properties and topic aliases, reason codes, and bad input from a hostile or broken server.

Each scripted broker is a raw socket server speaking through the project's codec (or raw bytes
where the point is bytes the codec would refuse to write). Bad input must give a clear error
naming what was wrong, a DISCONNECT with the right reason code, and every message read before
it still handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from prometheus_client import CollectorRegistry

from tests.support.waiting import NETWORK
from worker.config import Settings
from worker.connection import Backoff, Connection
from worker.errors import ConnectError, NotAuthorized, PayloadTooLarge
from worker.messages import MessageProperties
from worker.metrics import Metrics
from worker.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Properties,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    decode_packet,
    encode,
    encode_publish,
)
from worker.options import Profile
from worker.transports.base import ConnectOptions, Inbound, ProtocolViolation, ServerRefused
from worker.transports.native import TOPIC_ALIAS_MAXIMUM, NativeTransport

Script = Callable[["Peer"], Awaitable[None]]
ACCEPTED = Connack()
NONE = Properties()


class Peer:
    """The broker's end of one connection: reads packets with the codec, writes bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = PacketReader(1 << 20, MQTT_5)
        self.pending: list[Packet] = []
        self.connect: Connect | None = None

    async def next(self) -> Packet:
        """The next packet the client sent (EOFError when it closed)."""
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def send(self, data: bytes) -> None:
        self.writer.write(data)


@contextlib.asynccontextmanager
async def broker(
    script: Script, connack: Connack = ACCEPTED, level: int = MQTT_5
) -> AsyncIterator[tuple[int, list[Peer]]]:
    """Accepts CONNECT with ``connack`` then runs ``script``; yields (port, the peers)."""
    peers: list[Peer] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        peers.append(peer)
        with contextlib.suppress(EOFError, ConnectionError, asyncio.IncompleteReadError):
            first = await peer.next()
            assert isinstance(first, Connect)
            peer.connect = first
            peer.send(encode(connack, level))
            await script(peer)
            while True:  # then stay until the client leaves
                await peer.next()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        server.close()
        await server.wait_closed()


def options(port: int, level: int = MQTT_5, **kw: object) -> ConnectOptions:
    base: dict[str, object] = {"connect_timeout": NETWORK, "protocol_level": level}
    return ConnectOptions("127.0.0.1", port, "c", **(base | kw))  # type: ignore[arg-type]


async def until_lost(transport: NativeTransport) -> tuple[list[Inbound], ConnectError]:
    """Everything handed over until the connection ended, and why it ended."""
    got: list[Inbound] = []
    async with asyncio.timeout(NETWORK):
        try:
            async for batch in transport.batches():
                got.extend(batch)
        except ConnectError as exc:
            return got, exc
    raise AssertionError("batches() ended without an error")


async def disconnect_code(peer: Peer) -> int | None:
    """The reason code of the DISCONNECT the client sent before closing, None if none."""
    with contextlib.suppress(EOFError, ConnectionError):
        async with asyncio.timeout(NETWORK):
            while True:
                packet = await peer.next()
                if isinstance(packet, Disconnect):
                    return packet.reason_code
    return None


def publish(topic: str, n: int, properties: Properties = NONE, qos: int = 0) -> bytes:
    packet_id = n if qos else None
    return encode_publish(
        topic, b"m%d" % n, qos, packet_id, properties=properties, protocol_level=MQTT_5
    )


async def nothing(peer: Peer) -> None:
    """A script that only accepts the connection."""


# --- what the client announces and honours ---------------------------------------------------


async def test_connect_announces_the_limits_and_a_session_that_ends_with_it() -> None:
    async with broker(nothing) as (port, peers):
        transport = NativeTransport()
        await transport.connect(options(port, receive_maximum=7, max_packet_size=4096))
        await transport.disconnect()
    connect = peers[0].connect
    assert connect is not None and connect.protocol_level == MQTT_5
    assert connect.properties.receive_maximum == 7
    assert connect.properties.maximum_packet_size == 4096
    assert connect.properties.topic_alias_maximum == TOPIC_ALIAS_MAXIMUM
    assert connect.properties.session_expiry_interval == 0


async def test_the_connack_limits_are_honoured(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "worker.transports.native")
    held: list[int] = []
    release = asyncio.Event()

    async def script(peer: Peer) -> None:
        # Receive Maximum 1: the second QoS 1 PUBLISH waits for the first one's PUBACK.
        first = await peer.next()
        assert isinstance(first, Publish) and first.packet_id is not None
        held.append(first.packet_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await peer.next()
                held.append(-1)  # a second one arrived without the first being acknowledged
        await release.wait()
        peer.send(encode(Puback(held[0]), MQTT_5))
        second = await peer.next()
        assert isinstance(second, Publish) and second.packet_id is not None
        peer.send(encode(Puback(second.packet_id), MQTT_5))

    connack = Connack(
        properties=Properties(
            receive_maximum=1,
            assigned_client_identifier="given-id",
            server_keep_alive=30,
            maximum_packet_size=2000,
        )
    )
    async with broker(script, connack) as (port, _):
        transport = NativeTransport()
        await transport.connect(options(port))
        assert transport.assigned_client_id == "given-id"
        sending = [asyncio.create_task(transport.publish("t", b"x", 1)) for _ in range(2)]
        await asyncio.sleep(0.3)
        assert held == [1]
        release.set()
        async with asyncio.timeout(NETWORK):
            await asyncio.gather(*sending)
        with pytest.raises(PayloadTooLarge, match="Maximum Packet Size of 2000"):
            await transport.publish("t", b"x" * 3000, 0)
        await transport.disconnect()
    assert "assigned the client ID given-id" in caplog.text
    assert "keep alive of 30s" in caplog.text


async def test_a_server_without_qos_1_refuses_it_before_sending() -> None:
    async with broker(nothing, Connack(properties=Properties(maximum_qos=0))) as (port, _):
        transport = NativeTransport()
        await transport.connect(options(port))
        with pytest.raises(ServerRefused, match="up to QoS 0"):
            await transport.publish("t", b"x", 1)
        await transport.publish("t", b"x", 0)
        await transport.disconnect()


# --- properties and topic aliases ------------------------------------------------------------


async def test_properties_and_topic_aliases_reach_the_consumer() -> None:
    props = Properties(
        user_properties=(("z", "1"), ("a", "2"), ("z", "3")),
        content_type="application/json",
        correlation_data=b"\x01\x02",
        response_topic="reply/here",
        payload_format_indicator=1,
        message_expiry_interval=30,
    )

    async def script(peer: Peer) -> None:
        peer.send(
            publish("t/long/topic", 1, Properties(topic_alias=5))
            + publish("", 2, Properties(topic_alias=5))
            + publish("t/props", 3, props, qos=1)
        )

    async with broker(script) as (port, _):
        transport = NativeTransport()
        await transport.connect(options(port))
        batches = transport.batches()
        got: list[Inbound] = []
        async with asyncio.timeout(NETWORK):
            while len(got) < 3:
                got.extend(await anext(batches))
        await transport.disconnect()
    assert [m.topic for m in got] == ["t/long/topic", "t/long/topic", "t/props"]
    assert got[0].properties is None  # an alias alone is nothing a handler sees
    assert got[2].properties == MessageProperties(
        user_properties=(("z", "1"), ("a", "2"), ("z", "3")),
        content_type="application/json",
        correlation_data=b"\x01\x02",
        response_topic="reply/here",
        payload_format_indicator=1,
        message_expiry_interval=30,
    )
    assert 25 < got[2].expires_at - time.monotonic() <= 30


async def test_properties_are_sent_on_5_and_left_out_on_3_1_1() -> None:
    props = MessageProperties(user_properties=(("k", "v"),), content_type="text/plain")
    seen: asyncio.Queue[Packet] = asyncio.Queue()

    async def script(peer: Peer) -> None:
        seen.put_nowait(await peer.next())

    async with broker(script) as (port, _):
        transport = NativeTransport()
        await transport.connect(options(port))
        await transport.publish("t", b"x", 0, properties=props)
        v5 = await asyncio.wait_for(seen.get(), NETWORK)
        await transport.disconnect()
    assert isinstance(v5, Publish)
    assert v5.properties.user_properties == (("k", "v"),)
    assert v5.properties.content_type == "text/plain"
    # On 3.1.1 the same call sends a plain PUBLISH.
    sent: asyncio.Queue[Packet] = asyncio.Queue()

    async def script_v3(peer: Peer) -> None:
        data = await peer.reader.read(65536)
        sent.put_nowait(decode_packet(data, MQTT_3_1_1))

    async with broker(script_v3, level=MQTT_3_1_1) as (port, _):
        transport = NativeTransport()
        await transport.connect(options(port, MQTT_3_1_1))
        await transport.publish("t", b"x", 0, properties=props)
        v3 = await asyncio.wait_for(sent.get(), NETWORK)
        await transport.disconnect()
    assert isinstance(v3, Publish) and v3.payload == b"x"


# --- reason codes and the server's DISCONNECT ------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        (0x87, NotAuthorized, "not authorised"),
        (0x86, NotAuthorized, "bad user name or password"),
        (0x84, ConnectError, "set --mqtt-version 3.1.1"),
        (0x89, ConnectError, '0x89 server busy: "come back later"'),
    ],
)
async def test_connack_refusals(code: int, error: type[ConnectError], text: str) -> None:
    connack = Connack(reason_code=code, properties=Properties(reason_string="come back later"))
    async with broker(nothing, connack) as (port, _):
        with pytest.raises(error, match=text) as caught:
            await NativeTransport().connect(options(port))
    assert type(caught.value) is error


async def test_failure_codes_of_acks_are_errors() -> None:
    async def script(peer: Peer) -> None:
        while True:
            packet = await peer.next()
            said = Properties(reason_string="no access")
            if isinstance(packet, Subscribe):
                peer.send(encode(Suback(packet.packet_id, (0x01, 0x87)), MQTT_5))
            elif isinstance(packet, Unsubscribe):
                peer.send(encode(Unsuback(packet.packet_id, (0x87,), said), MQTT_5))
            elif isinstance(packet, Publish) and packet.packet_id is not None:
                peer.send(encode(Puback(packet.packet_id, 0x87, said), MQTT_5))

    async with broker(script) as (port, _):
        transport = NativeTransport()
        await transport.connect(options(port))
        assert await transport.subscribe([("a", 1), ("b", 1)]) == [1, 0x87]
        with pytest.raises(ServerRefused, match="refused to unsubscribe a: 0x87 not authorized"):
            await transport.unsubscribe(["a"])
        with pytest.raises(ServerRefused, match='PUBLISH to t: 0x87 not authorized: "no access"'):
            await transport.publish("t", b"x", 1)
        await transport.disconnect()


async def test_a_server_disconnect_is_a_logged_loss_after_what_arrived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(peer: Peer) -> None:
        said = Properties(reason_string="maintenance")
        peer.send(publish("t", 1) + encode(Disconnect(0x8B, said), MQTT_5))

    async with broker(script) as (port, _):
        transport = NativeTransport()
        await transport.connect(options(port))
        got, error = await until_lost(transport)
        await transport.disconnect()
    assert [m.payload for m in got] == [b"m1"]
    assert isinstance(error, ProtocolViolation) and error.reason == "server_disconnect"
    assert 'lost: the server sent DISCONNECT 0x8b server shutting down: "maintenance"' in str(error)
    assert "server shutting down" in caplog.text


# --- bad input -------------------------------------------------------------------------------


# A PUBLISH whose property block is hand-made: topic "t", QoS 0, then ``props`` as raw bytes.
def raw_publish(props: bytes) -> bytes:
    body = b"\x00\x01t" + bytes([len(props)]) + props + b"payload"
    return bytes([0x30, len(body)]) + body


@pytest.mark.parametrize(
    ("bad", "reason", "code", "text"),
    [
        # content type twice
        (raw_publish(b"\x03\x00\x01a\x03\x00\x01b"), "malformed", 0x81, "appears more than once"),
        # session expiry interval: a CONNECT property, not a PUBLISH one
        (raw_publish(b"\x11\x00\x00\x00\x01"), "malformed", 0x81, "not allowed in this packet"),
        # a property length running past the packet
        (raw_publish(b"\x03\x00\x09a"), "malformed", 0x81, "malformed MQTT"),
        (publish("t", 9, Properties(topic_alias=TOPIC_ALIAS_MAXIMUM + 1)), "topic_alias_invalid",
         0x94, f"above the Topic Alias Maximum of {TOPIC_ALIAS_MAXIMUM}"),
        (publish("", 9, Properties(topic_alias=3)), "topic_alias_invalid", 0x94,
         "topic alias 3 before giving it a topic"),
        # AUTH never asked for
        (b"\xf0\x00", "unexpected_packet", 0x82, "sent AUTH"),
    ],
)  # fmt: skip
async def test_bad_input_closes_with_the_right_reason_code(
    bad: bytes, reason: str, code: int, text: str
) -> None:
    async def script(peer: Peer) -> None:
        peer.send(publish("t", 1))
        await asyncio.sleep(0.05)  # a read of its own: it must be handed over all the same
        peer.send(bad)

    async with broker(script) as (port, peers):
        transport = NativeTransport()
        await transport.connect(options(port))
        got, error = await until_lost(transport)
        assert await disconnect_code(peers[0]) == code
        await transport.disconnect()
    assert [m.payload for m in got] == [b"m1"]
    assert isinstance(error, ProtocolViolation)
    assert error.reason == reason
    assert text in str(error)


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
async def test_an_oversized_packet_is_refused_from_its_header(level: int) -> None:
    # A 200 MB PUBLISH: refused when its fixed header arrives, not after reading it.
    header = bytes([0x30, 0x80, 0x80, 0x80, 0x64])  # remaining length 209,715,200

    async def script(peer: Peer) -> None:
        peer.send(encode_publish("t", b"m1", protocol_level=level))
        await asyncio.sleep(0.05)
        peer.send(header + b"\x00\x01t" + b"\x00" * 1000)

    async with broker(script, level=level) as (port, peers):
        transport = NativeTransport()
        await transport.connect(options(port, level, max_packet_size=1 << 20))
        got, error = await until_lost(transport)
        code = await disconnect_code(peers[0]) if level == MQTT_5 else None
        await transport.disconnect()
    assert [m.payload for m in got] == [b"m1"]
    assert isinstance(error, ProtocolViolation) and error.reason == "packet_too_large"
    assert "above --max-packet-size (1048576 bytes)" in str(error)
    assert code == (0x95 if level == MQTT_5 else None)


WHY_PAUSED = {
    MQTT_5: "above the Receive Maximum of 2 we announced (a protocol error)",
    MQTT_3_1_1: "above --receive-maximum (2); reading pauses",  # 3.1.1: a bound of our own
}


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
async def test_a_broker_beyond_the_receive_maximum_is_reported_and_survived(
    level: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "worker.transports.native")

    async def script(peer: Peer) -> None:
        # Receive Maximum 2, yet 6 QoS 1 messages at once: on MQTT 5 a protocol error of the
        # broker's; on 3.1.1 a window larger than the worker's bound.
        peer.send(b"".join(encode_publish("t", b"m%d" % n, 1, n, protocol_level=level)
                           for n in range(1, 7)))  # fmt: skip

    async with broker(script, level=level) as (port, _):
        transport = NativeTransport()
        await transport.connect(options(port, level, receive_maximum=2))
        batches = transport.batches()
        got: list[Inbound] = []
        async with asyncio.timeout(NETWORK):
            while len(got) < 6:
                batch = await anext(batches)
                got.extend(batch)
                transport.ack([m.packet_id for m in batch])
        assert transport.window_overruns == 1
        await transport.publish("t", b"still here", 0)  # the connection lives on
        await transport.disconnect()
    assert [m.packet_id for m in got] == [1, 2, 3, 4, 5, 6]
    assert WHY_PAUSED[level] in caplog.text


# --- the worker's connection survives it -----------------------------------------------------


class Sink:
    """The pipeline's place: takes batches and acknowledges them at once."""

    def __init__(self) -> None:
        self.messages: list[Inbound] = []
        self.changed = asyncio.Event()

    async def put(self, batch: Sequence[Inbound], ack: Callable[[Sequence[int]], None]) -> None:
        self.messages.extend(batch)
        ack([m.packet_id for m in batch if m.qos])
        self.changed.set()


async def test_the_worker_reports_a_protocol_error_reconnects_and_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connections = 0

    async def script(peer: Peer) -> None:
        nonlocal connections
        connections += 1
        subscribe = await peer.next()
        assert isinstance(subscribe, Subscribe)
        peer.send(encode(Suback(subscribe.packet_id, (1,)), MQTT_5))
        if connections == 1:  # a message, then a duplicated property: the connection ends
            peer.send(publish(EVENT, 1, qos=1))
            await asyncio.sleep(0.05)
            peer.send(raw_publish(b"\x03\x00\x01a\x03\x00\x01b"))
        else:
            peer.send(publish(EVENT, 2, qos=1))

    settings = Settings(profile=Profile.MQTT, port=0, mqtt_version="5", org="abc123")
    metrics = Metrics(
        CollectorRegistry(), app="a", client_id="c", instance="i", profile="mqtt", version="0"
    )
    sink = Sink()
    async with broker(script) as (port, _):
        settings = dataclasses.replace(settings, host="127.0.0.1", port=port)
        conn = Connection(
            settings, ["iot-2/type/+/id/+/evt/+/fmt/+"], sink, metrics,
            transport_factory=NativeTransport, backoff=Backoff(initial=0.05, cap=0.1),
        )  # fmt: skip
        task = asyncio.create_task(conn.run())
        await conn.open_intake()
        async with asyncio.timeout(NETWORK):
            while len(sink.messages) < 2:
                sink.changed.clear()
                await sink.changed.wait()
        await conn.close()
        await asyncio.wait_for(task, NETWORK)
    assert [m.payload for m in sink.messages] == [b"m1", b"m2"]
    errors = metrics.registry.get_sample_value(
        "worker_protocol_errors_total", {"reason": "malformed"}
    )
    assert errors == 1
    assert "protocol error, reconnecting" in caplog.text
    assert "appears more than once" in caplog.text


EVENT = "iot-2/type/t/id/d/evt/e/fmt/text"


async def test_messages_before_a_bad_alias_in_the_same_read_are_handed_over() -> None:
    async def script(peer: Peer) -> None:
        peer.send(publish("t", 1) + publish("t", 2, qos=1) + publish("", 3, NONE_ALIAS))

    async with broker(script) as (port, peers):
        transport = NativeTransport()
        await transport.connect(options(port))
        got, error = await until_lost(transport)
        assert await disconnect_code(peers[0]) == 0x94
        await transport.disconnect()
    assert [m.payload for m in got] == [b"m1", b"m2"]
    assert isinstance(error, ProtocolViolation) and error.reason == "topic_alias_invalid"


NONE_ALIAS = Properties(topic_alias=9)
