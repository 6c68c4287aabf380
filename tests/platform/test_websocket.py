"""MQTT over WebSockets: handshake, frames and the asyncio adapter (RFC 6455, MQTT 3.1.1 s. 6)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.waiting import NETWORK
from worker.platform import Platform, PlatformConfig, auth, tls, websocket, ws_handshake
from worker.platform.wsframes import Opcode, encode_frame

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the example of RFC 6455 section 1.3


def upgrade(protocols: str | None = "mqtt", **overrides: str | None) -> bytes:
    headers: dict[str, str | None] = {
        "Host": "localhost:8080",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": protocols,
    }
    headers.update({k.replace("_", "-"): v for k, v in overrides.items()})
    lines = [f"{k}: {v}" for k, v in headers.items() if v is not None]
    return ("\r\n".join(["GET /mqtt HTTP/1.1", *lines]) + "\r\n\r\n").encode()


def frame(opcode: Opcode, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A client frame: masked with a random key, as RFC 6455 5.3 requires."""
    return encode_frame(opcode, payload, fin=fin, mask=os.urandom(4))


def parse_server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked server frame in ``data``."""
    frames, pos = [], 0
    while pos < len(data):
        first, size = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if size == 126:
            size, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif size == 127:
            size, pos = struct.unpack_from("!Q", data, pos)[0], pos + 8
        frames.append((first & 0x0F, data[pos : pos + size]))
        pos += size
    return frames


def opened(max_frame: int = ws_handshake.DEFAULT_MAX_FRAME) -> ws_handshake.ServerConnection:
    connection = ws_handshake.ServerConnection(max_frame)
    assert connection.receive(upgrade()).opened
    return connection


# --- the handshake ---------------------------------------------------------------------------


def test_the_handshake_answers_101_with_the_rfc_accept_value() -> None:
    result = ws_handshake.ServerConnection().receive(upgrade())
    assert result.opened and not result.closed
    head = result.reply.decode()
    assert head.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    assert "Sec-WebSocket-Protocol: mqtt\r\n" in head
    assert head.endswith("\r\n\r\n")


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [("mqtt", "mqtt"), ("mqttv3.1", "mqttv3.1"), ("wamp, mqttv3.1, mqtt", "mqttv3.1")],
)
def test_the_clients_first_mqtt_subprotocol_is_echoed(offered: str, chosen: str) -> None:
    connection = ws_handshake.ServerConnection()
    result = connection.receive(upgrade(offered))
    assert f"Sec-WebSocket-Protocol: {chosen}\r\n" in result.reply.decode()
    assert connection.subprotocol == chosen


def test_header_names_are_case_insensitive_and_repeats_are_joined() -> None:
    request = upgrade(None).replace(b"\r\n\r\n", b"\r\nsec-websocket-protocol: x\r\n")
    request += b"SEC-WEBSOCKET-PROTOCOL: mqtt\r\n\r\n"
    assert ws_handshake.ServerConnection().receive(request).opened


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (upgrade(None), "Sec-WebSocket-Protocol must offer 'mqtt'"),
        (upgrade("wamp"), "Sec-WebSocket-Protocol must offer 'mqtt'"),
        (upgrade(Sec_WebSocket_Version="8"), "unsupported Sec-WebSocket-Version; accepted is 13"),
        (upgrade(Sec_WebSocket_Key="c2hvcnQ="), "Sec-WebSocket-Key must be 16 bytes in base64"),
        (upgrade(Sec_WebSocket_Key="!!"), "Sec-WebSocket-Key must be 16 bytes in base64"),
        (upgrade(Upgrade=None), "expected 'Upgrade: websocket'"),
        (upgrade(Connection="keep-alive"), "expected 'Connection: Upgrade'"),
        (upgrade(Host=None), "the Host header is missing"),
        (upgrade().replace(b"GET", b"POST", 1), "expected a 'GET {path} HTTP/1.1'"),
        (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", "the request head is not ASCII"),
        (b"\x10\x0c\x00\x04MQTT\x04\x02\x00<\x00\x00", ws_handshake.PLAIN_MQTT),
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", "malformed header line 'bad header'"),
    ],
)
def test_a_bad_handshake_gets_400_with_the_reason(request_bytes: bytes, reason: str) -> None:
    connection = ws_handshake.ServerConnection()
    result = connection.receive(request_bytes)
    assert result.closed and not result.opened
    head, _, body = result.reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert body.decode().startswith(reason)
    assert f"Content-Length: {len(body)}".encode() in head
    assert connection.receive(frame(Opcode.BINARY, b"x")) == ws_handshake.Received()


def test_a_version_mismatch_says_which_version_is_spoken() -> None:
    result = ws_handshake.ServerConnection().receive(upgrade(Sec_WebSocket_Version="8"))
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in result.reply


def test_an_endless_request_head_is_refused() -> None:
    connection = ws_handshake.ServerConnection()
    assert connection.receive(b"GET / HTTP/1.1\r\n") == ws_handshake.Received()
    result = connection.receive(b"X-Pad: " + b"x" * ws_handshake.MAX_REQUEST_HEAD)
    assert result.closed
    assert result.reply.endswith(b"the request head is too large\n")


def test_the_handshake_may_arrive_in_pieces_with_a_frame_behind_it() -> None:
    connection = ws_handshake.ServerConnection()
    data = upgrade() + frame(Opcode.BINARY, b"\x10\x0c")
    assert connection.receive(data[:10]) == ws_handshake.Received()
    result = connection.receive(data[10:])
    assert result.opened
    assert result.data == b"\x10\x0c"


# --- frames ----------------------------------------------------------------------------------


@given(
    payloads=st.lists(st.binary(max_size=70000), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=300000), max_size=6),
)
def test_binary_frames_become_the_mqtt_stream_however_they_are_split(
    payloads: list[bytes], cuts: list[int]
) -> None:
    connection = opened()
    wire = b"".join(frame(Opcode.BINARY, p) for p in payloads)
    points = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    received = b"".join(connection.receive(wire[a:b]).data for a, b in itertools.pairwise(points))
    assert received == b"".join(payloads)


def test_fragments_and_interleaved_pings_are_handled() -> None:
    connection = opened()
    result = connection.receive(
        frame(Opcode.BINARY, b"\x30\x05", fin=False)
        + frame(Opcode.PING, b"are you there")
        + frame(Opcode.CONTINUATION, b"\x00\x01t", fin=False)
        + frame(Opcode.PONG, b"unsolicited")
        + frame(Opcode.CONTINUATION, b"hi")
    )
    assert result.data == b"\x30\x05\x00\x01thi"
    assert parse_server_frames(result.reply) == [(Opcode.PONG, b"are you there")]
    assert not result.closed


@pytest.mark.parametrize(
    ("wire", "code", "reason"),
    [
        (encode_frame(Opcode.BINARY, b"abc"), 1002, "must be masked"),
        (frame(Opcode.TEXT, b"hello"), 1003, "binary frames, not text"),
        (b"\xc2\x80" + os.urandom(4), 1002, "reserved bits"),
        (b"\x83\x80" + os.urandom(4), 1002, "unknown opcode 0x3"),
        (frame(Opcode.CONTINUATION, b"x"), 1002, "continuation frame without a message"),
        (frame(Opcode.BINARY, b"a", fin=False) + frame(Opcode.BINARY, b"b"), 1002, "new message"),
        (frame(Opcode.PING, b"x" * 126), 1002, "at most 125 bytes"),
        (frame(Opcode.PING, b"x", fin=False), 1002, "cannot be fragmented"),
        (frame(Opcode.CLOSE, b"\x03"), 1002, "empty or at least 2 bytes"),
        (frame(Opcode.CLOSE, struct.pack("!H", 1005)), 1002, "reserved or unknown status"),
        (frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007, "not UTF-8"),
    ],
)
def test_a_bad_frame_closes_with_the_rfc_code(wire: bytes, code: int, reason: str) -> None:
    connection = opened()
    result = connection.receive(wire)
    assert result.closed
    assert result.close_code == code
    assert reason in (result.error or "")
    [(opcode, payload)] = parse_server_frames(result.reply)
    assert opcode == Opcode.CLOSE
    assert struct.unpack("!H", payload[:2])[0] == code


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    connection = opened(max_frame=1000)
    header_only = encode_frame(Opcode.BINARY, b"x" * 1001, mask=b"abcd")[:8]
    result = connection.receive(header_only)
    assert result.closed and result.close_code == 1009
    assert "1001 bytes exceeds the limit of 1000" in (result.error or "")


def test_an_absurd_length_is_refused() -> None:
    huge = b"\x82\xff" + struct.pack("!Q", 1 << 63) + b"mask"
    result = opened().receive(huge)
    assert result.closed and result.close_code == 1009


def test_data_before_a_protocol_error_is_still_delivered() -> None:
    result = opened().receive(frame(Opcode.BINARY, b"ok") + frame(Opcode.TEXT, b"no"))
    assert result.data == b"ok"
    assert result.closed


# --- closing ---------------------------------------------------------------------------------


def test_a_client_close_is_echoed_and_ends_the_connection() -> None:
    connection = opened()
    result = connection.receive(frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"bye"))
    assert result.closed and result.close_code == 1000
    assert parse_server_frames(result.reply) == [(Opcode.CLOSE, struct.pack("!H", 1000))]
    assert connection.send(b"late") == b""


def test_an_empty_close_gets_an_empty_close() -> None:
    result = opened().receive(frame(Opcode.CLOSE))
    assert result.closed and result.close_code == 1005
    assert parse_server_frames(result.reply) == [(Opcode.CLOSE, b"")]


def test_after_the_servers_close_only_the_clients_close_matters() -> None:
    connection = opened()
    [(opcode, payload)] = parse_server_frames(connection.close(1001, "going away"))
    assert (opcode, payload) == (Opcode.CLOSE, struct.pack("!H", 1001) + b"going away")
    assert connection.close() == b""
    assert connection.send(b"x") == b""
    ignored = connection.receive(frame(Opcode.BINARY, b"x") + frame(Opcode.PING))
    assert ignored == ws_handshake.Received()
    done = connection.receive(frame(Opcode.CLOSE, struct.pack("!H", 1001)))
    assert done.closed and done.reply == b""


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200000])
def test_send_wraps_mqtt_bytes_in_one_binary_frame(size: int) -> None:
    data = os.urandom(size)
    wire = opened().send(data)
    if size == 0:
        assert wire == b""
    else:
        assert parse_server_frames(wire) == [(Opcode.BINARY, data)]
        assert wire[0] == 0x82  # FIN + binary, unmasked


# --- on asyncio, over real sockets -----------------------------------------------------------


class Log(list[object]):
    """What happened to the inner protocols; ``lost`` is set when one loses its connection."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = asyncio.Event()


