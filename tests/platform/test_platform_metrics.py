"""The platform's own metrics and its /metrics HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.support.waiting import NETWORK
from worker.identity import ClientClass
from worker.platform import metrics as pm


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"{pm.PREFIX}_{name}", labels)


def test_connections_are_counted_by_client_class() -> None:
    registry = CollectorRegistry()
    metrics = pm.PlatformMetrics(registry)
    devices = metrics.client(ClientClass.DEVICE)
    assert metrics.client(ClientClass.DEVICE) is devices
    devices.connected()
    devices.connected()
    devices.disconnected()
    metrics.client(ClientClass.SCALABLE_APP).connected()
    assert value(registry, "connections", client_class="d") == 1
    assert value(registry, "connects_total", client_class="d") == 2
    assert value(registry, "connections", client_class="A") == 1
    # Every class is exported from the start, so dashboards see zeros rather than gaps.
    assert value(registry, "connections", client_class="g") == 0


def test_messages_and_bytes_are_counted_per_batch() -> None:
    registry = CollectorRegistry()
    apps = pm.PlatformMetrics(registry).client(ClientClass.APP)
    apps.received(messages=3, nbytes=120)
    apps.received(messages=0, nbytes=2)
    apps.sent(messages=5, nbytes=400)
    assert value(registry, "messages_received_total", client_class="a") == 3
    assert value(registry, "received_bytes_total", client_class="a") == 122
    assert value(registry, "messages_sent_total", client_class="a") == 5
    assert value(registry, "sent_bytes_total", client_class="a") == 400


def test_drops_and_refusals_have_a_closed_set_of_reasons() -> None:
    registry = CollectorRegistry()
    metrics = pm.PlatformMetrics(registry)
    metrics.dropped(pm.DropReason.QUEUE_FULL, 4)
    metrics.dropped(pm.DropReason.TOO_LARGE)
    metrics.refused(pm.RefusalReason.NOT_AUTHORIZED)
    assert value(registry, "messages_dropped_total", reason="queue_full") == 4
    assert value(registry, "messages_dropped_total", reason="too_large") == 1
    assert value(registry, "messages_dropped_total", reason="client_gone") == 0
    assert value(registry, "connects_refused_total", reason="not_authorized") == 1
    with pytest.raises(KeyError):
        metrics.dropped("a raw topic/that must not become a label")  # type: ignore[arg-type]


def test_shared_groups_are_labelled_by_org_and_app_only() -> None:
    registry = CollectorRegistry()
    metrics = pm.PlatformMetrics(registry)
    group = metrics.group("abc123", "myApplication")
    assert metrics.group("abc123", "myApplication") is group
    group.dispatched(10)
    group.members(3)
    assert value(registry, "shared_dispatched_total", org="abc123", app="myApplication") == 10
    assert value(registry, "shared_members", org="abc123", app="myApplication") == 3


def test_groups_past_the_cap_share_one_series() -> None:
    registry = CollectorRegistry()
    metrics = pm.PlatformMetrics(registry)
    for n in range(pm.MAX_GROUPS):
        metrics.group("abc123", f"app{n}")
    metrics.group("abc123", "one-too-many").dispatched(2)
    metrics.group("abc123", "and-another").dispatched(3)
    assert value(registry, "shared_dispatched_total", org="_other", app="_other") == 5
    assert value(registry, "shared_dispatched_total", org="abc123", app="one-too-many") is None


def test_two_platforms_on_separate_registries_do_not_collide() -> None:
    pm.PlatformMetrics(CollectorRegistry())
    pm.PlatformMetrics(CollectorRegistry())


# --- the HTTP server -----------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[tuple[pm.MetricsServer, pm.PlatformMetrics]]:
    registry = CollectorRegistry()
    metrics = pm.PlatformMetrics(registry)
    http = pm.MetricsServer(registry)
    await http.start("127.0.0.1", 0)
    yield http, metrics
    await http.close()


async def request(port: int, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    async with asyncio.timeout(NETWORK):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            response = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


async def test_metrics_are_served_over_http(
    server: tuple[pm.MetricsServer, pm.PlatformMetrics],
) -> None:
    http, metrics = server
    metrics.client(ClientClass.GATEWAY).connected()
    status, headers, body = await request(http.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert int(headers["Content-Length"]) == len(body)
    assert b'worker_platform_connections{client_class="g"} 1.0' in body
    # What a scraper parses: every family of the platform, in the text format.
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"worker_platform_connections", "worker_platform_messages_dropped"} <= names


async def test_head_has_the_length_but_no_body(
    server: tuple[pm.MetricsServer, pm.PlatformMetrics],
) -> None:
    status, headers, body = await request(server[0].port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert int(headers["Content-Length"]) > 0
    assert body == b""


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (b"GET /metricsX HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"x" * 9000 + b"\r\n\r\n", "HTTP/1.1 431 Request"),
    ],
)
async def test_other_requests_get_a_clear_status(
    server: tuple[pm.MetricsServer, pm.PlatformMetrics], raw: bytes, status: str
) -> None:
    got, _, _ = await request(server[0].port, raw)
    assert got.startswith(status)


async def test_a_client_that_leaves_early_gets_a_400_and_no_crash(
    server: tuple[pm.MetricsServer, pm.PlatformMetrics],
) -> None:
    async with asyncio.timeout(NETWORK):
        reader, writer = await asyncio.open_connection("127.0.0.1", server[0].port)
        writer.write(b"GET /metr")
        writer.write_eof()
        assert (await reader.read()).startswith(b"HTTP/1.1 400 Bad Request")
        writer.close()
        await writer.wait_closed()
    status, _, _ = await request(server[0].port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"


def test_the_port_is_unknown_before_start() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = pm.MetricsServer(CollectorRegistry()).port
