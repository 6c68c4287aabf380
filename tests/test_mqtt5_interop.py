"""MQTT 5 interop: both transports against Mosquitto and the local platform, with paho-mqtt's
MQTT 5 client as the independent peer on the other side.

Properties round-trip in both directions (and a 3.1.1 subscriber gets the message without
them), failure reason codes become errors, a server's DISCONNECT is reported with its reason,
the message expiry reaches the consumer as a deadline, and a Receive Maximum bounds what the
server sends before acknowledgements. The shared behaviour on both versions is in
tests/test_transport_interop.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from paho.mqtt import client as paho_client
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from tests.conftest import MosquittoFactory
from tests.support.credentials import API_KEY, ORG, TOKEN
from tests.support.waiting import NETWORK
from tests.test_transport_interop import (
    PASSWORD,
    TRANSPORTS,
    USER,
    Factory,
    Receiver,
    Server,
    connected,
    topic,
)
from worker.errors import ConnectError
from worker.messages import MessageProperties
from worker.mqtt import MQTT_3_1_1, MQTT_5
from worker.platform import Platform, PlatformConfig
from worker.transports.base import ProtocolViolation, ServerRefused
from worker.transports.native import NativeTransport

pytestmark = pytest.mark.mosquitto
#: Mosquitto lets the users read and write the platform's topics, nothing else
ACL = f"user {USER}\ntopic readwrite iot-2/#\n"

SENT = MessageProperties(
    user_properties=(("z", "1"), ("a", "2"), ("z", "3")),
    content_type="application/json",
    payload_format_indicator=1,
    correlation_data=b"\x00\xffid",
    response_topic=topic("answer"),
    message_expiry_interval=600,
)


@pytest.fixture(params=sorted(TRANSPORTS))
def make(request: pytest.FixtureRequest) -> Factory:
    """The transport class under test."""
    return TRANSPORTS[request.param]


@pytest.fixture(params=["mosquitto", "platform"])
async def server(
    request: pytest.FixtureRequest, mosquitto_factory: MosquittoFactory
) -> AsyncIterator[Server]:
    """Mosquitto (MQTT 5, a password file and an ACL) or the platform, clients speaking 5."""
    if request.param == "mosquitto":
        broker = mosquitto_factory(users={USER: PASSWORD}, acl=ACL)
        yield Server("mosquitto", broker.port, mosquitto=broker, level=MQTT_5)
        return
    config = PlatformConfig(host="127.0.0.1", port=0, api_keys={API_KEY: TOKEN})
    async with Platform(config) as platform:
        assert platform.port is not None
        yield Server("platform", platform.port, platform=platform, level=MQTT_5)


class Paho:
    """paho-mqtt's MQTT 5 client on its own thread; calls block, so tests use to_thread."""

    def __init__(self, server: Server, who: str) -> None:
        client_id = f"a:{ORG}:{who}" if server.platform else who
        user, password = (API_KEY, TOKEN) if server.platform else (USER, PASSWORD)
        self.client = paho_client.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho_client.MQTTv5,
        )
        self.client.username_pw_set(user, password)
        self.received: queue.Queue[paho_client.MQTTMessage] = queue.Queue()
        self.disconnected = threading.Event()
        self._connected = threading.Event()
        self._acks: queue.Queue[Any] = queue.Queue()
        self.client.on_connect = lambda *_: self._connected.set()
        self.client.on_message = lambda _c, _u, message: self.received.put(message)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self._acks.put(codes)
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.connect("127.0.0.1", server.port)
        self.client.loop_start()
        if not self._connected.wait(NETWORK):
            raise AssertionError("paho did not connect")

    def subscribe(self, topic_filter: str, qos: int = 1) -> list[int]:
        self.client.subscribe(topic_filter, qos)
        return [int(code.value) for code in self._acks.get(timeout=NETWORK)]

    def publish(self, topic_name: str, payload: bytes, qos: int, props: Any = None) -> None:
        info = self.client.publish(topic_name, payload, qos, properties=props)
        info.wait_for_publish(NETWORK)

    def next(self) -> paho_client.MQTTMessage:
        return self.received.get(timeout=NETWORK)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.asynccontextmanager
async def paho(server: Server, who: str) -> AsyncIterator[Paho]:
    """A connected paho client (connecting off the loop: the platform runs on it)."""
    peer = await asyncio.to_thread(Paho, server, who)
    try:
        yield peer
    finally:
        await asyncio.to_thread(peer.close)


def paho_properties(p: MessageProperties) -> Any:
    props = PahoProperties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = list(p.user_properties)
    props.ContentType = p.content_type
    props.PayloadFormatIndicator = p.payload_format_indicator
    props.CorrelationData = p.correlation_data
    props.ResponseTopic = p.response_topic
    props.MessageExpiryInterval = p.message_expiry_interval
    return props


