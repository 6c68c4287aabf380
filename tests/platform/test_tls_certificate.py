"""W1: a certificate that cannot serve the platform's cipher suites stops the start, saying why."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.errors import ConfigError
from worker.platform import tls
from worker.platform.launch import Launch, prepare


def ecdsa_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA (P-256) certificate for localhost and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "ec.pem", directory / "ec-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_an_ecdsa_certificate_is_refused_with_the_reason(tmp_path: Path) -> None:
    cert, key = ecdsa_certificate(tmp_path)
    with pytest.raises(ConfigError) as raised:
        tls.server_context(cert, key)
    message = str(raised.value)
    assert "ECDSA key" in message and "authenticates with RSA" in message
    assert "ECDHE-RSA-AES256-GCM-SHA384" in message and "--dev-tls" in message


def test_worker_platform_refuses_to_start_with_it(tmp_path: Path) -> None:
    cert, key = ecdsa_certificate(tmp_path)
    launch = Launch(port=0, tls_port=0, cert=str(cert), key=str(key))
    with pytest.raises(ConfigError) as raised:
        prepare(launch)
    assert any("--cert/--key" in p and "ECDSA key" in p for p in raised.value.problems)


def test_the_development_rsa_certificate_is_accepted(tmp_path: Path) -> None:
    context, ca = tls.dev_server_context(tmp_path)
    assert ca.is_file() and context.maximum_version == ssl.TLSVersion.TLSv1_2
