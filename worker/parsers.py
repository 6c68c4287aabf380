"""Value parsers for settings: each turns a raw string into a value or raises ValueError.

The error's text says what is accepted; ``worker.config`` adds the variable or flag and the value.
``Secret`` wraps tokens and passwords so they never show.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Final, TypeVar

from worker import identity, topics
from worker.errors import IdentityError, TopicError

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
