"""Connecting: client IDs, credentials, takeover, keepalive, protocol levels (W2-W7, W19-W25, W41).

Real clients over sockets: aiomqtt and paho-mqtt where a library can say it, the raw codec
client where the test needs exact packets.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.platform.conftest import app_client, device_client, raw, status_where
from tests.support.credentials import API_KEY, DEVICE, DEVICE_TOKEN, ORG, TOKEN
from tests.support.platform import platform_config
from worker.mqtt import MQTT_3_1, MQTT_5, Connack, Disconnect, Pingreq, Pingresp, Properties
from worker.platform import Platform


async def watcher(platform: Platform, stack: AsyncExitStack) -> aiomqtt.Client:
    """An application watching every device and application status topic."""
    client = await stack.enter_async_context(app_client(platform.port, f"a:{ORG}:watcher"))
    await client.subscribe([("iot-2/type/+/id/+/mon", 0), ("iot-2/app/+/mon", 0)])
    return client


async def test_w2_w5_application_connects_with_api_key(platform: Platform) -> None:
    async with app_client(platform.port) as client:
        await client.subscribe("iot-2/type/+/id/+/evt/+/fmt/+")


@pytest.mark.parametrize("client_id", ["nonsense", "a:abc123", "d:abc123:sensor", "x:abc123:a"])
async def test_w4_bad_client_id_gets_connack_5(
    platform: Platform, clients: AsyncExitStack, client_id: str
) -> None:
    client = await raw(platform.port, clients)
    ack = await client.connect(client_id, API_KEY, TOKEN)
    assert ack.reason_code == 5
    assert await client.until_closed() == []


async def test_w4_w5_bad_token_gets_connack_5_and_failed_connect(
    platform: Platform, clients: AsyncExitStack
) -> None:
    watch = await watcher(platform, clients)
    with pytest.raises(aiomqtt.MqttCodeError) as info:
        async with app_client(platform.port, f"a:{ORG}:intruder", password="wrong"):
            pass
    assert str(info.value.rc) == "Not authorized"  # paho names the v3 return code 5
    message, body = await status_where(watch, Action="FailedConnect")
    assert str(message.topic) == "iot-2/app/intruder/mon"
    assert not message.retain
    assert body["ClientID"] == f"a:{ORG}:intruder"
    assert body["CloseCode"] == 180
    assert "ReadBytes" not in body


async def test_w5_key_of_another_org_is_refused(platform: Platform) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        async with app_client(platform.port, "a:xyz789:app1"):
            pass


async def test_w6_device_needs_use_token_auth_and_its_token(
    platform: Platform, clients: AsyncExitStack
) -> None:
    async with device_client(platform.port):
        pass
    for user, token in (("use-token-auth", "wrong"), ("someone", DEVICE_TOKEN)):
        client = await raw(platform.port, clients)
        assert (await client.connect(DEVICE, user, token)).reason_code == 5


async def test_w5_accept_any_key_switch() -> None:
    async with (
        Platform(platform_config(api_keys={}, accept_any_key=True)) as p,
        app_client(p.port, password="anything"),
    ):
        pass


async def test_w7_mqtt_3_1_and_5_are_accepted(platform: Platform, clients: AsyncExitStack) -> None:
    old = await raw(platform.port, clients)
    assert (await old.connect(f"a:{ORG}:old", API_KEY, TOKEN, level=MQTT_3_1)).reason_code == 0
    new = await raw(platform.port, clients)
    assert (await new.connect(f"a:{ORG}:new", API_KEY, TOKEN, level=MQTT_5)).reason_code == 0
    async with app_client(platform.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("iot-2/type/+/id/+/evt/+/fmt/+")


async def test_w7_long_client_ids_are_accepted(platform: Platform) -> None:
    long_id = f"a:{ORG}:" + "x" * 36
    assert len(long_id) > 23
    async with app_client(platform.port, long_id):
        pass


async def test_w19_duplicate_client_id_takes_over_with_288(
    platform: Platform, clients: AsyncExitStack
) -> None:
    watch = await watcher(platform, clients)
    first = await raw(platform.port, clients)
    assert (await first.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)).reason_code == 0
    await status_where(watch, Action="Connect", ClientID=DEVICE)
    second = await raw(platform.port, clients)
    assert (await second.connect(DEVICE, "use-token-auth", DEVICE_TOKEN)).reason_code == 0
    assert await first.until_closed() == []
    _, body = await status_where(watch, Action="Disconnect", ClientID=DEVICE)
    assert body["CloseCode"] == 288
    assert body["Reason"] == "The clientID was reused"
    await status_where(watch, Action="Connect", ClientID=DEVICE)
    second.send(Pingreq())
    assert isinstance(await second.recv(), Pingresp)


async def test_w19_mqtt5_client_is_told_session_taken_over(
    platform: Platform, clients: AsyncExitStack
) -> None:
    first = await raw(platform.port, clients)
    await first.connect(f"a:{ORG}:app1", API_KEY, TOKEN, level=MQTT_5)
    second = await raw(platform.port, clients)
    await second.connect(f"a:{ORG}:app1", API_KEY, TOKEN, level=MQTT_5)
    assert await first.until_closed() == [Disconnect(0x8E)]


async def test_w24_scalable_app_connections_coexist(platform: Platform) -> None:
    client_id = f"A:{ORG}:scaled"
    async with app_client(platform.port, client_id) as one, app_client(platform.port, client_id):
        await one.subscribe("iot-2/type/+/id/+/evt/+/fmt/+")
        assert platform.connections == 2


async def test_w25_scalable_app_without_instance_needs_clean_session(
    platform: Platform, clients: AsyncExitStack
) -> None:
    client = await raw(platform.port, clients)
    ack = await client.connect(f"A:{ORG}:scaled", API_KEY, TOKEN, clean=False)
    assert ack.reason_code == 5
    durable = await raw(platform.port, clients)
    ack = await durable.connect(f"A:{ORG}:scaled:i1", API_KEY, TOKEN, clean=False)
    assert ack.reason_code == 0


@pytest.mark.slow
async def test_w23_keepalive_closes_at_one_and_a_half_times_with_160(
    platform: Platform, clients: AsyncExitStack
) -> None:
    watch = await watcher(platform, clients)
    client = await raw(platform.port, clients)
    loop = asyncio.get_running_loop()
    await client.connect(DEVICE, "use-token-auth", DEVICE_TOKEN, keepalive=1)
    started = loop.time()
    assert await client.until_closed(within=4) == []
    assert 1.4 <= loop.time() - started < 3.0
    _, body = await status_where(watch, Action="Disconnect", ClientID=DEVICE)
    assert body["CloseCode"] == 160
    assert body["Reason"] == "The connection timed out"


async def test_w23_scalable_app_keepalive_0_becomes_3600(
    platform: Platform, clients: AsyncExitStack
) -> None:
    client = await raw(platform.port, clients)
    ack = await client.connect(f"A:{ORG}:scaled", API_KEY, TOKEN, keepalive=0, level=MQTT_5)
    assert ack == Connack(False, 0, ack.properties)
    assert ack.properties.server_keep_alive == 3600


async def test_w20_durable_session_is_resumed(platform: Platform, clients: AsyncExitStack) -> None:
    first = await raw(platform.port, clients)
    assert not (await first.connect(f"a:{ORG}:d", API_KEY, TOKEN, clean=False)).session_present
    await first.subscribe("iot-2/type/+/id/+/evt/+/fmt/+")
    await first.close()
    again = await raw(platform.port, clients)
    assert (await again.connect(f"a:{ORG}:d", API_KEY, TOKEN, clean=False)).session_present
    fresh = await raw(platform.port, clients)
    assert not (await fresh.connect(f"a:{ORG}:d", API_KEY, TOKEN, clean=True)).session_present


async def test_w20_v5_session_expiry_makes_a_durable_session(
    platform: Platform, clients: AsyncExitStack
) -> None:
    props = Properties(session_expiry_interval=60)
    first = await raw(platform.port, clients)
    await first.connect(f"a:{ORG}:v5", API_KEY, TOKEN, level=MQTT_5, properties=props)
    await first.close()
    again = await raw(platform.port, clients)
    ack = await again.connect(f"a:{ORG}:v5", API_KEY, TOKEN, level=MQTT_5, clean=False)
    assert ack.session_present


async def test_w41_quickstart_needs_no_credentials_when_enabled() -> None:
    async with Platform(platform_config(quickstart=True)) as p:
        async with aiomqtt.Client("127.0.0.1", p.port, identifier="d:quickstart:sensor:s1"):
            pass
        with pytest.raises(aiomqtt.MqttCodeError):
            async with aiomqtt.Client("127.0.0.1", p.port, identifier="A:quickstart:app"):
                pass
    async with Platform(platform_config()) as p:
        with pytest.raises(aiomqtt.MqttCodeError):
            async with aiomqtt.Client("127.0.0.1", p.port, identifier="d:quickstart:sensor:s1"):
                pass


async def test_w5_paho_application_connects(platform: Platform) -> None:
    connected = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()

    def on_connect(
        client: paho.Client, userdata: object, flags: object, rc: object, p: object
    ) -> None:
        loop.call_soon_threadsafe(connected.set_result, rc)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"a:{ORG}:paho")
    client.username_pw_set(API_KEY, TOKEN)
    client.on_connect = on_connect
    client.connect("127.0.0.1", platform.port)
    client.loop_start()
    try:
        async with asyncio.timeout(5):
            assert not (await connected).is_failure
    finally:
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
