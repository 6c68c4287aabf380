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

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Final, Protocol

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


#: topics whose seeded digest is kept (a fleet's device topics repeat); cleared when full
SEEDED_TOPICS: Final = 4096
_seeded: dict[str, Any] = {}


def message_key(topic: str, payload: bytes) -> str:
    """32 hex digits of a BLAKE2b digest of the topic, a NUL byte and the payload bytes.

    MQTT gives a message no identity that survives a redelivery (the packet ID is per
    connection), so the key is made of what the device sent: two deliveries share it when
    they carry the same bytes on the same topic - a redelivery after a lost acknowledgement
    (the broker's DUP resend, another instance after a crash) or a device that sent identical
    bytes twice. Payloads with a timestamp or sequence number keep the latter apart.

    The digest of each topic's prefix is kept and copied (about half the cost of hashing the
    topic again, which matters to a storage route that keys every row).
    """
    seeded = _seeded.get(topic)
    if seeded is None:
        if len(_seeded) >= SEEDED_TOPICS:
            _seeded.clear()
        seeded = _seeded[topic] = hashlib.blake2b(topic.encode() + b"\0", digest_size=16)
    digest = seeded.copy()
    digest.update(payload)
    return digest.hexdigest()


class _Decoded:
    """``data``, decoded on first use and kept; a failure is kept and raised again."""

    __slots__ = ()
    format: str
    topic: str
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
    def key(self) -> str:
        """A stable key to de-duplicate on: see :func:`message_key`."""
        return message_key(self.topic, self.payload)

    @property
    def decode_failed(self) -> bool:
        """Whether ``data`` was asked for and could not be decoded."""
        return isinstance(self._data, CodecError)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageProperties:
    """The MQTT 5 properties of a message; every field is empty on MQTT 3.1.1.

    ``user_properties`` keeps the publisher's order and repeats (it is a list of pairs, not a
    mapping). ``message_expiry_interval`` is the seconds left when the message was received.
    """

    user_properties: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    #: 1: the payload is UTF-8 text, 0: unspecified bytes, None: not said
    payload_format_indicator: int | None = None
    correlation_data: bytes | None = None
    response_topic: str | None = None
    message_expiry_interval: int | None = None

    def __post_init__(self) -> None:
        _check_properties(self)

    def user_property(self, name: str) -> str | None:
        """The value of the first user property called ``name``, or None."""
        for key, value in self.user_properties:
            if key == name:
                return value
        return None

    def with_user_property(self, name: str, value: str) -> MessageProperties:
        """A copy with ``(name, value)`` added at the end of the user properties."""
        return replace(self, user_properties=(*self.user_properties, (name, value)))


_U32_MAX: Final = 0xFFFF_FFFF


def _check_properties(p: MessageProperties) -> None:
    """Refuse what MQTT 5 cannot carry, naming the field and what is accepted."""
    pairs = p.user_properties
    if not isinstance(pairs, tuple) or not all(
        isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        for pair in pairs
    ):
        raise ValueError(f"user_properties={pairs!r}: accepted is a tuple of (str, str) pairs")
    for name in ("content_type", "response_topic"):
        value = getattr(p, name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name}={value!r}: accepted is None or a str")
    if p.payload_format_indicator not in (None, 0, 1):
        raise ValueError(
            f"payload_format_indicator={p.payload_format_indicator!r}: accepted are None, 0, 1"
        )
    if p.correlation_data is not None and not isinstance(p.correlation_data, bytes):
        raise ValueError(f"correlation_data={p.correlation_data!r}: accepted is None or bytes")
    expiry = p.message_expiry_interval
    if expiry is not None and (
        not isinstance(expiry, int) or isinstance(expiry, bool) or not 0 <= expiry <= _U32_MAX
    ):
        raise ValueError(
            f"message_expiry_interval={expiry!r}: accepted is None or seconds from 0 to {_U32_MAX}"
        )


NO_PROPERTIES: Final = MessageProperties()
"""The properties of a message that has none (every MQTT 3.1.1 message)."""


@dataclass(frozen=True, slots=True)
class Event(_Decoded):
    """A device event: ``iot-2/type/{device_type}/id/{device_id}/evt/{event}/fmt/{format}``.

    ``received_at`` is the wall-clock time (seconds since the epoch) the batch arrived;
    ``properties`` are its MQTT 5 properties (empty on MQTT 3.1.1).
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
    properties: MessageProperties = NO_PROPERTIES
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
    properties: MessageProperties = NO_PROPERTIES
    _data: Any = field(default=_UNSET, init=False, repr=False, compare=False)


class DeviceMessageBuilder(Protocol):
    """Builds an Event or a Command from its ten constructor fields, in their order."""

    def __call__(
        self, device_type: str, device_id: str, name: str, format: str, payload: bytes,
        topic: str, qos: int, retain: bool, received_at: float, properties: MessageProperties,
    ) -> Event | Command: ...  # fmt: skip


def _slot_builder(cls: type[Event] | type[Command]) -> DeviceMessageBuilder:
    """``cls(...)`` for every message the router builds, at about half the cost.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (looked up
    per field, then the generic attribute machinery): about 1.2 us for these eleven slots,
    a seventh of a no-op worker's time per QoS 0 message. Setting the slots through their
    descriptors directly builds the same object (``==`` to ``cls(...)``, data not yet decoded)
    in about 0.7 us. tests/test_messages.py holds the two to the same fields.
    """
    names = [f.name for f in fields(cls)]
    setters = [getattr(cls, name).__set__ for name in names]
    (s_type, s_id, s_name, s_format, s_payload, s_topic, s_qos, s_retain, s_at, s_props,
     s_data) = setters  # fmt: skip
    new = object.__new__

    def build(
        device_type: str, device_id: str, name: str, format: str, payload: bytes, topic: str,
        qos: int, retain: bool, received_at: float, properties: MessageProperties,
    ) -> Event | Command:  # fmt: skip
        message = new(cls)
        s_type(message, device_type)
        s_id(message, device_id)
        s_name(message, name)
        s_format(message, format)
        s_payload(message, payload)
        s_topic(message, topic)
        s_qos(message, qos)
        s_retain(message, retain)
        s_at(message, received_at)
        s_props(message, properties)
        s_data(message, _UNSET)
        return message

    return build


#: the router's way to build an Event / a Command (see ``_slot_builder``)
build_event: Final = _slot_builder(Event)
build_command: Final = _slot_builder(Command)


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

    @property
    def key(self) -> str:
        """A stable key to de-duplicate on: see :func:`message_key`."""
        return message_key(self.topic, self.payload)


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
