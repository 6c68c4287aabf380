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

MQTT 5 adds a little per message, and only on MQTT 5 connections: the properties of a PUBLISH
become ``Inbound.properties`` (and its expiry ``Inbound.expires_at``), a topic alias is
resolved, and the QoS 1 messages not yet acknowledged are counted against the Receive Maximum
we announced. A server that sends more breaks the protocol, but a common one does (Mosquitto
2.0 refills its quota too eagerly once acknowledgements flow), so the worker reports it (a
warning, once per connection) and enforces the bound itself: the socket is not read again
until acknowledgements bring the count back under the Receive Maximum.

Anything else the server breaks (malformed bytes, a packet above the maximum packet size, a
bad topic alias, a packet it may not send) closes the connection with a ``ProtocolViolation``
naming what was wrong; on MQTT 5 a DISCONNECT with the matching reason code goes first.

Packets other than PUBLISH go to ``_control``, and a lost connection to ``_on_lost``: the
requests, the handshake and the keepalive that answer them are ``worker.transports.native``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Final, cast

from worker.errors import ConnectError, PacketTooLarge, ProtocolError
from worker.messages import MessageProperties
from worker.mqtt import (
    MAX_REMAINING_LENGTH,
    MQTT_5,
    NO_PROPERTIES,
    Disconnect,
    Packet,
    PacketReader,
    Properties,
    Publish,
    ReasonCode,
    encode,
    encode_pubacks,
)
from worker.transports.base import Inbound, ProtocolViolation

log = logging.getLogger("worker.transports.native")

_CLOSE_TIMEOUT: Final = 5.0
#: bytes of fixed header a packet may add to its remaining length (type byte, 4-byte length)
_HEADER_MAX: Final = 5
#: MQTT 5 reason code sent in DISCONNECT for each ProtocolViolation reason
_DISCONNECT_CODES: Final = {
    "malformed": ReasonCode.MALFORMED_PACKET,
    "packet_too_large": ReasonCode.PACKET_TOO_LARGE,
    "topic_alias_invalid": ReasonCode.TOPIC_ALIAS_INVALID,
    "unexpected_packet": ReasonCode.PROTOCOL_ERROR,
}


