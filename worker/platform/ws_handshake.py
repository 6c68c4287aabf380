"""MQTT over WebSockets (RFC 6455), server side, sans-IO: the handshake and the connection.

:class:`ServerConnection` takes the bytes read from a client and returns the MQTT bytes they
carried plus whatever must be written back (the handshake response, pongs, close frames, an
HTTP 400 naming what was wrong). It never touches a socket, so it is tested with plain bytes;
:mod:`worker.platform.websocket` runs it on asyncio.

MQTT rides in binary frames and is a byte stream: frame and message boundaries mean nothing
to it (MQTT 3.1.1 section 6), so data is passed up frame by frame, fragments included,
without reassembling messages. The handshake must offer the ``mqtt`` subprotocol
(``mqttv3.1`` from 3.1 clients is accepted too) and the server echoes the client's choice
(MQTT-6.0.0-3, -4). A text frame closes the connection (MQTT-6.0.0-1). Any request path is
accepted, as the emulator accepts any host name (W1); IBM's clients use ``/mqtt``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Final

from worker.errors import ProtocolError
from worker.platform.wsframes import (
    Frame,
    FrameError,
    FrameParser,
    Opcode,
    encode_close,
    encode_frame,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "SUBPROTOCOLS",
    "HandshakeError",
    "Received",
    "Request",
    "ServerConnection",
    "accept_response",
    "parse_request",
    "reject_response",
]

SUBPROTOCOLS: Final = ("mqtt", "mqttv3.1")
#: Big enough for the platform's largest message (131072 bytes of payload plus topic), so an
#: oversized MQTT message is refused by the MQTT layer with its own close code (W17).
DEFAULT_MAX_FRAME: Final = 1 << 20
MAX_REQUEST_HEAD: Final = 8192
PLAIN_MQTT: Final = "this port speaks MQTT over WebSocket; plain MQTT clients use the TCP port"
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(ProtocolError):
    """A request that is not an acceptable WebSocket upgrade; answered with HTTP 400."""

    def __init__(self, reason: str, *, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.reason = reason
        self.headers = headers
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Request:
    """An accepted upgrade request."""

    path: str
    key: str
    subprotocol: str
    headers: dict[str, str]


def parse_request(head: bytes) -> Request:
    """Check an HTTP upgrade request head (up to and including the blank line); RFC 6455 4.2.1."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HandshakeError("the request head is not ASCII") from None
    request_line, *lines = text.split("\r\n")
    method, _, rest = request_line.partition(" ")
    path, _, version = rest.partition(" ")
    if method != "GET" or not path or not version.startswith("HTTP/1.1"):
        raise HandshakeError("expected a 'GET {path} HTTP/1.1' WebSocket upgrade request")
    headers = _headers(lines)
    if "host" not in headers:
        raise HandshakeError("the Host header is missing")
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HandshakeError("expected 'Upgrade: websocket' (this port speaks MQTT over WebSocket)")
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HandshakeError("expected 'Connection: Upgrade'")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(
            "unsupported Sec-WebSocket-Version; accepted is 13",
            headers=(("Sec-WebSocket-Version", "13"),),
        )
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        raise HandshakeError("Sec-WebSocket-Key must be 16 bytes in base64")
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
    chosen = next((p for p in offered if p in SUBPROTOCOLS), None)
    if chosen is None:
        raise HandshakeError(
            "Sec-WebSocket-Protocol must offer 'mqtt' (or 'mqttv3.1'), as MQTT over WebSocket "
            "requires"
        )
    return Request(path, key, chosen, headers)


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(f"malformed header line {line[:40]!r}")
        name = name.lower()
        # Repeated headers are one comma-separated list (RFC 9110 5.3).
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def accept_response(request: Request) -> bytes:
    """The ``101 Switching Protocols`` answer to an accepted request."""
    digest = hashlib.sha1(request.key.encode("ascii") + _GUID).digest()  # RFC 6455 says SHA-1
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {base64.b64encode(digest).decode('ascii')}\r\n"
        f"Sec-WebSocket-Protocol: {request.subprotocol}\r\n"
        "\r\n"
    ).encode("ascii")


