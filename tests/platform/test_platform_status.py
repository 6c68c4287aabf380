"""Status ("monitoring") messages: fields, order, retain rules, close codes (W30-W35, W40)."""

from __future__ import annotations

import itertools
import json
import re
from contextlib import AsyncExitStack
from typing import Any

import aiomqtt

from tests.platform.conftest import app_client, device_client, next_message, raw, status_where
from tests.support.credentials import API_KEY, DEVICE, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
from worker.mqtt import MQTT_5, Disconnect
from worker.platform import Platform, status
from worker.platform.status import Action, ConnectionInfo, Counters, status_payload

DEVICE_MON = "iot-2/type/sensor/id/s1/mon"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CONNECT_FIELDS = [
    "Action",
    "Time",
    "ClientAddr",
    "ClientID",
    "Port",
    "Secure",
    "Protocol",
    "ConnectTime",
]
COUNTERS = ["ReadBytes", "ReadMsg", "WriteBytes", "WriteMsg"]


_names = itertools.count()


async def watch(port: int, stack: AsyncExitStack, *filters: str) -> aiomqtt.Client:
    """A new application subscribed to ``filters``, with a client ID of its own."""
    client = await stack.enter_async_context(app_client(port, f"a:{ORG}:watch{next(_names)}"))
    await client.subscribe([(f, 0) for f in filters])
    return client


def body_of(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes)
    result: dict[str, Any] = json.loads(message.payload)
    return result


def test_w32_w34_payload_matches_the_reference_byte_for_byte() -> None:
    info = ConnectionInfo(
        "198.51.100.7",
        "a:myorg1:myserver",
        8883,
        True,
        "mqtt4",
        "a-myorg1-jkdhgkjha",
        "2017-01-20T14:27:13.112Z",
    )
    connect = status_payload(Action.CONNECT, info, now="2017-01-20T14:27:13.113Z")
    assert connect == (
        b'{"Action":"Connect","Time":"2017-01-20T14:27:13.113Z","ClientAddr":"198.51.100.7",'
        b'"ClientID":"a:myorg1:myserver","Port":8883,"Secure":true,"Protocol":"mqtt4",'
        b'"User":"a-myorg1-jkdhgkjha","ConnectTime":"2017-01-20T14:27:13.112Z"}'
    )
    device = ConnectionInfo(
        "198.51.100.7",
        "d:myorg1:psutil:001",
        8883,
        True,
        "mqtt4",
        "use-token-auth",
        "2017-01-20T14:27:00.096Z",
    )
    counters = Counters(read_bytes=136507, read_msg=872, write_bytes=32, write_msg=0)
    gone = status_payload(Action.DISCONNECT, device, 0, counters, now="2017-01-20T14:27:13.113Z")
    assert gone == (
        b'{"Action":"Disconnect","Time":"2017-01-20T14:27:13.113Z","ClientAddr":"198.51.100.7",'
        b'"ClientID":"d:myorg1:psutil:001","Port":8883,"Secure":true,"Protocol":"mqtt4",'
        b'"ConnectTime":"2017-01-20T14:27:00.096Z","ReadBytes":136507,"ReadMsg":872,'
        b'"WriteBytes":32,"WriteMsg":0}'
    )


async def test_w30_w32_device_connect_and_disconnect_are_retained(
    platform: Platform, clients: AsyncExitStack
) -> None:
    live = await watch(platform.port, clients, "iot-2/type/+/id/+/mon")
    async with device_client(platform.port) as device:
        message = await next_message(live)
        await device.publish("iot-2/evt/e/fmt/json", b"{}", qos=1)
    assert str(message.topic) == DEVICE_MON and not message.retain
    body = body_of(message)
    assert list(body) == CONNECT_FIELDS  # no User: devices use use-token-auth (W32)
    assert body["Action"] == "Connect" and body["ClientID"] == DEVICE
    assert body["Port"] == platform.port and body["Secure"] is False
    assert body["Protocol"] == "mqtt4" and body["ClientAddr"] == "127.0.0.1"
    assert TIME.match(body["Time"]) and TIME.match(body["ConnectTime"])
    message = await next_message(live)
    body = body_of(message)
    assert list(body) == CONNECT_FIELDS + COUNTERS  # a clean DISCONNECT: close code 0, no Reason
    assert body["Action"] == "Disconnect" and body["ReadMsg"] == 1 and body["ReadBytes"] > 0
    later = await watch(platform.port, clients, DEVICE_MON, "iot-2/app/+/mon")
    message = await next_message(later)
    assert message.retain and body_of(message)["Action"] == "Disconnect"


