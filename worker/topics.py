"""The iot-2 topic grammar of Watson IoT Platform: build, parse, validate and match.

Topics are parsed by splitting on ``/`` and checking fixed level counts, never with greedy
patterns: ``iot-2/type/t/id/a/b/mon`` is not device ``a/b``, it is no topic at all.

Application side (what an application publishes and subscribes to)::

    iot-2/type/{device_type}/id/{device_id}/evt/{event}/fmt/{fmt}    device event
    iot-2/type/{device_type}/id/{device_id}/cmd/{command}/fmt/{fmt}  device command
    iot-2/type/{device_type}/id/{device_id}/mon                      device status
    iot-2/app/{app_id}/mon                                           application status

Device side (what a device publishes and subscribes to; the platform adds type and id)::

    iot-2/evt/{event}/fmt/{fmt}
    iot-2/cmd/{command}/fmt/{fmt}

Names (device type, device ID, app ID) are 1-36 of ``[A-Za-z0-9._-]``. Event and command IDs
and formats are any non-empty MQTT topic level. Filters may use ``+`` for a whole component;
``#`` is refused for applications, as the platform refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from worker.errors import TopicError

PREFIX: Final = "iot-2"
SINGLE: Final = "+"
MULTI: Final = "#"
NAME_MAX: Final = 36
NAME_RULE: Final = "1-36 of letters, digits, '-', '_', '.'"
LEVEL_RULE: Final = "a non-empty topic level without '/', '+', '#' or NUL"

_NAME = re.compile(r"[A-Za-z0-9._-]{1,36}")
_LEVEL_FORBIDDEN = frozenset("/+#\x00")


def _check(value: str, what: str, *, name: bool, wildcard: bool) -> str:
    """Validate one component; ``wildcard`` allows a lone ``+`` (filters only)."""
    if not isinstance(value, str):
        raise TopicError(f"{what} must be a string, not {type(value).__name__}")
    if wildcard and value == SINGLE:
        return value
    if name:
        if _NAME.fullmatch(value) is None:
            raise TopicError(f"{what} {value!r}: allowed are {NAME_RULE}{_plus(wildcard)}")
    elif not value or not _LEVEL_FORBIDDEN.isdisjoint(value):
        raise TopicError(f"{what} {value!r}: allowed is {LEVEL_RULE}{_plus(wildcard)}")
    return value


def _plus(wildcard: bool) -> str:
    return ", or '+' for any" if wildcard else ""


def check_name(value: str, what: str, *, wildcard: bool = False) -> str:
    """Validate a device type, device ID or app ID; return it unchanged."""
    return _check(value, what, name=True, wildcard=wildcard)


def check_level(value: str, what: str, *, wildcard: bool = False) -> str:
    """Validate an event ID, command ID or format; return it unchanged."""
    return _check(value, what, name=False, wildcard=wildcard)


# --- application-side topics -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceEventTopic:
    """``iot-2/type/T/id/D/evt/E/fmt/F``; a filter when any component is ``+``."""

    device_type: str
    device_id: str
    event: str
    fmt: str

    def __str__(self) -> str:
        return f"iot-2/type/{self.device_type}/id/{self.device_id}/evt/{self.event}/fmt/{self.fmt}"


@dataclass(frozen=True, slots=True)
class DeviceCommandTopic:
    """``iot-2/type/T/id/D/cmd/C/fmt/F``; a filter when any component is ``+``."""

    device_type: str
    device_id: str
    command: str
    fmt: str

    def __str__(self) -> str:
        return (
            f"iot-2/type/{self.device_type}/id/{self.device_id}/cmd/{self.command}/fmt/{self.fmt}"
        )


@dataclass(frozen=True, slots=True)
class DeviceStatusTopic:
    """``iot-2/type/T/id/D/mon``: the platform's connect/disconnect messages for a device."""

    device_type: str
    device_id: str

    def __str__(self) -> str:
        return f"iot-2/type/{self.device_type}/id/{self.device_id}/mon"


