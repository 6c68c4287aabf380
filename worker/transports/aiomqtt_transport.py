"""The reference transport: aiomqtt 2.x over paho-mqtt 2.x, with manual QoS 1 acknowledgements.

aiomqtt lets paho acknowledge a QoS 1 PUBLISH the moment it arrives, which would make delivery
at-most-once for every message still waiting in the pipeline. paho can leave the PUBACK to its
caller (``Client.manual_ack_set`` and ``Client.ack``, public since paho-mqtt 2.0); aiomqtt has
no switch for it, so this module reaches the paho client that aiomqtt keeps in ``Client._client``.
This is the only module that imports aiomqtt or paho, so that reach stays in one place.

Verified against aiomqtt 2.3.0, 2.3.2, 2.4.0, 2.5.0 and 2.5.1 (the ``_client`` attribute, the
``queue_type``, ``tls_context``, ``clean_session``, ``transport`` and ``timeout`` keywords, the
``messages`` iterator) and paho-mqtt 2.1.0 and 2.2.0 (``manual_ack_set``, ``ack``, and the private
``_sock_recv`` and ``_in_packet`` that the packet size limit watches); pyproject.toml pins exactly
that range. ``_paho_of`` fails loudly rather than silently auto-acking should a
future release move things.

``ConnectOptions.protocol_level`` picks MQTT 3.1.1 or 5 (paho's own MQTT 5 support): on 5 the
CONNECT carries a zero session expiry, the Receive Maximum and the Maximum Packet Size, messages
carry their properties both ways, and the manual acknowledgements bound the QoS 1 messages in
flight to the Receive Maximum as on the native transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, Final, TypeVar

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt import properties as paho_properties_module
from paho.mqtt.packettypes import PacketTypes

from worker.errors import ConnectError
from worker.messages import NO_PROPERTIES, MessageProperties
from worker.mqtt import connack_return_code
from worker.transports.base import (
    PERMANENT_REFUSALS,
    ConnectOptions,
    Inbound,
    ProtocolViolation,
    ServerRefused,
    not_authorized,
    reason_name,
    tls_context,
)

T = TypeVar("T")

#: the message IDs paho gave the ``publish`` calls of the current task (see _watch_pubacks)
_MIDS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("mids", default=None)

#: paho's Properties class (untyped, hence Any)
PahoProperties: Any = paho_properties_module.Properties

_DISCONNECT_TIMEOUT: Final = 5.0
_PENDING_CALLS_WARNING: Final = 100_000


class AiomqttTransport:
    """One MQTT 3.1.1 or 5 connection through aiomqtt; see ``worker.transports.base.Transport``."""

    def __init__(self) -> None:
        self._client: aiomqtt.Client | None = None
        self._paho: Any = None
        self._queue: asyncio.Queue[aiomqtt.Message] | None = None
        self._where = ""
        #: True from CONNACK until the connection is lost or closed: acks are sent only then
        self._live = False
        self._closing = False
        self._received = 0
        self._v5 = False
        #: MQTT 5: failure reason codes of PUBACKs by message ID, until the publisher reads them
        self._refused: dict[int, int] = {}
        #: the remaining length of a packet refused for --max-packet-size (0: none)
        self._too_large = 0
        self._max_packet_size = 0

    @property
    def received(self) -> int:
        """PUBLISH packets read from this connection so far."""
        return self._received

    async def connect(self, options: ConnectOptions) -> None:
        """Connect and wait for CONNACK (NotAuthorized on refusal, ConnectError otherwise)."""
        if self._client is not None:
            raise RuntimeError("a transport connects once; make a new one to reconnect")
        self._where = f"{options.host}:{options.port}"
        self._v5 = options.v5
        tls = await asyncio.to_thread(tls_context, options.cafile) if options.tls else None
        client = aiomqtt.Client(
            options.host,
            options.port,
            identifier=options.client_id,
            username=options.username,
            password=options.password,
            transport="websockets" if options.websockets else "tcp",
            keepalive=options.keepalive,
            timeout=options.connect_timeout,
            tls_context=tls,
            queue_type=self._capturing_queue(),
            **_version_options(options),
        )
        # aiomqtt warns from 10 concurrent calls; handlers publishing together do more than that.
        client.pending_calls_threshold = _PENDING_CALLS_WARNING
        self._client = client
        self._paho = _paho_of(client)
        # Before CONNECT, so that not even the first PUBLISH is acknowledged behind our back.
        self._paho.manual_ack_set(True)
        self._limit_packet_size(options.max_packet_size)
        if self._v5:
            self._watch_pubacks()
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            raise _refusal(exc, options, self._where) from exc
        except (aiomqtt.MqttError, OSError, ValueError) as exc:
            raise ConnectError(f"cannot connect to {self._where}: {_reason(exc)}") from exc
        self._live = True

    async def subscribe(self, filters: Sequence[tuple[str, int]]) -> list[int]:
        """Subscribe in one SUBSCRIBE; the granted QoS per filter (or a failure code)."""
        client = self._require()
        granted = await self._call("SUBSCRIBE", client.subscribe(list(filters)))
        return [_code(g) for g in granted]

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe and wait for UNSUBACK."""
        client = self._require()
        await self._call("UNSUBSCRIBE", client.unsubscribe(list(filters)))

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish; for QoS 1 wait for the PUBACK. ``properties`` go out on MQTT 5 only."""
        client = self._require()
        paho_props = paho_properties(properties) if self._v5 and properties else None
        mids: list[int] = []
        token = _MIDS.set(mids)  # the task _call makes sees it: paho's publish notes the mid
        try:
            await self._call(
                "PUBLISH",
                client.publish(topic, payload, qos=qos, retain=retain, properties=paho_props),
            )
        finally:
            _MIDS.reset(token)
        code = self._refused.pop(mids[0], None) if mids else None
        if code is not None:
            raise ServerRefused(
                f"{self._where} refused the PUBLISH to {topic}: {reason_name(code)}",
                "PUBACK",
                code,
            )

    def _watch_pubacks(self) -> None:
        """Keep the failure reason code of each PUBACK (aiomqtt drops it) by message ID.

        paho's ``publish`` and ``on_publish`` are wrapped on this instance only: the first notes
        the mid for the ``publish`` call waiting on it, the second records a failure code.
        """
        paho = self._paho
        publish, on_publish = paho.publish, paho.on_publish
        refused = self._refused

        def noting_publish(*args: Any, **kwargs: Any) -> Any:
            info = publish(*args, **kwargs)
            mids = _MIDS.get()
            if mids is not None:
                mids.append(info.mid)
            return info

        def checking_on_publish(client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
            code = _code(rc)
            if code >= 0x80:
                refused[mid] = code
            on_publish(client, userdata, mid, rc, props)

        paho.publish = noting_publish
        paho.on_publish = checking_on_publish

    def _limit_packet_size(self, limit: int) -> None:
        """Refuse a packet above ``limit`` from its fixed header, as the native reader does.

        paho reads every packet whole, in one ``recv`` of its announced length: a broken or
        hostile broker's 200 MB PUBLISH would be read into memory. Its ``_sock_recv`` is
        wrapped on this instance. paho asks it for one byte at a time until the remaining
        length is known, then for the whole rest of the packet, so a request above the limit
        is exactly the first read of a packet above it: that read fails as a lost connection
        (paho closes the socket), and ``batches`` says why. One comparison per read: this is
        the path of every message.
        """
        paho = self._paho
        recv = paho._sock_recv
        self._max_packet_size = limit

        def guarded_recv(bufsize: int) -> bytes:
            if bufsize > limit:
                self._too_large = paho._in_packet["remaining_length"]
                raise OSError(f"packet above --max-packet-size ({limit} bytes)")
            data: bytes = recv(bufsize)
            return data

        paho._sock_recv = guarded_recv

    def _lost(self, exc: aiomqtt.MqttError) -> ConnectError:
        """Why the connection ended, as the supervisor logs and counts it."""
        if self._too_large:
            limit = self._max_packet_size
            return ProtocolViolation(
                f"{self._where} sent a packet above --max-packet-size ({limit} bytes): "
                f"remaining length {self._too_large} above the limit of {limit}",
                "packet_too_large",
            )
        return ConnectError(f"connection to {self._where} lost: {_reason(exc)}")

    def ack(self, packet_ids: Sequence[int]) -> None:
        """Queue PUBACKs in this order; paho writes them out together on the next loop turn.

        Acks for a connection that is gone are dropped: packet IDs belong to one session, and
        with a clean session the server has already forgotten them.
        """
        if not self._live:
            return
        ack = self._paho.ack
        for packet_id in packet_ids:
            ack(packet_id, 1)

    async def batches(self) -> AsyncIterator[list[Inbound]]:
        """Whatever has arrived, batch by batch, waiting only when nothing has."""
        client, queue = self._require(), self._queue
        assert queue is not None
        messages = client.messages
        while True:
            try:
                first = await anext(messages)
            except aiomqtt.MqttError as exc:
                self._live = False
                # Messages read before the loss are still handled (their acks are dropped).
                rest = _take_all(queue)
                if rest:
                    yield rest
                if self._closing:
                    return
                raise self._lost(exc) from exc
            batch = [_inbound(first)]
            batch.extend(_take_all(queue))
            yield batch

    async def disconnect(self) -> None:
        """Send DISCONNECT and close; safe to call more than once, and after a loss."""
        self._closing = True
        self._live = False
        client, self._client = self._client, None
        if client is None:
            return
        # Leaving anyway: should DISCONNECT fail, the server notices the closed socket.
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
            await asyncio.wait_for(client.__aexit__(None, None, None), _DISCONNECT_TIMEOUT)

    async def _call(self, what: str, call: Coroutine[Any, Any, T]) -> T:
        """Await an aiomqtt call, or ConnectError as soon as the connection is lost.

        aiomqtt waits for SUBACK, UNSUBACK and PUBACK until its timeout even when the
        connection is already gone; its ``_disconnected`` future (2.3 to 2.5) says so at once.
        """
        task = asyncio.ensure_future(call)
        lost: asyncio.Future[None] | None = getattr(self._client, "_disconnected", None)
        waiting: set[asyncio.Future[Any]] = {task} if lost is None else {task, lost}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
        if lost is not None and lost.done() and not task.done():
            _ = lost.cancelled() or lost.exception()  # retrieved: no "never retrieved" noise
            raise ConnectError(f"{what} at {self._where} failed: the connection was lost")
        try:
            return task.result()
        except aiomqtt.MqttError as exc:
            raise ConnectError(f"{what} at {self._where} failed: {_reason(exc)}") from exc

    def _require(self) -> aiomqtt.Client:
        if self._client is None:
            raise ConnectError(f"not connected to {self._where or 'the platform'}")
        return self._client

    def _capturing_queue(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        """A queue class that hands its instance back, so batches can drain it without waiting.

        ``queue_type`` is aiomqtt's documented hook; the instance is otherwise private.
        """
        transport = self

        class _Captured(asyncio.Queue[aiomqtt.Message]):
            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                transport._queue = self

            def put_nowait(self, item: aiomqtt.Message) -> None:
                # paho calls this (through aiomqtt) for every PUBLISH it reads, in order.
                super().put_nowait(item)
                transport._received += 1

        return _Captured


def _paho_of(client: aiomqtt.Client) -> Any:
    paho = getattr(client, "_client", None)
    needed = ("manual_ack_set", "ack", "_sock_recv", "_in_packet")
    if not all(hasattr(paho, name) for name in needed):
        raise ConnectError(
            f"aiomqtt {aiomqtt.__version__} does not expose the paho client this transport "
            "needs for manual acknowledgements and its packet size limit; "
            "install aiomqtt>=2.3,<2.6 and paho-mqtt>=2.1,<2.3"
        )
    return paho


def _version_options(options: ConnectOptions) -> dict[str, Any]:
    """aiomqtt's keywords for MQTT 3.1.1, or for 5 with our CONNECT properties."""
    if not options.v5:
        return {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": options.clean_session}
    props = PahoProperties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = options.session_expiry
    props.ReceiveMaximum = options.receive_maximum
    props.MaximumPacketSize = options.max_packet_size
    return {
        "protocol": aiomqtt.ProtocolVersion.V5,
        "clean_start": options.clean_session,
        "properties": props,
    }


def paho_properties(p: MessageProperties) -> Any:
    """paho's PUBLISH properties of a message's properties."""
    props = PahoProperties(PacketTypes.PUBLISH)
    if p.payload_format_indicator is not None:
        props.PayloadFormatIndicator = p.payload_format_indicator
    if p.message_expiry_interval is not None:
        props.MessageExpiryInterval = p.message_expiry_interval
    if p.content_type is not None:
        props.ContentType = p.content_type
    if p.response_topic is not None:
        props.ResponseTopic = p.response_topic
    if p.correlation_data is not None:
        props.CorrelationData = p.correlation_data
    if p.user_properties:
        props.UserProperty = list(p.user_properties)
    return props


#: the PUBLISH properties a message carries on to its handler, as paho names its attributes
_READ_PROPERTIES: Final = frozenset(
    {"UserProperty", "ContentType", "PayloadFormatIndicator", "CorrelationData",
     "ResponseTopic", "MessageExpiryInterval"}
)  # fmt: skip


def _message_properties(props: Any) -> tuple[MessageProperties | None, float]:
    """A received message's properties and expiry deadline (None, 0.0 when it has none).

    paho keeps the properties a packet carried as attributes of its Properties object: read
    from its ``__dict__``, since a ``getattr`` that misses raises (and catches) an
    AttributeError, six times a message for the usual PUBLISH without properties.
    """
    if props is None:
        return None, 0.0
    present = vars(props)
    if present.keys().isdisjoint(_READ_PROPERTIES):
        return None, 0.0
    pairs = present.get("UserProperty", ())
    found = MessageProperties(
        user_properties=tuple((str(k), str(v)) for k, v in pairs),
        content_type=present.get("ContentType"),
        payload_format_indicator=present.get("PayloadFormatIndicator"),
        correlation_data=present.get("CorrelationData"),
        response_topic=present.get("ResponseTopic"),
        message_expiry_interval=present.get("MessageExpiryInterval"),
    )
    if found == NO_PROPERTIES:
        return None, 0.0
    expiry = found.message_expiry_interval
    return found, 0.0 if expiry is None else time.monotonic() + expiry


def _take_all(queue: asyncio.Queue[aiomqtt.Message]) -> list[Inbound]:
    batch: list[Inbound] = []
    while True:
        try:
            batch.append(_inbound(queue.get_nowait()))
        except asyncio.QueueEmpty:
            return batch


def _inbound(message: aiomqtt.Message) -> Inbound:
    qos = message.qos
    payload = message.payload
    properties, expires_at = _message_properties(message.properties)
    return Inbound(
        topic=message.topic.value,
        payload=payload if isinstance(payload, bytes) else bytes(payload),
        qos=qos,
        retain=message.retain,
        packet_id=message.mid if qos else 0,
        properties=properties,
        expires_at=expires_at,
    )


def _code(value: Any) -> int:
    """An int from paho's ReasonCode (or an int already)."""
    return int(getattr(value, "value", value))


def _refusal(exc: MqttConnectError, options: ConnectOptions, where: str) -> ConnectError:
    """NotAuthorized when retrying cannot help, else a ConnectError with aiomqtt's reason.

    paho reports a 3.1.1 return code as the 5.0 reason code it corresponds to (or, from some
    paths, as the plain return code); either way it is read back as the 3.1.1 code.
    """
    return_code = connack_return_code(_code(exc.rc)) if exc.rc is not None else None
    if return_code is not None and return_code in PERMANENT_REFUSALS:
        return not_authorized(return_code, options, where)
    return ConnectError(f"{where} refused the connection: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """The most telling text of an aiomqtt error (its cause carries the socket's reason)."""
    cause = exc.__cause__
    text = str(exc) or type(exc).__name__
    if cause is not None and str(cause) and str(cause) not in text:
        return f"{text} ({cause})"
    return text
