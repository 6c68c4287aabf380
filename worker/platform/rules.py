"""Who may connect, publish and subscribe to what, and how topics are rewritten (W4-W17, W25, W41).

Inside the platform every topic starts with the org instead of ``iot-2``, so that orgs are
isolated by construction (W11: the IBM proxy inserts ``{Org}/`` the same way)::

    application   iot-2/type/T/id/D/evt/E/fmt/F   <->  {org}/type/T/id/D/evt/E/fmt/F
    device d:o:T:D   iot-2/evt/E/fmt/F            ->   {org}/type/T/id/D/evt/E/fmt/F
    device d:o:T:D   iot-2/cmd/C/fmt/F            <-   {org}/type/T/id/D/cmd/C/fmt/F
    status        iot-2/type/T/id/D/mon, iot-2/app/A/mon  <-  {org}/type/T/id/D/mon, {org}/app/A/mon

A device's own topics are rewritten with the type and ID of its client ID, so it can neither
publish as another device nor read another device's commands. Every refusal is a
:class:`Denied` carrying the close code the connection ends with (W37, W38, W40).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from worker import topics
from worker.errors import IdentityError, QuickstartError, TopicError, WorkerError
from worker.identity import (
    QUICKSTART_ORG,
    ClientClass,
    ClientId,
    check_quickstart_connection,
    check_quickstart_filter,
    check_quickstart_publish,
    parse_client_id,
)
from worker.platform.status import CloseCode

MAX_PAYLOAD: Final = 131072
"""The platform's message size limit in bytes (W17)."""
TOPIC_ALLOWANCE: Final = 200
"""Topic bytes that do not count against the limit (W17: ``payload + max(0, topic - 200)``)."""
DM_SUBSCRIBE: Final = "iotdm-1/"
DM_PUBLISH: Final = "iotdevice-1/"


class Denied(WorkerError):
    """A request the platform refuses; ``close_code`` is how the connection ends (W40)."""

    def __init__(self, close_code: CloseCode, message: str) -> None:
        self.close_code = close_code
        super().__init__(message)


class Authenticator(Protocol):
    """Decides whether a CONNECT's credentials admit a client (W5, W6, W41).

    ``worker.platform.auth.Credentials`` is the implementation the platform uses; anything with
    this method can replace it (an embedding test may accept exactly one key, for instance).
    """

    def check(
        self, client_id: ClientId, username: str | None, password: bytes | None
    ) -> str | None:
        """None when admitted, else why not (for the log; never containing the token)."""
        ...


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Turns an internal topic into what one subscriber sees: drop ``strip``, add ``prefix``."""

    strip: int
    prefix: str

    def outbound(self, internal: str) -> str:
        """The client-side topic for ``internal``."""
        return self.prefix + internal[self.strip :]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client: its parsed ID and the internal prefixes of its topics."""

    client: ClientId
    client_id: str
    #: ``{org}/type/{type}/id/{id}/`` for devices and gateways, ``{org}/app/{app}/`` for apps
    own_prefix: str
    #: how this client's subscriptions to application-shaped topics are rewritten
    app_rewrite: Rewrite

    @property
    def org(self) -> str:
        """The client's org (the first level of its internal topics)."""
        return self.client.org

    @property
    def quickstart(self) -> bool:
        """A client of the quickstart org, bound by its restrictions (W41)."""
        return self.client.org == QUICKSTART_ORG

    @property
    def status_topic(self) -> str:
        """The internal ``mon`` topic of this client (W31)."""
        return self.own_prefix + "mon"


def principal_for(client: ClientId) -> Principal:
    """The principal of a parsed client ID (no credential check)."""
    if client.is_application:
        own = f"{client.org}/app/{client.name}/"
    else:
        own = f"{client.org}/type/{client.name}/id/{client.qualifier}/"
    return Principal(client, str(client), own, Rewrite(len(client.org), topics.PREFIX))


def parse_identity(client_id: str) -> ClientId:
    """Parse a client ID; :class:`Denied` with 166 when it fits no class (W2, W4)."""
    try:
        return parse_client_id(client_id)
    except IdentityError as exc:
        raise Denied(CloseCode.CLIENT_ID_NOT_VALID, str(exc)) from None


def authorize_connect(
    client: ClientId,
    username: str | None,
    password: bytes | None,
    *,
    clean: bool,
    secure: bool,
    authenticator: Authenticator,
) -> Principal:
    """Check a CONNECT; return the principal or raise :class:`Denied` (CONNACK 5, W4-W6, W25)."""
    if client.org == QUICKSTART_ORG:
        try:
            check_quickstart_connection(client, tls=secure, clean_session=clean)
        except QuickstartError as exc:
            raise Denied(CloseCode.NOT_AUTHORIZED, str(exc)) from None
    elif client.is_shared and client.qualifier is None and not clean:
        raise Denied(
            CloseCode.NOT_AUTHORIZED,
            f"{client}: a scalable application without an instance ID needs a clean session",
        )
    problem = authenticator.check(client, username, password)
    if problem is not None:
        raise Denied(CloseCode.NOT_AUTHORIZED, f"{client}: {problem}")
    return principal_for(client)


# --- publishing ------------------------------------------------------------------------------


