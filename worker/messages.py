"""What handlers receive: frozen Event, Command, DeviceStatus and AppStatus, and payload codecs.

Payloads are decoded lazily and by the topic's ``fmt``, through one process-wide registry:

=========  ==============================  ======================================
fmt        decode (bytes -> data)          encode (data -> bytes)
=========  ==============================  ======================================
``json``   orjson                          orjson
``text``   UTF-8 (invalid -> CodecError)   str as UTF-8
``bin``    the bytes unchanged             bytes, bytearray or memoryview
=========  ==============================  ======================================

Users add formats with :func:`register_codec` (registering a built-in name replaces it).
A format with no codec is a decode failure: ``Event.data`` raises CodecError naming the format,
which the pipeline counts as the outcome ``decode_error``; the raw bytes are always in
``Event.payload``. Guessing (bytes for one format, text for another) would hide a typo in
the device's topic until a handler misreads the data.

Status messages (``mon``) are the platform's JSON (see docs/platform/rules.md, W32-W35) and
are decoded when the message is built; missing keys are None, extra keys are kept in ``raw``.
An empty payload is the platform clearing a retained status (W30): every field is None and
``cleared`` is True.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from worker import topics
from worker.errors import CodecError

Decoder = Callable[[bytes], Any]
Encoder = Callable[[Any], bytes]


@dataclass(frozen=True, slots=True)
class Codec:
    """How one ``fmt`` turns bytes into data and back."""

    fmt: str
    decode: Decoder
    encode: Encoder


def _text_decode(payload: bytes) -> str:
    return payload.decode("utf-8")


def _text_encode(data: Any) -> bytes:
    if not isinstance(data, str):
        raise TypeError(f"text needs a str, not {type(data).__name__}")
    return data.encode("utf-8")


def _bin_decode(payload: bytes) -> bytes:
    return payload


def _bin_encode(data: Any) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"bin needs bytes, not {type(data).__name__}")
    return bytes(data)


_CODECS: dict[str, Codec] = {
    "json": Codec("json", orjson.loads, orjson.dumps),
    "text": Codec("text", _text_decode, _text_encode),
    "bin": Codec("bin", _bin_decode, _bin_encode),
}


def register_codec(fmt: str, decode: Decoder, encode: Encoder) -> None:
    """Use ``decode``/``encode`` for payloads whose topic says ``fmt``.

    ``fmt`` is a topic level (no ``/``, ``+``, ``#``). Either function signals bad input by
    raising; the exception becomes a CodecError. Replaces an earlier codec of the same name.
    """
    topics.check_level(fmt, "format")
    if not callable(decode) or not callable(encode):
        raise TypeError("register_codec needs a decode and an encode function")
    _CODECS[fmt] = Codec(fmt, decode, encode)


def codec(fmt: str) -> Codec | None:
    """The codec registered for ``fmt``, or None."""
    return _CODECS.get(fmt)


def decode(fmt: str, payload: bytes) -> Any:
    """Decode ``payload`` by its format; CodecError when that fails or no codec exists."""
    found = _CODECS.get(fmt)
    if found is None:
        raise CodecError(
            f"no codec for format {fmt!r} (known: {', '.join(sorted(_CODECS))}); "
            "register one with register_codec() or read the raw bytes from .payload"
        )
    try:
        return found.decode(payload)
    except Exception as exc:
        raise CodecError(f"payload is not valid {fmt!r}: {exc}") from exc


def encode(fmt: str, data: Any) -> bytes:
    """Encode ``data`` by a format; bytes-like data is sent as it is, whatever the format."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    found = _CODECS.get(fmt)
    if found is None:
        raise CodecError(f"no codec for format {fmt!r}; register one with register_codec()")
    try:
        return found.encode(data)
    except Exception as exc:
        raise CodecError(f"cannot encode {type(data).__name__} as {fmt!r}: {exc}") from exc


class _Unset:
    __slots__ = ()


_UNSET: Final = _Unset()


class _Decoded:
    """``data``, decoded on first use and kept; a failure is kept and raised again."""

    __slots__ = ()
    format: str
    payload: bytes
    _data: Any

    @property
    def data(self) -> Any:
        """The payload decoded by ``format``; CodecError (outcome ``decode_error``) if it fails."""
        value = self._data
        if value is _UNSET:
            try:
                value = decode(self.format, self.payload)
            except CodecError as exc:
                value = exc
            object.__setattr__(self, "_data", value)
        if isinstance(value, CodecError):
            raise value
        return value

    @property
    def decode_failed(self) -> bool:
        """Whether ``data`` was asked for and could not be decoded."""
        return isinstance(self._data, CodecError)


@dataclass(frozen=True, slots=True)
class Event(_Decoded):
    """A device event: ``iot-2/type/{device_type}/id/{device_id}/evt/{event}/fmt/{format}``.

    ``received_at`` is the wall-clock time (seconds since the epoch) the batch arrived.
    """

    device_type: str
    device_id: str
    event: str
    format: str
    payload: bytes
    topic: str = ""
    qos: int = 0
    retain: bool = False
    received_at: float = 0.0
    _data: Any = field(default=_UNSET, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Command(_Decoded):
    """A device command: ``iot-2/type/{device_type}/id/{device_id}/cmd/{command}/fmt/{format}``."""

    device_type: str
    device_id: str
    command: str
    format: str
    payload: bytes
    topic: str = ""
    qos: int = 0
    retain: bool = False
    received_at: float = 0.0
    _data: Any = field(default=_UNSET, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Status:
    """The fields of the platform's status JSON (W32), each None when absent or mistyped."""

    action: str | None = None
    time: datetime | None = None
    client_addr: str | None = None
    client_id: str | None = None
    port: int | None = None
    secure: bool | None = None
    protocol: str | None = None
    user: str | None = None
    cert_name: str | None = None
    connect_time: datetime | None = None
    close_code: int | None = None
    reason: str | None = None
    read_bytes: int | None = None
    read_msg: int | None = None
    write_bytes: int | None = None
    write_msg: int | None = None
    topic: str = ""
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    received_at: float = 0.0
    #: the whole decoded object, including keys this version does not know
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def connected(self) -> bool:
        """True for ``Action == "Connect"``."""
        return self.action == "Connect"

    @property
    def taken_over(self) -> bool:
        """Close code 288: the same client ID connected elsewhere; not an outage (W35)."""
        return self.close_code == 288

    @property
    def cleared(self) -> bool:
        """An empty payload: the platform removed the retained status (W30)."""
        return not self.payload


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus(_Status):
    """A device's connect/disconnect message from ``iot-2/type/{t}/id/{d}/mon``."""

    device_type: str
    device_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AppStatus(_Status):
    """An application's connect/disconnect message from ``iot-2/app/{app_id}/mon``."""

    app_id: str


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    # bool is an int subclass; a True port is a mistyped field, not port 1
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


#: status field -> (JSON key(s), converter); the docs spell the certificate key "Certname"
_STATUS_FIELDS: Final[tuple[tuple[str, tuple[str, ...], Callable[[Any], Any]], ...]] = (
    ("action", ("Action",), _text),
    ("time", ("Time",), _time),
    ("client_addr", ("ClientAddr",), _text),
    ("client_id", ("ClientID",), _text),
    ("port", ("Port",), _int),
    ("secure", ("Secure",), _bool),
    ("protocol", ("Protocol",), _text),
    ("user", ("User",), _text),
    ("cert_name", ("CertName", "Certname"), _text),
    ("connect_time", ("ConnectTime",), _time),
    ("close_code", ("CloseCode",), _int),
    ("reason", ("Reason",), _text),
    ("read_bytes", ("ReadBytes",), _int),
    ("read_msg", ("ReadMsg",), _int),
    ("write_bytes", ("WriteBytes",), _int),
    ("write_msg", ("WriteMsg",), _int),
)


def status_fields(payload: bytes) -> dict[str, Any]:
    """The keyword arguments of a status message from its JSON; CodecError if not an object."""
    if not payload:
        return {"raw": {}}
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"status payload is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise CodecError(f"status payload is a JSON {type(obj).__name__}, not an object")
    out: dict[str, Any] = {"raw": obj}
    for name, keys, convert in _STATUS_FIELDS:
        for key in keys:
            if key in obj:
                out[name] = convert(obj[key])
                break
    return out


Message = Event | Command | DeviceStatus | AppStatus
