"""Publishing from the shell: one event, one command, or a replay of past device data.

``worker publish event|command`` sends one message as an application on a device's behalf
(W8: "an application can publish events as if they came from any registered device").
``worker publish replay FILE.jsonl`` is IBM's "migrate existing data from a device": one
JSON object per line, each a past event, re-published at a chosen rate.

Every message is checked before anything is sent: its topic by the iot-2 grammar and its size
against the platform's 131072-byte limit (the platform disconnects a client that sends more).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from worker import messages, topics
from worker.app import MAX_PAYLOAD
from worker.config import Settings
from worker.connection import connect_options
from worker.errors import ConnectError, TopicError, WorkerError
from worker.options import Profile
from worker.transports.aiomqtt_transport import AiomqttTransport
from worker.transports.base import ConnectOptions, Transport

#: the platform counts topic characters beyond this many against the payload limit
_TOPIC_ALLOWANCE: Final = 200
#: a replay keeps at most this many QoS 1 publishes waiting for their PUBACK
REPLAY_IN_FLIGHT: Final = 100
_KEYS: Final = {
    "device_type": ("type", "typeId", "device_type", "deviceType"),
    "device_id": ("id", "deviceId", "device_id"),
    "event": ("event", "eventId", "evt"),
}


class PublishError(WorkerError):
    """A message that cannot be sent as given: bad topic, bad payload, too large, bad file."""


def _check_json_data(data: bytes) -> None:
    """Refuse ``--data`` that is not JSON on the ``json`` format, saying what is accepted."""
    try:
        json.loads(data)
    except UnicodeDecodeError as exc:
        raise PublishError(
            f"--data {_shown(data)} is not UTF-8 (byte {exc.start + 1}), but the format is "
            "json, which is UTF-8 text: give JSON, or another format for other bytes "
            "(--format bin)"
        ) from None
    except json.JSONDecodeError as exc:
        raise PublishError(
            f"--data {_shown(data)} is not JSON ({exc.msg}), but the format is json: give JSON, "
            """e.g. --json '{"temp": 50}', or another format for other text (--format text)"""
        ) from None


def _shown(data: bytes) -> str:
    """``data`` quoted for a message, bytes that are not UTF-8 as escapes."""
    return f"'{data.decode(errors='backslashreplace')}'"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One checked message, ready to go."""

    topic: str
    payload: bytes


def client_id_for(settings: Settings, role: str) -> str:
    """A client ID of its own for a tool (``a:org:role-xxxxxx``), so it joins no worker group."""
    suffix = secrets.token_hex(3)
    if settings.profile is Profile.MQTT:
        return f"{settings.app_id}-{role}-{suffix}"
    return f"a:{settings.org}:{role}-{suffix}"


def tool_options(settings: Settings, role: str, client_id: str | None = None) -> ConnectOptions:
    """The worker's connection settings (host, TLS, credentials) with the tool's client ID."""
    return replace(connect_options(settings), client_id=client_id or client_id_for(settings, role))


def payload_of(fmt: str, json_text: str | None, data: str | None) -> bytes:
    """The payload of ``--json TEXT`` (checked, compacted) or ``--data TEXT`` (sent as is).

    ``--data`` on the ``json`` format must be JSON too: the handlers of ``fmt/json`` decode
    it as JSON, so anything else would only fail there, as a decode error.
    """
    if json_text is not None and data is not None:
        raise PublishError("give --json or --data, not both")
    if json_text is None:
        # the bytes given: the shell passes bytes, which Python decoded with surrogateescape
        raw = os.fsencode(data or "")
        if fmt == "json" and data is not None:
            _check_json_data(raw)
        return raw
    try:
        parsed = json.loads(os.fsencode(json_text))
    except UnicodeDecodeError as exc:
        raise PublishError(
            f"--json is not UTF-8 (byte {exc.start + 1}): JSON is UTF-8 text"
        ) from None
    except json.JSONDecodeError as exc:
        raise PublishError(f"--json is not valid JSON: {exc}") from exc
    if fmt != "json":
        raise PublishError(f"--json sends JSON; the format is {fmt!r} (use --data for it)")
    return messages.encode("json", parsed)


def checked(topic: str, payload: bytes) -> Outgoing:
    """The message, or PublishError when it is above the platform's size limit."""
    extra = max(0, len(topic.encode()) - _TOPIC_ALLOWANCE)
    if len(payload) + extra > MAX_PAYLOAD:
        raise PublishError(
            f"{topic}: the payload is {len(payload)} bytes; the platform accepts at most "
            f"{MAX_PAYLOAD} and disconnects a client that sends more"
        )
    return Outgoing(topic, payload)


def event_message(
    device_type: str, device_id: str, event: str, fmt: str, payload: bytes
) -> Outgoing:
    """A device event sent on the device's behalf: ``iot-2/type/T/id/D/evt/E/fmt/F``."""
    try:
        topic = topics.device_event(device_type, device_id, event, fmt)
    except TopicError as exc:
        raise PublishError(str(exc)) from exc
    return checked(str(topic), payload)


