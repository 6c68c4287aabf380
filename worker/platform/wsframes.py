"""WebSocket frames (RFC 6455 section 5), sans-IO: a parser for client frames, an encoder for
server frames. Used by :mod:`worker.platform.websocket`.

The parser checks what a server must check of a client's frames: masked (5.1), no reserved
bits (5.2), a known opcode, control frames unfragmented and at most 125 bytes (5.5),
continuation frames only inside a fragmented message (5.4), close frames with a valid code
and a UTF-8 reason (5.5.1, 7.4). A violation is a :class:`FrameError` carrying the close code
to answer with. Text frames are refused because MQTT travels in binary frames only
(MQTT-6.0.0-1). A frame's header is checked as soon as it arrives, so an oversized frame is
refused before its payload is waited for.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from worker.errors import ProtocolError

PROTOCOL_ERROR: Final = 1002
UNSUPPORTED_DATA: Final = 1003
NO_STATUS: Final = 1005
INVALID_DATA: Final = 1007
TOO_BIG: Final = 1009
_MAX_CONTROL: Final = 125


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class FrameError(ProtocolError):
    """A client frame that breaks RFC 6455 (or MQTT's use of it); ``code`` is the close code."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"WebSocket {code}: {reason}")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame from the client, unmasked."""

    opcode: Opcode
    payload: bytes
    fin: bool = True

    @property
    def close_code(self) -> int:
        """For a close frame: its status code, or 1005 when it has none."""
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else NO_STATUS


def valid_close_code(code: int) -> bool:
    """A code a peer may send (RFC 6455 7.4; 1004-1006 and 1015 are never sent)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameParser:
    """Turns the client's bytes into frames; call :meth:`feed`, then :meth:`next_frame`."""

    __slots__ = ("_buffer", "_in_message", "_max_frame", "_pos")

    def __init__(self, max_frame: int) -> None:
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._pos = 0
        self._in_message = False

    def feed(self, data: bytes) -> None:
        """Add bytes read from the socket."""
        if self._pos:
            # Drop what was parsed once per read rather than once per frame.
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive; FrameError if invalid."""
        buffer, pos = self._buffer, self._pos
        available = len(buffer) - pos
        if available < 2:
            return None
        first, second = buffer[pos], buffer[pos + 1]
        size, header = second & 0x7F, 2
        if size == 126:
            if available < 4:
                return None
            size, header = struct.unpack_from("!H", buffer, pos + 2)[0], 4
        elif size == 127:
            if available < 10:
                return None
            size, header = struct.unpack_from("!Q", buffer, pos + 2)[0], 10
        opcode = self._check_header(first, second, size)
        end = pos + header + 4 + size
        if len(buffer) < end:
            return None
        mask = bytes(buffer[pos + header : pos + header + 4])
        payload = unmask(bytes(buffer[pos + header + 4 : end]), mask)
        self._pos = end
        fin = bool(first & 0x80)
        if opcode in (Opcode.BINARY, Opcode.CONTINUATION):
            self._in_message = not fin
        elif opcode is Opcode.CLOSE:
            _check_close(payload)
        return Frame(opcode, payload, fin)

    def _check_header(self, first: int, second: int, size: int) -> Opcode:
        if first & 0x70:
            raise FrameError(PROTOCOL_ERROR, "reserved bits set, but no extension was agreed")
        try:
            opcode = Opcode(first & 0x0F)
        except ValueError:
            raise FrameError(PROTOCOL_ERROR, f"unknown opcode {first & 0x0F:#x}") from None
        if not second & 0x80:
            raise FrameError(PROTOCOL_ERROR, "frames from a client must be masked")
        if opcode >= Opcode.CLOSE:
            if not first & 0x80:
                raise FrameError(PROTOCOL_ERROR, "a control frame cannot be fragmented")
            if size > _MAX_CONTROL:
                raise FrameError(PROTOCOL_ERROR, "a control frame carries at most 125 bytes")
            return opcode
        if opcode is Opcode.TEXT:
            raise FrameError(UNSUPPORTED_DATA, "MQTT must be sent in binary frames, not text")
        if opcode is Opcode.CONTINUATION and not self._in_message:
            raise FrameError(PROTOCOL_ERROR, "a continuation frame without a message to continue")
        if opcode is Opcode.BINARY and self._in_message:
            raise FrameError(
                PROTOCOL_ERROR, "a new message before the last fragment of the previous"
            )
        if size > self._max_frame:
            raise FrameError(
                TOO_BIG, f"a frame of {size} bytes exceeds the limit of {self._max_frame}"
            )
        return opcode


def _check_close(payload: bytes) -> None:
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "a close frame's payload is empty or at least 2 bytes")
    if payload and not valid_close_code(struct.unpack("!H", payload[:2])[0]):
        raise FrameError(PROTOCOL_ERROR, "a close frame with a reserved or unknown status code")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(INVALID_DATA, "a close reason that is not UTF-8") from None


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask, as one big-integer operation (fast for large payloads)."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def encode_frame(opcode: Opcode, payload: bytes, *, fin: bool = True, mask: bytes = b"") -> bytes:
    """One frame; servers send unmasked ones, ``mask`` (4 bytes) is for tests playing clients."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if mask:
        return header + mask + unmask(payload, mask)
    return header + payload


def encode_close(code: int, reason: str = "") -> bytes:
    """A close frame with a status code and a reason cut to fit a control frame."""
    text = reason.encode("utf-8")[: _MAX_CONTROL - 2].decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(Opcode.CLOSE, struct.pack("!H", code) + text)
