"""The platform's own messages: close codes, the ``mon`` status payloads and gateway notifications.

Status messages (W30-W35) are compact JSON objects whose fields come in the order of the IBM
proxy's ``ism_proxy_jsonMessage``::

    Action, Time, ClientAddr, ClientID, Port, Secure, Protocol, User, CertName, ConnectTime,
    CloseCode, Reason                          (only when the close code is not 0)
    ReadBytes, ReadMsg, WriteBytes, WriteMsg   (Disconnect only)

``User`` is left out for devices and gateways (user name ``use-token-auth``). Times are UTC
ISO-8601 with milliseconds and ``Z``. Whether a message is retained is decided by the server
(devices: Connect and Disconnect retained; applications: Connect retained, Disconnect not, and
the retained message is cleared first unless the close code is 288).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

DEVICE_TOKEN_USER: Final = "use-token-auth"


class CloseCode(IntEnum):
    """Why a connection ended: the ``CloseCode`` of a Disconnect status message (W40)."""

    NORMAL = 0
    CLIENT_CLOSED = 91
    SERVER_CLOSED = 92
    SERVER_SHUTDOWN = 93
    ADMIN = 94
    DATA_NOT_VALID = 105
    KEEPALIVE_TIMEOUT = 160
    NO_DATA = 164
    CLIENT_ID_NOT_VALID = 166
    NOT_AUTHORIZED = 180
    TOPIC_NOT_VALID = 276
    MESSAGE_TOO_LARGE = 287
    CLIENT_ID_REUSED = 288
    MAX_QOS = 291


REASONS: Final[dict[int, str]] = {
    CloseCode.NORMAL: "The connection has completed normally",
    CloseCode.CLIENT_CLOSED: "The connection was closed by the client",
    CloseCode.SERVER_CLOSED: "The connection was closed by the server",
    CloseCode.SERVER_SHUTDOWN: "The connection was closed because the server was shutdown",
    CloseCode.ADMIN: "The connection was closed by an administrator",
    CloseCode.DATA_NOT_VALID: "The data from the client is not valid",
    CloseCode.KEEPALIVE_TIMEOUT: "The connection timed out",
    CloseCode.NO_DATA: "No data was received on a connection",
    CloseCode.CLIENT_ID_NOT_VALID: "The ClientID is not valid",
    CloseCode.NOT_AUTHORIZED: "The operation is not authorized",
    CloseCode.TOPIC_NOT_VALID: "The topic is not valid",
    CloseCode.MESSAGE_TOO_LARGE: "The message size is too large for this endpoint",
    CloseCode.CLIENT_ID_REUSED: "The clientID was reused",
    CloseCode.MAX_QOS: "The requested quality of service is not allowed.",
}
"""The reason strings of the platform's closing-code table (D-APP)."""


class Action:
    """Values of the ``Action`` field."""

    CONNECT: Final = "Connect"
    DISCONNECT: Final = "Disconnect"
    FAILED_CONNECT: Final = "FailedConnect"


class _Second:
    """The formatted second of the last timestamp: a platform's timestamps mostly share it."""

    whole = -1
    text = ""


def timestamp(epoch: float | None = None) -> str:
    """ISO-8601 in UTC with milliseconds and ``Z``, e.g. ``2017-01-20T14:27:13.113Z`` (W33).

    The same text as ``datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")``
    (microseconds rounded, then milliseconds cut), in half its time: every connect and
    disconnect writes two of them.
    """
    moment = time.time() if epoch is None else epoch
    whole = math.floor(moment)
    micro = round((moment - whole) * 1_000_000)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    if whole != _Second.whole:
        _Second.whole, _Second.text = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_Second.text}.{micro // 1000:03d}Z"


def protocol_name(protocol_level: int, *, websocket: bool = False) -> str:
    """``mqtt3`` / ``mqtt4`` / ``mqtt5``, with ``-ws`` over WebSockets (W33)."""
    return f"mqtt{protocol_level}" + ("-ws" if websocket else "")


@dataclass(slots=True)
class Counters:
    """Traffic of one connection; "Read" is client to server."""

    read_bytes: int = 0
    read_msg: int = 0
    write_bytes: int = 0
    write_msg: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What a status message says about the connection, fixed when CONNECT arrives."""

    client_addr: str
    client_id: str
    port: int
    secure: bool
    protocol: str
    user: str | None
    connect_time: str
    cert_name: str | None = None


def status_payload(
    action: str,
    info: ConnectionInfo,
    close_code: int = 0,
    counters: Counters | None = None,
    *,
    reason: str | None = None,
    now: str | None = None,
) -> bytes:
    """The compact JSON of one status message, fields in the platform's order (W32)."""
    body: dict[str, object] = {
        "Action": action,
        "Time": now or timestamp(),
        "ClientAddr": info.client_addr,
    }
    if info.client_id:
        body["ClientID"] = info.client_id
    body["Port"] = info.port
    body["Secure"] = info.secure
    body["Protocol"] = info.protocol
    if info.user and info.user != DEVICE_TOKEN_USER:
        body["User"] = info.user
    if info.cert_name:
        body["CertName"] = info.cert_name
    body["ConnectTime"] = info.connect_time
    if close_code:
        body["CloseCode"] = close_code
        body["Reason"] = reason or REASONS.get(close_code, "The connection was closed")
    if action == Action.DISCONNECT:
        c = counters or Counters()
        body["ReadBytes"] = c.read_bytes
        body["ReadMsg"] = c.read_msg
        body["WriteBytes"] = c.write_bytes
        body["WriteMsg"] = c.write_msg
    return _compact(body)


def gateway_notification(
    request: str,
    topic: str,
    client_id: str,
    rc: int,
    message: str,
    *,
    device_type: str | None = None,
    device_id: str | None = None,
) -> bytes:
    """The payload a gateway gets on its ``notify`` topic when a request is refused (W39)."""
    body: dict[str, object] = {"Request": request, "Time": timestamp(), "Topic": topic}
    if device_type is not None:
        body["Type"] = device_type
    if device_id is not None:
        body["Id"] = device_id
    body["Client"] = client_id
    if rc:
        body["RC"] = rc
        body["Message"] = message
    return _compact(body)


def _compact(body: dict[str, object]) -> bytes:
    # Insertion order is the field order; ensure_ascii keeps the bytes plain for any consumer.
    # Not orjson, though it is faster: with its bytes as the retained statuses, the heap was
    # not given back after a flood (a second round of 2,000 idle devices cost 10.8 KB a
    # socket instead of 7.3 KB), most likely because it builds each in a larger buffer that
    # it cuts down, which leaves the statuses scattered over the heap.
    return json.dumps(body, separators=(",", ":")).encode()
