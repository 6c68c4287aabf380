"""One interoperability suite for every transport against every server, on both MQTT versions.

The same tests run for the aiomqtt and the native transport, each speaking MQTT 3.1.1 and 5,
against Mosquitto (a real third-party broker, with a password file) and the local platform
(``a:`` application client IDs, API keys). Scripted servers cover what a real broker cannot
show: the bytes of the PUBACKs and a server that vanishes mid-request. The MQTT 5 features
(properties, reason codes, expiry, flow control) are in tests/test_mqtt5_interop.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.conftest import MosquittoFactory
from tests.support.credentials import API_KEY, ORG, TOKEN
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port
from tests.support.sockets import close_abandoned_tls_sockets
from tests.support.waiting import NETWORK, until
from worker.errors import ConnectError, NotAuthorized
from worker.mqtt import MQTT_3_1_1, MQTT_5
from worker.platform import Platform, PlatformConfig
from worker.platform.tls import dev_server_context, ensure_dev_certificates
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Inbound, Transport
from worker.transports.native import NativeTransport

pytestmark = pytest.mark.mosquitto
USER, PASSWORD = "alice", "s3cret"
#: QoS 1 messages a server sends before it waits for acks (small, to see the window)
WINDOW = 5

Factory = Callable[[], Transport]
TRANSPORTS: dict[str, Factory] = {"aiomqtt": AiomqttTransport, "native": NativeTransport}


@dataclass
class Server:
    """A running server and how clients talk to it, whichever kind it is."""

    kind: str
    port: int
    mosquitto: Mosquitto | None = None
    platform: Platform | None = None
    cafile: str | None = None
    #: the MQTT protocol level clients speak to it
    level: int = MQTT_3_1_1

    def options(self, who: str, **kw: object) -> ConnectOptions:
        """Options of a well-behaved client called ``who`` (an app client ID on the platform).

        On MQTT 5 the client announces a Receive Maximum of WINDOW: the window is the client's
        to set there (Mosquitto's max_inflight_messages applies to 3.1.1 clients only).
        """
        client_id = f"a:{ORG}:{who}" if self.platform else who
        user, password = (API_KEY, TOKEN) if self.platform else (USER, PASSWORD)
        base = ConnectOptions(
            "127.0.0.1",
            self.port,
            client_id,
            user,
            password,
            tls=self.cafile is not None,
            protocol_level=self.level,
            receive_maximum=WINDOW,
        )
        return replace(base, **{"cafile": self.cafile, **kw})  # type: ignore[arg-type]

    async def drop(self, who: str) -> None:
        """Close the client's connection from the server side."""
        if self.platform is not None:
            assert self.platform.kick(f"a:{ORG}:{who}") == 1
        else:
            assert self.mosquitto is not None
            await asyncio.to_thread(self.mosquitto.restart)


def topic(event: str) -> str:
    """A topic both servers let an application publish and subscribe to."""
    return f"iot-2/type/t/id/d/evt/{event}/fmt/text"


@contextlib.asynccontextmanager
async def serve(
    kind: str, factory: MosquittoFactory, tls: Path | None, level: int = MQTT_3_1_1
) -> AsyncIterator[Server]:
    """Mosquitto with a password file, or the platform with an API key; TLS given a folder."""
    if kind == "mosquitto":
        files = ensure_dev_certificates(tls) if tls is not None else None
        triple = (files.ca, files.cert, files.key) if files else None
        broker = factory(users={USER: PASSWORD}, max_inflight=WINDOW, tls=triple)
        cafile = str(files.ca) if files else None
        yield Server(kind, broker.port, mosquitto=broker, cafile=cafile, level=level)
        return
    config = PlatformConfig(
        host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN}, max_inflight=WINDOW
    )
    cafile = None
    if tls is not None:
        context, ca = dev_server_context(tls)
        config = replace(config, port=None, tls_port=0, ssl_context=context)
        cafile = str(ca)
    async with Platform(config) as platform:
        port = platform.tls_port if tls is not None else platform.port
        assert port is not None
        yield Server(kind, port, platform=platform, cafile=cafile, level=level)


@pytest.fixture(params=sorted(TRANSPORTS))
def make(request: pytest.FixtureRequest) -> Factory:
    """The transport class under test."""
    return TRANSPORTS[request.param]


VERSIONS: dict[str, int] = {"3.1.1": MQTT_3_1_1, "5": MQTT_5}


@pytest.fixture(params=sorted(VERSIONS))
def level(request: pytest.FixtureRequest) -> int:
    """The MQTT protocol level under test."""
    return VERSIONS[request.param]


@pytest.fixture(params=["mosquitto", "platform"])
async def server(
    request: pytest.FixtureRequest, mosquitto_factory: MosquittoFactory, level: int
) -> AsyncIterator[Server]:
    async with serve(request.param, mosquitto_factory, None, level) as running:
        yield running