def reject_response(error: HandshakeError, status: str = "400 Bad Request") -> bytes:
    """An HTTP error whose body says what was wrong; the connection closes after it."""
    body = f"{error.reason}\n".encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in error.headers)
    return (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii") + body


# --- the connection state machine ------------------------------------------------------------


@dataclass(slots=True)
class Received:
    """What one chunk of client bytes produced."""

    #: MQTT bytes carried by binary frames, in order
    data: bytes = b""
    #: bytes to write back, before anything else is written
    reply: bytes = b""
    #: the handshake completed in this chunk (``subprotocol`` is now known)
    opened: bool = False
    #: the connection is over: write ``reply``, then close the socket
    closed: bool = False
    #: why it closed: the WebSocket close code (1000 normal), or None before the handshake
    close_code: int | None = None
    #: a readable reason for logs when the close was not normal
    error: str | None = None
    _data: list[bytes] = field(default_factory=list, repr=False)


class ServerConnection:
    """The server side of one WebSocket connection, sans-IO.

    Call :meth:`receive` with every chunk read from the socket and act on the
    :class:`Received` it returns; wrap outgoing MQTT bytes with :meth:`send`; end with
    :meth:`close`.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._head = bytearray()
        self._parser = FrameParser(max_frame)
        self.request: Request | None = None
        #: "open" after the handshake, "closing" after our close frame, then "closed"
        self.state = "handshake"

    @property
    def subprotocol(self) -> str | None:
        """The agreed subprotocol once the handshake is done."""
        return None if self.request is None else self.request.subprotocol

    def receive(self, data: bytes) -> Received:
        """Feed bytes read from the client."""
        result = Received()
        if self.state == "handshake":
            data = self._handshake(data, result)
        if self.state in ("open", "closing") and data:
            self._frames(data, result)
        result.data = b"".join(result._data)
        result._data.clear()
        return result

    def send(self, data: bytes) -> bytes:
        """MQTT bytes as one binary frame (empty when the connection is closing)."""
        if self.state != "open" or not data:
            return b""
        return encode_frame(Opcode.BINARY, data)

    def close(self, code: int = 1000, reason: str = "") -> bytes:
        """Start the closing handshake; returns the close frame to write (once)."""
        if self.state != "open":
            return b""
        self.state = "closing"
        return encode_close(code, reason)

    def _handshake(self, data: bytes, result: Received) -> bytes:
        self._head += data
        if self._head[:1] == b"\x10":
            # An MQTT CONNECT: a plain MQTT client pointed at the WebSocket port. Say so at
            # once instead of waiting for a request head that will never come.
            self._reject(result, HandshakeError(PLAIN_MQTT))
            return b""
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_REQUEST_HEAD:
                self._reject(result, HandshakeError("the request head is too large"))
            return b""
        head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
        self._head.clear()
        try:
            self.request = parse_request(head)
        except HandshakeError as exc:
            self._reject(result, exc)
            return b""
        result.reply += accept_response(self.request)
        result.opened = True
        self.state = "open"
        return rest

    def _reject(self, result: Received, error: HandshakeError) -> None:
        result.reply += reject_response(error)
        result.closed = True
        result.error = f"WebSocket handshake refused: {error.reason}"
        self.state = "closed"

    def _frames(self, data: bytes, result: Received) -> None:
        self._parser.feed(data)
        try:
            while (frame := self._parser.next_frame()) is not None:
                if self._frame(frame, result):
                    return
        except FrameError as exc:
            if self.state == "open":
                result.reply += encode_close(exc.code, exc.reason)
            result.closed, result.close_code, result.error = True, exc.code, exc.reason
            self.state = "closed"

    def _frame(self, frame: Frame, result: Received) -> bool:
        """Act on one frame; True when the connection is over."""
        if frame.opcode is Opcode.CLOSE:
            if self.state == "open":
                # Echo the peer's code (RFC 6455 5.5.1); an empty close gets an empty one.
                result.reply += encode_frame(Opcode.CLOSE, frame.payload[:2])
            result.closed, result.close_code, self.state = True, frame.close_code, "closed"
            return True
        if self.state != "open":
            return False  # after our close frame, only the peer's close matters
        if frame.opcode is Opcode.PING:
            result.reply += encode_frame(Opcode.PONG, frame.payload)
        elif frame.payload and frame.opcode is not Opcode.PONG:
            result._data.append(frame.payload)
        return False
