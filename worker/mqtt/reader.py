"""A streaming packet reader: bytes in as they arrive, every complete packet out.

Buffering: while a packet is incomplete its bytes wait in a ``bytearray`` and the reader knows how
many it needs, so a read that does not complete it costs one append and no parsing. When packets
are complete the reader parses them from one immutable ``bytes`` object with a moving offset
(slices of ``bytes`` are ``bytes``: one copy per topic and payload) and keeps only the tail. The
common case, reads that end on a packet boundary, never touches the buffer at all.
"""

from __future__ import annotations

from worker.errors import PacketTooLarge, ProtocolError
from worker.mqtt.codes import MAX_REMAINING_LENGTH, MQTT_3_1_1, MQTT_5, PROTOCOL_NAMES, PacketType
from worker.mqtt.decode import VALID_FIRST_BYTES, check_first_byte, decode_body, decode_publish
from worker.mqtt.packets import Connect, Packet, Puback
from worker.mqtt.properties import NO_PROPERTIES

_PUBLISH = int(PacketType.PUBLISH)
_PUBACK_FIRST_BYTE = 0x40


def _long_length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Remaining length of 128 or more: ``(value, header size)``, or ``(-1, 0)`` if incomplete."""
    value = 0
    for index, shift in ((1, 0), (2, 7), (3, 14), (4, 21)):
        if pos + index >= end:
            return -1, 0
        byte = data[pos + index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0:
                raise ProtocolError("remaining length not in its shortest form")
            return value, index + 1
    raise ProtocolError("remaining length longer than four bytes")


class PacketReader:
    """Turns a byte stream into packets; one reader per connection and direction.

    ``feed`` returns every packet completed by the bytes given, in order, and keeps the rest.
    A remaining length above ``max_packet_size`` raises :class:`~worker.errors.PacketTooLarge`
    as soon as the fixed header is readable, before any of the body is buffered. Any malformed
    input raises :class:`~worker.errors.ProtocolError`; the packets decoded earlier in that same
    call are dropped with it (the connection must close anyway, MQTT-4.8.0-1 / 4.13), and the
    reader refuses further input.

    ``protocol_level`` selects the 3.1/3.1.1 or the 5.0 encoding of everything but CONNECT.
    A reader that decodes a CONNECT adopts its level for the packets after it, even within the
    same read; a client sets it to the level of the CONNECT it sent.
    """

    __slots__ = ("_buffer", "_failed", "_level", "_need", "_v5", "max_packet_size")

    def __init__(self, max_packet_size: int, protocol_level: int = MQTT_3_1_1) -> None:
        if not 0 <= max_packet_size <= MAX_REMAINING_LENGTH:
            raise ValueError(f"max_packet_size must be within 0-{MAX_REMAINING_LENGTH}")
        self.max_packet_size = max_packet_size
        self._level = MQTT_3_1_1
        self._v5 = False
        self.protocol_level = protocol_level
        self._buffer = bytearray()
        self._need = 0
        self._failed = False

    @property
    def protocol_level(self) -> int:
        """The MQTT level of the connection: 3 (3.1), 4 (3.1.1) or 5 (5.0)."""
        return self._level

    @protocol_level.setter
    def protocol_level(self, level: int) -> None:
        if level not in PROTOCOL_NAMES:
            raise ValueError(f"protocol_level must be 3, 4 or 5, not {level!r}")
        self._level = level
        self._v5 = level == MQTT_5

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete packet are waiting."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add ``data`` and return every packet now complete, oldest first."""
        if self._failed:
            raise ProtocolError("the reader already failed on malformed input")
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []
            chunk = bytes(buffer)
        elif type(data) is bytes:
            chunk = data
        else:
            chunk = bytes(data)
        packets: list[Packet] = []
        try:
            consumed = self._parse(chunk, packets)
        except ProtocolError as exc:
            self._failed = True
            self._buffer = bytearray()
            exc.complete = tuple(packets)  # valid packets before the bad bytes
            raise
        if consumed or not buffer:
            # Only the tail is kept; a memoryview of immutable bytes avoids an extra copy.
            del buffer[:]
            if consumed < len(chunk):
                buffer += memoryview(chunk)[consumed:]
        return packets

    def _parse(self, data: bytes, packets: list[Packet]) -> int:
        """Append the complete packets of ``data`` to ``packets``; return the bytes consumed."""
        end = len(data)
        limit = self.max_packet_size
        v5 = self._v5
        valid = VALID_FIRST_BYTES[v5]
        pos = 0
        self._need = 0
        while end - pos >= 1:
            # Judged before the length, so garbage never waits for a body that will not come.
            first_byte = data[pos]
            if not valid[first_byte]:
                check_first_byte(first_byte, v5)
            if end - pos < 2:
                break
            length = data[pos + 1]
            header = 2
            if length >= 0x80:
                # Two bytes (128 B to 16 KB) is the common long form: decoded inline.
                if end - pos > 2 and 0 < data[pos + 2] < 0x80:
                    length = (length & 0x7F) | data[pos + 2] << 7
                    header = 3
                else:
                    length, header = _long_length(data, pos, end)
                    if not header:
                        break
            if length > limit:
                raise PacketTooLarge(f"remaining length {length} above the limit of {limit}")
            start = pos + header
            stop = start + length
            if stop > end:
                self._need = stop - pos
                break
            if first_byte >> 4 == _PUBLISH:
                packets.append(decode_publish(first_byte, data, start, stop, v5))
            elif first_byte == _PUBACK_FIRST_BYTE and length == 2:
                packet_id = data[start] << 8 | data[start + 1]
                if not packet_id:
                    raise ProtocolError("packet identifier 0")
                packets.append(Puback(packet_id, 0, NO_PROPERTIES))
            else:
                packets.append(self._decode_other(first_byte, data, start, stop))
                v5 = self._v5
                valid = VALID_FIRST_BYTES[v5]
            pos = stop
        return pos

    def _decode_other(self, first_byte: int, data: bytes, start: int, stop: int) -> Packet:
        """Everything but the PUBLISH/PUBACK fast paths; adopts the level of a CONNECT."""
        packet = decode_body(first_byte, data, start, stop, self._level)
        if isinstance(packet, Connect):
            self.protocol_level = packet.protocol_level
        return packet


def decode_packet(data: bytes, protocol_level: int = MQTT_3_1_1) -> Packet:
    """Decode ``data`` holding exactly one whole packet (a convenience for tests and tools)."""
    reader = PacketReader(MAX_REMAINING_LENGTH, protocol_level)
    packets = reader.feed(data)
    if len(packets) != 1 or reader.buffered:
        raise ProtocolError(
            f"expected one whole packet, got {len(packets)} and {reader.buffered} bytes"
        )
    return packets[0]
