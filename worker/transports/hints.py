"""What a failed connection attempt means, in one line: the reason, never empty, and a hint
when the failure looks like TLS spoken to a plain port or plain MQTT spoken to a TLS port.

A refused or unresolvable address is what it says. But a TCP connection that was accepted and
then closed, reset or left silent before CONNACK is, in practice, a TLS/plain mismatch: a TLS
client's ClientHello is not an MQTT packet (the broker closes), and a TLS server waits for a
ClientHello that a plain client never sends.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final

from worker.transports.base import ConnectOptions

#: failures that say nothing about TLS: nobody listens there, or the name does not resolve
_NOT_A_MISMATCH: Final = (ConnectionRefusedError, socket.gaierror)


def explain(exc: BaseException, options: ConnectOptions) -> str:
    """The failure's text, its cause's name when the text is empty, and a mismatch hint."""
    text = str(exc).strip()
    chain = _chain(exc)
    if text.endswith(":") or not text:
        root = chain[-1]
        text = f"{text} {str(root) or type(root).__name__}".strip()
    if any(isinstance(e, _NOT_A_MISMATCH) for e in chain) or "refused" in text:
        return text
    return text + mismatch_hint(options, chain)


def mismatch_hint(options: ConnectOptions, chain: list[BaseException]) -> str:
    """The hint for a connection that was accepted and then failed before CONNACK."""
    port = options.port
    if options.tls:
        tls_failed = any(isinstance(e, ssl.SSLError | ConnectionResetError) for e in chain)
        lead = "the TLS handshake failed" if tls_failed else "no MQTT answer over TLS"
        return (
            f" ({lead}: is {port} a plain MQTT port? Use --no-tls, or the server's TLS port, "
            "8883 by default)"
        )
    return (
        f" (no MQTT answer: is {port} a TLS port? Use --tls, with --cafile for a private CA, "
        "or the server's plain port, 1883 by default)"
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first (a cycle-safe walk)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
