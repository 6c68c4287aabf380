"""One frozen ``Settings``, built once: defaults < environment < command-line flags.

Every setting is one row of ``OPTIONS``: its field, its environment variables (IBM SDK names
where the SDK has one, ``WORKER_*`` otherwise), its flag, how it parses and what it accepts.
The CLI builds its flags from the same table, so a variable always has its flag.
All problems are collected and raised together as one ConfigError, one line per problem,
each naming the variable or flag, the bad value and what is accepted.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from worker import identity as ids
from worker import topics
from worker.errors import ConfigError, IdentityError
from worker.identity import ClientId, IdentityMode
from worker.options import OPTIONS, Option, Profile, by_field, default_of
from worker.parsers import Secret

_INSTANCE_BAD = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker needs to know, resolved and validated.

    A setting with a fixed default takes it from its row of ``OPTIONS`` (``default_of``), the
    one place it is written. The others are worked out by ``load_settings`` (the org, host,
    port, TLS, instance) or are simply not set; their defaults here only serve a ``Settings``
    built directly, as tests do: a local plain connection as ``quickstart``.
    """

    # (Enum members are immutable, so one default shared by every instance is right.)
    profile: Profile = default_of("profile")  # noqa: RUF009
    identity: IdentityMode = default_of("identity")  # noqa: RUF009
    org: str = ids.QUICKSTART_ORG
    app_id: str = default_of("app_id")
    api_key: str | None = None
    api_token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    instance: str = "worker"
    host: str = "localhost"
    port: int = 1883
    mqtt_transport: str = default_of("mqtt_transport")
    tls: bool = False
    cafile: str | None = None
    keepalive: int = default_of("keepalive")
    log_level: str = default_of("log_level")
    log_format: str = default_of("log_format")
    qos: int = default_of("qos")
    concurrency: int = default_of("concurrency")
    workers: int = default_of("workers")
    intake_size: int = default_of("intake_size")
    overflow: str = default_of("overflow")
    drain_timeout: float = default_of("drain_timeout")
    dead_letter: str = default_of("dead_letter")
    loop: str = default_of("loop")
    transport: str = default_of("transport")
    #: "3.1.1" or "5"; ``load_settings`` picks it by profile when it is not set
    mqtt_version: str = "3.1.1"
    receive_maximum: int = default_of("receive_maximum")
    max_packet_size: int = default_of("max_packet_size")
    pace_limit: float = default_of("pace_limit")
    tracing: str = default_of("tracing")
    metrics_host: str = default_of("metrics_host")
    metrics_port: int = default_of("metrics_port")

    @property
    def client(self) -> ClientId | None:
        """The Watson IoT client ID (None for the ``mqtt`` profile)."""
        if self.profile is Profile.MQTT:
            return None
        instance = self.instance if self.identity is IdentityMode.SHARED_DURABLE else None
        return ids.app_client_id(self.org, self.app_id, self.identity, instance)

    @property
    def client_id(self) -> str:
        """The MQTT client ID this instance connects with."""
        client = self.client
        return f"{self.app_id}-{self.instance}" if client is None else str(client)

    @property
    def share_group(self) -> str | None:
        """The ``$share`` group name of the ``mqtt`` profile: ``{org}:{app}``."""
        return f"{self.org}:{self.app_id}" if self.profile is Profile.MQTT else None

    def subscription(self, topic_filter: str) -> str:
        """The filter to send in SUBSCRIBE: shared for ``mqtt``, plain for ``wiotp``."""
        group = self.share_group
        return topic_filter if group is None else topics.shared_filter(group, topic_filter)

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password) for CONNECT: the API key and token, or the broker login."""
        if self.profile is Profile.WIOTP:
            token = self.api_token.reveal() if self.api_token else None
            return self.api_key, token
        return self.username, self.password.reveal() if self.password else None

    def describe(self) -> dict[str, str]:
        """What ``worker check`` prints; secrets masked."""
        rows = {
            "client ID": self.client_id,
            "host": self.host,
            "port": str(self.port),
            "transport": self.mqtt_transport,
            "MQTT": self.mqtt_version,
            "TLS": "yes (TLS 1.2+)" if self.tls else "no",
            "profile": self.profile.value,
            "identity": self.identity.value if self.profile is Profile.WIOTP else "unique",
            "instance": self.instance,
            "org": self.org,
            "app ID": self.app_id,
        }
        if self.share_group:
            rows["share group"] = self.share_group
        user, _ = self.credentials()
        if user:
            rows["user"] = user
        rows["password"] = "********" if self.credentials()[1] else "(none)"
        return rows


def default_mqtt_version(profile: Profile) -> str:
    """MQTT 5 on a standard broker, 3.1.1 on Watson IoT (docs/guide/mqtt5.md says why).

    IBM's platform speaks MQTT 3.1 and 3.1.1 only; the brokers of the ``mqtt`` profile
    (Mosquitto 2, EMQX, HiveMQ) speak 5, whose Receive Maximum bounds the QoS 1 messages in
    flight to the worker whatever the broker's own window.
    """
    return "5" if profile is Profile.MQTT else "3.1.1"


def default_instance(env: Mapping[str, str] | None = None) -> str:
    """A name unique per process on one machine, and stable per pod on Kubernetes.

    In a Kubernetes pod (``KUBERNETES_SERVICE_HOST`` is set) the host name is the pod name:
    unique in the namespace and the same for the pod's whole life, so it is the name as is.
    Elsewhere two processes on one machine share the host name, so the process ID is added:
    ``{hostname}-{pid}``. Pod names can run to 63 characters; the last 36 keep the unique
    suffix, and a long host name is cut from the left so that ``-{pid}`` always survives.
    """
    env = os.environ if env is None else env
    host = _INSTANCE_BAD.sub("-", socket.gethostname()) or "worker"
    if env.get("KUBERNETES_SERVICE_HOST"):
        return host[-topics.NAME_MAX :]
    suffix = f"-{os.getpid()}"
    return host[: topics.NAME_MAX - len(suffix)] + suffix


def load_settings(
    env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> Settings:
    """Resolve settings from defaults < ``env`` (default os.environ) < ``flags`` (by field)."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    problems: list[str] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        raw, source = _raw(option, env, flags)
        if raw is None:
            continue
        sources[option.field] = source
        try:
            values[option.field] = option.parse(raw)
        except ValueError as exc:
            # The API key is not secret, but a token pasted into it by mistake would be.
            hidden = option.secret or option.field in _NEVER_SHOWN
            shown = "********" if hidden else raw
            problems.append(f"{source}={shown!r}: {exc}")
    settings = _resolve(values, sources, problems, env)
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