@dataclass(frozen=True, slots=True)
class AppStatusTopic:
    """``iot-2/app/A/mon``: the platform's connect/disconnect messages for an application."""

    app_id: str

    def __str__(self) -> str:
        return f"iot-2/app/{self.app_id}/mon"


AppTopic = DeviceEventTopic | DeviceCommandTopic | DeviceStatusTopic | AppStatusTopic


def device_event(
    device_type: str, device_id: str, event: str, fmt: str, *, wildcard: bool = False
) -> DeviceEventTopic:
    """Build a device-event topic (or filter, with ``wildcard=True``), validating each part."""
    return DeviceEventTopic(
        check_name(device_type, "device type", wildcard=wildcard),
        check_name(device_id, "device ID", wildcard=wildcard),
        check_level(event, "event ID", wildcard=wildcard),
        check_level(fmt, "format", wildcard=wildcard),
    )


def device_command(
    device_type: str, device_id: str, command: str, fmt: str, *, wildcard: bool = False
) -> DeviceCommandTopic:
    """Build a device-command topic (or filter, with ``wildcard=True``)."""
    return DeviceCommandTopic(
        check_name(device_type, "device type", wildcard=wildcard),
        check_name(device_id, "device ID", wildcard=wildcard),
        check_level(command, "command ID", wildcard=wildcard),
        check_level(fmt, "format", wildcard=wildcard),
    )


def device_status(device_type: str, device_id: str, *, wildcard: bool = False) -> DeviceStatusTopic:
    """Build a device-status topic (or filter, with ``wildcard=True``)."""
    return DeviceStatusTopic(
        check_name(device_type, "device type", wildcard=wildcard),
        check_name(device_id, "device ID", wildcard=wildcard),
    )


def app_status(app_id: str, *, wildcard: bool = False) -> AppStatusTopic:
    """Build an application-status topic (or filter, with ``wildcard=True``)."""
    return AppStatusTopic(check_name(app_id, "app ID", wildcard=wildcard))


def parse(topic: str, *, wildcard: bool = False) -> AppTopic:
    """Parse an application-side topic; with ``wildcard=True`` accept ``+`` components.

    Raises TopicError naming the first thing that is wrong.
    """
    levels = topic.split("/")
    if MULTI in levels and wildcard:
        raise TopicError(f"topic filter {topic!r}: '#' is not allowed for applications; use '+'")
    n = len(levels)
    if n >= 2 and levels[0] == PREFIX:
        if n == 9 and levels[1] == "type" and levels[3] == "id" and levels[7] == "fmt":
            t, d, kind, name, f = levels[2], levels[4], levels[5], levels[6], levels[8]
            if kind == "evt":
                return device_event(t, d, name, f, wildcard=wildcard)
            if kind == "cmd":
                return device_command(t, d, name, f, wildcard=wildcard)
        elif n == 6 and levels[1] == "type" and levels[3] == "id" and levels[5] == "mon":
            return device_status(levels[2], levels[4], wildcard=wildcard)
        elif n == 4 and levels[1] == "app" and levels[3] == "mon":
            return app_status(levels[2], wildcard=wildcard)
    raise TopicError(f"{'topic filter' if wildcard else 'topic'} {topic!r} {_APP_SHAPES}")


_APP_SHAPES: Final = (
    "is not an application topic; accepted are iot-2/type/T/id/D/evt/E/fmt/F, "
    "iot-2/type/T/id/D/cmd/C/fmt/F, iot-2/type/T/id/D/mon and iot-2/app/A/mon"
)


def parse_filter(topic_filter: str) -> AppTopic:
    """Parse an application-side subscription filter (``+`` allowed, ``#`` refused)."""
    return parse(topic_filter, wildcard=True)


# --- device-side topics ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnEventTopic:
    """``iot-2/evt/E/fmt/F``: what a device publishes about itself."""

    event: str
    fmt: str

    def __str__(self) -> str:
        return f"iot-2/evt/{self.event}/fmt/{self.fmt}"


