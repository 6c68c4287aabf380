"""The interface between the connection supervisor and an MQTT client implementation.

A transport owns one MQTT connection. It hands received PUBLISH packets up in batches (all
that one socket read produced, so the pipeline can work per read rather than per message)
and sends the QoS 1 acknowledgements the pipeline releases, in the order it releases them.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from worker.errors import ConnectError, NotAuthorized
from worker.messages import MessageProperties
from worker.mqtt import MQTT_3_1_1, MQTT_5, ConnackReturnCode, ReasonCode, connack_meaning

#: CONNACK refusals that retrying cannot fix: the credentials or the client ID are wrong
PERMANENT_REFUSALS: Final = frozenset(
    {
        ConnackReturnCode.IDENTIFIER_REJECTED,
        ConnackReturnCode.BAD_USERNAME_OR_PASSWORD,
        ConnackReturnCode.NOT_AUTHORIZED,
    }
)


@dataclass(slots=True)
class Inbound:
    """One received PUBLISH, as the transport saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    #: what ``Transport.ack`` needs to acknowledge it (the MQTT packet ID); 0 for QoS 0
    packet_id: int = 0
    #: its MQTT 5 properties; None when it has none (always on MQTT 3.1.1)
    properties: MessageProperties | None = None
    #: ``time.monotonic()`` after which it is stale (MQTT 5 message expiry); 0.0: never
    expires_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """Everything needed to open one connection, resolved from Settings by the supervisor."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    clean_session: bool = True
    #: MQTT 5: seconds the server keeps the session after a disconnect (0: it ends with it);
    #: with ``clean_session`` false on 3.1.1 the server's own limit applies
    session_expiry: int = 0
    tls: bool = False
    cafile: str | None = None
    websockets: bool = False
    #: how long to wait for the TCP/TLS handshake and the CONNACK
    connect_timeout: float = 10.0
    #: the protocol level: 4 (MQTT 3.1.1) or 5 (MQTT 5.0)
    protocol_level: int = MQTT_3_1_1
    #: MQTT 5: the QoS 1 messages the server may have in flight to us
    receive_maximum: int = 65535
    #: the largest packet we read (and, on MQTT 5, announce), in bytes
    max_packet_size: int = 268_435_455

    @property
    def v5(self) -> bool:
        """Whether this connection speaks MQTT 5."""
        return self.protocol_level == MQTT_5


class Transport(Protocol):
    """One MQTT connection, connected once. Errors are ConnectError (NotAuthorized on refusal).

    The supervisor makes a new transport for every connection attempt, so nothing (acks,
    packet IDs, queues) leaks from a lost connection into the next.
    """

    @property
    def received(self) -> int:
        """PUBLISH packets read from this connection so far; ``batches`` hands out each one.

        With a round trip (UNSUBSCRIBE, UNSUBACK) this tells when everything the server sent
        before it has reached the consumer: the shutdown's "nothing more is on its way".
        """

    async def connect(self, options: ConnectOptions) -> None:
        """Connect and wait for CONNACK; NotAuthorized when the server refuses."""

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe to (filter, qos) pairs in one SUBSCRIBE; per filter the QoS granted or
        ``SubackReturnCode.FAILURE``."""

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe and wait for UNSUBACK."""

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish; for QoS 1 wait for the PUBACK (ServerRefused for an MQTT 5 failure code).

        ``properties`` go out on MQTT 5 and are left out on 3.1.1, which cannot carry them.
        """

    def ack(self, packet_ids: Sequence[int]) -> None:
        """Send PUBACKs for these QoS 1 packet IDs, in this order (MQTT-4.6.0-2).

        Never blocks and never raises: once the connection is gone the acks are dropped,
        because packet IDs belong to that connection's session.
        """

    def batches(self) -> AsyncIterator[list[Inbound]]:
        """Received PUBLISH packets, batch by batch (all that is there, waiting only for one).

        Ends after ``disconnect()``; raises ConnectError when the connection is lost (after
        yielding what had already arrived), so the supervisor knows why.
        """

    async def disconnect(self) -> None:
        """Send DISCONNECT and close; safe to call more than once."""


class ProtocolViolation(ConnectError):
    """The server broke the protocol (or sent what we refuse to read) and was disconnected.

    ``reason`` labels ``worker_protocol_errors_total``: malformed, packet_too_large,
    topic_alias_invalid, unexpected_packet or server_disconnect.
    """

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class ServerRefused(ConnectError):
    """An MQTT 5 server answered a request (SUBSCRIBE, UNSUBSCRIBE, PUBLISH) with a failure."""

    def __init__(self, message: str, packet: str, reason_code: int) -> None:
        self.packet = packet
        self.reason_code = reason_code
        super().__init__(message)


def reason_name(code: int) -> str:
    """``0x87 not authorized``: an MQTT 5 reason code as the logs say it."""
    try:
        name = ReasonCode(code).name.lower().replace("_", " ")
    except ValueError:
        name = "unknown reason"
    return f"{code:#04x} {name}"


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """A client context verifying the server by ``cafile`` or the system store; TLS 1.2+.

    Shared by every transport, so that none of them can end up checking less than another.
    """
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def not_authorized(code: ConnackReturnCode, options: ConnectOptions, where: str) -> NotAuthorized:
    """The error of a permanent CONNACK refusal: who was refused, as whom, and why."""
    user = f" as user {options.username!r}" if options.username else " without credentials"
    return NotAuthorized(
        f"{where} refused client ID {options.client_id!r}{user}: {connack_meaning(code)} "
        f"(CONNACK return code {code:d})",
        int(code),
    )
