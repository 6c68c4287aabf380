"""A failed connection says why in one line: TLS against a plain port and plain against a TLS
port get a hint about the mismatch, on both transports; the reason is never empty."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.platform import platform_config
from tests.support.sockets import close_abandoned_tls_sockets
from worker.errors import ConnectError
from worker.platform import Platform, tls
from worker.transports import hints
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Transport
from worker.transports.native import NativeTransport

TRANSPORTS = [NativeTransport, AiomqttTransport]


@pytest.fixture(scope="module")
def dev_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dev-tls")
    tls.ensure_dev_certificates(directory)
    return directory


@pytest.fixture
async def platform(dev_dir: Path) -> AsyncIterator[Platform]:
    context, _ = tls.dev_server_context(dev_dir)
    async with Platform(platform_config(tls_port=0, ssl_context=context)) as running:
        yield running


async def failure(kind: type[Transport], options: ConnectOptions) -> str:
    """What the supervisor would log for this attempt."""
    transport = kind()
    with pytest.raises(ConnectError) as caught:
        await transport.connect(options)
    await transport.disconnect()
    close_abandoned_tls_sockets(options.port)
    return hints.explain(caught.value, options)


def options(port: int, *, use_tls: bool, cafile: Path) -> ConnectOptions:
    return ConnectOptions(
        host="127.0.0.1", port=port, client_id="a:abc123:hint", tls=use_tls,
        cafile=str(cafile), connect_timeout=3,
    )  # fmt: skip


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_tls_against_a_plain_port(
    kind: type[Transport], platform: Platform, dev_dir: Path
) -> None:
    text = await failure(kind, options(platform.port, use_tls=True, cafile=dev_dir / tls.CA_FILE))
    assert f"is {platform.port} a plain MQTT port? Use --no-tls" in text
    assert ": (" not in text and not text.rstrip().endswith(":"), text  # never an empty reason
    assert "\n" not in text


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_plain_against_a_tls_port(
    kind: type[Transport], platform: Platform, dev_dir: Path
) -> None:
    assert platform.tls_port is not None
    opts = options(platform.tls_port, use_tls=False, cafile=dev_dir / tls.CA_FILE)
    text = await failure(kind, opts)
    assert f"is {platform.tls_port} a TLS port? Use --tls" in text
    assert "\n" not in text


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_a_refused_port_gets_no_tls_hint(
    kind: type[Transport], platform: Platform, dev_dir: Path
) -> None:
    opts = options(_closed_port(), use_tls=True, cafile=dev_dir / tls.CA_FILE)
    text = await failure(kind, opts)
    assert "refused" in text.lower() or "failed" in text.lower(), text
    assert "TLS port" not in text and "plain MQTT port" not in text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_empty_reason_is_replaced_by_its_cause() -> None:
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError as inner:
            raise ConnectError("cannot connect to h:1: ") from inner
    except ConnectError as exc:
        text = hints.explain(exc, ConnectOptions(host="h", port=1, client_id="c", tls=True))
    assert text.startswith("cannot connect to h:1: ConnectionResetError (the TLS handshake failed")
