"""What a simulated reading looks like: the temperature range and an optional JSON template.

``--temp-range LOW:HIGH`` sets where each device's temperature starts and the bounds of its
random walk (default: it starts between 18 and 24 and walks within 5 to 35).

``--template JSON`` replaces the default payload ``{"temp": .., "seq": .., "ts": ..}`` with a
JSON object of your own. A string value that is exactly one placeholder becomes the value
itself (``"{temp}"`` is a number); placeholders inside longer strings are filled in as text.
The placeholders are ``{temp}``, ``{seq}``, ``{ts}``, ``{device_type}`` and ``{device_id}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from worker.errors import WorkerError

PLACEHOLDERS: Final = ("temp", "seq", "ts", "device_type", "device_id")
_FIELD: Final = re.compile(r"\{(\w*)\}")


class PayloadOptionError(WorkerError):
    """A payload option that cannot be used: what was wrong, and what is accepted."""


def temp_range(text: str) -> tuple[float, float]:
    """``LOW:HIGH`` as two numbers, LOW below HIGH."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        bounds = float(low), float(high)
    except ValueError:
        raise PayloadOptionError(
            f"--temp-range {text!r}: expected LOW:HIGH in degrees, e.g. 60:90"
        ) from None
    if bounds[0] >= bounds[1]:
        raise PayloadOptionError(f"--temp-range {text!r}: LOW must be below HIGH")
    return bounds


@dataclass(frozen=True, slots=True)
class Template:
    """A JSON object whose string values may hold placeholders; see the module docstring."""

    shape: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Check ``text``: a JSON object whose placeholders are all known."""
        try:
            shape = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise PayloadOptionError(f"--template is not valid JSON: {exc}") from None
        if not isinstance(shape, dict):
            raise PayloadOptionError(
                """--template must be a JSON object, e.g. '{"t": "{temp}", "n": "{seq}"}'"""
            )
        unknown = sorted(set(_names(shape)) - set(PLACEHOLDERS))
        if unknown:
            known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
            shown = ", ".join(f"{{{u}}}" for u in unknown)
            raise PayloadOptionError(f"--template: unknown placeholder {shown}; known: {known}")
        return cls(shape)

    def render(self, values: Mapping[str, Any]) -> bytes:
        """The payload with every placeholder filled in."""
        return orjson.dumps(_fill(self.shape, values))


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return _FIELD.findall(value)
    if isinstance(value, dict):
        return [n for v in value.values() for n in _names(v)]
    if isinstance(value, list):
        return [n for v in value for n in _names(v)]
    return []


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _FIELD.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return _FIELD.sub(lambda m: str(values[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value
