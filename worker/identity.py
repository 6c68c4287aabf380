"""Who is connecting: orgs, app IDs, API keys, client IDs and quickstart's restrictions.

Client-ID classes of Watson IoT Platform::

    a:{org}:{app_id}                 an application, one connection only (standalone)
    A:{org}:{app_id}                 a scalable application: every instance uses this same ID
    A:{org}:{app_id}:{instance_id}   a scalable application whose instances keep their own state
    d:{org}:{device_type}:{device_id}  a device
    g:{org}:{device_type}:{device_id}  a gateway

An application's API key looks like ``a-{org}-{rest}``; the org comes from it, as in IBM's SDKs.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from worker import topics
from worker.errors import IdentityError, QuickstartError, TopicError

QUICKSTART_ORG: Final = "quickstart"
ORG_RULE: Final = "6 lowercase letters or digits (or 'quickstart')"
API_KEY_RULE: Final = (
    "a-{org}-{rest}: 'a-', a 6-character org, '-', then letters, digits, '-' or '_'"
)
CLIENT_ID_RULE: Final = (
    "a:{org}:{app}, A:{org}:{app}, A:{org}:{app}:{instance}, d:{org}:{type}:{id} "
    "or g:{org}:{type}:{id}"
)

_ORG = re.compile(r"[a-z0-9]{6}")
_API_KEY = re.compile(r"a-([a-z0-9]{6})-([A-Za-z0-9_-]{1,64})")


class IdentityMode(enum.StrEnum):
    """How the instances of one application identify themselves (docs/guide/configuration.md)."""

    SHARED = "shared"
    SHARED_DURABLE = "shared-durable"
    STANDALONE = "standalone"


class ClientClass(enum.StrEnum):
    """The first field of a Watson IoT client ID."""

    APP = "a"
    SCALABLE_APP = "A"
    DEVICE = "d"
    GATEWAY = "g"


def check_org(org: str) -> str:
    """Validate an organisation ID; return it unchanged."""
    if org != QUICKSTART_ORG and _ORG.fullmatch(org) is None:
        raise IdentityError(f"org {org!r}: allowed are {ORG_RULE}")
    return org


def check_app_id(app_id: str) -> str:
    """Validate an application ID (1-36 of ``[A-Za-z0-9._-]``)."""
    try:
        return topics.check_name(app_id, "app ID")
    except TopicError as exc:
        raise IdentityError(str(exc)) from None


def org_from_api_key(api_key: str) -> str:
    """The org of an application API key ``a-{org}-{rest}``."""
    match = _API_KEY.fullmatch(api_key)
    if match is None:
        # Never echoed: a value that is not a key may be the token, pasted in the wrong place,
        # and errors end up in logs. Its length and first character are enough to spot that.
        raise IdentityError(
            f"API key not valid ({_shape(api_key)}; not shown in case it is a token): "
            f"expected {API_KEY_RULE}"
        )
    return match.group(1)


def _shape(value: str) -> str:
    """What a refused secret-like value looks like, without any of its text."""
    if not value:
        return "empty"
    start = "starts with 'a-'" if value.startswith("a-") else "does not start with 'a-'"
    return f"{len(value)} characters, {start}"


@dataclass(frozen=True, slots=True)
class ClientId:
    """A parsed Watson IoT client ID."""

    cls: ClientClass
    org: str
    #: app ID for ``a``/``A``; device type for ``d``/``g``
    name: str
    #: instance ID for ``A`` (may be None); device ID for ``d``/``g``
    qualifier: str | None = None

    def __str__(self) -> str:
        tail = "" if self.qualifier is None else f":{self.qualifier}"
        return f"{self.cls.value}:{self.org}:{self.name}{tail}"

    @property
    def is_application(self) -> bool:
        return self.cls in (ClientClass.APP, ClientClass.SCALABLE_APP)

    @property
    def is_shared(self) -> bool:
        """A scalable application: its subscriptions are shared with its peers."""
        return self.cls is ClientClass.SCALABLE_APP


def parse_client_id(client_id: str) -> ClientId:
    """Parse and validate a client ID of any class; IdentityError names what is wrong."""
    parts = client_id.split(":")
    cls = _client_class(parts[0]) if len(parts) in (3, 4) else None
    if cls is None or (len(parts) == 3 and cls in (ClientClass.DEVICE, ClientClass.GATEWAY)):
        raise IdentityError(f"client ID {client_id!r}: accepted are {CLIENT_ID_RULE}")
    if len(parts) == 4 and cls is ClientClass.APP:
        raise IdentityError(
            f"client ID {client_id!r}: an 'a:' application has no instance part; "
            f"accepted are {CLIENT_ID_RULE}"
        )
    org = check_org(parts[1])
    try:
        if cls.value in "aA":
            name = topics.check_name(parts[2], "app ID")
            qualifier = topics.check_name(parts[3], "instance ID") if len(parts) == 4 else None
        else:
            name = topics.check_name(parts[2], "device type")
            qualifier = topics.check_name(parts[3], "device ID")
    except TopicError as exc:
        raise IdentityError(f"client ID {client_id!r}: {exc}") from None
    return ClientId(cls, org, name, qualifier)


def _client_class(field: str) -> ClientClass | None:
    try:
        return ClientClass(field)
    except ValueError:
        return None


def app_client_id(
    org: str, app_id: str, mode: IdentityMode, instance: str | None = None
) -> ClientId:
    """The client ID an application instance uses under ``mode``."""
    check_org(org)
    check_app_id(app_id)
    if mode is IdentityMode.STANDALONE:
        return ClientId(ClientClass.APP, org, app_id)
    if mode is IdentityMode.SHARED:
        return ClientId(ClientClass.SCALABLE_APP, org, app_id)
    if instance is None:
        raise IdentityError("the shared-durable identity needs an instance ID")
    try:
        topics.check_name(instance, "instance ID")
    except TopicError as exc:
        raise IdentityError(str(exc)) from None
    return ClientId(ClientClass.SCALABLE_APP, org, app_id, instance)


# --- quickstart --------------------------------------------------------------------------


def check_quickstart_connection(client_id: ClientId, *, tls: bool, clean_session: bool) -> None:
    """Refuse what quickstart does not support at connect time (W41)."""
    if client_id.cls is ClientClass.SCALABLE_APP:
        raise QuickstartError("quickstart does not support scalable applications ('A:' client IDs)")
    if client_id.cls is ClientClass.GATEWAY:
        raise QuickstartError("quickstart does not support gateways ('g:' client IDs)")
    if tls:
        raise QuickstartError("quickstart does not support MQTT over TLS; use port 1883")
    if not clean_session:
        raise QuickstartError("quickstart does not support durable sessions (clean session false)")


def check_quickstart_filter(topic_filter: str) -> topics.AppTopic:
    """Refuse an application filter that quickstart does not support; return it parsed.

    Quickstart has no commands, and no ``+`` in device type, device ID or app ID: an
    application watches concrete devices only.
    """
    parsed = topics.parse_filter(topic_filter)
    if isinstance(parsed, topics.DeviceCommandTopic):
        raise QuickstartError(f"{topic_filter!r}: quickstart does not support commands")
    if isinstance(parsed, topics.AppStatusTopic):
        wild = ["app ID"] if parsed.app_id == topics.SINGLE else []
    else:
        wild = [
            what
            for what, value in (
                ("device type", parsed.device_type),
                ("device ID", parsed.device_id),
            )
            if value == topics.SINGLE
        ]
    if wild:
        raise QuickstartError(
            f"{topic_filter!r}: quickstart does not allow '+' in the {' or '.join(wild)}; "
            "name a concrete one"
        )
    return parsed


def check_quickstart_publish(topic: str) -> topics.AppTopic:
    """Refuse an application publish that quickstart does not support (commands)."""
    parsed = topics.parse(topic)
    if not isinstance(parsed, topics.DeviceEventTopic):
        raise QuickstartError(f"{topic!r}: quickstart applications may publish device events only")
    return parsed
