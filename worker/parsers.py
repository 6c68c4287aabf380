"""Value parsers for settings: each turns a raw value into a setting's value or raises ValueError.

A :class:`Parser` also says, in a few words, what it accepts (``integer(1, 3600)`` accepts
"1-3600"): the settings table, the flags' help and the settings reference take that text from
it rather than repeating it. The error's text says what is accepted; ``worker.config`` adds the
variable or flag and the value. ``Secret`` wraps tokens and passwords so they never show.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from worker import identity, topics
from worker.errors import IdentityError, TopicError

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Parser(Generic[T]):
    """A raw value (an environment string, or what a flag gave) to a setting's value."""

    convert: Callable[[Any], T]
    #: what it accepts, as the help and the settings reference show it
    accepts: str

    def __call__(self, raw: Any) -> T:
        """The value of ``raw``; ValueError saying what is accepted when it is not."""
        return self.convert(raw)


def choice(*accepted: str) -> Parser[str]:
    """A parser accepting one of ``accepted`` (case-insensitive)."""
    listed = ", ".join(accepted)

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in accepted:
            raise ValueError(f"accepted are {listed}")
        return value

    return Parser(parse, listed)


def enum_choice(kind: type[E]) -> Parser[E]:
    """A parser accepting the values of an enum."""
    pick = choice(*(m.value for m in kind))
    return Parser(lambda raw: kind(pick(raw)), pick.accepts)


def integer(lo: int, hi: int) -> Parser[int]:
    """A parser for a whole number in [lo, hi]."""
    problem = f"accepted is a whole number from {lo} to {hi}"

    def parse(raw: str | int) -> int:
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValueError(problem) from None
        if not lo <= value <= hi:
            raise ValueError(problem)
        return value

    # A short range reads better as its values ("0, 1"), a long one as its bounds ("1-3600").
    few = hi - lo < 3
    return Parser(parse, ", ".join(map(str, range(lo, hi + 1))) if few else f"{lo}-{hi}")


def seconds(lo: float, hi: float) -> Parser[float]:
    """A parser for a duration in seconds in [lo, hi]."""
    problem = f"accepted is a number of seconds from {lo:g} to {hi:g}"

    def parse(raw: str | float) -> float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(problem) from None
        if not lo <= value <= hi:
            raise ValueError(problem)
        return value

    return Parser(parse, f"{lo:g}-{hi:g}")


_TRUE: Final = ("true", "1", "yes", "on")
_FALSE: Final = ("false", "0", "no", "off")
_YES_NO: Final = ", ".join(word for pair in zip(_TRUE, _FALSE, strict=True) for word in pair)


def _boolean(raw: str | bool) -> bool:
    if isinstance(raw, bool):
        return raw
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"accepted are {_YES_NO}")


boolean: Final = Parser(_boolean, _YES_NO)
"""A parser for yes/no values."""


def name(what: str) -> Parser[str]:
    """A parser for an app ID or instance ID: 1-36 of ``[A-Za-z0-9._-]``."""

    def parse(raw: str) -> str:
        try:
            return topics.check_name(raw, what)
        except TopicError:
            raise ValueError(f"allowed are {topics.NAME_RULE}") from None

    return Parser(parse, topics.NAME_RULE)


def _org(raw: str) -> str:
    try:
        return identity.check_org(raw)
    except IdentityError:
        raise ValueError(f"allowed are {identity.ORG_RULE}") from None


org: Final = Parser(_org, identity.ORG_RULE)
"""A parser for an organisation ID."""


def text(what: str) -> Parser[str]:
    """A parser for free text without spaces (host names, API keys, user names).

    ``what`` names the value for the help ("a host name or address"): any such text is taken,
    and what it means is checked where it is used (the connection, the API key's form).
    """

    def parse(raw: str) -> str:
        value = raw.strip()
        if not value or any(c.isspace() for c in value):
            raise ValueError("accepted is a non-empty value without spaces")
        return value

    return Parser(parse, what)


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


def secret(what: str) -> Parser[Secret]:
    """A parser that wraps the value so it never shows (tokens, passwords); ``what`` names it."""

    def parse(raw: str) -> Secret:
        if not raw:
            raise ValueError("accepted is a non-empty value")
        return Secret(raw)

    return Parser(parse, what)


def _readable_file(raw: str) -> str:
    if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
        raise ValueError("accepted is the path of a readable PEM file")
    return raw


readable_file: Final = Parser(_readable_file, "a readable PEM file")
"""A parser for a path that must be a readable file (a CA bundle)."""

_LEVEL: Final = choice("debug", "info", "warning", "error", "critical")


def _log_level(raw: str) -> str:
    value = raw.strip().lower()
    return _LEVEL("warning" if value == "warn" else value)


log_level: Final = Parser(_log_level, _LEVEL.accepts)
"""A parser for a log level; ``warn`` is taken as ``warning``."""

DEAD_LETTER_FORMS: Final = "log, none, file:PATH, mqtt:TYPE/ID/EVENT"


def _dead_letter(raw: str) -> str:
    """``log``, ``none``, ``file:PATH`` or ``mqtt:T/ID/EVENT``, with its kind lower-cased."""
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


dead_letter: Final = Parser(_dead_letter, DEAD_LETTER_FORMS)
"""A parser for a dead-letter sink spec; ``worker.deadletter`` builds the sink from it."""