def command_message(
    device_type: str, device_id: str, command: str, fmt: str, payload: bytes
) -> Outgoing:
    """A command to one device: ``iot-2/type/T/id/D/cmd/C/fmt/F``."""
    try:
        topic = topics.device_command(device_type, device_id, command, fmt)
    except TopicError as exc:
        raise PublishError(str(exc)) from exc
    return checked(str(topic), payload)


# --- replay files ------------------------------------------------------------------------------


def _field(record: dict[str, Any], name: str, where: str) -> str:
    for key in _KEYS[name]:
        value = record.get(key)
        if isinstance(value, str):
            return value
    raise PublishError(f"{where}: no {name.replace('_', ' ')} (one of {', '.join(_KEYS[name])})")


def replay_message(line: str, where: str) -> Outgoing:
    """One line of a replay file as a message; PublishError naming the line when it is bad.

    A line is ``{"type": T, "id": D, "event": E, "data": {...}}``; ``format`` (default json)
    and IBM's export names (``typeId``, ``deviceId``, ``eventId``) are accepted too. With a
    format other than json, ``data`` is a string sent as it is.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PublishError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise PublishError(f"{where}: expected a JSON object")
    fmt = record.get("format", record.get("fmt", "json"))
    if not isinstance(fmt, str):
        raise PublishError(f"{where}: format must be a string")
    data = record.get("data", record.get("payload", {}))
    if fmt != "json" and not isinstance(data, str):
        raise PublishError(f"{where}: with format {fmt!r}, data must be a string")
    payload = messages.encode("json", data) if fmt == "json" else str(data).encode()
    try:
        return event_message(
            _field(record, "device_type", where),
            _field(record, "device_id", where),
            _field(record, "event", where),
            fmt,
            payload,
        )
    except PublishError as exc:
        if str(exc).startswith(where):
            raise
        raise PublishError(f"{where}: {exc}") from exc


def read_replay(path: Path) -> list[Outgoing]:
    """Every message of a JSON-lines file, all checked before any is sent (blank lines skip)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PublishError(f"cannot read {path}: {exc}") from exc
    found = [
        replay_message(line, f"{path}:{number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not found:
        raise PublishError(f"{path}: no events in the file")
    return found


# --- sending -----------------------------------------------------------------------------------


@asynccontextmanager
async def connected(options: ConnectOptions) -> AsyncIterator[Transport]:
    """A connected transport, disconnected on the way out (ConnectError if it cannot connect)."""
    transport = AiomqttTransport()
    await transport.connect(options)
    try:
        yield transport
    finally:
        await transport.disconnect()


async def publish_one(options: ConnectOptions, message: Outgoing, qos: int) -> None:
    """Connect, publish (waiting for the PUBACK at QoS 1) and disconnect."""
    async with connected(options) as transport:
        await transport.publish(message.topic, message.payload, qos=qos)


@dataclass
class ReplayProgress:
    """How far a replay got."""

    total: int
    sent: int = 0
    started: float = 0.0

    def line(self) -> str:
        """``sent 120/500 (40.0/s)``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return f"sent {self.sent}/{self.total} ({self.sent / elapsed:.1f}/s)"


async def replay(
    options: ConnectOptions,
    found: Iterable[Outgoing],
    *,
    rate: float,
    qos: int,
    report: Callable[[ReplayProgress], None],
) -> ReplayProgress:
    """Publish every message at ``rate`` per second (0: as fast as acks allow), in file order.

    Messages leave in order; at QoS 1 up to REPLAY_IN_FLIGHT wait for their PUBACK together.
    ``report`` is called about once a second and at the end.
    """
    items = list(found)
    progress = ReplayProgress(total=len(items), started=time.monotonic())
    loop = asyncio.get_running_loop()
    window = asyncio.Semaphore(REPLAY_IN_FLIGHT)
    next_report = loop.time() + 1.0

    async def send(transport: Transport, message: Outgoing) -> None:
        try:
            await transport.publish(message.topic, message.payload, qos=qos)
            progress.sent += 1
        finally:
            window.release()

    try:
        async with connected(options) as transport, asyncio.TaskGroup() as tg:
            for index, message in enumerate(items):
                if rate > 0:
                    # The pace of the replay, not a synchronisation: message i leaves at i / rate.
                    await asyncio.sleep(
                        max(0.0, progress.started + index / rate - time.monotonic())
                    )
                await window.acquire()
                tg.create_task(send(transport, message))
                if loop.time() >= next_report:
                    next_report = loop.time() + 1.0
                    report(progress)
    except* ConnectError as group:
        # A lost connection stops the replay; say how far it got (the rest can be re-run).
        report(progress)
        raise ConnectError(f"{group.exceptions[0]} after {progress.sent} events") from None
    report(progress)
    return progress
