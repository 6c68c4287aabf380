"""The receiving side of the native transport: an ``asyncio.Protocol`` that reads in batches.

Where a client library pays per message (a socket read, a callback, a task, a queue hop), this
protocol pays per read: ``data_received`` parses every complete packet of the bytes it is
given and hands the PUBLISHes on as ONE batch, and ``ack`` writes all the PUBACKs of one call
with ONE ``transport.write``. Nothing on that path allocates a task or a future per message.

Flow control: batches wait in a deque for the consumer (the connection supervisor feeding the
pipeline). When ``max_pending`` reads are waiting, the socket stops being read until the consumer
takes them; then the kernel's receive buffer, TCP and, for QoS 1, the broker's in-flight window
hold the publisher back, so memory stays bounded however slow the handlers are. The one
exception: while one of our requests (a QoS 1 PUBLISH, a SUBSCRIBE) waits for its answer, the
socket is read, because that answer is behind the unread messages, and the handler waiting for
it may be what the consumer waits for (``--overflow block``).

Packets other than PUBLISH go to ``_control``, and a lost connection to ``_on_lost``: the
requests, the handshake and the keepalive that answer them are ``worker.transports.native``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Final, cast

from worker.errors import ConnectError, ProtocolError
from worker.mqtt import MAX_REMAINING_LENGTH, Packet, PacketReader, Publish, encode_pubacks
from worker.transports.base import Inbound

_CLOSE_TIMEOUT: Final = 5.0


class InboundProtocol(asyncio.Protocol):
    """One connection's reads, batches, flow control, acks and close; no requests of its own."""

    def __init__(self, *, max_pending: int = 4, max_packet_size: int = MAX_REMAINING_LENGTH):
        #: reads waiting for the consumer before the socket is paused
        self._max_pending = max_pending
        # The broker is trusted with sizes: it already accepted the message from its publisher,
        # and refusing it here would only get it redelivered forever.
        self._reader = PacketReader(max_packet_size)
        self._ready: deque[list[Inbound]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._closed: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._where = ""
        #: True from CONNACK until the connection is lost or closed: acks are written only then
        self._live = False
        self._closing = False
        self._paused = False
        self._lost: ConnectError | None = None
        self._error: ConnectError | None = None
        self._received = 0
        self._wrote = False

    @property
    def received(self) -> int:
        """PUBLISH packets read from this connection so far."""
        return self._received

    def ack(self, packet_ids: Sequence[int]) -> None:
        """Write PUBACKs for these packet IDs, in this order, in one write.

        Acks for a connection that is gone are dropped: packet IDs belong to one session.
        """
        transport = self._transport
        if not self._live or transport is None or not packet_ids:
            return
        try:
            data = encode_pubacks(packet_ids)
        except ProtocolError:
            return  # IDs this connection never handed out; the interface promises no raise
        transport.write(data)
        self._wrote = True

    async def batches(self) -> AsyncIterator[list[Inbound]]:
        """Whatever has arrived, batch by batch, waiting only when nothing has."""
        ready = self._ready
        loop = asyncio.get_running_loop()
        while True:
            if ready:
                batch = ready.popleft() if len(ready) == 1 else _merge(ready)
                if self._paused:
                    self._resume()
                yield batch
                continue
            lost = self._lost
            if lost is not None or self._closing:
                if self._closing:
                    return
                assert lost is not None
                raise lost
            waiter = self._waiter = loop.create_future()
            await waiter

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the socket; small writes (acks, pings) must leave at once, not after 40 ms."""
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        """Every complete packet of this read: PUBLISHes become one batch, the rest answers."""
        try:
            packets = self._reader.feed(data)
        except ProtocolError as exc:
            self._fail(f"{self._where} sent malformed MQTT: {exc}")
            return
        batch: list[Inbound] = []
        append = batch.append
        for packet in packets:
            if type(packet) is Publish:
                if packet.qos > 1:
                    self._fail(f"{self._where} sent a QoS 2 PUBLISH, which was never asked for")
                    return
                append(
                    Inbound(packet.topic, packet.payload, packet.qos, packet.retain,
                            packet.packet_id or 0)
                )  # fmt: skip
            else:
                self._control(packet)
        if batch:
            self._received += len(batch)
            self._ready.append(batch)
            self._wake()
            if (
                len(self._ready) >= self._max_pending
                and not self._paused
                and not self._answer_awaited()
                and self._transport
            ):
                self._paused = True
                self._transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every waiting call at once, and end ``batches`` after what already arrived."""
        self._live = False
        self._paused = False
        why = self._error or ConnectError(
            f"connection to {self._where} lost: {exc or 'closed by the server'}"
        )
        self._lost = why
        self._on_lost(why)
        self._writable.set()
        self._wake()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        """The socket's write buffer is full: publishers wait (acks never do)."""
        self._writable.clear()

    def resume_writing(self) -> None:
        """The write buffer drained below its low-water mark."""
        self._writable.set()

    # --- for the request side ---------------------------------------------------------------

    def _control(self, packet: Packet) -> None:
        """A packet other than PUBLISH; one that nothing answers breaks the protocol."""
        self._fail(f"{self._where} sent an unexpected {type(packet).__name__}")

    def _on_lost(self, why: ConnectError) -> None:
        """The connection is gone for this reason: fail whatever waits on it."""

    def _on_resume(self) -> None:
        """Reading resumes after a pause."""

    # --- internals ----------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _answer_awaited(self) -> bool:
        """Whether a request waits for its answer (then reads go on; see ``native``)."""
        return False

    def _resume(self) -> None:
        self._paused = False
        self._on_resume()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self._wrote = True

    def _fail(self, reason: str) -> None:
        """The peer broke the protocol or went silent: drop the connection with this reason."""
        if self._error is None:
            self._error = ConnectError(reason)
        self._live = False
        if self._transport is not None:
            self._transport.abort()

    async def _abort(self) -> None:
        """Close a connection that never got going, and wait until asyncio let go of it."""
        self._live = False
        if self._transport is not None:
            self._transport.abort()
            await self._wait_closed()

    async def _wait_closed(self) -> None:
        closed = self._closed
        if closed is None or self._transport is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(closed), _CLOSE_TIMEOUT)
        except TimeoutError:
            # A peer that does not read blocks the flush (or a TLS close): stop waiting for it.
            self._transport.abort()
            await closed


def _merge(ready: deque[list[Inbound]]) -> list[Inbound]:
    """All waiting batches as one: the consumer pays its per-batch cost once."""
    batch = ready.popleft()
    while ready:
        batch.extend(ready.popleft())
    return batch
