"""The table of settings: each one's variables, flag, parser and accepted values.

Environment names follow IBM's SDKs where they have one (``WIOTP_*``), so deployments move
over unchanged; everything else is ``WORKER_*`` and mirrors a flag. The parsers are in
``worker.parsers``; ``worker.config`` adds the name and the value to what they reject.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from worker import identity, topics
from worker.identity import IdentityMode
from worker.parsers import (
    DEAD_LETTER_FORMS,
    boolean,
    choice,
    dead_letter,
    enum_choice,
    integer,
    log_level,
    name,
    org,
    readable_file,
    seconds,
    secret,
    text,
)


class Profile(enum.StrEnum):
    """How the worker talks to its platform (docs/guide/configuration.md)."""

    WIOTP = "wiotp"
    MQTT = "mqtt"


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
