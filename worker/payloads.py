"""Typed payloads: a route's ``payload=`` model validates ``data`` before the handler runs.

::

    @dataclass
    class Reading:
        temp: float
        unit: str = "C"

    @app.event(event="reading", payload=Reading)
    async def on_reading(event: Event) -> None:
        reading: Reading = event.data          # validated; a bad payload never gets here

A model is a pydantic model (with the ``pydantic`` extra installed), a dataclass or a
TypedDict. With pydantic installed all three are validated by pydantic (``TypeAdapter``);
without it dataclasses and TypedDicts are checked here: required fields present, and values
of the plain JSON types (``str``, ``int``, ``float``, ``bool``, ``None``, lists, dicts, nested
models, ``Literal``, unions) of the declared type. A payload that does not validate is the
outcome ``decode_error`` with the validation message: never retried (the same bytes fail the
same way), dead-lettered per the route.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Final, Literal, Union

from worker.errors import CodecError

#: how many problems a validation message lists before it stops
_MAX_PROBLEMS: Final = 5

Validate = Callable[[Any], Any]


class PayloadModel:
    """A compiled payload model: ``validate(data)`` gives the model's value, or CodecError."""

    __slots__ = ("_schema", "_validate", "model", "name")

    def __init__(self, model: type, validate: Validate, schema: Callable[[], dict[str, Any]]):
        self.model = model
        self.name = getattr(model, "__name__", repr(model))
        self._validate = validate
        self._schema = schema

    def validate(self, data: Any) -> Any:
        """The model's value for decoded ``data``; CodecError saying what does not fit."""
        try:
            return self._validate(data)
        except CodecError:
            raise
        except Exception as exc:  # pydantic's ValidationError, a model's own __post_init__
            raise CodecError(f"payload does not match {self.name}: {_problems(exc)}") from exc

    def json_schema(self) -> dict[str, Any]:
        """The model as a JSON Schema (for the AsyncAPI document)."""
        return self._schema()


def compile_model(model: object, *, use_pydantic: bool | None = None) -> PayloadModel:
    """A PayloadModel for ``model``; TypeError naming what is accepted otherwise.

    ``use_pydantic`` None: pydantic when it is installed; False: the built-in checks (tests).
    """
    if not isinstance(model, type):
        raise TypeError(_ACCEPTED.format(model=model))
    plain = dataclasses.is_dataclass(model) or typing.is_typeddict(model)
    if not (plain or _is_pydantic_model(model)):
        raise TypeError(_ACCEPTED.format(model=model.__name__))
    if use_pydantic is not False:
        adapter = _pydantic_adapter(model, fallback=plain)
        if adapter is not None:
            return PayloadModel(model, adapter.validate_python, adapter.json_schema)
    if not plain:
        raise TypeError(f"payload={model.__name__}: a pydantic model needs pydantic installed")
    return PayloadModel(model, _checker(model), lambda: _schema(model))


_ACCEPTED: Final = (
    "payload={model}: accepted is a pydantic model (pip install 'pydantic>=2.5'), "
    "a dataclass or a TypedDict"
)


def _is_pydantic_model(model: type) -> bool:
    return any(c.__module__.startswith("pydantic") for c in model.__mro__[1:])


def _pydantic_adapter(model: type, *, fallback: bool) -> Any:
    """pydantic's TypeAdapter for ``model``; None without pydantic, or when pydantic cannot
    take a model the built-in checks can (``fallback``): on Python 3.11 it refuses a
    ``typing.TypedDict``, asking for ``typing_extensions.TypedDict``."""
    try:
        import pydantic
    except ImportError:
        return None
    try:
        return pydantic.TypeAdapter(model)
    except pydantic.PydanticUserError:
        if fallback:
            return None
        raise


