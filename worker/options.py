"""The table of settings: each one's variables, flag, parser, default and help.

Environment names follow IBM's SDKs where they have one (``WIOTP_*``), so deployments move
over unchanged; everything else is ``WORKER_*`` and mirrors a flag. The parsers are in
``worker.parsers`` and say what they accept; ``worker.config`` adds the name and the value to
what they reject. Each fact is written once: a fixed default here (``Settings`` takes its field
defaults from :func:`default_of`), the accepted values in the parser, and the flags' help and
docs/reference/settings.md (``scripts/render_settings.py``) are made from the table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from worker.identity import IdentityMode
from worker.parsers import (
    Parser,
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One setting: where it comes from, what it accepts, its default and what it does.

    ``default`` is a fixed default as a variable would spell it (it parses with ``parse``);
    a default that is worked out from other settings, or that is "not set", has no value, and
    ``default_rule`` says instead how it is found. Exactly one of the two is given.
    """

    field: str
    envs: tuple[str, ...]
    flag: str
    parse: Parser[Any]
    help: str
    default: str | None = None
    default_rule: str | None = None
    secret: bool = False
    is_flag: bool = False

    def __post_init__(self) -> None:
        if (self.default is None) == (self.default_rule is None):
            raise ValueError(f"option {self.field}: give a default or a default_rule, not both")

    @property
    def accepted(self) -> str:
        """What the setting accepts (its parser says)."""
        return self.parse.accepts

    @property
    def shown_default(self) -> str:
        """The default as the help and the reference show it."""
        return self.default if self.default is not None else str(self.default_rule)

    @property
    def flags(self) -> tuple[str, ...]:
        """Every spelling of the flag (``--tls/--no-tls`` is two)."""
        return tuple(self.flag.split("/"))


