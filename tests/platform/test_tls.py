"""The TLS listener's context: TLS 1.2 only, IBM's four suites, dev certificates (W1)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.waiting import NETWORK
from worker.errors import ConfigError
from worker.platform import tls


@pytest.fixture(scope="module")
def dev_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dev-tls")
    tls.ensure_dev_certificates(directory)
    return directory


@pytest.fixture
async def server(dev_dir: Path) -> AsyncIterator[int]:
    """A TLS echo-once server on a free port; yields the port."""
    context, _ = tls.dev_server_context(dev_dir)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    listener = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=context)
    yield listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()


def client_context(
    ca: Path, *, version: ssl.TLSVersion, ciphers: str | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = version
    context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


async def handshake(port: int, context: ssl.SSLContext, host: str = "localhost") -> tuple[str, str]:
    """Connect, read the greeting, and return (TLS version, cipher name)."""
    async with asyncio.timeout(NETWORK):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=host
        )
        try:
            assert await reader.read() == b"ok"
            ssl_object = writer.get_extra_info("ssl_object")
            version, cipher = ssl_object.version(), ssl_object.cipher()[0]
        finally:
            writer.close()
            await writer.wait_closed()
    return version, cipher


async def test_w1_tls12_handshake_verifies_with_the_dev_ca(server: int, dev_dir: Path) -> None:
    context = client_context(dev_dir / tls.CA_FILE, version=ssl.TLSVersion.TLSv1_2)
    version, cipher = await handshake(server, context)
    assert version == "TLSv1.2"
    # The server's preference is IBM's order, so the first suite wins.
    assert cipher == tls.CIPHERS[0]


async def test_the_certificate_names_the_loopback_addresses(server: int, dev_dir: Path) -> None:
    context = client_context(dev_dir / tls.CA_FILE, version=ssl.TLSVersion.TLSv1_2)
    assert (await handshake(server, context, host="127.0.0.1"))[0] == "TLSv1.2"
    names = x509.load_pem_x509_certificate((dev_dir / tls.CERT_FILE).read_bytes()).extensions
    alt = names.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


@pytest.mark.parametrize("cipher", tls.CIPHERS)
async def test_w1_each_ibm_suite_is_accepted(server: int, dev_dir: Path, cipher: str) -> None:
    context = client_context(dev_dir / tls.CA_FILE, version=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
    assert await handshake(server, context) == ("TLSv1.2", cipher)


def refusal_in_memory(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """Run a handshake over memory buffers; return the server's reason for refusing it.

    asyncio's server drops the connection without flushing the TLS alert, so a client over a
    socket only sees a reset; in memory both sides' exact errors are visible.
    """
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname="localhost")
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        client_side.do_handshake()
    with pytest.raises(ssl.SSLError) as refused:
        server_side.do_handshake()
    with pytest.raises(ssl.SSLError, match="ALERT"):
        client_side.do_handshake()
    return str(refused.value.reason)


async def assert_refused(port: int, dev_dir: Path, client: ssl.SSLContext, reason: str) -> None:
    # The alert does not make it through asyncio's server (see refusal_in_memory).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await handshake(port, client)
    assert refusal_in_memory(tls.dev_server_context(dev_dir)[0], client) == reason


@pytest.mark.parametrize(
    "cipher", ["ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-SHA256", "AES128-SHA"]
)
async def test_w1_a_suite_outside_the_list_is_refused(
    server: int, dev_dir: Path, cipher: str
) -> None:
    context = client_context(dev_dir / tls.CA_FILE, version=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
    await assert_refused(server, dev_dir, context, "NO_SHARED_CIPHER")


async def test_w1_a_tls13_only_client_is_refused(server: int, dev_dir: Path) -> None:
    context = client_context(dev_dir / tls.CA_FILE, version=ssl.TLSVersion.TLSv1_3)
    await assert_refused(server, dev_dir, context, "UNSUPPORTED_PROTOCOL")


async def test_w1_a_tls11_only_client_is_refused(server: int, dev_dir: Path) -> None:
    with warnings.catch_warnings():
        # Python deprecates asking for TLS 1.1, which is exactly what this client must do.
        warnings.simplefilter("ignore", DeprecationWarning)
        context = client_context(
            dev_dir / tls.CA_FILE, version=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0"
        )
    await assert_refused(server, dev_dir, context, "UNSUPPORTED_PROTOCOL")


async def test_a_client_trusting_another_ca_refuses_the_server(server: int, tmp_path: Path) -> None:
    other = tls.ensure_dev_certificates(tmp_path / "other")
    context = client_context(other.ca, version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(server, context)


# --- development certificates ------------------------------------------------------------


def contents(files: tls.DevCertificates) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (files.ca, files.ca_key, files.cert, files.key)}


def test_dev_certificates_are_reused_while_valid(tmp_path: Path) -> None:
    first = tls.ensure_dev_certificates(tmp_path)
    before = contents(first)
    assert contents(tls.ensure_dev_certificates(tmp_path)) == before
    assert first.key.stat().st_mode & 0o077 == 0
    assert first.ca_key.stat().st_mode & 0o077 == 0


def test_an_ending_server_certificate_is_renewed_under_the_same_ca(tmp_path: Path) -> None:
    before = contents(tls.ensure_dev_certificates(tmp_path))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    after = contents(tls.ensure_dev_certificates(tmp_path, now=later))
    assert after[tls.CA_FILE] == before[tls.CA_FILE]
    assert after[tls.CERT_FILE] != before[tls.CERT_FILE]


def test_a_missing_host_renews_the_server_certificate(tmp_path: Path) -> None:
    before = contents(tls.ensure_dev_certificates(tmp_path))
    files = tls.ensure_dev_certificates(tmp_path, (*tls.DEV_HOSTS, "devbox.local"))
    assert contents(files)[tls.CERT_FILE] != before[tls.CERT_FILE]
    assert contents(files)[tls.CA_FILE] == before[tls.CA_FILE]


def test_a_damaged_ca_replaces_everything(tmp_path: Path) -> None:
    before = contents(tls.ensure_dev_certificates(tmp_path))
    (tmp_path / tls.CA_KEY_FILE).write_bytes(b"not a key")
    after = contents(tls.ensure_dev_certificates(tmp_path))
    assert after[tls.CA_FILE] != before[tls.CA_FILE]
    assert after[tls.CERT_FILE] != before[tls.CERT_FILE]


def test_a_server_certificate_from_another_ca_is_replaced(tmp_path: Path) -> None:
    mine = tls.ensure_dev_certificates(tmp_path / "mine")
    other = tls.ensure_dev_certificates(tmp_path / "other")
    mine.cert.write_bytes(other.cert.read_bytes())
    mine.key.write_bytes(other.key.read_bytes())
    tls.ensure_dev_certificates(tmp_path / "mine")
    ca = x509.load_pem_x509_certificate(mine.ca.read_bytes())
    x509.load_pem_x509_certificate(mine.cert.read_bytes()).verify_directly_issued_by(ca)


# --- errors ------------------------------------------------------------------------------


def test_a_missing_certificate_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--cert/--key: no such file: .*nope\.pem"):
        tls.server_context(tmp_path / "nope.pem", tmp_path / "nope-key.pem")


def test_a_key_of_another_certificate_is_a_config_error(tmp_path: Path) -> None:
    mine = tls.ensure_dev_certificates(tmp_path / "mine")
    other = tls.ensure_dev_certificates(tmp_path / "other")
    with pytest.raises(ConfigError, match="--cert/--key: cannot load certificate"):
        tls.server_context(mine.cert, other.key)


def test_an_unwritable_dev_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--dev-tls"):
        tls.ensure_dev_certificates(blocker / "sub")
