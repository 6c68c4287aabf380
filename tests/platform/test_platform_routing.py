"""Publishing and subscribing across clients: rewriting, isolation, limits, errors.

W11-W12 rewriting and gateways, W15 max QoS, W16 retain cleared, W17 size, W37-W39 errors.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from tests.platform.conftest import app_client, device_client, next_message, raw, status_where
from tests.support.credentials import (
    API_KEY,
    DEVICE,
    DEVICE_TOKEN,
    GATEWAY,
    GATEWAY_TOKEN,
    ORG,
    OTHER_ORG_KEY,
    OTHER_ORG_TOKEN,
    TOKEN,
)
from tests.support.platform import platform_config
from worker.mqtt import MQTT_5, Disconnect, Pingreq, Pingresp, Properties, Puback, Publish, Will
from worker.platform import Platform

ALL_EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"


async def test_w11_device_event_reaches_app_with_type_and_id(
    platform: Platform, clients: AsyncExitStack
) -> None:
    app = await clients.enter_async_context(app_client(platform.port))
    await app.subscribe(ALL_EVENTS, qos=1)
    device = await clients.enter_async_context(device_client(platform.port))
    await device.publish("iot-2/evt/reading/fmt/json", b'{"t":21}', qos=1)
    message = await next_message(app)
    assert str(message.topic) == "iot-2/type/sensor/id/s1/evt/reading/fmt/json"
    assert message.payload == b'{"t":21}'
    assert message.qos == 1


async def test_w11_app_command_reaches_only_that_device(
    platform: Platform, clients: AsyncExitStack
) -> None:
    device = await clients.enter_async_context(device_client(platform.port))
    await device.subscribe("iot-2/cmd/+/fmt/+", qos=1)
    app = await clients.enter_async_context(app_client(platform.port))
    await app.publish("iot-2/type/sensor/id/other/cmd/reboot/fmt/json", b"not yours", qos=1)
    await app.publish("iot-2/type/sensor/id/s1/cmd/reboot/fmt/json", b"{}", qos=1)
    message = await next_message(device)
    assert str(message.topic) == "iot-2/cmd/reboot/fmt/json"
    assert message.payload == b"{}"


async def test_w11_orgs_are_isolated(platform: Platform, clients: AsyncExitStack) -> None:
    other = await clients.enter_async_context(
        app_client(platform.port, "a:xyz789:app1", username=OTHER_ORG_KEY, password=OTHER_ORG_TOKEN)
    )
    await other.subscribe(ALL_EVENTS)
    device = await clients.enter_async_context(device_client(platform.port))
    await device.publish("iot-2/evt/secret/fmt/json", b"abc123 only", qos=1)
    await other.publish("iot-2/type/t/id/d/evt/sentinel/fmt/json", b"mine", qos=1)
    message = await next_message(other)
    assert str(message.topic).endswith("/evt/sentinel/fmt/json")


async def test_w12_gateway_publishes_for_its_devices_and_gets_their_commands(
    platform: Platform, clients: AsyncExitStack
) -> None:
    app = await clients.enter_async_context(app_client(platform.port))
    await app.subscribe(ALL_EVENTS)
    gateway = await clients.enter_async_context(
        device_client(platform.port, GATEWAY, GATEWAY_TOKEN)
    )
    await gateway.subscribe("iot-2/type/+/id/+/cmd/+/fmt/+")
    await gateway.publish("iot-2/type/meter/id/m7/evt/usage/fmt/json", b"7", qos=1)
    message = await next_message(app)
    assert str(message.topic) == "iot-2/type/meter/id/m7/evt/usage/fmt/json"
    await app.publish("iot-2/type/meter/id/m7/cmd/reset/fmt/json", b"r", qos=1)
    message = await next_message(gateway)
    assert str(message.topic) == "iot-2/type/meter/id/m7/cmd/reset/fmt/json"


async def test_w39_gateway_refused_subscription_gets_notify_and_stays(
    platform: Platform, clients: AsyncExitStack
) -> None:
    gateway = await raw(platform.port, clients)
    await gateway.connect(GATEWAY, "use-token-auth", GATEWAY_TOKEN)
    await gateway.subscribe("iot-2/type/gw/id/g1/notify")
    ack = await gateway.subscribe("iot-2/type/+/id/+/evt/+/fmt/+")
    assert ack.reason_codes == (0x80,)
    notify = await gateway.publication()
    assert notify.topic == "iot-2/type/gw/id/g1/notify"
    assert notify.payload.startswith(b'{"Request":"subscribe","Time":')
    assert b'"Topic":"iot-2/type/+/id/+/evt/+/fmt/+","Type":"gw","Id":"g1"' in notify.payload
    assert b'"Client":"g:abc123:gw:g1","RC":180' in notify.payload


async def test_w16_retain_flag_of_clients_is_cleared(
    platform: Platform, clients: AsyncExitStack
) -> None:
    device = await clients.enter_async_context(device_client(platform.port))
    await device.publish("iot-2/evt/kept/fmt/json", b"old", qos=1, retain=True)
    app = await clients.enter_async_context(app_client(platform.port))
    await app.subscribe(ALL_EVENTS)
    await device.publish("iot-2/evt/live/fmt/json", b"new", qos=1, retain=True)
    message = await next_message(app)
    assert str(message.topic).endswith("/evt/live/fmt/json")
    assert not message.retain


async def test_w15_subscription_qos_is_capped_and_higher_publish_closes() -> None:
    async with Platform(platform_config(max_qos=1)) as p, AsyncExitStack() as stack:
        client = await raw(p.port, stack)
        await client.connect(f"a:{ORG}:q", API_KEY, TOKEN)
        ack = await client.subscribe(ALL_EVENTS, qos=2)
        assert ack.reason_codes == (1,)
        client.send(Publish("iot-2/type/t/id/d/evt/e/fmt/f", b"x", qos=2, packet_id=1))
        assert await client.until_closed() == []


async def test_qos2_end_to_end(platform: Platform, clients: AsyncExitStack) -> None:
    app = await clients.enter_async_context(app_client(platform.port))
    await app.subscribe(ALL_EVENTS, qos=2)
    device = await clients.enter_async_context(device_client(platform.port))
    await device.publish("iot-2/evt/exact/fmt/json", b"once", qos=2)
    message = await next_message(app)
    assert (message.payload, message.qos) == (b"once", 2)


async def test_w17_too_large_message_disconnects_with_287(
    platform: Platform, clients: AsyncExitStack
) -> None:
    watch = await clients.enter_async_context(app_client(platform.port, f"a:{ORG}:watch"))
    await watch.subscribe("iot-2/type/+/id/+/mon")
    device = await raw(platform.port, clients)
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
    device.send(Publish("iot-2/evt/big/fmt/bin", b"x" * 131072, qos=1, packet_id=1))
    assert await device.recv() == Puback(1)
    device.send(Publish("iot-2/evt/big/fmt/bin", b"x" * 131073, qos=1, packet_id=2))
    assert await device.until_closed() == []
    _, body = await status_where(watch, Action="Disconnect")
    assert body["CloseCode"] == 287
    assert body["Reason"] == "The message size is too large for this endpoint"


async def test_w17_packet_far_above_the_limit_is_refused_before_it_is_read(
    platform: Platform, clients: AsyncExitStack
) -> None:
    device = await raw(platform.port, clients)
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
    # A PUBLISH announcing 200 MB: the server must close without waiting for the body.
    device.send_bytes(b"\x30\xff\xff\xff\x5f")
    assert await device.until_closed() == []


@pytest.mark.parametrize(
    ("client_id", "topic", "code"),
    [
        (DEVICE, "iot-2/cmd/reboot/fmt/json", 180),
        (DEVICE, "not/a/platform/topic", 276),
        (f"a:{ORG}:app1", "iot-2/type/t/id/d/mon", 180),
        (f"a:{ORG}:app1", "iot-2/type/t/id/+/evt/e/fmt/json", 276),
    ],
)
async def test_w37_refused_publish_closes_with_its_code(
    platform: Platform, clients: AsyncExitStack, client_id: str, topic: str, code: int
) -> None:
    watch = await clients.enter_async_context(app_client(platform.port, f"a:{ORG}:watch"))
    await watch.subscribe([("iot-2/type/+/id/+/mon", 0), ("iot-2/app/+/mon", 0)])
    client = await raw(platform.port, clients)
    user, token = ("use-token-auth", DEVICE_TOKEN) if client_id[0] == "d" else (API_KEY, TOKEN)
    await client.connect(client_id, user, token)
    client.send(Publish(topic, b"x"))
    assert await client.until_closed() == []
    _, body = await status_where(watch, Action="Disconnect", ClientID=client_id)
    assert body["CloseCode"] == code


async def test_w38_w9_hash_subscription_closes_an_app_with_276(
    platform: Platform, clients: AsyncExitStack
) -> None:
    watch = await clients.enter_async_context(app_client(platform.port, f"a:{ORG}:watch"))
    await watch.subscribe("iot-2/app/+/mon")
    app = await raw(platform.port, clients)
    await app.connect(f"a:{ORG}:app1", API_KEY, TOKEN)
    with pytest.raises(EOFError):
        await app.subscribe("iot-2/type/+/id/+/evt/#")
    _, body = await status_where(watch, Action="Disconnect", ClientID=f"a:{ORG}:app1")
    assert body["CloseCode"] == 276
    assert body["Reason"] == "The topic is not valid"


async def test_w37_w38_mqtt5_gets_reason_codes_and_stays(
    platform: Platform, clients: AsyncExitStack
) -> None:
    client = await raw(platform.port, clients)
    await client.connect(f"a:{ORG}:five", API_KEY, TOKEN, level=MQTT_5)
    ack = await client.subscribe("iot-2/type/+/id/+/evt/#", ALL_EVENTS)
    assert ack.reason_codes == (0x8F, 0)
    client.send(Publish("iot-2/type/t/id/d/mon", b"x", qos=1, packet_id=9))
    assert await client.recv() == Puback(9, 0x87)
    client.send(Disconnect())
    assert await client.until_closed() == []


async def test_will_is_published_when_the_client_vanishes(
    platform: Platform, clients: AsyncExitStack
) -> None:
    app = await clients.enter_async_context(app_client(platform.port))
    await app.subscribe(ALL_EVENTS)
    device = await raw(platform.port, clients)
    will = Will("iot-2/evt/lost/fmt/json", b"gone")
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN, will=will)
    await device.close()
    message = await next_message(app)
    assert (str(message.topic), message.payload) == (
        "iot-2/type/sensor/id/s1/evt/lost/fmt/json",
        b"gone",
    )


async def test_many_messages_arrive_in_order(platform: Platform, clients: AsyncExitStack) -> None:
    app = await raw(platform.port, clients)
    await app.connect(f"a:{ORG}:order", API_KEY, TOKEN)
    await app.subscribe(ALL_EVENTS, qos=1)
    device = await raw(platform.port, clients)
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
    for i in range(500):
        qos = i % 2
        device.send(Publish("iot-2/evt/n/fmt/text", b"%d" % i, qos, packet_id=i if qos else None))
    got: list[int] = []
    async with asyncio.timeout(10):
        while len(got) < 500:
            packet = await app.publication()
            got.append(int(packet.payload))
            if packet.packet_id is not None:
                app.send(Puback(packet.packet_id))
    assert got == list(range(500))


async def test_mqtt5_receive_maximum_bounds_unacknowledged_deliveries(
    platform: Platform, clients: AsyncExitStack
) -> None:
    app = await raw(platform.port, clients)
    props = Properties(receive_maximum=2)
    await app.connect(f"a:{ORG}:narrow", API_KEY, TOKEN, level=MQTT_5, properties=props)
    await app.subscribe(ALL_EVENTS, qos=1)
    device = await raw(platform.port, clients)
    await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)
    for i in range(1, 6):
        device.send(Publish("iot-2/evt/n/fmt/text", b"%d" % i, qos=1, packet_id=i))
    assert [await device.recv() for _ in range(5)] == [Puback(i) for i in range(1, 6)]
    first, second = await app.publication(), await app.publication()
    app.send(Pingreq())
    assert await app.recv() == Pingresp()  # nothing more while two are unacknowledged
    assert first.packet_id is not None
    app.send(Puback(first.packet_id))
    third = await app.publication()
    assert [p.payload for p in (first, second, third)] == [b"1", b"2", b"3"]
