"""Finding the user's App: ``worker run mymod``, ``mymod:app``, ``fleet.py``, ``src/fleet.py:app``.

A module name is imported with the current directory on ``sys.path`` (as ``python -m`` would).
A file path (it ends in ``.py`` or names a folder) is imported under its module name: inside a
package (folders with ``__init__.py``) as ``package.module`` with the package's parent on
``sys.path``, so its relative imports work; otherwise as a top-level module from its folder.
Then its App is the attribute named after the colon, else the attribute ``app``, else the
only App instance among its attributes. Every failure is an AppLoadError whose message says
which module, what went wrong, and (for an import error) the error's own text.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from worker.app import App
from worker.errors import AppLoadError


def load_app(target: str) -> App:
    """The App of ``MODULE[:ATTR]`` or ``FILE.py[:ATTR]``; AppLoadError when it does not
    import or holds no App."""
    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise AppLoadError(
            f"{target!r}: expected MODULE or MODULE:ATTR (or FILE.py[:ATTR]), "
            "e.g. worker.examples.fleet or ./fleet.py"
        )
    if _is_path(module_name):
        module_name = _module_of_file(module_name)
    module = _import(module_name)
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, App):
            what = "no such attribute" if found is None else f"it is {_a(type(found).__name__)}"
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


def require_handlers(app: App, target: str) -> App:
    """``app`` when it has a handler to serve; AppLoadError saying so otherwise.

    An App without routes would connect and subscribe to nothing: never ready, never told why.
    """
    if not app.routes:
        raise AppLoadError(
            f"{target}: the App has no handlers, so there is nothing to subscribe to: "
            "register a coroutine with @app.event(...), @app.command(...), "
            "@app.device_status(...) or @app.app_status(...)"
        )
    return app


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def _is_path(text: str) -> bool:
    """A file path rather than a dotted module name (``fleet.py``, ``./fleet``, ``a/b.py``)."""
    return text.endswith(".py") or "/" in text or os.sep in text


def _module_of_file(given: str) -> str:
    """The dotted name to import the file ``given`` by, with the folder it is found from on
    sys.path."""
    path = Path(given)
    if not path.exists():
        raise AppLoadError(f"{given!r}: no such file (looked from {os.getcwd()})")
    if path.is_dir():
        raise AppLoadError(f"{given!r} is a folder; give the .py file of the handlers")
    if path.suffix != ".py":
        raise AppLoadError(f"{given!r}: not a Python file (expected a .py file)")
    path = path.resolve()
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    if not all(part.isidentifier() for part in parts):
        raise AppLoadError(
            f"{str(path)!r}: {'.'.join(parts)!r} is not an importable module name; "
            "rename the file (and its package folders) to letters, digits and underscores"
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = ".".join(parts)
    _check_not_shadowed(name, path)
    return name


def _check_not_shadowed(name: str, path: Path) -> None:
    """An installed module of the same name would be imported instead of the file: say so."""
    existing = sys.modules.get(name)
    if existing is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return
        origin = spec.origin if spec is not None else None
    else:
        origin = getattr(existing, "__file__", None)
    if origin is not None and Path(origin).resolve() != path:
        raise AppLoadError(
            f"{str(path)!r}: its module name {name!r} is taken by {origin}; rename the file"
        )


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