OPTIONS: Final[tuple[Option, ...]] = (
    Option(
        field="api_key",
        envs=("WIOTP_AUTH_KEY", "WIOTP_API_KEY"),
        flag="--auth-key",
        parse=text("a-{org}-{rest}"),
        default_rule="none (quickstart)",
        help="application API key; the org is taken from it",
    ),
    Option(
        field="api_token",
        envs=("WIOTP_AUTH_TOKEN", "WIOTP_API_TOKEN"),
        flag="--auth-token",
        parse=secret("the key's token"),
        default_rule="none",
        help="authentication token of the API key (never shown)",
        secret=True,
    ),
    Option(
        field="app_id",
        envs=("WIOTP_IDENTITY_APPID",),
        flag="--app-id",
        parse=name("app ID"),
        default="worker",
        help="application ID; every replica of one application uses the same",
    ),
    Option(
        field="org",
        envs=("WORKER_ORG",),
        flag="--org",
        parse=org,
        default_rule="from the API key, else quickstart",
        help="organisation ID when there is no API key (quickstart, mqtt profile)",
    ),
    Option(
        field="profile",
        envs=("WORKER_PROFILE",),
        flag="--profile",
        parse=enum_choice(Profile),
        default="wiotp",
        help="wiotp: Watson IoT client IDs; mqtt: a standard broker with $share subscriptions",
    ),
    Option(
        field="identity",
        envs=("WORKER_IDENTITY",),
        flag="--identity",
        parse=enum_choice(IdentityMode),
        default="shared",
        help="shared A:org:app, shared-durable A:org:app:instance, standalone a:org:app",
    ),
    Option(
        field="instance_id",
        envs=("WIOTP_OPTIONS_MQTT_INSTANCEID",),
        flag="--instance-id",
        parse=name("instance ID"),
        default_rule="unset",
        help="selects shared-durable, with this instance ID",
    ),
    Option(
        field="instance",
        envs=("WORKER_INSTANCE",),
        flag="--instance",
        parse=name("instance"),
        default_rule="{hostname}-{pid}; the pod name in Kubernetes",
        help="this instance's name in metrics and mqtt client IDs",
    ),
    Option(
        field="host",
        envs=("WORKER_HOST",),
        flag="--host",
        parse=text("a host name or address"),
        default_rule="{org}.messaging.{domain}",
        help="platform or broker host; overrides the IBM host",
    ),
    Option(
        field="domain",
        envs=("WIOTP_OPTIONS_DOMAIN",),
        flag="--domain",
        parse=text("a DNS domain"),
        default="internetofthings.ibmcloud.com",
        help="IBM messaging domain",
    ),
    Option(
        field="port",
        envs=("WIOTP_OPTIONS_MQTT_PORT",),
        flag="--port",
        parse=integer(1, 65535),
        default_rule="8883 TLS, 1883 plain, 443/80 WebSockets",
        help="platform or broker port",
    ),
    Option(
        field="mqtt_transport",
        envs=("WIOTP_OPTIONS_MQTT_TRANSPORT",),
        flag="--mqtt-transport",
        parse=choice("tcp", "websockets"),
        default="tcp",
        help="MQTT over TCP or WebSockets",
    ),
    Option(
        field="tls",
        envs=("WORKER_TLS",),
        flag="--tls/--no-tls",
        parse=boolean,
        default_rule="on for IBM's host",
        help="TLS 1.2+; on by default for the IBM host, off for an explicit host",
        is_flag=True,
    ),
    Option(
        field="cafile",
        envs=("WIOTP_OPTIONS_MQTT_CAFILE",),
        flag="--cafile",
        parse=readable_file,
        default_rule="the system store",
        help="CA bundle to verify the server with",
    ),
    Option(
        field="keepalive",
        envs=("WIOTP_OPTIONS_MQTT_KEEPALIVE",),
        flag="--keepalive",
        parse=integer(1, 3600),
        default="60",
        help="MQTT keepalive in seconds",
    ),
    Option(
        field="log_level",
        envs=("WIOTP_OPTIONS_LOGLEVEL",),
        flag="--log-level",
        parse=log_level,
        default="info",
        help="log level",
    ),
    Option(
        field="log_format",
        envs=("WORKER_LOG_FORMAT",),
        flag="--log-format",
        parse=choice("text", "json"),
        default="text",
        help="log line format",
    ),
    Option(
        field="username",
        envs=("WORKER_USERNAME",),
        flag="--username",
        parse=text("a user name"),
        default_rule="none",
        help="broker user name (mqtt profile)",
    ),
    Option(
        field="password",
        envs=("WORKER_PASSWORD",),
        flag="--password",
        parse=secret("the user's password"),
        default_rule="none",
        help="broker password (mqtt profile; never shown)",
        secret=True,
    ),
    Option(
        field="qos",
        envs=("WORKER_QOS",),
        flag="--qos",
        parse=integer(0, 1),
        default="1",
        help="QoS: 1 at least once, 0 at most once (worker run: of the subscription, a message "
        "acknowledged after its handlers; a tool: of what it sends or subscribes to)",
    ),
    Option(
        field="concurrency",
        envs=("WORKER_CONCURRENCY",),
        flag="--concurrency",
        parse=integer(1, 10_000),
        default="16",
        help="handler lanes running at once",
    ),
    Option(
        field="workers",
        envs=("WORKER_WORKERS",),
        flag="--workers",
        parse=integer(1, 64),
        default="1",
        help="worker processes of the app under one supervisor (worker run), each a member "
        "of the group as {instance}-{n}; one /metrics, /readyz ready when all are",
    ),
    Option(
        field="intake_size",
        envs=("WORKER_INTAKE_SIZE",),
        flag="--intake-size",
        parse=integer(1, 10_000_000),
        default="10000",
        help="bound of the intake queue",
    ),
    Option(
        field="overflow",
        envs=("WORKER_OVERFLOW",),
        flag="--overflow",
        parse=choice("drop-oldest", "pace", "block"),
        default="pace",
        help="QoS 0 intake overflow: pace (stop reading while full, drop the oldest once full "
        "for --pace-limit), drop-oldest or block; drops are counted",
    ),
    Option(
        field="pace_limit",
        envs=("WORKER_PACE_LIMIT",),
        flag="--pace-limit",
        parse=seconds(0, 3600),
        default="30",
        help="with --overflow pace: seconds the QoS 0 intake may stay full before the oldest "
        "queued messages are dropped (a backlog that stays)",
    ),
    Option(
        field="drain_timeout",
        envs=("WORKER_DRAIN_TIMEOUT",),
        flag="--drain-timeout",
        parse=seconds(0, 3600),
        default="25",
        help="seconds to finish in-flight messages on SIGTERM",
    ),
    Option(
        field="dead_letter",
        envs=("WORKER_DEAD_LETTER",),
        flag="--dead-letter",
        parse=dead_letter,
        default="log",
        help="where failed messages go after their retries (routes may choose their own)",
    ),
    Option(
        field="loop",
        envs=("WORKER_LOOP",),
        flag="--loop",
        parse=choice("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop; auto is uvloop where installed",
    ),
    Option(
        field="transport",
        envs=("WORKER_TRANSPORT",),
        flag="--transport",
        parse=choice("aiomqtt", "native"),
        default="native",
        help="MQTT client implementation: native (the fast one) or aiomqtt; WebSockets use aiomqtt",
    ),
    Option(
        field="mqtt_version",
        envs=("WORKER_MQTT_VERSION",),
        flag="--mqtt-version",
        parse=choice("3.1.1", "5"),
        default_rule="5 for the mqtt profile, 3.1.1 for wiotp",
        help="MQTT protocol version (docs/guide/mqtt5.md says why the defaults differ)",
    ),
    Option(
        field="tracing",
        envs=("WORKER_TRACING",),
        flag="--tracing",
        parse=choice("off", "on"),
        default="off",
        help="OpenTelemetry consumer spans per handled message; needs the otel extra",
    ),
    Option(
        field="receive_maximum",
        envs=("WORKER_RECEIVE_MAXIMUM",),
        flag="--receive-maximum",
        parse=integer(1, 65535),
        default="1000",
        help=(
            "QoS 1 messages this worker holds unacknowledged at most: announced to the broker "
            "on MQTT 5; on 3.1.1 the native transport stops reading beyond it"
        ),
    ),
    Option(
        field="max_packet_size",
        envs=("WORKER_MAX_PACKET_SIZE",),
        flag="--max-packet-size",
        parse=integer(1024, 268_435_455),
        default="1048576",
        help="largest MQTT packet accepted, in bytes; a larger one closes the connection "
        "(sent to the broker as Maximum Packet Size with MQTT 5)",
    ),
    Option(
        field="metrics_host",
        envs=("WORKER_METRICS_HOST",),
        flag="--metrics-host",
        parse=text("an address"),
        default="127.0.0.1",
        help="address of the /metrics, /livez, /readyz server (0.0.0.0: every interface)",
    ),
    Option(
        field="metrics_port",
        envs=("WORKER_METRICS_PORT",),
        flag="--metrics-port",
        parse=integer(0, 65535),
        default="9100",
        help="port of the /metrics, /livez, /readyz server (0: any free port)",
    ),
)

_BY_FIELD: Final = {o.field: o for o in OPTIONS}


def by_field(field_name: str) -> Option:
    """The option of a Settings field."""
    return _BY_FIELD[field_name]


def default_of(field_name: str) -> Any:
    """The parsed fixed default of a setting (``Settings`` field defaults come from here)."""
    option = _BY_FIELD[field_name]
    if option.default is None:
        raise LookupError(f"{field_name} has no fixed default: {option.default_rule}")
    return option.parse(option.default)
