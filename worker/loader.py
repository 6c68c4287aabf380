"""Finding the user's App: ``worker run handlers.mymod`` or ``handlers.mymod:app``.

The module is imported with the current directory on ``sys.path`` (as ``python -m`` would),
then its App is the attribute named after the colon, else the attribute ``app``, else the
only App instance among its attributes. Every failure is an AppLoadError whose message says
which module, what went wrong, and (for an import error) the error's own text.
"""

from __future__ import annotations

import importlib
import os
import sys

from worker.app import App
from worker.errors import AppLoadError


def load_app(target: str) -> App:
    """The App of ``MODULE[:ATTR]``; AppLoadError when it does not import or holds no App."""
    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise AppLoadError(
            f"{target!r}: expected MODULE or MODULE:ATTR, e.g. worker.examples.fleet"
        )
    module = _import(module_name)
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, App):
            what = "no such attribute" if found is None else f"it is a {type(found).__name__}"
            raise AppLoadError(f"{target}: not an App ({what})")
        return found
    named = getattr(module, "app", None)
    if isinstance(named, App):
        return named
    apps = {id(v): (k, v) for k, v in vars(module).items() if isinstance(v, App)}
    if len(apps) == 1:
        return next(iter(apps.values()))[1]
    if not apps:
        raise AppLoadError(
            f"module {module_name!r} has no App: create one (app = App()) and register "
            "handlers on it, or name it with MODULE:ATTR"
        )
    names = ", ".join(sorted(k for k, _ in apps.values()))
    raise AppLoadError(f"module {module_name!r} has several Apps ({names}); pick one: MODULE:ATTR")


def _import(module_name: str) -> object:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise AppLoadError(
                f"cannot import {module_name!r}: no module named {missing!r} "
                f"(looked in {cwd} and the installed packages)"
            ) from exc
        raise AppLoadError(f"cannot import {module_name!r}: {exc}") from exc
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else "?"
        raise AppLoadError(f"cannot import {module_name!r}: {where}: {exc.msg}") from exc
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