class Echo(asyncio.Protocol):
    """An inner protocol that echoes every byte and records what happened to it."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.log.append(("made", transport.get_extra_info("websocket")))

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if data == b"close please":
            self.transport.close()
        else:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.log.append(("lost", exc))
        self.log.lost.set()


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[int, Log]]:
    log = Log()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: websocket.WebSocketProtocol(lambda: Echo(log), close_timeout=NETWORK),
        "127.0.0.1",
        0,
    )
    yield server.sockets[0].getsockname()[1], log
    server.close()
    await server.wait_closed()


class Client:
    """A raw WebSocket client over an asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, request: bytes | None = upgrade()) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        if request is not None:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head
        return client

    async def frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await self.reader.readexactly(size)

    async def binary(self, size: int) -> bytes:
        """``size`` bytes of the stream in binary frames, however the server split them."""
        data = b""
        while len(data) < size:
            opcode, payload = await self.frame()
            assert opcode == Opcode.BINARY
            data += payload
        return data

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_the_inner_protocol_sees_only_mqtt_bytes(echo_server: tuple[int, Log]) -> None:
    port, log = echo_server
    async with asyncio.timeout(NETWORK):
        client = await Client.connect(port)
        client.writer.write(frame(Opcode.BINARY, b"\x10\x0c", fin=False))
        client.writer.write(frame(Opcode.CONTINUATION, b"MQTT"))
        assert await client.binary(6) == b"\x10\x0cMQTT"
        client.writer.write(frame(Opcode.PING, b"p"))
        assert await client.frame() == (Opcode.PONG, b"p")
        client.writer.write(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
        assert await client.frame() == (Opcode.CLOSE, struct.pack("!H", 1000))
        assert await client.reader.read() == b""
        await client.close()
    assert log[0] == ("made", "mqtt")


async def test_closing_from_inside_sends_a_close_frame(echo_server: tuple[int, Log]) -> None:
    port, log = echo_server
    async with asyncio.timeout(NETWORK):
        client = await Client.connect(port)
        client.writer.write(frame(Opcode.BINARY, b"close please"))
        assert await client.frame() == (Opcode.CLOSE, struct.pack("!H", 1000))
        client.writer.write(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
        assert await client.reader.read() == b""
        await client.close()
        await log.lost.wait()
    assert log == [("made", "mqtt"), ("lost", None)]


async def test_a_bad_handshake_never_reaches_the_inner_protocol(
    echo_server: tuple[int, Log],
) -> None:
    port, log = echo_server
    async with asyncio.timeout(NETWORK):
        client = await Client.connect(port, request=None)
        client.writer.write(upgrade(None))
        response = await client.reader.read()
        await client.close()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\n\r\nSec-WebSocket-Protocol must offer 'mqtt'" in response
    assert log == []


async def test_a_silent_client_gets_408_after_the_handshake_timeout() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: websocket.WebSocketProtocol(asyncio.Protocol, handshake_timeout=0.05),
        "127.0.0.1",
        0,
    )
    try:
        async with asyncio.timeout(NETWORK):
            client = await Client.connect(server.sockets[0].getsockname()[1], request=None)
            assert (await client.reader.read()).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
            await client.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_that_never_answers_our_close_is_dropped() -> None:
    loop = asyncio.get_running_loop()
    log = Log()
    server = await loop.create_server(
        lambda: websocket.WebSocketProtocol(lambda: Echo(log), close_timeout=0.05),
        "127.0.0.1",
        0,
    )
    try:
        async with asyncio.timeout(NETWORK):
            client = await Client.connect(server.sockets[0].getsockname()[1])
            client.writer.write(frame(Opcode.BINARY, b"close please"))
            assert await client.frame() == (Opcode.CLOSE, struct.pack("!H", 1000))
            assert await client.reader.read() == b""
            await client.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_start_server_gives_plain_streams() -> None:
    seen: list[object] = []
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("websocket"))
        seen.append(writer.get_extra_info("peername")[0])
        data = await reader.readexactly(6)
        writer.write(data[::-1])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        seen.append("closed")
        done.set()

    server = await websocket.start_server(handle, "127.0.0.1", 0)
    try:
        async with asyncio.timeout(NETWORK):
            port = server.sockets[0].getsockname()[1]
            client = await Client.connect(port, upgrade("mqttv3.1"))
            client.writer.write(frame(Opcode.BINARY, b"abc") + frame(Opcode.BINARY, b"def"))
            assert await client.binary(6) == b"fedcba"
            assert await client.frame() == (Opcode.CLOSE, struct.pack("!H", 1000))
            client.writer.write(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
            assert await client.reader.read() == b""
            await client.close()
            await done.wait()
    finally:
        server.close()
        await server.wait_closed()
    assert seen == ["mqttv3.1", "127.0.0.1", "closed"]


def test_the_accept_key_follows_the_rfc_formula_for_any_key() -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    request = ws_handshake.parse_request(upgrade(Sec_WebSocket_Key=key))
    expected = base64.b64encode(
        hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()
    assert f"Sec-WebSocket-Accept: {expected}\r\n".encode() in ws_handshake.accept_response(request)


# --- a real MQTT-over-WebSocket client against the platform ----------------------------------

APP_KEY, APP_TOKEN = "a-abc123-wsviewer", "ws-app-token"
DEVICE_ID, DEVICE_TOKEN = "d:abc123:sensor:s-001", "ws-device-token"


def paho_round_trip(port: int, ca: Path | None) -> list[tuple[str, bytes]]:
    """An app and a device, both paho over WebSocket: the device's event reaches the app."""
    received: list[tuple[str, bytes]] = []
    app = paho_client("a:abc123:viewer", APP_KEY, APP_TOKEN, ca)
    device = paho_client(DEVICE_ID, "use-token-auth", DEVICE_TOKEN, ca)
    app.on_message = lambda _c, _u, msg: received.append((msg.topic, bytes(msg.payload)))
    try:
        for client in (app, device):
            client.connect("localhost", port, keepalive=30)
            pump(client, client.is_connected)
        subscribed: list[object] = []
        app.on_subscribe = lambda *args: subscribed.append(args)
        app.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", qos=1)
        pump(app, lambda: bool(subscribed))
        device.publish("iot-2/evt/reading/fmt/json", b'{"t": 21.5}', qos=1)
        pump(device, lambda: False, rounds=3)
        pump(app, lambda: bool(received))
    finally:
        for client in (app, device):
            client.disconnect()
            pump(client, disconnected(client))
            # paho does not always close a WebSocket's socket itself; an unclosed one would
            # surface later as a ResourceWarning (an error under filterwarnings=error).
            sock = client.socket()
            if sock is not None:
                sock.close()
    return received


def disconnected(client: mqtt.Client) -> Callable[[], bool]:
    return lambda: not client.is_connected()


def paho_client(client_id: str, username: str, password: str, ca: Path | None) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        transport="websockets",
        protocol=mqtt.MQTTv311,
    )
    client.ws_set_options(path="/mqtt")
    client.username_pw_set(username, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca))
    return client


