"""Dead letters: where a message goes when its handler failed for good (after its retries).

Sinks, chosen app-wide by ``WORKER_DEAD_LETTER`` and per route by ``dead_letter=``:

``log``                 a WARNING line on the ``worker.deadletter`` logger (the default)
``file:PATH``           one JSON object per line appended to PATH
``mqtt:TYPE/ID/EVENT``  a JSON event published to ``iot-2/type/TYPE/id/ID/evt/EVENT/fmt/json``
                        through the app's publisher
``none``                no dead letter; the failure keeps its own outcome
any object with ``async put(letter)`` and a ``name``: a custom sink

Every record has ``time`` (ISO-8601 UTC), ``route``, ``reason`` (error, timeout, decode_error),
``topic``, ``qos``, ``attempts``, ``error`` and ``payload``: the text when it is UTF-8,
otherwise base64, as ``payload_encoding`` says.

A sink that fails (a full or read-only disk, no connection) never crashes the worker: the
failure is logged (at most once a minute per sink, with a count) and :meth:`DeadLetters.send`
returns False, which the pipeline counts as dropped with reason ``dead_letter_failed``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Final, Protocol, runtime_checkable

import orjson

from worker.errors import PayloadTooLarge, one_line
from worker.parsers import dead_letter as _parse_spec

log = logging.getLogger("worker.deadletter")

#: how long one dead letter may take to be accepted by its sink
SEND_TIMEOUT: Final = 10.0
#: at most one failure report per sink per this many seconds
REPORT_EVERY: Final = 60.0
_PREVIEW: Final = 200


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One failed message, as every sink records it."""

    route: str
    reason: str
    topic: str
    payload: bytes
    qos: int = 0
    error: str | None = None
    attempts: int = 1
    #: seconds since the epoch when the handler gave up
    time: float = 0.0

    def record(self, *, with_payload: bool = True) -> dict[str, Any]:
        """The JSON object of this dead letter."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds"),
            "route": self.route,
            "reason": self.reason,
            "topic": self.topic,
            "qos": self.qos,
            "attempts": self.attempts,
            "error": self.error,
        }
        if with_payload:
            out["payload"], out["payload_encoding"] = _payload_text(self.payload)
        else:
            out["payload"], out["payload_encoding"] = None, "omitted: too large"
        return out


def _payload_text(payload: bytes) -> tuple[str, str]:
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


@runtime_checkable
class DeadLetterSink(Protocol):
    """Where dead letters go; ``put`` raises when the letter could not be kept."""

    name: str

    async def put(self, letter: DeadLetter) -> None:
        """Keep ``letter``, or raise."""


class LogSink:
    """A WARNING line per dead letter, with a preview of the payload."""

    name = "log"

    async def put(self, letter: DeadLetter) -> None:
        """Log ``letter``."""
        text, encoding = _payload_text(letter.payload[:_PREVIEW])
        log.warning(
            "dead letter: route=%s reason=%s topic=%s attempts=%d error=%s payload(%s)=%r%s",
            letter.route,
            letter.reason,
            letter.topic,
            letter.attempts,
            letter.error,
            encoding,
            text,
            "..." if len(letter.payload) > _PREVIEW else "",
        )


class FileSink:
    """JSON lines appended to a file.

    Writes are synchronous: dead letters are rare and a line to a local file takes
    microseconds, while a thread per write would reorder them. After a failed write the next
    record starts on a new line, so a torn line never glues two records together.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"file:{path}"
        self._file: IO[bytes] | None = None
        self._torn = False

    async def put(self, letter: DeadLetter) -> None:
        """Append ``letter`` as one line; OSError when the disk refuses."""
        self.write(orjson.dumps(letter.record()) + b"\n")

    def write(self, line: bytes) -> None:
        """Append one line (synchronously)."""
        try:
            if self._file is None:
                self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across writes
            self._file.write(b"\n" + line if self._torn else line)
            self._file.flush()
            self._torn = False
        except OSError:
            self._torn = True
            self.close()
            raise

    def close(self) -> None:
        """Close the file (it is reopened at the next letter)."""
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                log.debug("closing %s failed", self.path, exc_info=True)


