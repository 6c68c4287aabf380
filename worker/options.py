"""The table of settings: each one's variables, flag, parser and accepted values.

Environment names follow IBM's SDKs where they have one (``WIOTP_*``), so deployments move
over unchanged; everything else is ``WORKER_*`` and mirrors a flag. A parser raises
ValueError whose text says what is accepted; ``worker.config`` adds the name and the value.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from worker import identity, topics
from worker.errors import IdentityError, TopicError
from worker.identity import IdentityMode


class Profile(enum.StrEnum):
    """How the worker talks to its platform (DESIGN.md section 5)."""

    WIOTP = "wiotp"
    MQTT = "mqtt"


E = TypeVar("E", bound=enum.Enum)


def choice(*accepted: str) -> Callable[[str], str]:
    """A parser accepting one of ``accepted`` (case-insensitive)."""

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in accepted:
            raise ValueError(f"accepted are {', '.join(accepted)}")
        return value

    return parse


def enum_choice(kind: type[E]) -> Callable[[str], E]:
    """A parser accepting the values of an enum."""
    values = [m.value for m in kind]
    pick = choice(*values)
    return lambda raw: kind(pick(raw))


def integer(lo: int, hi: int) -> Callable[[str], int]:
    """A parser for a whole number in [lo, hi]."""

    def parse(raw: str | int) -> int:
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"accepted is a whole number from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"accepted is a whole number from {lo} to {hi}")
        return value

    return parse


def seconds(lo: float, hi: float) -> Callable[[str], float]:
    """A parser for a duration in seconds in [lo, hi]."""

    def parse(raw: str | float) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"accepted is a number of seconds from {lo:g} to {hi:g}") from None
        if not lo <= value <= hi:
            raise ValueError(f"accepted is a number of seconds from {lo:g} to {hi:g}")
        return value

    return parse


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def boolean(raw: str | bool) -> bool:
    """A parser for yes/no values."""
    if isinstance(raw, bool):
        return raw
    value = raw.strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ValueError("accepted are true, false, 1, 0, yes, no, on, off")


def name(what: str) -> Callable[[str], str]:
    """A parser for an app ID or instance ID: 1-36 of ``[A-Za-z0-9._-]``."""

    def parse(raw: str) -> str:
        try:
            return topics.check_name(raw, what)
        except TopicError:
            raise ValueError(f"allowed are {topics.NAME_RULE}") from None

    return parse


def org(raw: str) -> str:
    """A parser for an organisation ID."""
    try:
        return identity.check_org(raw)
    except IdentityError:
        raise ValueError(f"allowed are {identity.ORG_RULE}") from None


def text(raw: str) -> str:
    """A parser for free text without spaces (host names, API keys, user names)."""
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("accepted is a non-empty value without spaces")
    return value


class Secret:
    """A value that never shows in ``repr``, ``str``, logs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value, for the one place that sends it to the platform."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def secret(raw: str) -> Secret:
    """A parser that wraps the value so it never shows (tokens, passwords)."""
    if not raw:
        raise ValueError("accepted is a non-empty value")
    return Secret(raw)


def readable_file(raw: str) -> str:
    """A parser for a path that must be a readable file (a CA bundle)."""
    if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
        raise ValueError("accepted is the path of a readable PEM file")
    return raw


def log_level(raw: str) -> str:
    """A parser for a log level; ``warn`` is taken as ``warning``."""
    value = raw.strip().lower()
    value = "warning" if value == "warn" else value
    return choice("debug", "info", "warning", "error", "critical")(value)


DEAD_LETTER_FORMS: Final = "log, none, file:PATH, mqtt:TYPE/ID/EVENT"