def _problems(exc: BaseException) -> str:
    """A validation error in the form of the built-in checks: ``field 'a.b': what``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):  # not pydantic's: the exception's own words
        return f"{type(exc).__name__}: {exc}"
    found = []
    for error in errors()[:_MAX_PROBLEMS]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        what = str(error.get("msg", "invalid"))
        found.append(f"field {where!r}: {what.lower()}" if where else what)
    return "; ".join(found) or str(exc)


# --- the built-in checks --------------------------------------------------------------------


def _checker(model: type) -> Validate:
    def validate(data: Any) -> Any:
        problems: list[str] = []
        value = _check(model, data, "", problems)
        if problems:
            listed = "; ".join(problems[:_MAX_PROBLEMS])
            more = f" (and {len(problems) - _MAX_PROBLEMS} more)" if len(problems) > 5 else ""
            raise CodecError(f"payload does not match {model.__name__}: {listed}{more}")
        return value

    return validate


def _fields(model: type) -> tuple[dict[str, Any], set[str]]:
    """(field -> type, required fields) of a dataclass or TypedDict."""
    hints = typing.get_type_hints(model)
    if typing.is_typeddict(model):
        return hints, set(model.__required_keys__)  # type: ignore[attr-defined]
    required = {
        f.name
        for f in dataclasses.fields(model)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return {f.name: hints[f.name] for f in dataclasses.fields(model) if f.init}, required


def _check(kind: Any, value: Any, where: str, problems: list[str]) -> Any:
    """``value`` as ``kind`` (a nested model is built); a problem is noted, not raised."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if isinstance(kind, type) and (dataclasses.is_dataclass(kind) or typing.is_typeddict(kind)):
        return _check_model(kind, value, where, problems)
    if origin in (Union, types.UnionType):
        return _check_union(typing.get_args(kind), value, where, problems)
    if origin is Literal:
        if value not in typing.get_args(kind):
            problems.append(f"{_at(where)}expected one of {typing.get_args(kind)!r}, got {value!r}")
        return value
    if origin in (list, tuple, set, frozenset) or kind in (list, tuple, set):
        return _check_list(kind, value, where, problems)
    if origin is dict or kind is dict:
        return _check_dict(kind, value, where, problems)
    return _check_plain(kind, value, where, problems)


def _check_model(model: type, value: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{_at(where)}expected an object, got {_json_type(value)}")
        return value
    fields, required = _fields(model)
    for name in sorted(required - value.keys()):
        problems.append(f"missing field {where + name!r}")
    checked = {
        name: _check(fields[name], item, f"{where}{name}.", problems)
        for name, item in value.items()
        if name in fields  # unknown keys are left out, as a device may send more than we read
    }
    if problems or typing.is_typeddict(model):
        return checked
    return model(**checked)


def _check_union(options: tuple[Any, ...], value: Any, where: str, problems: list[str]) -> Any:
    for option in options:
        attempt: list[str] = []
        checked = _check(option, value, where, attempt)
        if not attempt:
            return checked
    names = " or ".join(_name(o) for o in options)
    problems.append(f"{_at(where)}expected {names}, got {_json_type(value)}")
    return value


def _check_list(kind: Any, value: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(value, list):
        problems.append(f"{_at(where)}expected a list, got {_json_type(value)}")
        return value
    args = typing.get_args(kind)
    item = args[0] if args else Any
    return [_check(item, v, f"{where}{i}.", problems) for i, v in enumerate(value)]


def _check_dict(kind: Any, value: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        problems.append(f"{_at(where)}expected an object, got {_json_type(value)}")
        return value
    args = typing.get_args(kind)
    item = args[1] if len(args) == 2 else Any
    return {k: _check(item, v, f"{where}{k}.", problems) for k, v in value.items()}


def _check_plain(kind: Any, value: Any, where: str, problems: list[str]) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON has one number type: 20 is a fine float
    if kind in (None, type(None)):
        ok = value is None
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(kind, type):
        ok = isinstance(value, kind)
    else:
        return value  # a type this check does not know: taken as it is
    if not ok:
        problems.append(f"{_at(where)}expected {_name(kind)}, got {_json_type(value)}")
    return value


def _at(where: str) -> str:
    return f"field {where.rstrip('.')!r}: " if where else ""


def _name(kind: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if kind in (None, type(None)):
        return "null"
    return names.get(kind, getattr(kind, "__name__", repr(kind)))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- JSON Schema of the built-in checks ----------------------------------------------------


def _schema(kind: Any) -> dict[str, Any]:
    origin = typing.get_origin(kind)
    if isinstance(kind, type) and (dataclasses.is_dataclass(kind) or typing.is_typeddict(kind)):
        fields, required = _fields(kind)
        schema: dict[str, Any] = {
            "title": kind.__name__,
            "type": "object",
            "properties": {name: _schema(t) for name, t in fields.items()},
        }
        if required:
            schema["required"] = sorted(required)
        return schema
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema(o) for o in typing.get_args(kind)]}
    if origin is Literal:
        return {"enum": list(typing.get_args(kind))}
    if origin in (list, tuple, set, frozenset) or kind in (list, tuple, set):
        args = typing.get_args(kind)
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    if origin is dict or kind is dict:
        args = typing.get_args(kind)
        return {"type": "object", "additionalProperties": _schema(args[1]) if args else {}}
    plain = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    return {"type": plain[kind]} if kind in plain else {}
