"""Checks made when a handler is registered: the decorator's arguments, options and function.

Everything here runs at import time of the user's module, so a mistake stops ``worker run``
(exit code 3) before anything connects, with a message that names what was wrong, where,
and what is accepted.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec, TypeVar

from worker.deadletter import SinkChoice, check_choice
from worker.errors import RegistrationError
from worker.payloads import PayloadModel, compile_model
from worker.routes import BACKOFF_CAP, Batch

#: the ``retry_on=`` option: one exception class, a tuple of them, or None
RetryOn = type[BaseException] | tuple[type[BaseException], ...] | None
Hook = Callable[[], Awaitable[Any]]

P = ParamSpec("P")
R = TypeVar("R")


def explained(decorator: Callable[P, R]) -> Callable[P, R]:
    """Turn a decorator call with bad arguments into a RegistrationError that says where.

    ``@app.event("reading")`` would otherwise be a bare TypeError (or, were the components
    positional, silently the device *type* "reading"); ``retry=2`` gets a "did you mean".
    The file and line are the decorator call's, so the message points at the handler.
    """
    signature = inspect.signature(decorator)

    @functools.wraps(decorator)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            signature.bind(*args, **kwargs)
        except TypeError:
            caller = sys._getframe(1)  # the module that registers the handler
            where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
            raise RegistrationError(
                _misuse(decorator.__name__, signature, args[1:], kwargs, where)
            ) from None
        return decorator(*args, **kwargs)

    return checked


#: the decorators' topic components, in topic order
_COMPONENTS: Final = ("device_type", "device_id", "event", "command", "format", "app_id")


def _misuse(
    name: str,
    signature: inspect.Signature,
    positional: tuple[object, ...],
    keywords: dict[str, object],
    where: str,
) -> str:
    accepted = [p for p in signature.parameters if p != "self"]
    call = f"@app.{name}(...) at {where}"
    if positional:
        components = [p for p in accepted if p in _COMPONENTS]
        return (
            f"{call}: {positional[0]!r} was given by position; every argument is a keyword, "
            f"so name the topic component ({', '.join(c + '=' for c in components)}) "
            "or the option it is"
        )
    unknown = [k for k in keywords if k not in accepted]
    hints = []
    for key in unknown:
        close = " or ".join(repr(c) for c in difflib.get_close_matches(key, accepted, n=2))
        hints.append(f"{key!r}" + (f" (did you mean {close}?)" if close else ""))
    return f"{call}: unknown option {', '.join(hints)}. Accepted: {', '.join(accepted)}"


def check_options(
    ordered: bool,
    timeout: float | None,
    retries: int,
    backoff: float,
    dead_letter: SinkChoice,
    batch: Batch | None = None,
    retry_on: RetryOn = None,
) -> dict[str, Any]:
    """Check a decorator's options at the decorator call; RegistrationError names the bad one."""
    if not isinstance(ordered, bool):
        raise RegistrationError(f"ordered={ordered!r}: accepted are True and False")
    if timeout is not None and not (_number(timeout) and 0 < timeout < math.inf):
        raise RegistrationError(f"timeout={timeout!r}: accepted is None or seconds above 0")
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 100:
        raise RegistrationError(f"retries={retries!r}: accepted is a whole number from 0 to 100")
    if not (_number(backoff) and 0 <= backoff <= BACKOFF_CAP):
        raise RegistrationError(
            f"retry_backoff={backoff!r}: accepted is seconds from 0 to {BACKOFF_CAP:g}"
        )
    if batch is not None and not isinstance(batch, Batch):
        raise RegistrationError(
            f"batch={batch!r}: accepted is None or Batch(max_size=..., max_wait=...)"
        )
    try:
        sink = check_choice(dead_letter)
    except ValueError as exc:
        raise RegistrationError(f"dead_letter={dead_letter!r}: {exc}") from None
    return {
        "retry_on": _retry_on(retry_on),
        "ordered": ordered,
        "timeout": None if timeout is None else float(timeout),
        "retries": retries,
        "retry_backoff": float(backoff),
        "dead_letter": sink,
        "batch": batch,
    }


def _retry_on(retry_on: RetryOn) -> tuple[type[BaseException], ...] | None:
    """The exception types a route retries; RegistrationError for anything else."""
    if retry_on is None:
        return None
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not kinds or not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
        raise RegistrationError(
            f"retry_on={retry_on!r}: accepted is None (retry every error but PermanentError), "
            "an exception class, or a tuple of them"
        )
    return kinds


def payload_model(model: type | None) -> PayloadModel | None:
    if model is None:
        return None
    try:
        return compile_model(model)
    except TypeError as exc:
        raise RegistrationError(str(exc)) from None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_handler(func: object, name: str | None) -> tuple[str, bool]:
    """(route name, whether it takes a Context) of ``func``, after checking it is
    ``async def f(message)`` or ``async def f(message, ctx)``."""
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise RegistrationError(f"name={name!r}: accepted is a non-empty string")
    label = name or getattr(func, "__name__", None) or repr(func)
    if not inspect.iscoroutinefunction(func):
        raise RegistrationError(
            f"handler {label!r} must be a coroutine function (async def), not {type(func).__name__}"
        )
    try:
        signature = inspect.signature(func)
    except ValueError:  # no signature to inspect (some C callables); the call will tell
        return label, False
    positional = [
        p for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]  # fmt: skip
    for args in ((None,), (None, None)):
        try:
            signature.bind(*args)
        except TypeError:
            continue
        return label, len(args) == 2 or len(positional) >= 2
    raise RegistrationError(
        f"handler {label!r} must accept the message as its one positional argument, and "
        "optionally a worker.Context as a second"
    )


def check_hook(func: Any, what: str) -> Hook:
    label = getattr(func, "__name__", repr(func))
    if not inspect.iscoroutinefunction(func):
        raise RegistrationError(f"@app.{what} {label!r} must be a coroutine function (async def)")
    try:
        inspect.signature(func).bind()
    except TypeError:
        raise RegistrationError(f"@app.{what} {label!r} must take no arguments") from None
    except ValueError:
        pass
    hook: Hook = func
    return hook