def pump(client: mqtt.Client, done: Callable[[], bool], rounds: int | None = None) -> None:
    """Run paho's loop until ``done()`` (or for ``rounds`` turns), within the deadline."""
    deadline = time.monotonic() + NETWORK
    turns = 0
    while not done() and (rounds is None or turns < rounds):
        assert time.monotonic() < deadline, "paho did not get there in time"
        client.loop(timeout=0.05)
        turns += 1


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_paho_over_websocket_talks_to_the_platform(tmp_path: Path, secure: bool) -> None:
    context, ca = tls.dev_server_context(tmp_path) if secure else (None, None)
    config = PlatformConfig(
        port=None,
        ws_port=None if secure else 0,
        wss_port=0 if secure else None,
        ssl_context=context,
        websocket=websocket.WebSocketProtocol,
        credentials=auth.Credentials(
            api_keys={APP_KEY: APP_TOKEN.encode()},
            device_tokens={DEVICE_ID: DEVICE_TOKEN.encode()},
        ),
    )
    async with Platform(config) as platform:
        port = platform.wss_port if secure else platform.ws_port
        assert port is not None
        received = await asyncio.to_thread(paho_round_trip, port, ca)
    assert received == [("iot-2/type/sensor/id/s-001/evt/reading/fmt/json", b'{"t": 21.5}')]
