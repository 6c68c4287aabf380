"""TLS for the platform's encrypted listeners: TLS 1.2 only, with the platform's four suites.

Watson IoT Platform "requires Transport Layer Security (TLS) V1.2 and the following cipher
suites" (IBM's documentation; see docs/platform/rules.md, W1), so the context pins both the
minimum and the maximum version to 1.2 and offers exactly :data:`CIPHERS`. A client that only
speaks 1.1 or 1.3, or offers none of those suites, fails the handshake here as it would there.

For development, :func:`ensure_dev_certificates` makes a private CA and a server certificate
for ``localhost``, ``127.0.0.1`` and ``::1``, and reuses them on later starts while they are
valid, so the CA file a user handed to their clients keeps working. The keys are RSA because
every one of the four suites authenticates with RSA.

Certificates are made with the ``cryptography`` package rather than by running the
``openssl`` command: it needs no program on the PATH (slim container images and Windows lack
one), it reads existing files back for the validity checks without parsing command output,
and its errors are exceptions rather than exit codes and stderr text.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from worker.errors import ConfigError

#: IBM's list, in its order of preference (OpenSSL names).
CIPHERS: Final = (
    "ECDHE-RSA-AES256-GCM-SHA384",
    "AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES128-GCM-SHA256",
)
DEV_HOSTS: Final = ("localhost", "127.0.0.1", "::1")

CA_FILE: Final = "ca.pem"
CA_KEY_FILE: Final = "ca-key.pem"
CERT_FILE: Final = "server.pem"
KEY_FILE: Final = "server-key.pem"

_KEY_BITS: Final = 2048
_CA_DAYS: Final = 3650
# Short-lived on purpose: the server certificate is renewed on any start within _RENEW_DAYS of
# its end, and the CA (which users copy around) outlives many renewals.
_CERT_DAYS: Final = 365
_RENEW_DAYS: Final = 30


@dataclass(frozen=True, slots=True)
class DevCertificates:
    """The files of a development CA and the server certificate it signed."""

    ca: Path
    ca_key: Path
    cert: Path
    key: Path


def server_context(
    certfile: str | os.PathLike[str],
    keyfile: str | os.PathLike[str],
    *,
    source: str = "--cert/--key",
) -> ssl.SSLContext:
    """A server context: TLS 1.2 only, exactly :data:`CIPHERS`, with this certificate and key.

    ``source`` names where the paths came from, for the ConfigError raised when a file is
    missing or unreadable or the key does not belong to the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(":".join(CIPHERS))
    # The server picks from the client's offer in IBM's order; compression is CRIME.
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    # TLS 1.3 suites stay listed whatever set_ciphers says, but the maximum version rules
    # them out; only the 1.2 suites are what a client can get.
    offered = {c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"}
    if offered != set(CIPHERS):
        # An OpenSSL build (FIPS, LibreSSL) may lack some; serving a different list would
        # silently test against the wrong platform.
        missing = ", ".join(sorted(set(CIPHERS) - offered)) or "none"
        extra = ", ".join(sorted(offered - set(CIPHERS))) or "none"
        raise ConfigError(
            f"TLS: this Python's OpenSSL ({ssl.OPENSSL_VERSION}) does not offer exactly the "
            f"platform's cipher suites; missing: {missing}; extra: {extra}"
        )
    for path in (certfile, keyfile):
        # load_cert_chain's FileNotFoundError does not say which of the two is missing.
        if not os.path.isfile(path):
            raise ConfigError(f"{source}: no such file: {os.fspath(path)!r}")
    try:
        context.load_cert_chain(os.fspath(certfile), os.fspath(keyfile))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{source}: cannot load certificate {os.fspath(certfile)!r} with key "
            f"{os.fspath(keyfile)!r} (PEM files, the key matching the certificate): {exc}"
        ) from exc
    problem = _cannot_serve(Path(certfile))
    if problem is not None:
        raise ConfigError(f"{source}: certificate {os.fspath(certfile)!r} {problem}")
    return context