def check_size(topic: str, payload_len: int, limit: int = MAX_PAYLOAD) -> None:
    """Refuse a message above the platform's size limit with close code 287 (W17)."""
    extra = len(topic) - TOPIC_ALLOWANCE
    if extra > 0:
        extra = len(topic.encode()) - TOPIC_ALLOWANCE
    if payload_len + max(0, extra) > limit:
        raise Denied(
            CloseCode.MESSAGE_TOO_LARGE,
            f"message of {payload_len} bytes on a {len(topic)}-character topic exceeds {limit}",
        )


def publish_target(p: Principal, topic: str) -> str:
    """The internal topic for a client's PUBLISH, or :class:`Denied` (W8, W10-W13, W37)."""
    cls = p.client.cls
    try:
        if cls is ClientClass.DEVICE:
            return _device_publish(p, topic)
        parsed = check_quickstart_publish(topic) if p.quickstart else topics.parse(topic)
    except QuickstartError as exc:
        raise Denied(CloseCode.NOT_AUTHORIZED, str(exc)) from None
    except TopicError as exc:
        raise _refusal(topic, str(exc), publish=True) from None
    allowed: tuple[type, ...] = (topics.DeviceEventTopic,)
    if cls is not ClientClass.GATEWAY:
        allowed = (topics.DeviceEventTopic, topics.DeviceCommandTopic)
    if not isinstance(parsed, allowed):
        raise Denied(CloseCode.NOT_AUTHORIZED, f"{p.client_id} may not publish to {topic!r}")
    return p.org + topic[len(topics.PREFIX) :]


def _device_publish(p: Principal, topic: str) -> str:
    if topic.startswith(DM_PUBLISH) and not p.quickstart:
        return p.own_prefix + topics.validate_topic_name(topic)
    parsed = topics.parse_device(topic)
    if not isinstance(parsed, topics.OwnEventTopic):
        raise Denied(CloseCode.NOT_AUTHORIZED, f"a device may not publish to {topic!r}")
    if p.quickstart and parsed.fmt != "json":
        raise Denied(CloseCode.NOT_AUTHORIZED, "quickstart devices publish with format json only")
    return p.own_prefix + topic[len(topics.PREFIX) + 1 :]


def _refusal(topic: str, why: str, *, publish: bool = False) -> Denied:
    """180 when the topic is in the iot-2 grammar but not this client's, else 276 (W37)."""
    if publish and ("+" in topic or "#" in topic):
        return Denied(CloseCode.TOPIC_NOT_VALID, f"{topic!r}: a publish topic has no wildcards")
    for parse in (topics.parse, topics.parse_device):
        try:
            parse(topic.replace("#", "+"), wildcard=True)
        except TopicError:
            continue
        return Denied(CloseCode.NOT_AUTHORIZED, f"{topic!r} is not allowed here: {why}")
    return Denied(CloseCode.TOPIC_NOT_VALID, why)


# --- subscribing -----------------------------------------------------------------------------


def subscribe_target(p: Principal, topic_filter: str) -> tuple[str, Rewrite]:
    """The internal filter and outbound rewrite of a SUBSCRIBE, or :class:`Denied` (W8-W12, W38)."""
    cls = p.client.cls
    try:
        if cls is ClientClass.DEVICE:
            return _device_subscribe(p, topic_filter)
        if cls is ClientClass.GATEWAY:
            return _gateway_subscribe(p, topic_filter)
        if p.quickstart:
            check_quickstart_filter(topic_filter)
        else:
            topics.parse_filter(topic_filter)
    except QuickstartError as exc:
        raise Denied(CloseCode.NOT_AUTHORIZED, str(exc)) from None
    except TopicError as exc:
        if topics.MULTI in topic_filter.split("/"):
            # W9: the app rules set nohash, which the proxy reports as a bad topic.
            raise Denied(CloseCode.TOPIC_NOT_VALID, str(exc)) from None
        raise _refusal(topic_filter, str(exc)) from None
    return p.org + topic_filter[len(topics.PREFIX) :], p.app_rewrite


def _device_subscribe(p: Principal, topic_filter: str) -> tuple[str, Rewrite]:
    if p.quickstart:
        raise Denied(CloseCode.NOT_AUTHORIZED, "quickstart devices may not subscribe")
    own = p.own_prefix
    if topic_filter.startswith(DM_SUBSCRIBE):
        return own + topics.validate_filter(topic_filter), Rewrite(len(own), "")
    parsed = topics.parse_device(topic_filter, wildcard=True)
    if not isinstance(parsed, topics.OwnCommandTopic):
        raise Denied(CloseCode.NOT_AUTHORIZED, f"a device may not subscribe to {topic_filter!r}")
    return own + topic_filter[len(topics.PREFIX) + 1 :], Rewrite(len(own), topics.PREFIX + "/")


def _gateway_subscribe(p: Principal, topic_filter: str) -> tuple[str, Rewrite]:
    internal = p.org + topic_filter[len(topics.PREFIX) :]
    if topic_filter.startswith(topics.PREFIX + "/") and topic_filter.endswith("/notify"):
        if internal == p.own_prefix + "notify":
            return internal, p.app_rewrite
        raise Denied(CloseCode.NOT_AUTHORIZED, "a gateway gets its own notify topic only")
    parsed = topics.parse_filter(topic_filter)
    if not isinstance(parsed, topics.DeviceCommandTopic):
        raise Denied(CloseCode.NOT_AUTHORIZED, f"a gateway may not subscribe to {topic_filter!r}")
    return internal, p.app_rewrite


def app_status_topic(org: str, app_id: str) -> str:
    """The internal ``mon`` topic of an application (W31)."""
    return f"{org}/app/{app_id}/mon"