class InboundProtocol(asyncio.Protocol):
    """One connection's reads, batches, flow control, acks and close; no requests of its own."""

    def __init__(self, *, max_pending: int = 4, max_packet_size: int = MAX_REMAINING_LENGTH):
        #: reads waiting for the consumer before the socket is paused
        self._max_pending = max_pending
        # A hostile or broken server's 200 MB PUBLISH must not be read whole: the reader
        # refuses it from its fixed header (``connect`` sets the limit of the settings).
        self._reader = PacketReader(max_packet_size)
        self._max_packet_size = max_packet_size
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
        #: paused because more QoS 1 messages than the Receive Maximum are unacknowledged
        self._over_window = False
        #: times this connection went beyond our Receive Maximum
        self.window_overruns = 0
        self._lost: ConnectError | None = None
        self._error: ConnectError | None = None
        self._received = 0
        self._wrote = False
        #: QoS 1 packet IDs received and not yet acknowledged: at most the Receive Maximum (on
        #: MQTT 5 announced to the server; on 3.1.1, which cannot say it, a bound of our own
        #: against a server with a larger window); MQTT 5's topic aliases
        self._v5 = False
        self._receive_maximum = 0xFFFF
        self._unacked: set[int] = set()
        self._aliases: dict[int, str] = {}
        self._alias_maximum = 0

    def _speak(self, protocol_level: int, receive_maximum: int, alias_maximum: int) -> None:
        """Read (and acknowledge) as ``protocol_level`` from now on, with these MQTT 5 limits."""
        self._v5 = protocol_level == MQTT_5
        self._reader.protocol_level = protocol_level
        self._receive_maximum = receive_maximum
        self._alias_maximum = alias_maximum

    def _limit_packets(self, max_packet_size: int) -> None:
        """Refuse packets above ``max_packet_size`` bytes (the whole packet, header included)."""
        self._reader.max_packet_size = max(0, min(max_packet_size, MAX_REMAINING_LENGTH + 5) - 5)
        self._max_packet_size = max_packet_size

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
        self._unacked.difference_update(packet_ids)
        if self._over_window and len(self._unacked) <= self._receive_maximum:
            self._over_window = False
            if self._paused and len(self._ready) < self._max_pending:
                self._resume()

    async def batches(self) -> AsyncIterator[list[Inbound]]:
        """Whatever has arrived, batch by batch, waiting only when nothing has."""
        ready = self._ready
        loop = asyncio.get_running_loop()
        while True:
            if ready:
                batch = ready.popleft() if len(ready) == 1 else _merge(ready)
                if self._paused and not self._over_window:
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
            # The whole packets before the bad bytes are taken as if the read ended there: a
            # QoS 0 message among them would otherwise be lost without a count.
            self._take(cast("Sequence[Packet]", exc.complete))
            self._malformed(exc)
            return
        self._take(packets)

    def _malformed(self, exc: ProtocolError) -> None:
        if isinstance(exc, PacketTooLarge):
            self._violation(
                f"{self._where} sent a packet above --max-packet-size "
                f"({self._max_packet_size} bytes): {exc}",
                "packet_too_large",
            )
        else:
            self._violation(f"{self._where} sent malformed MQTT: {exc}", "malformed")

    def _take(self, packets: Sequence[Packet]) -> None:
        """Hand the PUBLISHes of one read over as one batch; answer the other packets."""
        batch: list[Inbound] = []
        append = batch.append
        v5 = self._v5
        unacked = self._unacked
        for packet in packets:
            if type(packet) is Publish:
                if packet.qos > 1:
                    self._violation(
                        f"{self._where} sent a QoS 2 PUBLISH, which was never asked for",
                        "unexpected_packet",
                    )
                    break
                if v5:
                    inbound = self._inbound_v5(packet)
                    if inbound is None:
                        break  # closing; what came before it in this read is still handed over
                    append(inbound)
                    continue
                packet_id = packet.packet_id or 0
                if packet_id:
                    unacked.add(packet_id)
                append(Inbound(packet.topic, packet.payload, packet.qos, packet.retain, packet_id))
            else:
                self._control(packet)
                if self._error is not None:
                    break  # it broke the protocol: nothing after it counts
        if not v5 and len(unacked) > self._receive_maximum and not self._over_window:
            self._window_overrun(len(unacked))
        if batch:
            self._received += len(batch)
            self._ready.append(batch)
            self._wake()
            if (
                len(self._ready) >= self._max_pending
                and self._error is None
                and not self._paused
                and not self._answer_awaited()
                and self._transport
            ):
                self._paused = True
                self._transport.pause_reading()

    def _inbound_v5(self, packet: Publish) -> Inbound | None:
        """An MQTT 5 PUBLISH as Inbound: alias resolved, properties kept, window checked.

        None when it breaks the protocol (the connection is being closed).
        """
        packet_id = packet.packet_id or 0
        if packet_id:
            unacked = self._unacked
            unacked.add(packet_id)
            if len(unacked) > self._receive_maximum and not self._over_window:
                self._window_overrun(len(unacked))
        props = packet.properties
        topic = packet.topic
        if props is NO_PROPERTIES and topic:
            # The common case, as cheap as on 3.1.1: no properties, no alias.
            return Inbound(topic, packet.payload, packet.qos, packet.retain, packet_id)
        alias = props.topic_alias
        if alias is not None:
            if alias > self._alias_maximum:
                self._violation(
                    f"{self._where} sent topic alias {alias}, above the Topic Alias Maximum "
                    f"of {self._alias_maximum} we announced",
                    "topic_alias_invalid",
                )
                return None
            if topic:
                self._aliases[alias] = topic
            else:
                known = self._aliases.get(alias)
                if known is None:
                    self._violation(
                        f"{self._where} used topic alias {alias} before giving it a topic",
                        "topic_alias_invalid",
                    )
                    return None
                topic = known
        elif not topic:
            self._violation(
                f"{self._where} sent a PUBLISH without a topic name or alias", "malformed"
            )
            return None
        if (
            props.message_expiry_interval is None
            and not (props.user_properties or props.content_type or props.correlation_data)
            and props.response_topic is None
            and props.payload_format_indicator is None
        ):
            return Inbound(topic, packet.payload, packet.qos, packet.retain, packet_id)
        expiry = props.message_expiry_interval
        return Inbound(
            topic,
            packet.payload,
            packet.qos,
            packet.retain,
            packet_id,
            message_properties(props),
            0.0 if expiry is None else time.monotonic() + expiry,
        )

    def _window_overrun(self, unacked: int) -> None:
        """Beyond our Receive Maximum: say so once, read no more until acks bring it under."""
        self._over_window = True
        self.window_overruns += 1
        if self.window_overruns == 1 and not self._v5:
            # MQTT 3.1.1 cannot tell the server; its window is its own setting, so this is
            # flow control, not an error.
            log.info(
                "%s sent %d QoS 1 messages not yet acknowledged, above --receive-maximum "
                "(%d); reading pauses until acknowledgements bring it back under",
                self._where,
                unacked,
                self._receive_maximum,
            )
        elif self.window_overruns == 1:
            log.warning(
                "%s sent %d QoS 1 messages not yet acknowledged, above the Receive Maximum of "
                "%d we announced (a protocol error); reading pauses until acknowledgements "
                "bring it back under",
                self._where,
                unacked,
                self._receive_maximum,
            )
        transport = self._transport
        if not self._paused and transport is not None and not self._answer_awaited():
            self._paused = True
            transport.pause_reading()

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

    def _violation(self, message: str, reason: str) -> None:
        """The server broke the protocol: say why (MQTT 5: in a DISCONNECT), then close.

        ``reason`` is one of ``ProtocolViolation``'s labels.
        """
        if self._error is None:
            self._error = ProtocolViolation(message, reason)
        self._live = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        code = _DISCONNECT_CODES.get(reason)
        if not self._v5 or code is None:
            transport.abort()
            return
        transport.pause_reading()
        transport.write(encode(Disconnect(int(code)), MQTT_5))
        transport.close()  # after the DISCONNECT is flushed; a peer that does not read...
        asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT, transport.abort)  # ...is cut

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


def message_properties(props: Properties) -> MessageProperties:
    """The properties of a received PUBLISH that a handler sees."""
    return MessageProperties(
        user_properties=props.user_properties,
        content_type=props.content_type,
        payload_format_indicator=props.payload_format_indicator,
        correlation_data=props.correlation_data,
        response_topic=props.response_topic,
        message_expiry_interval=props.message_expiry_interval,
    )


def _merge(ready: deque[list[Inbound]]) -> list[Inbound]:
    """All waiting batches as one: the consumer pays its per-batch cost once."""
    batch = ready.popleft()
    while ready:
        batch.extend(ready.popleft())
    return batch
