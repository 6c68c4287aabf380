"""The fast transport: MQTT 3.1.1 or 5 over an ``asyncio.Protocol`` and the sans-IO codec.

``worker.transports.native_protocol`` is the receiving side: batches per read, flow control,
acks. This module adds what the client asks of the server and waits for: the CONNECT handshake,
SUBSCRIBE, UNSUBSCRIBE and QoS 1 PUBLISH with their packet IDs and pending futures, and the
keepalive pings.

Speaks MQTT 3.1.1 or 5 over TCP or TLS, QoS 0 and 1 (the worker never asks for more).
WebSockets stay with the aiomqtt transport (``worker.connection.transport_factory`` picks it).

On MQTT 5 the CONNECT announces a zero session expiry (the session ends with the connection,
like 3.1.1's clean session), the Receive Maximum and Maximum Packet Size of the settings and a
Topic Alias Maximum; the CONNACK's limits are honoured: the server's Receive Maximum bounds our
QoS 1 PUBLISHes in flight, its Maximum QoS and Maximum Packet Size refuse what it would refuse,
its keep alive replaces ours, and an assigned client identifier is logged. Failure reason codes
in SUBACK, UNSUBACK and PUBACK become ``ServerRefused``; a server's DISCONNECT is logged with its
reason and ends the connection like a loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final

from worker.errors import ConfigError, ConnectError, PayloadTooLarge
from worker.messages import MessageProperties
from worker.mqtt import (
    MAX_REMAINING_LENGTH,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    Connack,
    ConnackReturnCode,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    Puback,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    connack_meaning,
    connack_return_code,
    encode,
    encode_publish,
)
from worker.transports.base import (
    PERMANENT_REFUSALS,
    ConnectOptions,
    ProtocolViolation,
    ServerRefused,
    not_authorized,
    reason_name,
    tls_context,
)
from worker.transports.native_protocol import InboundProtocol

log = logging.getLogger("worker.transports.native")

_PINGREQ: Final = encode(Pingreq())
_DISCONNECT: Final = encode(Disconnect())
#: MQTT 5: topic aliases we accept from the server (one topic string kept per alias)
TOPIC_ALIAS_MAXIMUM: Final = 1024
#: MQTT 5 reason codes below this are successes (0x10 "no matching subscribers" included)
_FAILURE: Final = 0x80


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
        self._level = 4
        #: MQTT 5: the server's limits from CONNACK
        self._send_quota: asyncio.Semaphore | None = None
        self._server_max_qos = 1
        self._server_max_packet = MAX_REMAINING_LENGTH + 5
        #: MQTT 5: the client identifier the server assigned, if it did
        self.assigned_client_id: str | None = None

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
        self._level = options.protocol_level
        alias_maximum = TOPIC_ALIAS_MAXIMUM if options.v5 else 0
        self._speak(options.protocol_level, options.receive_maximum, alias_maximum)
        self._limit_packets(options.max_packet_size)
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
            raise _refusal(connack, options, where)
        self._live = True
        self._keepalive = float(options.keepalive)
        if options.v5:
            self._honour(connack.properties)
        self._schedule_tick()

    def _honour(self, props: Properties) -> None:
        """Adopt the limits of an MQTT 5 CONNACK (the server may lower what we asked)."""
        self._send_quota = asyncio.Semaphore(props.receive_maximum or 0xFFFF)
        if props.maximum_qos is not None:
            self._server_max_qos = props.maximum_qos
        if props.maximum_packet_size is not None:
            self._server_max_packet = props.maximum_packet_size
        if props.server_keep_alive is not None and props.server_keep_alive != self._keepalive:
            log.info(
                "%s asks for a keep alive of %ds instead of %gs",
                self._where,
                props.server_keep_alive,
                self._keepalive,
            )
            self._keepalive = float(props.server_keep_alive)
        if props.assigned_client_identifier is not None:
            self.assigned_client_id = props.assigned_client_identifier
            log.info("%s assigned the client ID %s", self._where, self.assigned_client_id)

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
        self._write(encode(_connect_packet(options, self._alias_maximum), options.protocol_level))
        return await self._connack

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe in one SUBSCRIBE; the granted QoS per filter (or FAILURE)."""
        for _, qos in filters:
            _check_qos(qos)
        subscriptions = tuple(Subscription(f, qos) for f, qos in filters)
        packet_id = self._take_id()
        data = encode(Subscribe(packet_id, subscriptions), self._level)
        suback = await self._request("SUBSCRIBE", packet_id, data)
        assert isinstance(suback, Suback)
        return list(suback.reason_codes)

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe and wait for UNSUBACK (ServerRefused for an MQTT 5 failure code)."""
        packet_id = self._take_id()
        data = encode(Unsubscribe(packet_id, tuple(filters)), self._level)
        unsuback = await self._request("UNSUBSCRIBE", packet_id, data)
        assert isinstance(unsuback, Unsuback)
        for topic_filter, code in zip(filters, unsuback.reason_codes, strict=False):
            if code >= _FAILURE:
                raise ServerRefused(
                    f"{self._where} refused to unsubscribe {topic_filter}: {reason_name(code)}"
                    + _said(unsuback.properties),
                    "UNSUBACK",
                    code,
                )

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish; for QoS 1 wait for the PUBACK. Waits while the socket's buffer is full.

        On MQTT 5, at most the server's Receive Maximum of QoS 1 PUBLISHes are in flight;
        ``properties`` are sent on MQTT 5 only.
        """
        _check_qos(qos)
        data_of = self._encoder(topic, payload, qos, retain, properties)
        if not self._writable.is_set():
            await self._writable.wait()  # connection_lost sets it too, then _require raises
        if not qos:
            self._require("PUBLISH")
            self._write(data_of(None))
            return
        quota = self._send_quota
        if quota is None:
            packet_id = self._take_id()
            await self._request("PUBLISH", packet_id, data_of(packet_id))
            return
        async with quota:
            packet_id = self._take_id()
            puback = await self._request("PUBLISH", packet_id, data_of(packet_id))
        assert isinstance(puback, Puback)
        if puback.reason_code >= _FAILURE:
            raise ServerRefused(
                f"{self._where} refused the PUBLISH to {topic}: "
                f"{reason_name(puback.reason_code)}{_said(puback.properties)}",
                "PUBACK",
                puback.reason_code,
            )

    def _encoder(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: MessageProperties | None,
    ) -> _Encoder:
        """Check a PUBLISH against the server's limits; a function of the packet ID to bytes."""
        level = self._level
        mqtt_props = NO_PROPERTIES
        if level == MQTT_5:
            if qos > self._server_max_qos:
                raise ServerRefused(
                    f"{self._where} accepts PUBLISH up to QoS {self._server_max_qos}, "
                    f"not {qos} (its CONNACK's Maximum QoS)",
                    "CONNACK",
                    0x9B,
                )
            if properties is not None:
                mqtt_props = mqtt_properties(properties)

        def data_of(packet_id: int | None) -> bytes:
            data = encode_publish(
                topic,
                payload,
                qos,
                packet_id,
                retain=retain,
                properties=mqtt_props,
                protocol_level=level,
            )
            if len(data) > self._server_max_packet:
                raise PayloadTooLarge(
                    f"{topic}: a PUBLISH of {len(data)} bytes is above the Maximum Packet Size "
                    f"of {self._server_max_packet} that {self._where} accepts"
                )
            return data

        data_of(1 if qos else None)  # fails before anything waits or takes a packet ID
        return data_of

    async def disconnect(self) -> None:
        """Send DISCONNECT and close; safe to call more than once, and after a loss."""
        self._closing = True
        self._live = False
        self._wake()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_DISCONNECT)  # the same two bytes on 5: reason 0, no properties
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
        elif isinstance(packet, Disconnect) and self._level == MQTT_5:
            self._server_disconnect(packet)
        elif isinstance(packet, Auth):
            self._violation(
                f"{self._where} sent AUTH, but no authentication method was asked for",
                "unexpected_packet",
            )
        else:
            self._violation(
                f"{self._where} sent an unexpected {type(packet).__name__}", "unexpected_packet"
            )

    def _server_disconnect(self, packet: Disconnect) -> None:
        """An MQTT 5 server closes the connection and says why: logged, then like a loss."""
        why = f"connection to {self._where} lost: the server sent DISCONNECT "
        why += reason_name(packet.reason_code)
        why += _said(packet.properties)
        if packet.properties.server_reference:
            why += f" (it suggests the server {packet.properties.server_reference})"
        log.warning("%s", why)
        if self._error is None:
            self._error = ProtocolViolation(why, "server_disconnect")
        self._live = False
        if self._transport is not None:
            self._transport.abort()

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


