"""The fast transport: MQTT 3.1.1 over an ``asyncio.Protocol`` and the project's sans-IO codec.

``worker.transports.native_protocol`` is the receiving side: batches per read, flow control,
acks. This module adds what the client asks of the server and waits for: the CONNECT handshake,
SUBSCRIBE, UNSUBSCRIBE and QoS 1 PUBLISH with their packet IDs and pending futures, and the
keepalive pings.

Speaks MQTT 3.1.1 over TCP or TLS, QoS 0 and 1 (the worker never asks for more). WebSockets
stay with the aiomqtt transport (``worker.connection.transport_factory`` picks it for them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from worker.errors import ConfigError, ConnectError
from worker.mqtt import (
    MAX_REMAINING_LENGTH,
    Connack,
    ConnackReturnCode,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    connack_meaning,
    encode,
    encode_publish,
)
from worker.transports.base import PERMANENT_REFUSALS, ConnectOptions, not_authorized, tls_context
from worker.transports.native_protocol import InboundProtocol

_PINGREQ: Final = encode(Pingreq())
_DISCONNECT: Final = encode(Disconnect())


class NativeTransport(InboundProtocol):
    """One MQTT 3.1.1 connection; see ``worker.transports.base.Transport``.

    It is its own asyncio protocol (``connection_made``, ``data_received``, ...), so the read
    path reaches its state without an extra hop. One instance connects once.
    """

    def __init__(self, *, max_pending: int = 4, max_packet_size: int = MAX_REMAINING_LENGTH):
        super().__init__(max_pending=max_pending, max_packet_size=max_packet_size)
        self._pending: dict[int, tuple[str, asyncio.Future[Packet]]] = {}
        self._next_id = 0
        self._connack: asyncio.Future[Connack] | None = None
        self._started = False
        self._keepalive = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._ping_at: float | None = None

    # --- the Transport interface (ack, batches and received are InboundProtocol's) ----------

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
        if connack.reason_code != ConnackReturnCode.ACCEPTED:
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
        """Subscribe in one SUBSCRIBE; the granted QoS per filter (or FAILURE)."""
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

    # --- answers, losses and pauses, from the receiving side ----------------------------------

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
            super()._control(packet)

    def _on_lost(self, why: ConnectError) -> None:
        """Stop the keepalive; fail the handshake and every request still waiting."""
        if self._timer is not None:
            self._timer.cancel()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(why)
        pending, self._pending = self._pending, {}
        for what, future in pending.values():
            if not future.done():
                future.set_exception(
                    ConnectError(f"{what} at {self._where} failed: the connection was lost")
                )

    def _answer_awaited(self) -> bool:
        return bool(self._pending)

    def _on_resume(self) -> None:
        if self._ping_at is not None:
            # A PINGRESP may be queued behind what was not read meanwhile: restart its clock.
            self._ping_at = asyncio.get_running_loop().time()

    # --- requests and keepalive ---------------------------------------------------------------

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
        if self._paused:
            self._resume()  # the answer is behind what was not read: read on until it arrives
        try:
            self._write(data)
            return await future
        finally:
            self._pending.pop(packet_id, None)

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


def _check_qos(qos: int) -> None:
    if qos not in (0, 1):
        raise ValueError(f"the native transport speaks QoS 0 and 1, not {qos!r}")


def _refusal(code: int, options: ConnectOptions, where: str) -> ConnectError:
    """NotAuthorized when retrying cannot help, else a ConnectError naming the return code."""
    if code in PERMANENT_REFUSALS:
        return not_authorized(ConnackReturnCode(code), options, where)
    meaning = connack_meaning(code)
    return ConnectError(f"{where} refused the connection: {meaning} (CONNACK return code {code})")
