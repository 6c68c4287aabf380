"""The /metrics, /livez and /readyz server over a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.support.fetch import fetch
from worker.errors import ConfigError
from worker.http import HttpServer

Served = tuple[HttpServer, dict[str, str | None]]


@pytest.fixture
async def server() -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    Counter("worker_test_total", "a test counter", registry=registry).inc(3)
    state: dict[str, str | None] = {"reason": "not connected"}
    http = HttpServer("127.0.0.1", 0, registry=registry, readiness=lambda: state["reason"])
    await http.start()
    yield http, state
    await http.close()


async def test_port_zero_binds_a_free_port(server: Served) -> None:
    http, _ = server
    assert http.port > 0
    assert http.url == f"http://127.0.0.1:{http.port}"


async def test_metrics_serves_the_injected_registry(
    server: Served,
) -> None:
    http, _ = server
    status, headers, body = await fetch(http.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert b"worker_test_total 3.0" in body


async def test_livez_reports_loop_lag(server: Served) -> None:
    http, _ = server
    status, _, body = await fetch(http.port, "/livez")
    answer = json.loads(body)
    assert status == 200
    assert answer["status"] == "ok"
    assert 0 <= answer["loop_lag_seconds"] < 1


async def test_readyz_follows_the_callback(
    server: Served,
) -> None:
    http, state = server
    status, _, body = await fetch(http.port, "/readyz")
    assert (status, json.loads(body)["reason"]) == (503, "not connected")
    state["reason"] = None
    status, _, body = await fetch(http.port, "/readyz?verbose")
    assert (status, json.loads(body)) == (200, {"status": "ready"})


async def test_unknown_path_method_and_garbage(server: Served) -> None:
    http, _ = server
    assert (await fetch(http.port, "/nope"))[0] == 404
    assert (await fetch(http.port, "/metrics", method="POST"))[0] == 405
    status, headers, body = await fetch(http.port, "/livez", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    writer.write(b"hello\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 400")
    writer.close()


async def test_busy_port_is_a_config_error(server: Served) -> None:
    http, _ = server
    other = HttpServer("127.0.0.1", http.port, registry=CollectorRegistry(), readiness=lambda: None)
    with pytest.raises(ConfigError, match="cannot listen"):
        await other.start()
