"""The local platform's configuration for tests: one builder, overridden per test module."""

from __future__ import annotations

from typing import Any

from tests.support.credentials import (
    API_KEY,
    DEVICE,
    DEVICE_TOKEN,
    GATEWAY,
    GATEWAY_TOKEN,
    OTHER_ORG_KEY,
    OTHER_ORG_TOKEN,
    TOKEN,
)
from worker.platform import PlatformConfig


def platform_config(**overrides: Any) -> PlatformConfig:
    """Loopback, port 0, the test org's app key, device and gateway, and a second org's key.

    ``overrides`` replace whole fields (``api_keys={...}`` is the full table, not an addition).
    """
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "api_keys": {API_KEY: TOKEN, OTHER_ORG_KEY: OTHER_ORG_TOKEN},
        "device_tokens": {DEVICE: DEVICE_TOKEN, GATEWAY: GATEWAY_TOKEN},
    }
    values.update(overrides)
    return PlatformConfig(**values)