async def test_w30_app_connect_retained_disconnect_not_and_cleared(
    platform: Platform, clients: AsyncExitStack
) -> None:
    live = await watch(platform.port, clients, "iot-2/app/+/mon")
    async with app_client(platform.port, f"a:{ORG}:worker") as app:
        _, body = await status_where(live, ClientID=f"a:{ORG}:worker", Action="Connect")
        assert body["User"] == API_KEY  # applications show their key (W32)
        later = await watch(platform.port, clients, "iot-2/app/worker/mon")
        message = await next_message(later)
        assert message.retain and body_of(message)["Action"] == "Connect"
        del app
    message, body = await status_where(live, ClientID=f"a:{ORG}:worker", Action="Disconnect")
    assert not message.retain
    # A new subscriber gets the retained Connect of every app still connected and nothing
    # for the one that left (B-AS); a live Connect (not retained) ends the replay.
    fresh = await watch(platform.port, clients, "iot-2/app/+/mon")
    async with app_client(platform.port, f"a:{ORG}:next"):
        replay = []
        while (message := await next_message(fresh)).retain:
            replay.append(body_of(message)["ClientID"])
    assert body_of(message)["ClientID"] == f"a:{ORG}:next"
    assert replay and f"a:{ORG}:worker" not in replay


async def test_w30_w35_reused_client_id_disconnect_is_288_then_connect(
    platform: Platform, clients: AsyncExitStack
) -> None:
    live = await watch(platform.port, clients, "iot-2/app/+/mon")
    first = await raw(platform.port, clients)
    await first.connect(f"a:{ORG}:dup", API_KEY, TOKEN)
    await status_where(live, ClientID=f"a:{ORG}:dup", Action="Connect")
    second = await raw(platform.port, clients)
    await second.connect(f"a:{ORG}:dup", API_KEY, TOKEN)
    _, body = await status_where(live, ClientID=f"a:{ORG}:dup")
    assert (body["Action"], body["CloseCode"]) == ("Disconnect", 288)
    _, body = await status_where(live, ClientID=f"a:{ORG}:dup")
    assert body["Action"] == "Connect"
    later = await watch(platform.port, clients, "iot-2/app/dup/mon")
    message = await next_message(later)
    assert message.retain and body_of(message)["Action"] == "Connect"


async def test_w30_scalable_app_stays_connected_while_one_instance_is_up(
    platform: Platform, clients: AsyncExitStack
) -> None:
    client_id = f"A:{ORG}:scaled"
    await clients.enter_async_context(app_client(platform.port, client_id))
    async with app_client(platform.port, client_id):
        pass
    later = await watch(platform.port, clients, "iot-2/app/scaled/mon")
    message = await next_message(later)
    assert message.retain and body_of(message)["Action"] == "Connect"


async def test_w40_close_codes_0_and_91_and_v5_protocol(
    platform: Platform, clients: AsyncExitStack
) -> None:
    live = await watch(platform.port, clients, "iot-2/type/+/id/+/mon")
    device = await raw(platform.port, clients)
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN, level=MQTT_5)
    _, body = await status_where(live, Action="Connect")
    assert body["Protocol"] == "mqtt5"
    await device.close()
    _, body = await status_where(live, Action="Disconnect")
    assert (body["CloseCode"], body["Reason"]) == (91, "The connection was closed by the client")
    device = await raw(platform.port, clients)
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
    device.send(Disconnect())
    _, body = await status_where(live, Action="Disconnect")
    assert "CloseCode" not in body and "Reason" not in body


async def test_w40_kick_closes_with_94(platform: Platform, clients: AsyncExitStack) -> None:
    live = await watch(platform.port, clients, "iot-2/type/+/id/+/mon")
    device = await raw(platform.port, clients)
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
    await status_where(live, Action="Connect")
    assert platform.kick(DEVICE) == 1
    assert await device.until_closed() == []
    _, body = await status_where(live, Action="Disconnect")
    assert body["CloseCode"] == 94


async def test_w41_quickstart_status_is_not_retained() -> None:
    async with Platform(platform_config(quickstart=True)) as p, AsyncExitStack() as stack:
        device = await raw(p.port, stack)
        await device.connect("d:quickstart:sensor:q1")
        viewer = await raw(p.port, stack)
        await viewer.connect("a:quickstart:viewer")
        await viewer.subscribe("iot-2/type/sensor/id/q1/mon")
        await device.close()
        message = await viewer.publication()
        assert not message.retain
        assert b'"Action":"Disconnect"' in message.payload


def test_a_gateways_refusal_notice_names_its_message() -> None:
    """W39: the notify body carries the refusal's ``RC`` and ``Message``, in IBM's field names."""
    body = json.loads(
        status.gateway_notification(
            "Publish", "iot-2/type/t/id/d/evt/e/fmt/json", "g:abc123:gw:g1", 160, "not allowed"
        )
    )
    assert body["RC"] == 160
    assert body["Message"] == "not allowed"


def test_timestamps_read_as_datetime_writes_them() -> None:
    """Milliseconds cut after the microseconds are rounded, as datetime does, seconds cached."""
    import random
    from datetime import UTC, datetime

    edges = [0.0, 1.001, 1.0009995, 1.9999995, 1e9 + 0.0005, 1.5e9 + 0.9999999, 1_796_600_000.25]
    rng = random.Random(7)
    moments = edges + sorted(rng.uniform(0, 4e9) for _ in range(2_000))
    for moment in moments:
        expected = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
        assert status.timestamp(moment) == expected.replace("+00:00", "Z"), moment
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", status.timestamp())
