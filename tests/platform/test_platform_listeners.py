"""TLS and WebSocket listeners and the metrics hooks, as the embedding API exposes them.

W1 (TLS and WebSocket ports), W32-W33 (``Secure`` and the ``-ws`` protocol suffix).
"""

from __future__ import annotations

import ssl
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry

from tests.platform.conftest import app_client, device_client, raw, status_where
from tests.support.credentials import GATEWAY, GATEWAY_TOKEN, ORG
from tests.support.platform import platform_config
from worker.errors import ConfigError
from worker.mqtt import Publish
from worker.platform import Platform
from worker.platform.metrics import PlatformMetrics
from worker.platform.tls import dev_server_context

ALL_EVENTS = "iot-2/type/+/id/+/evt/+/fmt/+"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    return dev_server_context(tmp_path_factory.mktemp("tls"))


async def test_w1_w32_w33_tls_and_websocket_listeners(
    tls_files: tuple[ssl.SSLContext, Path],
) -> None:
    server_context, ca = tls_files
    cfg = platform_config(tls_port=0, ws_port=0, wss_port=0, ssl_context=server_context)
    client_context = ssl.create_default_context(cafile=str(ca))
    async with Platform(cfg) as p, AsyncExitStack() as stack:
        watch = await stack.enter_async_context(app_client(p.port, f"a:{ORG}:watch"))
        await watch.subscribe("iot-2/type/+/id/+/mon")
        ways: list[tuple[int | None, dict[str, Any], bool, str]] = [
            (p.tls_port, {"tls_context": client_context}, True, "mqtt4"),
            (p.ws_port, {"transport": "websockets", "websocket_path": "/mqtt"}, False, "mqtt4-ws"),
            (
                p.wss_port,
                {"transport": "websockets", "tls_context": client_context},
                True,
                "mqtt4-ws",
            ),
        ]
        for port, options, secure, protocol in ways:
            assert port is not None
            async with device_client(port, **options) as device:
                await device.publish("iot-2/evt/e/fmt/json", b"{}", qos=1)
            _, body = await status_where(watch, Action="Disconnect")
            assert (body["Port"], body["Secure"], body["Protocol"]) == (port, secure, protocol)
            assert body["ReadMsg"] == 1


async def test_metrics_hooks_count_connections_messages_and_groups() -> None:
    registry = CollectorRegistry()
    async with (
        Platform(platform_config(metrics=PlatformMetrics(registry))) as p,
        AsyncExitStack() as s,
    ):
        app = await s.enter_async_context(app_client(p.port, f"A:{ORG}:metered"))
        await app.subscribe(ALL_EVENTS)
        device = await s.enter_async_context(device_client(p.port))
        for _ in range(5):
            await device.publish("iot-2/evt/e/fmt/json", b"{}", qos=1)
        for _ in range(5):
            await anext(aiter(app.messages))

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(f"worker_platform_{name}", labels)

        assert value("connections", client_class="d") == 1
        assert value("connections", client_class="A") == 1
        assert value("messages_received_total", client_class="d") == 5
        assert value("shared_dispatched_total", org=ORG, app="metered") == 5
        assert value("shared_members", org=ORG, app="metered") == 1
        with pytest.raises(aiomqtt.MqttCodeError):
            async with app_client(p.port, f"a:{ORG}:bad", password="wrong"):
                pass
        assert value("connects_refused_total", reason="not_authorized") == 1
        big = await raw(p.port, s)
        await big.connect(GATEWAY, "use-token-auth", GATEWAY_TOKEN)
        big.send(Publish("iot-2/type/gw/id/g1/evt/e/fmt/bin", b"x" * 131073))
        assert await big.until_closed() == []  # W17: closed, and the message counted
        assert value("messages_dropped_total", reason="too_large") == 1


def test_bad_configuration_is_one_clear_error_naming_each_value() -> None:
    with pytest.raises(ConfigError) as info:
        Platform(platform_config(strategy="fastest", max_qos=3, port=70000, tls_port=0))
    problems = info.value.problems
    assert len(problems) == 4
    assert any("strategy 'fastest'" in p and "round-robin" in p for p in problems)
    assert any("ssl_context" in p for p in problems)


async def test_a_port_in_use_is_a_config_error_and_nothing_stays_open() -> None:
    async with Platform(platform_config()) as first:
        second = Platform(platform_config(port=first.port))
        with pytest.raises(ConfigError, match="cannot listen"):
            await second.start()
        assert not second.ready.is_set()
