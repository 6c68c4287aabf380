"""Watching a topic while debugging: ``worker subscribe [FILTER...]`` prints what arrives.

It connects with the worker's own settings (profile, host, TLS, credentials) under a client ID
of its own (``a:org:subscribe-xxxxxx``, or ``{app}-subscribe-xxxxxx`` on the ``mqtt`` profile),
so it joins no worker's share: on a standard broker it subscribes to the plain filter and sees
a copy of every message; on a Watson IoT platform it is one more application and sees a copy
of the events its filter matches. It never takes messages away from the workers.

Each message is one line: ``TOPIC PAYLOAD`` (text as it is, other bytes as ``<N bytes: hex>``),
or with ``--json`` one JSON object a line (``topic``, ``qos``, ``retain``, ``payload``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import orjson

from worker import topics
from worker.errors import ConnectError, TopicError
from worker.mqtt import SubackReturnCode
from worker.tools.publish import PublishError
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Inbound

#: every device event, of any type, device, event and format
DEFAULT_FILTER: Final = "iot-2/type/+/id/+/evt/+/fmt/+"
#: bytes of a binary payload shown in hex
_HEX_SHOWN: Final = 32


def check_filters(filters: Sequence[str], *, wiotp: bool) -> list[str]:
    """The filters to subscribe to (the default when none); PublishError for a bad one.

    A Watson IoT platform closes the connection of an application that subscribes outside
    its iot-2 topics (``#`` included), so on the ``wiotp`` profile they are checked by that
    grammar first; a standard broker takes any valid MQTT filter.
    """
    try:
        if wiotp:
            return [str(topics.parse_filter(f)) for f in filters] or [DEFAULT_FILTER]
        return [topics.validate_filter(f) for f in filters] or [DEFAULT_FILTER]
    except TopicError as exc:
        raise PublishError(str(exc)) from None


def _text(payload: bytes) -> str | None:
    """The payload as text when it is UTF-8 without control characters but tab and newline."""
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return None
    return text


def line(message: Inbound, *, as_json: bool = False) -> str:
    """One message as one line of output."""
    text = _text(message.payload)
    if as_json:
        record = {
            "topic": message.topic,
            "qos": message.qos,
            "retain": message.retain,
            "payload": text,
            "payload_hex": None if text is not None else message.payload.hex(),
        }
        return orjson.dumps(record).decode()
    if text is None:
        shown = message.payload[:_HEX_SHOWN].hex()
        more = "…" if len(message.payload) > _HEX_SHOWN else ""
        text = f"<{len(message.payload)} bytes: {shown}{more}>"
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    return f"{message.topic} {flat}" + (" (retained)" if message.retain else "")


async def watch(
    options: ConnectOptions,
    filters: Sequence[str],
    qos: int,
    on_message: Callable[[Inbound], None],
    *,
    count: int | None = None,
    on_subscribed: Callable[[list[str]], None] | None = None,
) -> int:
    """Subscribe and hand each message to ``on_message`` until ``count`` (None: until cancelled
    or the connection ends); the number of messages seen. ConnectError when refused."""
    transport = AiomqttTransport()
    await transport.connect(options)
    try:
        granted = await transport.subscribe([(f, qos) for f in filters])
        refused = [
            f for f, g in zip(filters, granted, strict=True) if g >= SubackReturnCode.FAILURE
        ]
        if refused:
            raise ConnectError(
                f"{options.host}:{options.port} refused the subscription to "
                f"{', '.join(refused)}: check the filter and the broker's ACL"
            )
        if on_subscribed is not None:
            on_subscribed(list(filters))
        seen = 0
        async for batch in transport.batches():
            wanted = batch if count is None else batch[: count - seen]
            for message in wanted:
                on_message(message)
            seen += len(wanted)
            transport.ack([m.packet_id for m in wanted if m.qos])
            if count is not None and seen >= count:
                break
        return seen
    finally:
        await transport.disconnect()
