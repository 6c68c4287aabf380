"""A raw-socket MQTT publisher on the project's own codec, built not to be the bottleneck.

Packets are encoded ahead (``bench.payloads.encode_many``) and written many per ``write``;
QoS 1 keeps a window of unacknowledged PUBLISHes, not one round trip per message. The
transport's flow control (``pause_writing``) is honoured, so a slow broker slows the publisher
instead of growing its buffer. ``barrier`` tells when the broker has taken everything sent:
a PINGREQ is answered after every packet before it on the connection was processed.

::

    pub = await Publisher.connect("127.0.0.1", port, "bench-pub")
    seconds = await pub.send_all(packets, qos=1)      # returns once every PUBACK arrived
    await pub.paced(rate=20_000, duration=5.0, qos=0)  # live timestamps, for latency
    await pub.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final, cast

from bench import payloads
from worker.mqtt import Connack, Connect, PacketReader, Pingresp, Puback, encode

#: unacknowledged QoS 1 PUBLISHes at most (Mosquitto takes them without a receive maximum)
WINDOW: Final = 2_000
#: PUBLISH packets per write
CHUNK: Final = 500
CONNECT_DEADLINE: Final = 10.0
_PINGREQ: Final = b"\xc0\x00"
_DISCONNECT: Final = b"\xe0\x00"
_PUBACK_BYTE: Final = b"\x40"


class PublisherError(Exception):
    """The broker refused the publisher or went away."""


class Publisher(asyncio.Protocol):
    """One publishing connection; see the module docstring."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._reader = PacketReader(1 << 20)
        loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[int] = loop.create_future()
        self._pong: asyncio.Future[None] | None = None
        self._progress = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost: BaseException | None = None
        #: QoS 1 PUBLISHes sent, and PUBACKs received, over the life of the connection
        self.published = 0
        self.acked = 0

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
    ) -> Publisher:
        """Connect (MQTT 3.1.1, clean session) and wait for an accepting CONNACK."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_DEADLINE):
            _, pub = await loop.create_connection(cls, host, port)
            secret = password.encode() if password is not None else None
            assert pub._transport is not None
            pub._transport.write(
                encode(Connect(client_id, keep_alive=600, username=username, password=secret))
            )
            code = await pub._connack
        if code:
            pub._abort()
            raise PublisherError(f"{client_id}: CONNACK refused with return code {code}")
        return pub

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are one in kind
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        # Almost every read is nothing but 4-byte PUBACKs: count them without decoding, so
        # that acknowledging costs the publisher next to nothing.
        n = len(data) >> 2
        if not self._reader.buffered and len(data) & 3 == 0 and data[::4] == _PUBACK_BYTE * n:
            self.acked += n
            self._progress.set()
            return
        for packet in self._reader.feed(data):
            if isinstance(packet, Puback):
                self.acked += 1
            elif isinstance(packet, Pingresp):
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)
            elif isinstance(packet, Connack) and not self._connack.done():
                self._connack.set_result(packet.reason_code)
        self._progress.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or PublisherError("the broker closed the publisher's connection")
        if not self._connack.done():
            self._connack.set_exception(PublisherError(f"connection lost: {self._lost}"))
        self._progress.set()
        self._writable.set()
        if self._pong is not None and not self._pong.done():
            self._pong.set_exception(PublisherError("connection lost before PINGRESP"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- publishing --------------------------------------------------------------------------

    async def send_all(self, packets: Sequence[bytes], qos: int, window: int = WINDOW) -> float:
        """Send every packet, then wait until the broker has them all; the seconds it took."""
        started = time.monotonic()
        base = self.acked
        await self.send(packets, qos, window)
        await self.barrier(acked=base + len(packets) if qos else None)
        return time.monotonic() - started

    async def send(self, packets: Sequence[bytes], qos: int, window: int = WINDOW) -> None:
        """Write every packet, keeping at most ``window`` QoS 1 ones unacknowledged.

        Returns without waiting for the last acknowledgements: a barrier per burst would cost
        a round trip, and up to 40 ms where the broker's Nagle holds its last PUBACK back.
        """
        sent = 0
        while sent < len(packets):
            room = len(packets) - sent
            if qos:  # the window: all QoS 1 packets sent minus those acknowledged
                room = min(room, window - (self.published - self.acked))
            if room <= 0:
                await self._wait_progress()
                continue
            end = sent + min(room, CHUNK)
            await self._write(b"".join(packets[sent:end]))
            if qos:
                self.published += end - sent
            sent = end

    async def paced(self, rate: float, duration: float, qos: int) -> int:
        """Publish ``rate`` messages a second for ``duration`` s with live timestamps; count.

        The packets are encoded ahead with a fixed-width placeholder for the timestamp, and
        each burst gets its send time with one ``bytes.replace`` over the burst: a live
        publisher shares the two cores with the broker and the worker, so it must cost little.
        """
        ring = payloads.stamped_ring(qos)
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while (elapsed := loop.time() - start) < duration:
            due = int(elapsed * rate) - sent
            if qos:
                due = min(due, WINDOW - (self.published - self.acked))
            if due > 0:
                first = sent % len(ring)
                burst = ring[first : first + due]
                burst += ring[: due - len(burst)]  # wrap around the ring
                await self._write(b"".join(burst).replace(payloads.STAMP, payloads.stamp()))
                sent += due
                self.published += due if qos else 0
            # 1 ms between bursts: a shorter sleep is 0 on uvloop (millisecond timers) and
            # would spin, taking a core from the broker and the worker
            await asyncio.sleep(0.001)
        await self.barrier(acked=self.published if qos else None)
        return sent

    async def barrier(self, acked: int | None = None, deadline: float = 60.0) -> None:
        """Wait until the broker processed all sent (PINGRESP), or ``acked`` PUBACKs arrived."""
        async with asyncio.timeout(deadline):
            if acked is not None:
                while self.acked < acked:
                    await self._wait_progress()
                return
            self._pong = asyncio.get_running_loop().create_future()
            await self._write(_PINGREQ)
            await self._pong

    async def close(self) -> None:
        """DISCONNECT and close."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_DISCONNECT)
            transport.close()

    async def _write(self, data: bytes) -> None:
        if self._lost is not None or self._transport is None:
            raise PublisherError(f"publisher connection lost: {self._lost}")
        self._transport.write(data)
        if not self._writable.is_set():
            await self._writable.wait()

    async def _wait_progress(self) -> None:
        if self._lost is not None:
            raise PublisherError(f"publisher connection lost: {self._lost}")
        self._progress.clear()
        await self._progress.wait()

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
