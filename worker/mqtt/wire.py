"""Data representations of MQTT (3.1.1 section 1.5, 5.0 section 1.5): integers, strings, binary.

Decoding goes through a bounds-checked :class:`Cursor` over an immutable ``bytes`` object, so no
read can run past the packet it belongs to and nothing is sliced until a value is taken out.
"""

from __future__ import annotations

from worker.errors import ProtocolError
from worker.mqtt.codes import MAX_REMAINING_LENGTH

_VARINT_ONE_BYTE = [bytes((n,)) for n in range(128)]


def encode_varint(value: int) -> bytes:
    """Encode a variable byte integer (0 to 268435455) in its shortest form."""
    if 0 <= value < 128:
        return _VARINT_ONE_BYTE[value]
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ProtocolError(f"cannot encode {value} as a variable byte integer")
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_utf8(value: str) -> bytes:
    """Encode an MQTT UTF-8 string: two bytes of length, then well-formed UTF-8 without U+0000."""
    if "\x00" in value:
        raise ProtocolError("an MQTT string may not contain U+0000")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError("an MQTT string must be valid UTF-8 (no lone surrogates)") from exc
    if len(raw) > 0xFFFF:
        raise ProtocolError(f"an MQTT string is at most 65535 bytes, not {len(raw)}")
    return len(raw).to_bytes(2, "big") + raw


def encode_binary(value: bytes) -> bytes:
    """Encode MQTT binary data: two bytes of length, then the bytes."""
    if len(value) > 0xFFFF:
        raise ProtocolError(f"MQTT binary data is at most 65535 bytes, not {len(value)}")
    return len(value).to_bytes(2, "big") + value


def decode_utf8(raw: bytes) -> str:
    """Decode the bytes of an MQTT string; ill-formed UTF-8 and U+0000 are malformed.

    Python's strict decoder already refuses overlong forms and encoded surrogates, which
    MQTT-1.5.3-1 (3.1.1) and MQTT-1.5.4-1 (5.0) forbid.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("malformed UTF-8 in an MQTT string") from exc
    if "\x00" in text:
        raise ProtocolError("U+0000 in an MQTT string")
    return text


def fixed_header(first_byte: int, remaining_length: int) -> bytes:
    """The fixed header of a packet: its first byte and the remaining length."""
    if remaining_length < 128:
        return bytes((first_byte, remaining_length))
    return bytes((first_byte,)) + encode_varint(remaining_length)


class Cursor:
    """A read position inside ``data[pos:end]``; every read checks it stays inside."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def _take(self, size: int) -> int:
        start = self.pos
        if start + size > self.end:
            raise ProtocolError("packet ends inside a field")
        self.pos = start + size
        return start

    def at_end(self) -> bool:
        """Whether every byte up to the end has been read."""
        return self.pos >= self.end

    def expect_end(self, what: str) -> None:
        """Refuse bytes left over after the last field: the remaining length must match."""
        if self.pos != self.end:
            raise ProtocolError(f"{self.end - self.pos} unexpected bytes at the end of {what}")

    def u8(self) -> int:
        """A one-byte integer."""
        return self.data[self._take(1)]

    def u16(self) -> int:
        """A two-byte big-endian integer."""
        start = self._take(2)
        return self.data[start] << 8 | self.data[start + 1]

    def u32(self) -> int:
        """A four-byte big-endian integer."""
        start = self._take(4)
        return int.from_bytes(self.data[start : start + 4], "big")

    def varint(self) -> int:
        """A variable byte integer of at most four bytes, in its shortest form."""
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if byte == 0 and shift:
                    raise ProtocolError("variable byte integer not in its shortest form")
                return value
        raise ProtocolError("variable byte integer longer than four bytes")

    def raw(self, size: int) -> bytes:
        """The next ``size`` bytes."""
        start = self._take(size)
        return self.data[start : start + size]

    def binary(self) -> bytes:
        """Binary data with a two-byte length prefix."""
        return self.raw(self.u16())

    def utf8(self) -> str:
        """An MQTT UTF-8 string with a two-byte length prefix."""
        return decode_utf8(self.raw(self.u16()))

    def rest(self) -> bytes:
        """Every byte up to the end."""
        start = self.pos
        self.pos = self.end
        return self.data[start : self.end]
