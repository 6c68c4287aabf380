"""Security: who may log in, what each client may see and send, secrets, and TLS.

Already proven elsewhere and not repeated here: ``tests/platform/test_auth.py`` (the credentials
table, tokens out of ``repr``, refusal reasons without the password), ``tests/platform/
test_platform_cli.py`` (a platform on a non-loopback address refuses to start without
credentials; the banner masks tokens), ``tests/platform/test_tls.py`` (the TLS context's
refusals, with the server's exact alert reason, in memory), ``tests/platform/
test_platform_rules.py`` (the topic rules as pure functions).
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.platform.rawclient import RawClient
from tests.platform.test_platform_cli import start
from tests.reliability.hostile import closed_by_server
from tests.support.credentials import API_KEY, DEVICE, GATEWAY, ORG, OTHER_ORG, OTHER_ORG_KEY, TOKEN
from tests.support.fetch import fetch
from tests.support.platform import platform_config
from tests.support.processes import WorkerProcess, clean_env, run_cli
from tests.support.waiting import until
from worker.mqtt import MQTT_5, Connack, Publish, Subscribe, Subscription
from worker.platform import Platform, PlatformConfig, tls

APP = "tests.reliability.hostile_app"
# Distinct secrets per client here: a token that leaks, or is accepted where it must not be,
# names its owner.
DEVICE_TOKEN = "dev-Secret-1!"
OTHER_DEVICE, OTHER_TOKEN = f"d:{ORG}:sensor:s2", "dev-Secret-2!"
GATEWAY_TOKEN = "gw-Secret-3!"
XYZ_KEY, XYZ_TOKEN = OTHER_ORG_KEY, "xyz-Secret-4!"
XYZ_DEVICE, XYZ_DEVICE_TOKEN = f"d:{OTHER_ORG}:sensor:s1", "xyz-dev-Secret-5!"


def secure_config(**overrides: object) -> PlatformConfig:
    """Two orgs with real credentials; neither development switch."""
    secure: dict[str, object] = {
        "api_keys": {API_KEY: TOKEN, XYZ_KEY: XYZ_TOKEN},
        "device_tokens": {
            DEVICE: DEVICE_TOKEN,
            OTHER_DEVICE: OTHER_TOKEN,
            GATEWAY: GATEWAY_TOKEN,
            XYZ_DEVICE: XYZ_DEVICE_TOKEN,
        },
    }
    return platform_config(**(secure | overrides))


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    async with Platform(secure_config()) as running:
        yield running


async def login(port: int, client_id: str, user: str | None, password: str | None) -> RawClient:
    client = await RawClient.open(port)
    connack = await client.connect(client_id, user, password)
    assert connack.reason_code == 0, (client_id, connack)
    return client


# --- authentication (W4-W6, W41) -----------------------------------------------------------

REFUSED_LOGINS = [
    ("app without credentials", f"a:{ORG}:x", None, None),
    ("app with a key and no token", f"a:{ORG}:x", API_KEY, None),
    ("app with an empty token", f"a:{ORG}:x", API_KEY, ""),
    ("app with a wrong token", f"a:{ORG}:x", API_KEY, "tok2"),
    ("app with an unknown key", f"a:{ORG}:x", "a-abc123-nokey", TOKEN),
    ("app with another org's key", f"a:{ORG}:x", XYZ_KEY, XYZ_TOKEN),
    ("scalable app with a wrong token", f"A:{ORG}:x", API_KEY, "nope"),
    ("device without credentials", DEVICE, None, None),
    ("device with another device's token", DEVICE, "use-token-auth", OTHER_TOKEN),
    ("device that is not registered", "d:abc123:sensor:s9", "use-token-auth", DEVICE_TOKEN),
    ("device with an API key", DEVICE, API_KEY, TOKEN),
    ("device with its token as user name", DEVICE, DEVICE_TOKEN, DEVICE_TOKEN),
    ("gateway with a device's token", GATEWAY, "use-token-auth", DEVICE_TOKEN),
    ("quickstart while it is off", "d:quickstart:t:d1", None, None),
]


@pytest.mark.parametrize(("what", "client_id", "user", "password"), REFUSED_LOGINS)
async def test_w5_w6_authentication_is_required(
    platform: Platform, what: str, client_id: str, user: str | None, password: str | None
) -> None:
    client = await RawClient.open(platform.port)
    connack = await client.connect(client_id, user, password)
    assert connack == Connack(False, 5), what  # "not authorized"; then the socket closes
    assert await closed_by_server(client, 5.0), what


async def test_w41_quickstart_opens_only_the_quickstart_org() -> None:
    async with Platform(secure_config(api_keys={}, device_tokens={}, quickstart=True)) as p:
        open_device = await login(p.port, "d:quickstart:t:d1", None, None)
        await open_device.close()
        client = await RawClient.open(p.port)
        assert (await client.connect(f"a:{ORG}:x", None, None)).reason_code == 5
        await client.close()


async def test_w5_the_development_switch_accepts_any_token_but_not_a_bad_key() -> None:
    async with Platform(secure_config(accept_any_key=True)) as p:
        await (await login(p.port, f"a:{ORG}:x", API_KEY, "anything")).close()
        await (await login(p.port, DEVICE, "use-token-auth", "anything")).close()
        client = await RawClient.open(p.port)
        assert (await client.connect(f"a:{ORG}:x", "not-a-key", "t")).reason_code == 5
        await client.close()


# --- what each client may see and send (W8-W11, W37, W38) --------------------------------


async def test_w11_an_application_never_sees_another_orgs_traffic(platform: Platform) -> None:
    async with AsyncExitStack() as stack:
        spy = await login(platform.port, "a:xyz789:spy", XYZ_KEY, XYZ_TOKEN)
        stack.push_async_callback(spy.close)
        await spy.subscribe(
            "iot-2/type/+/id/+/evt/+/fmt/+", "iot-2/type/+/id/+/cmd/+/fmt/+",
            "iot-2/type/+/id/+/mon", "iot-2/app/+/mon", qos=1,
        )  # fmt: skip
        # abc123 traffic of every kind: events, commands, device and app status messages.
        owner = await login(platform.port, f"a:{ORG}:owner", API_KEY, TOKEN)
        stack.push_async_callback(owner.close)
        await owner.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", qos=1)
        device = await login(platform.port, DEVICE, "use-token-auth", DEVICE_TOKEN)
        stack.push_async_callback(device.close)
        device.send(Publish("iot-2/evt/secret/fmt/json", b"abc123 only", 1, packet_id=1))
        owner.send(
            Publish("iot-2/type/sensor/id/s1/cmd/c/fmt/json", b"abc123 only", 1, packet_id=1)
        )
        assert (await owner.publication()).payload == b"abc123 only"  # it was routed
        # The spy's own org then speaks: the first thing it sees must be its own.
        mine = await login(platform.port, XYZ_DEVICE, "use-token-auth", XYZ_DEVICE_TOKEN)
        stack.push_async_callback(mine.close)
        mine.send(Publish("iot-2/evt/sentinel/fmt/json", b"xyz789", 1, packet_id=1))
        while True:
            seen = await spy.publication()
            assert b"abc123" not in seen.payload and ORG not in seen.topic, seen
            if seen.topic.endswith("/evt/sentinel/fmt/json"):
                break


async def test_w11_an_application_cannot_command_another_orgs_device(platform: Platform) -> None:
    async with AsyncExitStack() as stack:
        device = await login(platform.port, DEVICE, "use-token-auth", DEVICE_TOKEN)
        stack.push_async_callback(device.close)
        await device.subscribe("iot-2/cmd/+/fmt/+", qos=1)
        spy = await login(platform.port, "a:xyz789:spy", XYZ_KEY, XYZ_TOKEN)
        stack.push_async_callback(spy.close)
        owner = await login(platform.port, f"a:{ORG}:owner", API_KEY, TOKEN)
        stack.push_async_callback(owner.close)
        # Same type and ID, other org: it goes to xyz789's device s1, which is not connected.
        spy.send(Publish("iot-2/type/sensor/id/s1/cmd/reboot/fmt/json", b"spy", 1, packet_id=1))
        owner.send(Publish("iot-2/type/sensor/id/s1/cmd/ping/fmt/json", b"own", 1, packet_id=1))
        first = await device.publication()
        assert (first.topic, first.payload) == ("iot-2/cmd/ping/fmt/json", b"own")


@pytest.mark.parametrize(
    "topic_filter",
    [
        "iot-2/type/sensor/id/s2/evt/+/fmt/+",  # another device's events
        "iot-2/type/+/id/+/evt/+/fmt/+",  # everyone's events
        "iot-2/type/sensor/id/s2/cmd/+/fmt/+",  # another device's commands
        "iot-2/evt/+/fmt/+",  # events, with the device form of the topic
        "#",
        "iot-2/#",
        "$SYS/#",
        "$share/g/iot-2/cmd/+/fmt/+",
        "iot-2/type/+/id/+/mon",
    ],
)
async def test_w10_w38_a_device_cannot_subscribe_to_others(
    platform: Platform, topic_filter: str
) -> None:
    device = await login(platform.port, DEVICE, "use-token-auth", DEVICE_TOKEN)
    device.send(Subscribe(1, (Subscription(topic_filter, 0),)))
    assert await closed_by_server(device, 5.0)  # W38: MQTT 3.1.1 closes, no SUBACK


async def test_w38_an_mqtt5_device_is_refused_per_filter_and_gets_nothing(
    platform: Platform,
) -> None:
    device = RawClient(*await asyncio.open_connection("127.0.0.1", platform.port))
    assert (
        await device.connect(DEVICE, "use-token-auth", DEVICE_TOKEN, level=MQTT_5)
    ).reason_code == 0
    suback = await device.subscribe("iot-2/type/sensor/id/s2/evt/+/fmt/+", "iot-2/cmd/+/fmt/+")
    assert suback.reason_codes[0] >= 0x80 and suback.reason_codes[1] == 0
    other = await login(platform.port, OTHER_DEVICE, "use-token-auth", OTHER_TOKEN)
    other.send(Publish("iot-2/evt/e/fmt/json", b"s2 only", 1, packet_id=1))
    owner = await login(platform.port, f"a:{ORG}:owner", API_KEY, TOKEN)
    owner.send(Publish("iot-2/type/sensor/id/s1/cmd/c/fmt/json", b"own", 0))
    assert (await device.publication()).payload == b"own"
    for client in (device, other, owner):
        await client.close()


@pytest.mark.parametrize(
    "topic",
    [
        "iot-2/type/sensor/id/s2/evt/e/fmt/json",  # as another device
        "iot-2/type/sensor/id/s1/evt/e/fmt/json",  # the application form, even for itself
        "iot-2/cmd/c/fmt/json",  # a command, which only applications send
        "iot-2/type/sensor/id/s2/mon",  # a forged status message
        "iot-2/evt/+/fmt/json",  # a wildcard (W13)
    ],
)
async def test_w10_w37_a_device_cannot_publish_as_another(platform: Platform, topic: str) -> None:
    async with AsyncExitStack() as stack:
        watcher = await login(platform.port, f"a:{ORG}:watch", API_KEY, TOKEN)
        stack.push_async_callback(watcher.close)
        await watcher.subscribe("iot-2/type/+/id/+/evt/+/fmt/+", "iot-2/type/+/id/s2/mon")
        forger = await login(platform.port, DEVICE, "use-token-auth", DEVICE_TOKEN)
        forger.send(Publish(topic, b"forged", 1, packet_id=1))
        assert await closed_by_server(forger, 5.0)  # W37: closed, nothing acknowledged
        honest = await login(platform.port, OTHER_DEVICE, "use-token-auth", OTHER_TOKEN)
        stack.push_async_callback(honest.close)
        honest.send(Publish("iot-2/evt/e/fmt/json", b"honest", 1, packet_id=1))
        while (seen := await watcher.publication()).payload != b"honest":
            assert b"forged" not in seen.payload, seen


# --- TLS on the platform's own listener (W1, IBM's cipher list) ----------------------------


@pytest.fixture(scope="module")
def dev_tls(tmp_path_factory: pytest.TempPathFactory) -> tls.DevCertificates:
    return tls.ensure_dev_certificates(tmp_path_factory.mktemp("tls"))


async def mqtt_over_tls(port: int, context: ssl.SSLContext) -> tuple[int, str, str]:
    """CONNECT over TLS: (CONNACK code, TLS version, cipher)."""
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        client = RawClient(reader, writer)
        try:
            connack = await client.connect(f"a:{ORG}:tls", API_KEY, TOKEN)
            ssl_object = writer.get_extra_info("ssl_object")
            return connack.reason_code, ssl_object.version(), ssl_object.cipher()[0]
        finally:
            await client.close()


def client_context(ca: Path, version: ssl.TLSVersion, ciphers: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


async def test_w1_the_tls_listener_speaks_tls12_with_the_ibm_suites_only(
    dev_tls: tls.DevCertificates,
) -> None:
    server, _ = tls.dev_server_context(dev_tls.ca.parent)
    async with Platform(secure_config(port=None, tls_port=0, ssl_context=server)) as p:
        assert p.tls_port is not None
        for cipher in tls.CIPHERS:
            context = client_context(dev_tls.ca, ssl.TLSVersion.TLSv1_2, cipher)
            assert await mqtt_over_tls(p.tls_port, context) == (0, "TLSv1.2", cipher)
        with warnings.catch_warnings():
            # Python deprecates asking for TLS 1.1, which is exactly what this client must do.
            warnings.simplefilter("ignore", DeprecationWarning)
            old = client_context(dev_tls.ca, ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0")
        refused = [
            old,
            client_context(dev_tls.ca, ssl.TLSVersion.TLSv1_3),
            client_context(dev_tls.ca, ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-CHACHA20-POLY1305"),
            client_context(dev_tls.ca, ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA256"),
            client_context(dev_tls.ca, ssl.TLSVersion.TLSv1_2, "AES128-SHA"),
        ]
        for context in refused:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await mqtt_over_tls(p.tls_port, context)
        # The refusals cost nothing: a good client is still served.
        good = client_context(dev_tls.ca, ssl.TLSVersion.TLSv1_2)
        assert (await mqtt_over_tls(p.tls_port, good))[0] == 0


# --- secrets never appear in logs ----------------------------------------------------------

APP_SECRET = "MP$08VKz!8rXwnR-Q*app"
DEVICE_SECRET = "dev$Tok3n-never-logged"
WRONG_SECRETS = ("wr0ng$app-token", "wr0ng$device-token")


@pytest.mark.slow
async def test_secrets_never_appear_in_the_logs_of_any_component(tmp_path: Path) -> None:
    """Platform and workers at debug level, good and bad logins: no token in any output."""
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps({"api_keys": {API_KEY: APP_SECRET}, "device_tokens": {DEVICE: DEVICE_SECRET}})
    )
    platform = await start("--port", "0", "--keys", str(keys), "--log-level", "debug")
    outputs: list[str] = ["\n".join(platform.banner)]
    try:
        port = platform.url("mqtt")
        worker = WorkerProcess(
            tmp_path, "w1", ("--host", "127.0.0.1", "--port", str(port), "--app-id", "sec",
                             "--log-level", "debug"),
            WIOTP_AUTH_KEY=API_KEY, WIOTP_AUTH_TOKEN=APP_SECRET,
        )  # fmt: skip
        await worker.start(APP)
        try:
            await exercise(port)
            await until(lambda: handled(worker), "the device's event")
            outputs.append((await fetch(worker.port, "/metrics"))[2].decode())
        finally:
            await worker.stop()
        assert worker.proc is not None and worker.proc.stdout is not None
        outputs += [worker.ready_line, (await worker.proc.stdout.read()).decode()]
        outputs.append(worker.log_text())
        refused = clean_env(WIOTP_AUTH_KEY=API_KEY, WIOTP_AUTH_TOKEN=WRONG_SECRETS[0])
        args = (
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--app-id",
            "sec2",
            "--log-level",
            "debug",
            "--metrics-port",
            "0",
        )
        code, out, err = await run_cli("run", APP, *args, env=refused)
        assert code == 4, err
        outputs += [out, err]
    finally:
        code, out, err = await platform.stop(signal.SIGTERM)
    outputs += [out, err]
    everything = "\n".join(outputs)
    assert "refused" in everything and "DEBUG" in everything  # the logs really were captured
    for secret in (APP_SECRET, DEVICE_SECRET, *WRONG_SECRETS):
        assert secret not in everything, f"a secret ({secret[:4]}...) was logged"


def handled(worker: WorkerProcess) -> bool:
    return worker.record.exists() and "s1 json" in worker.record.read_text()


async def exercise(port: int) -> None:
    """A good device event, and refused logins with wrong tokens (app and device)."""
    device = await login(port, DEVICE, "use-token-auth", DEVICE_SECRET)
    device.send(Publish("iot-2/evt/reading/fmt/json", b'{"n": 1}', 1, packet_id=1))
    await device.recv()  # PUBACK
    await device.close()
    for client_id, user, password in (
        (f"a:{ORG}:bad", API_KEY, WRONG_SECRETS[0]),
        (DEVICE, "use-token-auth", WRONG_SECRETS[1]),
    ):
        client = await RawClient.open(port)
        assert (await client.connect(client_id, user, password)).reason_code == 5
        await client.close()
