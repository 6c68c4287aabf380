"""The fast transport: an ``asyncio.Protocol`` over the project's own sans-IO codec.

Where a client library pays per message (a socket read, a callback, a task, a queue hop), this
transport pays per read: ``data_received`` parses every complete packet of the bytes it is
given and hands the PUBLISHes on as ONE batch, and ``ack`` writes all the PUBACKs of one call
with ONE ``transport.write``. Nothing on that path allocates a task or a future per message.

Flow control: batches wait in a deque for the consumer (the connection supervisor feeding the
pipeline). When ``max_pending`` reads are waiting, the socket stops being read until the consumer
takes them; then the kernel's receive buffer, TCP and, for QoS 1, the broker's in-flight window
hold the publisher back, so memory stays bounded however slow the handlers are.

Speaks MQTT 3.1.1 over TCP or TLS, QoS 0 and 1 (the worker never asks for more). WebSockets
stay with the aiomqtt transport (``worker.connection.transport_factory`` picks it for them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Final, cast

from worker.errors import ConfigError, ConnectError, NotAuthorized, ProtocolError
from worker.mqtt import (
    MAX_REMAINING_LENGTH,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    encode,
    encode_pubacks,
    encode_publish,
)
from worker.transports.base import ConnectOptions, Inbound, tls_context

#: CONNACK return codes (3.1.1) that retrying cannot fix, and what they mean
_REFUSED: Final[dict[int, str]] = {
    2: "the client ID is not accepted",
    4: "bad user name or password",
    5: "not authorised",
}
_OTHER_REFUSALS: Final[dict[int, str]] = {
    1: "unacceptable protocol version",
    3: "server unavailable",
}
_PINGREQ: Final = encode(Pingreq())
_DISCONNECT: Final = encode(Disconnect())
_CLOSE_TIMEOUT: Final = 5.0


class NativeTransport(asyncio.Protocol):
    """One MQTT 3.1.1 connection; see ``worker.transports.base.Transport``.

    It is its own asyncio protocol (``connection_made``, ``data_received``, ...), so the read
    path reaches its state without an extra hop. One instance connects once.
    """

    def __init__(self, *, max_pending: int = 4, max_packet_size: int = MAX_REMAINING_LENGTH):
        #: reads waiting for the consumer before the socket is paused
        self._max_pending = max_pending
        # The broker is trusted with sizes: it already accepted the message from its publisher,
        # and refusing it here would only get it redelivered forever.
        self._reader = PacketReader(max_packet_size)
        self._ready: deque[list[Inbound]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._pending: dict[int, tuple[str, asyncio.Future[Packet]]] = {}
        self._next_id = 0
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[Connack] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._where = ""
        self._started = False
        #: True from CONNACK until the connection is lost or closed: acks are written only then
        self._live = False
        self._closing = False
        self._paused = False
        self._lost: ConnectError | None = None
        self._error: ConnectError | None = None
        self._received = 0
        self._keepalive = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._ping_at: float | None = None
        self._wrote = False

    @property
    def received(self) -> int:
        """PUBLISH packets read from this connection so far."""
        return self._received

    # --- the Transport interface ------------------------------------------------------------

    async def connect(self, options: ConnectOptions) -> None:
        """Connect and wait for CONNACK (NotAuthorized on refusal, ConnectError otherwise)."""
        if self._started:
            raise RuntimeError("a transport connects once; make a new one to reconnect")
        if options.websockets:
            raise ConfigError(
                "the native transport speaks MQTT over TCP and TLS only; "
                "use --transport aiomqtt for --mqtt-transport websockets"
            )
        self._started = True
        self._where = where = f"{options.host}:{options.port}"
        try:
            async with asyncio.timeout(options.connect_timeout):
                connack = await self._handshake(options)
        except TimeoutError:
            await self._abort()
            raise ConnectError(
                f"cannot connect to {where}: no CONNACK within {options.connect_timeout:g}s"
            ) from None
        except OSError as exc:  # refused, unreachable, TLS handshake (ssl.SSLError is OSError)
            await self._abort()
            raise ConnectError(f"cannot connect to {where}: {exc}") from exc
        except BaseException:
            await self._abort()
            raise
        if connack.reason_code:
            await self._abort()
            raise _refusal(connack.reason_code, options, where)
        self._live = True
        self._keepalive = float(options.keepalive)
        self._schedule_tick()

    async def _handshake(self, options: ConnectOptions) -> Connack:
        """Open the socket (TLS: verified, TLS 1.2+), send CONNECT, wait for its CONNACK."""
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self._closed = loop.create_future()
        context = await asyncio.to_thread(tls_context, options.cafile) if options.tls else None
        await loop.create_connection(
            lambda: self,
            options.host,
            options.port,
            ssl=context,
            server_hostname=options.host if context else None,
        )
        self._write(encode(_connect_packet(options)))
        return await self._connack

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe in one SUBSCRIBE; the granted QoS per filter (0x80 = refused)."""
        for _, qos in filters:
            _check_qos(qos)
        subscriptions = tuple(Subscription(f, qos) for f, qos in filters)
        packet_id = self._take_id()
        suback = await self._request(
            "SUBSCRIBE", packet_id, encode(Subscribe(packet_id, subscriptions))
        )
        assert isinstance(suback, Suback)
        return list(suback.reason_codes)

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe and wait for UNSUBACK."""
        packet_id = self._take_id()
        data = encode(Unsubscribe(packet_id, tuple(filters)))
        await self._request("UNSUBSCRIBE", packet_id, data)

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Publish; for QoS 1 wait for the PUBACK. Waits while the socket's buffer is full."""
        _check_qos(qos)
        if not self._writable.is_set():
            await self._writable.wait()  # connection_lost sets it too, then _require raises
        if not qos:
            self._require("PUBLISH")
            self._write(encode_publish(topic, payload, retain=retain))
            return
        packet_id = self._take_id()
        data = encode_publish(topic, payload, 1, packet_id, retain=retain)
        await self._request("PUBLISH", packet_id, data)

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

    async def disconnect(self) -> None:
        """Send DISCONNECT and close; safe to call more than once, and after a loss."""
        self._closing = True
        self._live = False
        self._wake()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_DISCONNECT)
            transport.close()  # flushes what is buffered (the acks, the DISCONNECT) first
        await self._wait_closed()

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
            if len(self._ready) >= self._max_pending and not self._paused and self._transport:
                self._paused = True
                self._transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every waiting call at once, and end ``batches`` after what already arrived."""
        self._live = False
        self._paused = False
        if self._timer is not None:
            self._timer.cancel()
        why = self._error or ConnectError(
            f"connection to {self._where} lost: {exc or 'closed by the server'}"
        )
        self._lost = why
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(why)
        pending, self._pending = self._pending, {}
        for what, future in pending.values():
            if not future.done():
                future.set_exception(
                    ConnectError(f"{what} at {self._where} failed: the connection was lost")
                )
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

    # --- internals ----------------------------------------------------------------------------

    def _control(self, packet: Packet) -> None:
        """Everything but PUBLISH: answers to our requests, CONNACK, PINGRESP."""
        if isinstance(packet, Puback | Suback | Unsuback):
            entry = self._pending.pop(packet.packet_id, None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(packet)
        elif isinstance(packet, Pingresp):
            self._ping_at = None
        elif isinstance(packet, Connack) and self._connack and not self._connack.done():
            self._connack.set_result(packet)
        else:
            self._fail(f"{self._where} sent an unexpected {type(packet).__name__}")

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        self._paused = False
        if self._ping_at is not None:
            # A PINGRESP may be queued behind what was not read meanwhile: restart its clock.
            self._ping_at = asyncio.get_running_loop().time()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self._wrote = True

    def _require(self, what: str) -> asyncio.Transport:
        transport = self._transport
        if transport is None or not self._live:
            if self._lost is not None:
                raise ConnectError(f"{what} at {self._where} failed: the connection was lost")
            raise ConnectError(f"{what}: not connected to {self._where or 'the platform'}")
        return transport

    def _take_id(self) -> int:
        """The next packet ID not waiting for an answer (1-65535, then around again)."""
        for _ in range(0xFFFF):
            self._next_id = self._next_id % 0xFFFF + 1
            if self._next_id not in self._pending:
                return self._next_id
        raise ConnectError(f"65535 requests to {self._where} are waiting for an answer")

    async def _request(self, what: str, packet_id: int, data: bytes) -> Packet:
        """Send a packet and wait for the answer carrying its packet ID (or the loss)."""
        self._require(what)
        future: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._pending[packet_id] = (what, future)
        try:
            self._write(data)
            return await future
        finally:
            self._pending.pop(packet_id, None)

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

    def _schedule_tick(self) -> None:
        if self._keepalive > 0 and self._transport is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._keepalive / 2, self._tick)

    def _tick(self) -> None:
        """Every half keepalive: PINGREQ if we sent nothing; dead if a PINGRESP is overdue.

        A paused socket is exempt: the answer may be waiting behind unread messages.
        """
        if not self._live:
            return
        now = asyncio.get_running_loop().time()
        overdue = self._ping_at is not None and now - self._ping_at >= self._keepalive
        if overdue and not self._paused:
            self._fail(f"{self._where} did not answer PINGREQ within {self._keepalive:g}s")
            return
        if self._ping_at is None and not self._wrote:
            self._write(_PINGREQ)
            self._ping_at = now
        self._wrote = False
        self._schedule_tick()


def _connect_packet(options: ConnectOptions) -> Connect:
    password = options.password.encode() if options.password is not None else None
    return Connect(
        client_id=options.client_id,
        clean_start=options.clean_session,
        keep_alive=options.keepalive,
        username=options.username,
        password=password,
    )


def _merge(ready: deque[list[Inbound]]) -> list[Inbound]:
    """All waiting batches as one: the consumer pays its per-batch cost once."""
    batch = ready.popleft()
    while ready:
        batch.extend(ready.popleft())
    return batch


def _check_qos(qos: int) -> None:
    if qos not in (0, 1):
        raise ValueError(f"the native transport speaks QoS 0 and 1, not {qos!r}")


def _refusal(code: int, options: ConnectOptions, where: str) -> ConnectError:
    meaning = _REFUSED.get(code)
    if meaning is None:
        other = _OTHER_REFUSALS.get(code, "unknown reason")
        return ConnectError(f"{where} refused the connection: {other} (CONNACK return code {code})")
    user = f" as user {options.username!r}" if options.username else " without credentials"
    return NotAuthorized(
        f"{where} refused client ID {options.client_id!r}{user}: {meaning} "
        f"(CONNACK return code {code})",
        code,
    )