async def test_properties_from_paho_reach_the_consumer_in_order(
    make: Factory, server: Server
) -> None:
    async with connected(make, server.options("sub")) as sub:
        assert await sub.subscribe([(topic("props"), 1)]) == [1]
        receiver = Receiver(sub)
        async with paho(server, "pub") as peer:
            await asyncio.to_thread(peer.publish, topic("props"), b"{}", 1, paho_properties(SENT))
            (message,) = await receiver.count(1)
        sub.ack([message.packet_id])
        await receiver.close()
    got = message.properties
    assert got is not None
    assert got.user_properties == SENT.user_properties
    assert (got.content_type, got.payload_format_indicator) == ("application/json", 1)
    assert (got.correlation_data, got.response_topic) == (SENT.correlation_data, topic("answer"))
    # The server forwards what is left of the expiry; the consumer turns it into a deadline.
    assert got.message_expiry_interval is not None and 590 <= got.message_expiry_interval <= 600
    assert 590 <= message.expires_at - time.monotonic() <= 600


async def test_properties_from_the_worker_reach_paho(make: Factory, server: Server) -> None:
    async with paho(server, "sub") as peer:
        assert await asyncio.to_thread(peer.subscribe, topic("out")) == [1]
        async with connected(make, server.options("pub")) as pub:
            await pub.publish(topic("out"), b"{}", 1, properties=SENT)
        message = await asyncio.to_thread(peer.next)
    props: Any = message.properties
    assert props is not None
    assert [tuple(pair) for pair in props.UserProperty] == list(SENT.user_properties)
    assert props.ContentType == "application/json"
    assert props.CorrelationData == SENT.correlation_data
    assert props.ResponseTopic == topic("answer")


async def test_a_3_1_1_consumer_gets_the_message_without_them(
    make: Factory, server: Server
) -> None:
    async with connected(make, server.options("sub", protocol_level=MQTT_3_1_1)) as sub:
        await sub.subscribe([(topic("v3"), 1)])
        receiver = Receiver(sub)
        async with paho(server, "pub") as peer:
            await asyncio.to_thread(peer.publish, topic("v3"), b"{}", 1, paho_properties(SENT))
            (message,) = await receiver.count(1)
        sub.ack([message.packet_id])
        await receiver.close()
    assert (message.payload, message.properties, message.expires_at) == (b"{}", None, 0.0)


async def test_failure_reason_codes_are_errors_and_no_subscribers_is_not(
    make: Factory, server: Server
) -> None:
    async with connected(make, server.options("pub")) as pub:
        await pub.publish(topic("nobody-listens"), b"x", 1)  # 0x10 is a success
        with pytest.raises(ServerRefused) as caught:
            await pub.publish("elsewhere/x", b"x", 1)
        assert caught.value.reason_code in (0x87, 0x90)  # not authorised / topic name invalid
        assert "refused the PUBLISH to elsewhere/x" in str(caught.value)
        await pub.publish(topic("after"), b"x", 1)  # and the connection goes on


async def test_the_servers_disconnect_ends_the_connection_with_its_reason(
    make: Factory, server: Server
) -> None:
    # The platform says why in a DISCONNECT (administrative action); Mosquitto, restarted,
    # just closes. Either way the connection ends with a ConnectError.
    sub = make()
    await sub.connect(server.options("kicked"))
    receiver = Receiver(sub)
    await server.drop("kicked")
    await receiver.until(lambda: receiver.error is not None, "the connection error")
    error = receiver.error
    assert isinstance(error, ConnectError)
    if server.platform is not None and make is NativeTransport:
        assert isinstance(error, ProtocolViolation) and error.reason == "server_disconnect"
        assert "the server sent DISCONNECT 0x98 administrative action" in str(error)
    await sub.disconnect()


async def test_the_receive_maximum_bounds_the_first_window(make: Factory, server: Server) -> None:
    async with connected(make, server.options("sub", receive_maximum=3)) as sub:
        await sub.subscribe([(topic("flow"), 1)])
        receiver = Receiver(sub)
        async with paho(server, "pub") as peer:
            for i in range(10):
                await asyncio.to_thread(peer.publish, topic("flow"), b"%d" % i, 1)
            # A round trip: everything the server sent before its UNSUBACK has been read.
            await sub.unsubscribe([topic("elsewhere")])
            first = list(await receiver.count(sub.received))
            assert len(first) == 3
            handed = 3
            while handed < 10:
                sub.ack([m.packet_id for m in receiver.messages[handed - 3 : handed]])
                handed = min(10, len(await receiver.count(handed + 1)))
            sub.ack([m.packet_id for m in receiver.messages[7:]])
        await receiver.close()
    assert [m.payload for m in receiver.messages][:10] == [b"%d" % i for i in range(10)]
