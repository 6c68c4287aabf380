"""The aiomqtt transport against a real Mosquitto (and a scripted server for the PUBACK bytes)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import struct
import warnings
from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import MosquittoFactory
from tests.mosquitto import Mosquitto, free_port
from worker.errors import ConnectError, NotAuthorized
from worker.transports.aiomqtt import AiomqttTransport
from worker.transports.base import ConnectOptions, Inbound

pytestmark = pytest.mark.mosquitto
DEADLINE = 10.0


def options(broker: Mosquitto | None = None, **kw: object) -> ConnectOptions:
    base: dict[str, object] = {"host": "127.0.0.1", "port": broker.port if broker else 1}
    base["client_id"] = kw.pop("client_id", "test-client")
    return ConnectOptions(**{**base, **kw})  # type: ignore[arg-type]


class Receiver:
    """Consumes ``batches()`` in a task; tests wait on what has arrived."""

    def __init__(self, transport: AiomqttTransport) -> None:
        self.transport = transport
        self.messages: list[Inbound] = []
        self.batch_sizes: list[int] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for batch in self.transport.batches():
                self.messages.extend(batch)
                self.batch_sizes.append(len(batch))
                async with self._changed:
                    self._changed.notify_all()
        except ConnectError as exc:
            self.error = exc
            async with self._changed:
                self._changed.notify_all()

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE), self._changed:
            await self._changed.wait_for(check)

    async def count(self, n: int) -> list[Inbound]:
        await self.until(lambda: len(self.messages) >= n)
        return self.messages

    async def close(self) -> None:
        await self.transport.disconnect()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._task, DEADLINE)


@contextlib.asynccontextmanager
async def connected(broker: Mosquitto, **kw: object) -> AsyncIterator[AiomqttTransport]:
    transport = AiomqttTransport()
    await transport.connect(options(broker, **kw))
    try:
        yield transport
    finally:
        await transport.disconnect()


def test_verified_versions_are_installed() -> None:
    # The manual-ack reach into paho is verified for exactly these ranges (pyproject.toml).
    aiomqtt = tuple(int(p) for p in version("aiomqtt").split(".")[:2])
    paho = tuple(int(p) for p in version("paho-mqtt").split(".")[:2])
    assert (2, 3) <= aiomqtt < (2, 6)
    assert (2, 1) <= paho < (2, 3)


async def test_subscribe_receive_qos0_and_qos1(mosquitto: Mosquitto) -> None:
    async with connected(mosquitto, client_id="sub") as sub, connected(mosquitto) as pub:
        granted = await sub.subscribe([("t/q0", 0), ("t/q1", 1)])
        assert granted == [0, 1]
        receiver = Receiver(sub)
        await pub.publish("t/q0", b"zero", qos=0)
        await pub.publish("t/q1", b"one", qos=1)
        got = await receiver.count(2)
        by_topic = {m.topic: m for m in got}
        assert by_topic["t/q0"].payload == b"zero"
        assert by_topic["t/q0"].qos == 0
        assert by_topic["t/q0"].packet_id == 0
        assert by_topic["t/q1"].qos == 1
        assert by_topic["t/q1"].packet_id > 0
        sub.ack([by_topic["t/q1"].packet_id])
        await receiver.close()


async def test_qos1_waits_for_manual_acks(mosquitto_factory: MosquittoFactory) -> None:
    # With 5 in flight, the broker sends 5 and holds the rest until we acknowledge: proof
    # that paho does not acknowledge behind our back.
    broker = mosquitto_factory(max_inflight=5)
    async with connected(broker, client_id="sub") as sub, connected(broker) as pub:
        await sub.subscribe([("work", 1), ("marker", 0)])
        receiver = Receiver(sub)
        for i in range(12):
            await pub.publish("work", str(i).encode(), qos=1)
        # QoS 0 is not held back by the in-flight window, so once it is here the broker has
        # dealt with all twelve publishes.
        await pub.publish("marker", b"", qos=0)
        await receiver.until(lambda: any(m.topic == "marker" for m in receiver.messages))
        work = [m for m in receiver.messages if m.topic == "work"]
        assert [m.payload for m in work] == [str(i).encode() for i in range(5)]
        sub.ack([m.packet_id for m in work])
        await receiver.until(lambda: len(receiver.messages) >= 11)
        more = [m for m in receiver.messages if m.topic == "work"]
        assert [m.payload for m in more[:10]] == [str(i).encode() for i in range(10)]
        sub.ack([m.packet_id for m in more[5:]])
        await receiver.until(lambda: len(receiver.messages) >= 13)
        sub.ack([m.packet_id for m in receiver.messages[len(more) + 1 :]])
        await receiver.close()


async def test_batches_gather_what_arrived(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(max_inflight=1000)
    async with connected(broker, client_id="sub") as sub, connected(broker) as pub:
        await sub.subscribe([("burst", 0)])
        receiver = Receiver(sub)
        await asyncio.gather(*(pub.publish("burst", b"x" * 10) for _ in range(2000)))
        await receiver.count(2000)
        assert max(receiver.batch_sizes) > 1
        await receiver.close()


async def test_unsubscribe_stops_delivery(mosquitto: Mosquitto) -> None:
    async with connected(mosquitto, client_id="sub") as sub, connected(mosquitto) as pub:
        await sub.subscribe([("a", 0), ("b", 0)])
        receiver = Receiver(sub)
        await sub.unsubscribe(["a"])
        await pub.publish("a", b"gone")
        await pub.publish("b", b"here")  # same publisher: the broker handled "a" first
        await receiver.count(1)
        assert [m.payload for m in receiver.messages] == [b"here"]
        await receiver.close()


async def test_refused_credentials_are_not_authorized(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(users={"alice": "s3cret"})
    transport = AiomqttTransport()
    with pytest.raises(NotAuthorized) as caught:
        await transport.connect(options(broker, username="alice", password="wrong-pw"))
    assert caught.value.return_code in (4, 5)
    assert "alice" in str(caught.value)
    assert "wrong-pw" not in str(caught.value)
    with pytest.raises(NotAuthorized):
        await AiomqttTransport().connect(options(broker))
    async with connected(broker, username="alice", password="s3cret") as ok:
        assert await ok.subscribe([("x", 1)]) == [1]


async def test_unreachable_is_connect_error_not_refusal() -> None:
    transport = AiomqttTransport()
    with pytest.raises(ConnectError) as caught:
        await transport.connect(
            ConnectOptions(host="127.0.0.1", port=free_port(), client_id="c", connect_timeout=2)
        )
    assert not isinstance(caught.value, NotAuthorized)
    assert "127.0.0.1" in str(caught.value)


async def test_loss_ends_batches_with_connect_error_and_reconnect_works(
    mosquitto: Mosquitto,
) -> None:
    sub = AiomqttTransport()
    await sub.connect(options(mosquitto, client_id="sub", keepalive=5))
    await sub.subscribe([("x", 1)])
    receiver = Receiver(sub)
    await asyncio.to_thread(mosquitto.restart)
    await receiver.until(lambda: receiver.error is not None)
    assert "lost" in str(receiver.error)
    sub.ack([1])  # an ack for a dead connection is dropped, not an error
    await sub.disconnect()
    async with connected(mosquitto, client_id="sub") as again:
        assert await again.subscribe([("x", 1)]) == [1]


async def test_tls_with_ca_file(mosquitto_factory: MosquittoFactory, tmp_path: Path) -> None:
    tls = pytest.importorskip("worker.platform.tls")
    files = tls.ensure_dev_certificates(tmp_path / "certs")
    broker = mosquitto_factory(tls=(files.ca, files.cert, files.key))
    async with connected(broker, tls=True, cafile=str(files.ca)) as transport:
        assert await transport.subscribe([("x", 1)]) == [1]
    with warnings.catch_warnings():
        # paho 2.x leaves the socket of a failed TLS handshake to be closed when its
        # traceback goes (the executor's future holds it until the loop's next turns);
        # let that happen here, where the ResourceWarning is expected.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(ConnectError, match="certificate"):
            # The system store does not know the development CA.
            await AiomqttTransport().connect(options(broker, tls=True, connect_timeout=3))
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()


# --- PUBACK bytes, seen by a scripted server ------------------------------------------------


def _publish(packet_id: int, topic: bytes = b"t", payload: bytes = b"p") -> bytes:
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", packet_id) + payload
    return bytes([0x32, len(body)]) + body


async def test_pubacks_leave_in_the_order_given() -> None:
    acks: asyncio.Queue[int] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(2)
        await reader.readexactly(header[1])  # CONNECT (short: one length byte)
        writer.write(b"\x20\x02\x00\x00" + b"".join(_publish(i) for i in (1, 2, 3, 4)))
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                kind, _length = await reader.readexactly(2)
                body = await reader.readexactly(_length)
                if kind == 0x40:
                    acks.put_nowait(struct.unpack("!H", body)[0])
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiomqttTransport()
    await transport.connect(ConnectOptions(host="127.0.0.1", port=port, client_id="c"))
    receiver = Receiver(transport)
    await receiver.count(4)
    transport.ack([3, 1])
    transport.ack([4, 2])
    async with asyncio.timeout(DEADLINE):
        assert [await acks.get() for _ in range(4)] == [3, 1, 4, 2]
    await receiver.close()
    server.close()
    await server.wait_closed()


async def test_a_call_fails_at_once_when_the_connection_drops() -> None:
    # A server that closes instead of answering SUBSCRIBE (as a platform does for a filter it
    # refuses, or a takeover does): the caller hears of it now, not after the timeout.
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(2)
        await reader.readexactly(header[1])
        writer.write(b"\x20\x02\x00\x00")
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readexactly(1)  # the SUBSCRIBE arrives
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiomqttTransport()
    await transport.connect(ConnectOptions("127.0.0.1", port, "c", connect_timeout=30))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectError, match=r"SUBSCRIBE at .* the connection was lost"):
        await transport.subscribe([("x", 1)])
    assert loop.time() - started < 5
    await transport.disconnect()
    server.close()
    await server.wait_closed()
