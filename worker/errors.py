"""Every error the framework raises on purpose derives from one root.

Foreign errors (OSError, paho's, aiomqtt's, orjson's) are translated at the boundary with
``raise ... from exc`` so callers only ever catch these::

    WorkerError
    ├── ConfigError            a setting, variable or flag has a bad value (may list several)
    ├── TopicError             a topic or filter outside the iot-2 grammar
    ├── IdentityError          a bad org, app ID, client ID or API key
    │   └── QuickstartError    allowed on a real org, refused by quickstart's restrictions
    ├── RegistrationError      a handler cannot be registered (caught at import time)
    ├── AppLoadError           the handlers module cannot be imported, has no App, its App
    │                          no handler, or its startup hook failed
    ├── CodecError             a payload cannot be encoded or decoded for its format
    ├── PayloadTooLarge        a payload above the platform's 131072-byte limit
    ├── ProtocolError          bytes that are not valid MQTT (the sans-IO codec)
    │   ├── PacketTooLarge     a packet whose announced length exceeds the reader's bound
    │   ├── mqtt.decode.UnsupportedProtocolVersion   a CONNECT of a level we do not speak
    │   ├── platform.ws_handshake.HandshakeError     a bad WebSocket upgrade request
    │   └── platform.wsframes.FrameError             a bad WebSocket frame
    ├── ConnectError           could not reach or stay on the platform
    │   ├── NotAuthorized      the platform refused the credentials or client ID (CONNACK)
    │   ├── transports.base.ServerRefused       an MQTT 5 server refused a request (reason code)
    │   └── transports.base.ProtocolViolation   the server broke the protocol; reconnect
    ├── platform.rules.Denied  a client may not do this on the local platform (has a close code)
    ├── PermanentError         raised by a handler: this message can never succeed, do not
    │   │                      retry it (dead-lettered per the route)
    │   └── examples.storage.RefusedRow   a row PostgreSQL refuses (the storage example)
    ├── examples.storage.StorageError   PostgreSQL refused a COPY for a reason of its own
    │                                   (the table is gone, a right is missing)
    ├── tools.publish.PublishError   `worker publish`: a bad message or replay file
    ├── tools.shares.SharesError     `worker shares`: bad URLs, or Prometheus cannot be queried
    ├── tools.sim_payload.PayloadOptionError   `worker simulate`: a bad payload option
    └── tools.demo_procs.DemoError   `worker demo`: a process or phase that failed

The subclasses outside this module live beside the one piece of code that raises them.
"""

from __future__ import annotations

from collections.abc import Iterable


class WorkerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(WorkerError):
    """One or more settings are invalid; each problem names its variable or flag."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("\n".join(self.problems))


class TopicError(WorkerError, ValueError):
    """A topic, topic filter or topic component outside the iot-2 grammar."""


class IdentityError(WorkerError, ValueError):
    """An org ID, app ID, device ID, client ID or API key that breaks the platform's rules."""


class QuickstartError(IdentityError):
    """Something the quickstart service does not support (commands, wildcards, TLS, ...)."""


class RegistrationError(WorkerError, TypeError):
    """A handler that cannot be registered: not a coroutine, bad filter, duplicate route."""


class AppLoadError(WorkerError):
    """The handlers module cannot be imported, or holds no App."""


class CodecError(WorkerError, ValueError):
    """A payload that cannot be decoded (or a value that cannot be encoded) for its format."""


class PayloadTooLarge(WorkerError, ValueError):
    """A payload above the platform limit of 131072 bytes."""


class ProtocolError(WorkerError):
    """Bytes that are not valid MQTT, or a packet the peer may not send.

    ``complete`` holds the whole packets that a reader decoded from the same read before the
    bad bytes (set by ``worker.mqtt.reader``), so that a receiver can still act on them.
    """

    complete: tuple[object, ...] = ()


class PacketTooLarge(ProtocolError):
    """A packet whose announced remaining length exceeds what the reader accepts."""


class PermanentError(WorkerError):
    """Raise it (or a subclass) from a handler when the message can never succeed.

    The run is not retried, whatever the route's ``retries``: the message is dead-lettered
    (outcome ``dead_lettered``, or ``error`` without a sink) at once.
    """


class ConnectError(WorkerError):
    """The platform cannot be reached, or the connection was lost."""


class NotAuthorized(ConnectError):
    """The platform refused the connection: bad credentials or a client ID it does not accept."""

    def __init__(self, message: str, return_code: int) -> None:
        self.return_code = return_code
        super().__init__(message)


def one_line(text: str) -> str:
    """``text`` with its lines joined by ``; ``.

    Some errors span lines (PostgreSQL's carry a ``DETAIL:`` line); a log shipper that reads
    one record per line would split them, and a dead letter's ``error`` is read as one field.
    """
    if "\n" not in text and "\r" not in text:
        return text
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())