class Receiver:
    """Consumes ``batches()`` in a task; tests wait on what has arrived."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.messages: list[Inbound] = []
        self.batch_sizes: list[int] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for batch in self.transport.batches():
                self.messages.extend(batch)
                self.batch_sizes.append(len(batch))
        except ConnectError as exc:
            self.error = exc

    async def until(self, check: Callable[[], bool], what: str) -> None:
        await until(check, what, within=NETWORK)

    async def count(self, n: int) -> list[Inbound]:
        await self.until(lambda: len(self.messages) >= n, f"{n} messages")
        return self.messages

    async def close(self) -> None:
        await self.transport.disconnect()
        async with asyncio.timeout(NETWORK):
            await self._task


@contextlib.asynccontextmanager
async def connected(make: Factory, options: ConnectOptions) -> AsyncIterator[Transport]:
    transport = make()
    await transport.connect(options)
    try:
        yield transport
    finally:
        await transport.disconnect()


# --- against Mosquitto and the platform -----------------------------------------------------


async def test_subscribe_and_deliver_qos0_and_qos1(make: Factory, server: Server) -> None:
    async with (
        connected(make, server.options("sub")) as sub,
        connected(make, server.options("pub")) as pub,
    ):
        assert await sub.subscribe([(topic("q0"), 0), (topic("q1"), 1)]) == [0, 1]
        receiver = Receiver(sub)
        await pub.publish(topic("q0"), b"zero", qos=0)
        await pub.publish(topic("q1"), b"one", qos=1)
        by_topic = {m.topic: m for m in await receiver.count(2)}
        assert (by_topic[topic("q0")].payload, by_topic[topic("q0")].qos) == (b"zero", 0)
        assert by_topic[topic("q0")].packet_id == 0
        assert (by_topic[topic("q1")].payload, by_topic[topic("q1")].qos) == (b"one", 1)
        assert by_topic[topic("q1")].packet_id > 0
        sub.ack([by_topic[topic("q1")].packet_id])
        assert sub.received == 2
        await receiver.close()


async def test_refused_credentials_are_not_authorized(make: Factory, server: Server) -> None:
    with pytest.raises(NotAuthorized) as caught:
        await make().connect(server.options("sub", password="wrong-pw"))
    assert caught.value.return_code in (4, 5)
    assert str(server.options("sub").username) in str(caught.value)
    assert "wrong-pw" not in str(caught.value)
    with pytest.raises(NotAuthorized):
        await make().connect(server.options("sub", username=None, password=None))


async def test_unsubscribe_stops_delivery(make: Factory, server: Server) -> None:
    async with (
        connected(make, server.options("sub")) as sub,
        connected(make, server.options("pub")) as pub,
    ):
        await sub.subscribe([(topic("a"), 0), (topic("b"), 0)])
        receiver = Receiver(sub)
        await sub.unsubscribe([topic("a")])
        await pub.publish(topic("a"), b"gone")
        await pub.publish(topic("b"), b"here")  # same publisher: the server handled "a" first
        await receiver.count(1)
        assert [m.payload for m in receiver.messages] == [b"here"]
        await receiver.close()


async def test_qos1_waits_for_the_acks(make: Factory, server: Server) -> None:
    # The server sends WINDOW messages and holds the rest until they are acknowledged: proof
    # that nothing acknowledges behind the pipeline's back.
    async with (
        connected(make, server.options("sub")) as sub,
        connected(make, server.options("pub")) as pub,
    ):
        await sub.subscribe([(topic("work"), 1)])
        receiver = Receiver(sub)
        for i in range(12):
            await pub.publish(topic("work"), str(i).encode(), qos=1)
        # A round trip on the subscriber's connection: once it is back, everything the server
        # sent before it has been read, and the server has dealt with all twelve publishes.
        await sub.unsubscribe([topic("elsewhere")])
        await receiver.count(sub.received)
        work = list(receiver.messages)
        assert [m.payload for m in work] == [str(i).encode() for i in range(WINDOW)]
        acked = 0
        while acked < 12:  # each ack lets the server send more
            sub.ack([m.packet_id for m in work[acked:]])
            acked = len(work)
            if acked < 12:
                work = list(await receiver.count(acked + 1))
        assert [m.payload for m in work] == [str(i).encode() for i in range(12)]
        await receiver.close()


async def test_batches_gather_what_arrived(make: Factory, server: Server) -> None:
    async with (
        connected(make, server.options("sub")) as sub,
        connected(make, server.options("pub")) as pub,
    ):
        await sub.subscribe([(topic("burst"), 0)])
        receiver = Receiver(sub)
        await asyncio.gather(*(pub.publish(topic("burst"), b"x" * 10) for _ in range(2000)))
        await receiver.count(2000)
        assert max(receiver.batch_sizes) > 1
        assert sum(receiver.batch_sizes) == 2000
        await receiver.close()


async def test_server_side_drop_ends_batches_and_reconnect_works(
    make: Factory, server: Server
) -> None:
    sub = make()
    await sub.connect(server.options("sub"))
    await sub.subscribe([(topic("x"), 1)])
    receiver = Receiver(sub)
    await server.drop("sub")
    await receiver.until(lambda: receiver.error is not None, "the connection error")
    assert "lost" in str(receiver.error)
    sub.ack([1])  # an ack for a dead connection is dropped, not an error
    with pytest.raises(ConnectError):
        await sub.subscribe([(topic("x"), 1)])
    await sub.disconnect()
    async with (
        connected(make, server.options("sub")) as again,
        connected(make, server.options("pub")) as pub,
    ):
        assert await again.subscribe([(topic("x"), 1)]) == [1]
        receiver = Receiver(again)
        await pub.publish(topic("x"), b"after", qos=1)
        assert [m.payload for m in await receiver.count(1)] == [b"after"]
        await receiver.close()


async def test_takeover_drops_the_first_connection(make: Factory, server: Server) -> None:
    # One connection per client ID: Mosquitto for any ID, the platform for a: application IDs.
    first = make()
    await first.connect(server.options("solo"))
    receiver = Receiver(first)
    async with connected(make, server.options("solo")) as second:
        await receiver.until(lambda: receiver.error is not None, "the connection error")
        assert await second.subscribe([(topic("x"), 0)]) == [0]
    await first.disconnect()


@pytest.mark.parametrize("kind", ["mosquitto", "platform"])
async def test_tls_checks_the_server(
    make: Factory, kind: str, level: int, mosquitto_factory: MosquittoFactory, tmp_path: Path
) -> None:
    async with serve(kind, mosquitto_factory, tmp_path / "certs", level) as server:
        async with connected(make, server.options("sub")) as transport:
            assert await transport.subscribe([(topic("x"), 1)]) == [1]
        with pytest.raises(ConnectError, match="certificate") as caught:
            # The system store does not know the development CA.
            await make().connect(server.options("sub", cafile=None, connect_timeout=3))
        # ``caught`` holds the error chain, hence the socket, until it is closed.
        close_abandoned_tls_sockets(server.port)
        assert caught.value is not None


async def test_unreachable_is_connect_error_not_refusal(make: Factory) -> None:
    with pytest.raises(ConnectError) as caught:
        await make().connect(ConnectOptions("127.0.0.1", free_port(), "c", connect_timeout=2))
    assert not isinstance(caught.value, NotAuthorized)
    assert "127.0.0.1" in str(caught.value)


# --- scripted servers ------------------------------------------------------------------------


def _publish(packet_id: int, topic: bytes = b"t", payload: bytes = b"p") -> bytes:
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", packet_id) + payload
    return bytes([0x32, len(body)]) + body


@contextlib.asynccontextmanager
async def scripted(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> AsyncIterator[int]:
    """A server that reads the CONNECT, accepts it and runs ``script``; yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(2)
        await reader.readexactly(header[1])  # CONNECT (short: one length byte)
        writer.write(b"\x20\x02\x00\x00")
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await script(reader, writer)  # type: ignore[misc]
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_pubacks_leave_in_the_order_given(make: Factory) -> None:
    acks: asyncio.Queue[int] = asyncio.Queue()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"".join(_publish(i) for i in (1, 2, 3, 4)))
        while True:
            kind, length = await reader.readexactly(2)
            body = await reader.readexactly(length)
            if kind == 0x40:
                acks.put_nowait(struct.unpack("!H", body)[0])

    async with scripted(script) as port:
        transport = make()
        await transport.connect(ConnectOptions("127.0.0.1", port, "c"))
        receiver = Receiver(transport)
        await receiver.count(4)
        transport.ack([3, 1])
        transport.ack([4, 2])
        async with asyncio.timeout(NETWORK):
            assert [await acks.get() for _ in range(4)] == [3, 1, 4, 2]
        await receiver.close()


async def test_a_call_fails_at_once_when_the_connection_drops(make: Factory) -> None:
    # A server that closes instead of answering SUBSCRIBE (as a platform does for a filter it
    # refuses, or a takeover does): the caller hears of it now, not after the timeout.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)  # the SUBSCRIBE arrives

    async with scripted(script) as port:
        transport = make()
        await transport.connect(ConnectOptions("127.0.0.1", port, "c", connect_timeout=30))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectError, match=r"SUBSCRIBE at .* the connection was lost"):
            await transport.subscribe([("x", 1)])
        assert loop.time() - started < 5
        await transport.disconnect()