def _cannot_serve(certfile: Path) -> str | None:
    """Why no client could complete a handshake with this certificate, or None.

    OpenSSL accepts any certificate here and then fails every handshake when none of the
    configured suites can use it (each of the four authenticates with RSA), so a listener with
    an ECDSA certificate would accept connections and drop them all without a word.
    """
    try:
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    except (OSError, ValueError) as exc:
        return f"cannot be read as a PEM certificate: {exc}"
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        kind = "ECDSA" if isinstance(key, ec.EllipticCurvePublicKey) else "non-RSA"
        return (
            f"has a {kind} key, but every one of the platform's TLS 1.2 cipher suites "
            f"({', '.join(CIPHERS)}) authenticates with RSA, so no handshake could succeed; "
            "use an RSA certificate (--dev-tls DIR makes one for development)"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not (usage.digital_signature or usage.key_encipherment):
        return (
            "allows neither digitalSignature (ECDHE-RSA suites) nor keyEncipherment (RSA key "
            "exchange suites) in its key usage, so no handshake could succeed"
        )
    return None


def dev_server_context(directory: str | os.PathLike[str]) -> tuple[ssl.SSLContext, Path]:
    """``--dev-tls DIR``: a server context from development certificates, and the CA file."""
    files = ensure_dev_certificates(directory)
    return server_context(files.cert, files.key, source=f"--dev-tls {files.cert.parent}"), files.ca


def ensure_dev_certificates(
    directory: str | os.PathLike[str],
    hosts: Sequence[str] = DEV_HOSTS,
    *,
    now: dt.datetime | None = None,
) -> DevCertificates:
    """Make (or keep) a development CA and a server certificate for ``hosts`` in ``directory``.

    Existing files are kept while they are valid: a CA that is still a CA, with its key; a
    server certificate that this CA signed, naming every host, with its key, and not within
    30 days of its end. A bad server certificate is replaced under the same CA, so clients
    that trust the CA keep working; a bad CA replaces everything.
    """
    now = now or dt.datetime.now(dt.UTC)
    root = Path(directory)
    files = DevCertificates(root / CA_FILE, root / CA_KEY_FILE, root / CERT_FILE, root / KEY_FILE)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--dev-tls {root}: cannot create the directory: {exc}") from exc
    ca = _load_ca(files, now)
    if ca is None:
        ca = _new_ca(files, now)
    elif _server_is_valid(files, ca[0], hosts, now):
        return files
    _new_server_cert(files, ca, hosts, now)
    return files


# --- loading and checking --------------------------------------------------------------


_CA = tuple[x509.Certificate, rsa.RSAPrivateKey]


def _load_ca(files: DevCertificates, now: dt.datetime) -> _CA | None:
    """The CA and its key when both are there, match, and stay valid a while; else None."""
    loaded = _load_pair(files.ca, files.ca_key)
    if loaded is None:
        return None
    cert, key = loaded
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    if not constraints.ca or not _lasts(cert, now):
        return None
    return cert, key


def _server_is_valid(
    files: DevCertificates, ca: x509.Certificate, hosts: Sequence[str], now: dt.datetime
) -> bool:
    loaded = _load_pair(files.cert, files.key)
    if loaded is None:
        return False
    cert = loaded[0]
    try:
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return _lasts(cert, now) and set(_alt_names(hosts)) <= set(names)


def _load_pair(cert_path: Path, key_path: Path) -> _CA | None:
    """A certificate with its RSA key, or None if either is missing, unreadable or unmatched."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, rsa.RSAPrivateKey) or key.public_key() != cert.public_key():
        return None
    return cert, key


def _lasts(cert: x509.Certificate, now: dt.datetime) -> bool:
    """Valid now, and for long enough that a client will not hit its end soon."""
    renew_at = cert.not_valid_after_utc - dt.timedelta(days=_RENEW_DAYS)
    return cert.not_valid_before_utc <= now < renew_at


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


# --- making ----------------------------------------------------------------------------


def _new_ca(files: DevCertificates, now: dt.datetime) -> _CA:
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "worker platform (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"worker development CA {now:%Y-%m-%d}"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(name, name, key, now, _CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write(files.ca_key, _key_pem(key), private=True)
    _write(files.ca, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key


def _new_server_cert(
    files: DevCertificates, ca: _CA, hosts: Sequence[str], now: dt.datetime
) -> None:
    ca_cert, ca_key = ca
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "")])
    # RSA key exchange (AES*-GCM-SHA*) encrypts with the key, ECDHE-RSA signs with it.
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=True,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        _builder(subject, ca_cert.subject, key, now, _CERT_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), private=True)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey, now: dt.datetime, days: int
) -> x509.CertificateBuilder:
    # Backdated a little so a client whose clock is slightly behind still accepts it.
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically (a reader never sees half a file); keys readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"--dev-tls {path.parent}: cannot write {path.name}: {exc}") from exc