class PublishEvent(Protocol):
    """``App.publish_event``."""

    def __call__(
        self,
        device_type: str,
        device_id: str,
        event: str,
        data: Any,
        format: str = ...,
        qos: int = ...,
    ) -> Awaitable[None]: ...


class MqttSink:
    """A JSON device event per dead letter, published with QoS 1 through the app."""

    def __init__(self, publish: PublishEvent, device_type: str, device_id: str, event: str) -> None:
        self._publish = publish
        self.device_type, self.device_id, self.event = device_type, device_id, event
        self.name = f"mqtt:{device_type}/{device_id}/{event}"
        self.topic = f"iot-2/type/{device_type}/id/{device_id}/evt/{event}/fmt/json"

    async def put(self, letter: DeadLetter) -> None:
        """Publish ``letter``; without its payload when the whole would exceed the limit."""
        if letter.topic == self.topic:
            # A dead letter whose own handler failed: sending it again would go round forever.
            raise RuntimeError(f"not sent again to its own topic {self.topic}")
        args = (self.device_type, self.device_id, self.event)
        try:
            await self._publish(*args, letter.record(), format="json", qos=1)
        except PayloadTooLarge:
            await self._publish(*args, letter.record(with_payload=False), format="json", qos=1)


SinkChoice = str | DeadLetterSink | None


def check_choice(choice: SinkChoice) -> SinkChoice:
    """Validate a route's ``dead_letter=``; ValueError names the accepted forms."""
    if choice is None or isinstance(choice, DeadLetterSink):
        return choice
    if isinstance(choice, str):
        return _parse_spec(choice)
    raise ValueError(f"a sink spec string or an object with async put(letter), not {choice!r}")


class DeadLetters:
    """Resolves a route's sink (its own, else the app-wide one) and sends to it safely."""

    def __init__(self, default: SinkChoice = "log", *, publish: PublishEvent | None = None) -> None:
        self._publish = publish
        self._by_spec: dict[str, DeadLetterSink | None] = {}
        self.default = self._resolve(default)
        self._failures: dict[str, tuple[float, int]] = {}

    def sink_for(self, choice: SinkChoice) -> DeadLetterSink | None:
        """The sink of a route: its own ``dead_letter=``, or the app-wide one when None."""
        return self.default if choice is None else self._resolve(choice)

    def _resolve(self, choice: SinkChoice) -> DeadLetterSink | None:
        if choice is None or isinstance(choice, DeadLetterSink):
            return choice
        spec = _parse_spec(choice)
        if spec not in self._by_spec:
            # one sink per spec, so routes writing to one file share its handle
            self._by_spec[spec] = self._build(spec)
        return self._by_spec[spec]

    def _build(self, spec: str) -> DeadLetterSink | None:
        kind, _, arg = spec.partition(":")
        if kind == "none":
            return None
        if kind == "file":
            return FileSink(arg)
        if kind == "mqtt":
            if self._publish is None:
                raise ValueError(f"dead letter {spec!r} needs the app's publisher")
            device_type, device_id, event = arg.split("/")
            return MqttSink(self._publish, device_type, device_id, event)
        return LogSink()

    async def send(self, sink: DeadLetterSink, letter: DeadLetter) -> bool:
        """Give ``letter`` to ``sink``; False (reported, never raised) when it fails."""
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await sink.put(letter)
        except Exception as exc:
            self._report(sink, letter, exc)
            return False
        return True

    def _report(self, sink: DeadLetterSink, letter: DeadLetter, exc: Exception) -> None:
        now = time.monotonic()
        last, missed = self._failures.get(sink.name, (-REPORT_EVERY, 0))
        if now - last < REPORT_EVERY:
            self._failures[sink.name] = (last, missed + 1)
            return
        self._failures[sink.name] = (now, 0)
        more = f" ({missed} more failures since the last report)" if missed else ""
        log.error(
            "dead-letter sink %s failed for route %s topic %s: %s%s; the message is lost",
            sink.name, letter.route, letter.topic, one_line(str(exc)) or type(exc).__name__, more,
        )  # fmt: skip

    def close(self) -> None:
        """Close file sinks (at shutdown)."""
        for sink in self._by_spec.values():
            if isinstance(sink, FileSink):
                sink.close()