@dataclass(frozen=True, slots=True)
class OwnCommandTopic:
    """``iot-2/cmd/C/fmt/F``: what a device subscribes to for its own commands."""

    command: str
    fmt: str

    def __str__(self) -> str:
        return f"iot-2/cmd/{self.command}/fmt/{self.fmt}"


DeviceTopic = OwnEventTopic | OwnCommandTopic


def own_event(event: str, fmt: str, *, wildcard: bool = False) -> OwnEventTopic:
    """Build a device-side event topic."""
    return OwnEventTopic(
        check_level(event, "event ID", wildcard=wildcard),
        check_level(fmt, "format", wildcard=wildcard),
    )


def own_command(command: str, fmt: str, *, wildcard: bool = False) -> OwnCommandTopic:
    """Build a device-side command topic (or filter, with ``wildcard=True``)."""
    return OwnCommandTopic(
        check_level(command, "command ID", wildcard=wildcard),
        check_level(fmt, "format", wildcard=wildcard),
    )


def parse_device(topic: str, *, wildcard: bool = False) -> DeviceTopic:
    """Parse a device-side topic: ``iot-2/evt/E/fmt/F`` or ``iot-2/cmd/C/fmt/F``."""
    levels = topic.split("/")
    if len(levels) == 5 and levels[0] == PREFIX and levels[3] == "fmt":
        if levels[1] == "evt":
            return own_event(levels[2], levels[4], wildcard=wildcard)
        if levels[1] == "cmd":
            return own_command(levels[2], levels[4], wildcard=wildcard)
    raise TopicError(
        f"topic {topic!r} is not a device topic; accepted are iot-2/evt/E/fmt/F "
        "and iot-2/cmd/C/fmt/F"
    )


# --- generic MQTT filters and shared subscriptions ------------------------------------------


def validate_filter(topic_filter: str) -> str:
    """Check a generic MQTT topic filter (MQTT 3.1.1 section 4.7); return it unchanged."""
    if not topic_filter or "\x00" in topic_filter:
        raise TopicError(f"topic filter {topic_filter!r}: must be non-empty and without NUL")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if level == MULTI and i != len(levels) - 1:
            raise TopicError(f"topic filter {topic_filter!r}: '#' must be the last level")
        if level not in (SINGLE, MULTI) and ("+" in level or "#" in level):
            raise TopicError(f"topic filter {topic_filter!r}: a wildcard must fill a whole level")
    return topic_filter


def validate_topic_name(topic: str) -> str:
    """Check a topic name to publish to: non-empty, no wildcards, no NUL."""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise TopicError(f"topic {topic!r}: must be non-empty, without '+', '#' or NUL")
    return topic


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` by MQTT rules (``$`` topics skip wildcards)."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in (SINGLE, MULTI):
        return False
    for i, f in enumerate(f_levels):
        if f == MULTI:
            return True
        if i >= len(t_levels) or (f != SINGLE and f != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


SHARE_PREFIX: Final = "$share"


def shared_filter(group: str, topic_filter: str) -> str:
    """``$share/{group}/{filter}`` for standard brokers (MQTT 5 section 4.8.2, rule S1)."""
    if not group or not _LEVEL_FORBIDDEN.isdisjoint(group):
        raise TopicError(f"share group {group!r}: allowed is {LEVEL_RULE}")
    return f"{SHARE_PREFIX}/{group}/{validate_filter(topic_filter)}"


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/{group}/{filter}`` into (group, filter); (None, filter) when not shared."""
    if not topic_filter.startswith(SHARE_PREFIX + "/"):
        return None, topic_filter
    parts = topic_filter.split("/", 2)
    if len(parts) != 3 or not parts[1] or not parts[2] or "+" in parts[1] or "#" in parts[1]:
        raise TopicError(
            f"shared filter {topic_filter!r}: expected $share/{{group}}/{{filter}} with a "
            "non-empty group without wildcards"
        )
    return parts[1], validate_filter(parts[2])
