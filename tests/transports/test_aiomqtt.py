"""What only the aiomqtt transport needs checked; tests/test_transport_interop.py runs the
behaviour every transport shares (against Mosquitto and the platform)."""

from __future__ import annotations

from importlib.metadata import version


def test_verified_versions_are_installed() -> None:
    # The manual-ack reach into paho is verified for exactly these ranges (pyproject.toml).
    aiomqtt = tuple(int(p) for p in version("aiomqtt").split(".")[:2])
    paho = tuple(int(p) for p in version("paho-mqtt").split(".")[:2])
    assert (2, 3) <= aiomqtt < (2, 6)
    assert (2, 1) <= paho < (2, 3)