_NEVER_SHOWN: Final = frozenset({"api_key"})
"""Fields whose refused value is not repeated in the error, as if they were secrets."""


def _raw(option: Option, env: Mapping[str, str], flags: Mapping[str, Any]) -> tuple[Any, str]:
    if option.field in flags:
        return flags[option.field], option.flag
    for name in option.envs:
        value = env.get(name)
        if value is not None and value != "":
            return value, name
    return None, ""


def _resolve(
    values: dict[str, Any], sources: dict[str, str], problems: list[str], env: Mapping[str, str]
) -> Settings | None:
    """Cross-field rules: org from the key, identity from the instance ID, host and port."""
    resolver = _Resolver(values, sources, problems, env)
    return resolver.run()


@dataclass
class _Resolver:
    values: dict[str, Any]
    sources: dict[str, str]
    problems: list[str]
    env: Mapping[str, str]

    def name(self, field_name: str) -> str:
        return self.sources.get(field_name) or by_field(field_name).envs[0]

    def run(self) -> Settings | None:
        v = self.values
        profile = v.get("profile", _DEFAULTS.profile)
        org = self._org()
        mode = self._identity()
        if "instance_id" in v:
            v["instance"] = v.pop("instance_id")
        v.setdefault("instance", default_instance(self.env))
        ibm_host = profile is Profile.WIOTP and "host" not in v and org != ids.QUICKSTART_ORG
        tls = v.get("tls", ibm_host)
        self._host(profile, org, v.pop("domain", default_of("domain")))
        self._port(tls)
        v.setdefault("mqtt_version", default_mqtt_version(profile))
        v.update(profile=profile, org=org, identity=mode, tls=tls)
        if self.problems:
            return None
        settings = Settings(**{k: val for k, val in v.items() if k in _FIELDS})
        self._check_identity(settings)
        return None if self.problems else settings

    def _org(self) -> str:
        key, org = self.values.get("api_key"), self.values.get("org")
        key_org = None
        if key is not None:
            try:
                key_org = ids.org_from_api_key(key)
            except IdentityError as exc:
                self.problems.append(f"{self.name('api_key')}: {exc}")
        if key_org and org and key_org != org:
            self.problems.append(
                f"{self.name('org')}={org!r} disagrees with the org {key_org!r} of "
                f"{self.name('api_key')}; leave it unset or make them agree"
            )
        if key is not None and "api_token" not in self.values:
            self.problems.append(
                f"{self.name('api_key')} is set but WIOTP_AUTH_TOKEN / --auth-token is not; "
                "an API key needs its token"
            )
        return key_org or org or ids.QUICKSTART_ORG

    def _identity(self) -> IdentityMode:
        mode: IdentityMode | None = self.values.get("identity")
        if "instance_id" not in self.values:
            return mode or _DEFAULTS.identity
        if mode not in (None, IdentityMode.SHARED_DURABLE):
            self.problems.append(
                f"{self.name('instance_id')} selects the shared-durable identity "
                f"(A:org:app:instance) but {self.name('identity')}={mode.value!r}; "
                "unset one of them"
            )
        return IdentityMode.SHARED_DURABLE

    def _host(self, profile: Profile, org: str, domain: str) -> None:
        if "host" not in self.values:
            wiotp = profile is Profile.WIOTP
            self.values["host"] = f"{org}.messaging.{domain}" if wiotp else "localhost"

    def _port(self, tls: bool) -> None:
        if "port" not in self.values:
            ws = self.values.get("mqtt_transport") == "websockets"
            self.values["port"] = (443 if tls else 80) if ws else (8883 if tls else 1883)

    def _check_identity(self, s: Settings) -> None:
        if s.profile is Profile.MQTT:
            return
        try:
            client = s.client
            assert client is not None
            if s.org == ids.QUICKSTART_ORG:
                ids.check_quickstart_connection(client, tls=s.tls, clean_session=True)
        except IdentityError as exc:
            hint = ""
            if s.org == ids.QUICKSTART_ORG and s.api_key is None:
                hint = (
                    " (no API key is set, so the org is 'quickstart'; set WIOTP_AUTH_KEY and "
                    "WIOTP_AUTH_TOKEN, or WORKER_ORG, or WORKER_IDENTITY=standalone)"
                )
            self.problems.append(f"{exc}{hint}")


_FIELDS: Final = frozenset(f.name for f in fields(Settings))
_DEFAULTS: Final = Settings()


def parser_for(field_name: str) -> Callable[[str], Any]:
    """The parser of one option, for callers that validate a single value."""
    return by_field(field_name).parse