def dead_letter(raw: str) -> str:
    """A parser for a dead-letter sink: ``log``, ``none``, ``file:PATH`` or ``mqtt:T/ID/EVENT``.

    Returns the spec with its kind lower-cased; ``worker.deadletter`` builds the sink from it.
    """
    value = raw.strip()
    kind, sep, arg = value.partition(":")
    kind = kind.lower()
    if not sep and kind in ("log", "none"):
        return kind
    if sep and kind == "file" and arg.strip():
        return f"file:{arg}"
    if sep and kind == "mqtt":
        parts = arg.split("/")
        if len(parts) != 3:
            raise ValueError(f"mqtt:TYPE/ID/EVENT names a device event topic, not {arg!r}")
        try:
            topics.device_event(parts[0], parts[1], parts[2], "json")
        except TopicError as exc:
            raise ValueError(f"mqtt:TYPE/ID/EVENT names a device event topic ({exc})") from None
        return f"mqtt:{arg}"
    raise ValueError(f"accepted are {DEAD_LETTER_FORMS}")


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: where it comes from and what it accepts."""

    field: str
    envs: tuple[str, ...]
    flag: str
    parse: Callable[[Any], Any]
    accepted: str
    default: str
    help: str
    secret: bool = False
    is_flag: bool = False


def _o(
    field: str,
    envs: str,
    flag: str,
    parse: Callable[[Any], Any],
    accepted: str,
    default: str,
    help: str,
    **kw: bool,
) -> Option:
    return Option(field, tuple(envs.split()), flag, parse, accepted, default, help, **kw)


OPTIONS: Final[tuple[Option, ...]] = (
    _o(
        "api_key",
        "WIOTP_AUTH_KEY WIOTP_API_KEY",
        "--auth-key",
        text,
        "a-{org}-{rest}",
        "none (quickstart)",
        "application API key; the org is taken from it",
    ),
    _o(
        "api_token",
        "WIOTP_AUTH_TOKEN WIOTP_API_TOKEN",
        "--auth-token",
        secret,
        "the key's token",
        "none",
        "authentication token of the API key (never shown)",
        secret=True,
    ),
    _o(
        "app_id",
        "WIOTP_IDENTITY_APPID",
        "--app-id",
        name("app ID"),
        topics.NAME_RULE,
        "worker",
        "application ID; every replica of one application uses the same",
    ),
    _o(
        "org",
        "WORKER_ORG",
        "--org",
        org,
        identity.ORG_RULE,
        "from the API key, else quickstart",
        "organisation ID when there is no API key (quickstart, mqtt profile)",
    ),
    _o(
        "profile",
        "WORKER_PROFILE",
        "--profile",
        enum_choice(Profile),
        "wiotp, mqtt",
        "wiotp",
        "wiotp: Watson IoT client IDs; mqtt: a standard broker with $share subscriptions",
    ),
    _o(
        "identity",
        "WORKER_IDENTITY",
        "--identity",
        enum_choice(IdentityMode),
        "shared, shared-durable, standalone",
        "shared",
        "shared A:org:app, shared-durable A:org:app:instance, standalone a:org:app",
    ),
    _o(
        "instance_id",
        "WIOTP_OPTIONS_MQTT_INSTANCEID",
        "--instance-id",
        name("instance ID"),
        topics.NAME_RULE,
        "unset",
        "selects shared-durable, with this instance ID",
    ),
    _o(
        "instance",
        "WORKER_INSTANCE",
        "--instance",
        name("instance"),
        topics.NAME_RULE,
        "the host name (pod name)",
        "this instance's name in metrics and mqtt client IDs",
    ),
    _o(
        "host",
        "WORKER_HOST",
        "--host",
        text,
        "a host name or address",
        "{org}.messaging.{domain}",
        "platform or broker host; overrides the IBM host",
    ),
    _o(
        "domain",
        "WIOTP_OPTIONS_DOMAIN",
        "--domain",
        text,
        "a DNS domain",
        "internetofthings.ibmcloud.com",
        "IBM messaging domain",
    ),
    _o(
        "port",
        "WIOTP_OPTIONS_MQTT_PORT",
        "--port",
        integer(1, 65535),
        "1-65535",
        "8883 TLS, 1883 plain, 443/80 WebSockets",
        "platform or broker port",
    ),
    _o(
        "mqtt_transport",
        "WIOTP_OPTIONS_MQTT_TRANSPORT",
        "--mqtt-transport",
        choice("tcp", "websockets"),
        "tcp, websockets",
        "tcp",
        "MQTT over TCP or WebSockets",
    ),
    _o(
        "tls",
        "WORKER_TLS",
        "--tls/--no-tls",
        boolean,
        "true, false",
        "on for IBM's host",
        "TLS 1.2+; on by default for the IBM host, off for an explicit host",
        is_flag=True,
    ),
    _o(
        "cafile",
        "WIOTP_OPTIONS_MQTT_CAFILE",
        "--cafile",
        readable_file,
        "a readable PEM file",
        "the system store",
        "CA bundle to verify the server with",
    ),
    _o(
        "keepalive",
        "WIOTP_OPTIONS_MQTT_KEEPALIVE",
        "--keepalive",
        integer(1, 3600),
        "1-3600",
        "60",
        "MQTT keepalive in seconds",
    ),
    _o(
        "log_level",
        "WIOTP_OPTIONS_LOGLEVEL",
        "--log-level",
        log_level,
        "debug, info, warning, error, critical",
        "info",
        "log level",
    ),
    _o(
        "log_format",
        "WORKER_LOG_FORMAT",
        "--log-format",
        choice("text", "json"),
        "text, json",
        "text",
        "log line format",
    ),
    _o(
        "username",
        "WORKER_USERNAME",
        "--username",
        text,
        "a user name",
        "none",
        "broker user name (mqtt profile)",
    ),
    _o(
        "password",
        "WORKER_PASSWORD",
        "--password",
        secret,
        "the user's password",
        "none",
        "broker password (mqtt profile; never shown)",
        secret=True,
    ),
    _o(
        "qos",
        "WORKER_QOS",
        "--qos",
        integer(0, 1),
        "0, 1",
        "1",
        "subscription QoS: 1 at-least-once (acked after the handler), 0 at-most-once",
    ),
    _o(
        "concurrency",
        "WORKER_CONCURRENCY",
        "--concurrency",
        integer(1, 10_000),
        "1-10000",
        "16",
        "handler lanes running at once",
    ),
    _o(
        "intake_size",
        "WORKER_INTAKE_SIZE",
        "--intake-size",
        integer(1, 10_000_000),
        "1-10000000",
        "10000",
        "bound of the intake queue",
    ),
    _o(
        "overflow",
        "WORKER_OVERFLOW",
        "--overflow",
        choice("drop-oldest", "block"),
        "drop-oldest, block",
        "drop-oldest",
        "QoS 0 intake overflow policy (drops are counted)",
    ),
    _o(
        "drain_timeout",
        "WORKER_DRAIN_TIMEOUT",
        "--drain-timeout",
        seconds(0, 3600),
        "0-3600",
        "25",
        "seconds to finish in-flight messages on SIGTERM",
    ),
    _o(
        "dead_letter",
        "WORKER_DEAD_LETTER",
        "--dead-letter",
        dead_letter,
        DEAD_LETTER_FORMS,
        "log",
        "where failed messages go after their retries (routes may choose their own)",
    ),
    _o(
        "loop",
        "WORKER_LOOP",
        "--loop",
        choice("auto", "asyncio", "uvloop"),
        "auto, asyncio, uvloop",
        "auto",
        "event loop; auto is uvloop where installed",
    ),
    _o(
        "transport",
        "WORKER_TRANSPORT",
        "--transport",
        choice("aiomqtt", "native"),
        "aiomqtt, native",
        "native",
        "MQTT client implementation: native (the fast one) or aiomqtt; WebSockets use aiomqtt",
    ),
    _o(
        "metrics_host",
        "WORKER_METRICS_HOST",
        "--metrics-host",
        text,
        "an address",
        "0.0.0.0",
        "address of the /metrics, /livez, /readyz server",
    ),
    _o(
        "metrics_port",
        "WORKER_METRICS_PORT",
        "--metrics-port",
        integer(0, 65535),
        "0-65535 (0: any free port)",
        "9100",
        "port of the /metrics, /livez, /readyz server",
    ),
)

_BY_FIELD: Final = {o.field: o for o in OPTIONS}


def by_field(field_name: str) -> Option:
    """The option of a Settings field."""
    return _BY_FIELD[field_name]
