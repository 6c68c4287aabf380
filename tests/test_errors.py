"""The error tree drawn in worker.errors is complete: every WorkerError subclass is in it."""

from __future__ import annotations

import importlib
import pkgutil

import worker
from worker import errors


def all_subclasses(cls: type) -> set[type]:
    found: set[type] = set(cls.__subclasses__())
    for sub in list(found):
        found |= all_subclasses(sub)
    return found


def test_every_error_class_is_drawn_in_the_tree() -> None:
    for module in pkgutil.walk_packages(worker.__path__, "worker."):
        if module.name != "worker.__main__":
            importlib.import_module(module.name)
    doc = errors.__doc__ or ""
    missing = sorted(
        drawn
        for c in all_subclasses(errors.WorkerError)
        if c.__module__.startswith("worker.") and (drawn := _drawn_as(c)) not in doc
    )
    assert missing == []


def _drawn_as(cls: type) -> str:
    """``Name`` for the classes of worker.errors, ``package.module.Name`` for the others."""
    if cls.__module__ == "worker.errors":
        return f" {cls.__qualname__} "
    return f"{cls.__module__.removeprefix('worker.')}.{cls.__qualname__}"


def test_config_error_keeps_each_problem() -> None:
    err = errors.ConfigError(["a: bad", "b: bad"])
    assert err.problems == ("a: bad", "b: bad")
    assert str(err) == "a: bad\nb: bad"