_Encoder = Callable[[int | None], bytes]


def _connect_packet(options: ConnectOptions, alias_maximum: int) -> Connect:
    password = options.password.encode() if options.password is not None else None
    properties = NO_PROPERTIES
    if options.v5:
        properties = Properties(
            session_expiry_interval=options.session_expiry,
            receive_maximum=options.receive_maximum,
            maximum_packet_size=options.max_packet_size,
            topic_alias_maximum=alias_maximum,
        )
    return Connect(
        client_id=options.client_id,
        clean_start=options.clean_session,
        keep_alive=options.keepalive,
        username=options.username,
        password=password,
        protocol_level=options.protocol_level,
        properties=properties,
    )


def mqtt_properties(p: MessageProperties) -> Properties:
    """The PUBLISH properties of a message's properties."""
    return Properties(
        payload_format_indicator=p.payload_format_indicator,
        message_expiry_interval=p.message_expiry_interval,
        content_type=p.content_type,
        response_topic=p.response_topic,
        correlation_data=p.correlation_data,
        user_properties=p.user_properties,
    )


def _said(props: Properties) -> str:
    """``: "reason string"`` when the server gave one, else nothing."""
    return f': "{props.reason_string}"' if props.reason_string else ""


def _check_qos(qos: int) -> None:
    if qos not in (0, 1):
        raise ValueError(f"the native transport speaks QoS 0 and 1, not {qos!r}")


def _refusal(connack: Connack, options: ConnectOptions, where: str) -> ConnectError:
    """NotAuthorized when retrying cannot help, else a ConnectError naming the code."""
    code = connack.reason_code
    if not options.v5:
        if code in PERMANENT_REFUSALS:
            return not_authorized(ConnackReturnCode(code), options, where)
        meaning = connack_meaning(code)
        return ConnectError(
            f"{where} refused the connection: {meaning} (CONNACK return code {code})"
        )
    as_v3 = connack_return_code(code)
    if as_v3 is not None and as_v3 in PERMANENT_REFUSALS:
        return not_authorized(as_v3, options, where)
    hint = ""
    if as_v3 is ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION:
        hint = "; it does not speak MQTT 5: set --mqtt-version 3.1.1"
    return ConnectError(
        f"{where} refused the connection: {reason_name(code)}{_said(connack.properties)} "
        f"(CONNACK reason code {code:#04x}){hint}"
    )
