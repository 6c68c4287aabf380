"""A minimal MQTT client over a real socket, built on the codec, for what libraries will not send.

Used where the test needs exact bytes or misbehaviour: a malformed packet, a keepalive that
is never honoured, an MQTT 3.1 or 5.0 CONNECT, or a look at the server's DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType
from typing import Self

from worker.mqtt import (
    MQTT_3_1_1,
    NO_PROPERTIES,
    Connack,
    Connect,
    Packet,
    PacketReader,
    Properties,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Will,
    encode,
)


class RawClient:
    """One connection: send packets or bytes, receive packets, notice when the server closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._packets: deque[Packet] = deque()
        self._codec = PacketReader(1 << 24)
        self.level = MQTT_3_1_1
        self.eof = False
        self._next_id = 0

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    def packet_id(self) -> int:
        self._next_id = self._next_id % 0xFFFF + 1
        return self._next_id

    def send(self, packet: Packet) -> None:
        self._writer.write(encode(packet, self.level))

    def send_bytes(self, data: bytes) -> None:
        self._writer.write(data)

    async def recv(self, within: float = 5.0) -> Packet:
        """The next packet; TimeoutError if none comes, EOFError if the server closed."""
        async with asyncio.timeout(within):
            while not self._packets:
                data = await self._reader.read(65536)
                if not data:
                    self.eof = True
                    raise EOFError("the server closed the connection")
                self._packets.extend(self._codec.feed(data))
        return self._packets.popleft()

    async def until_closed(self, within: float = 5.0) -> list[Packet]:
        """Every packet the server sends until it closes the socket."""
        seen: list[Packet] = []
        try:
            while True:
                seen.append(await self.recv(within))
        except (EOFError, ConnectionResetError):
            return seen

    async def connect(
        self,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        *,
        clean: bool = True,
        keepalive: int = 60,
        level: int = MQTT_3_1_1,
        will: Will | None = None,
        properties: Properties = NO_PROPERTIES,
    ) -> Connack:
        self.level = level
        self._codec.protocol_level = level
        secret = password.encode() if password is not None else None
        self.send(Connect(client_id, clean, keepalive, username, secret, will, level, properties))
        packet = await self.recv()
        assert isinstance(packet, Connack), packet
        return packet

    async def subscribe(self, *filters: str, qos: int = 0) -> Suback:
        """Subscribe and wait for the SUBACK; packets that come before it stay queued."""
        subs = tuple(Subscription(f, qos) for f in filters)
        self.send(Subscribe(self.packet_id(), subs))
        early: list[Packet] = []
        while True:
            packet = await self.recv()
            if isinstance(packet, Suback):
                self._packets.extendleft(reversed(early))
                return packet
            early.append(packet)

    async def publication(self, within: float = 5.0) -> Publish:
        """The next PUBLISH, skipping other packets."""
        while True:
            packet = await self.recv(within)
            if isinstance(packet, Publish):
                return packet
