"""Finding the App of a module (``worker run MODULE[:ATTR]``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.errors import AppLoadError
from worker.loader import load_app


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path (as the current directory is for ``worker run``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("ld_")]:
        del sys.modules[name]


def write(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text("from worker import App\n" + body)


def test_the_app_attribute(modules: Path) -> None:
    write(modules, "ld_named", "app = App()\nother = App()\n")
    import_app = load_app("ld_named")
    assert import_app is sys.modules["ld_named"].app


def test_the_only_app_whatever_its_name(modules: Path) -> None:
    write(modules, "ld_only", "service = App()\nalias = service\n")
    assert load_app("ld_only") is sys.modules["ld_only"].service


def test_an_explicit_attribute(modules: Path) -> None:
    write(modules, "ld_pick", "a = App()\nb = App()\n")
    assert load_app("ld_pick:b") is sys.modules["ld_pick"].b


def test_several_apps_need_a_name(modules: Path) -> None:
    write(modules, "ld_many", "a = App()\nb = App()\n")
    with pytest.raises(AppLoadError, match=r"several Apps \(a, b\); pick one: MODULE:ATTR"):
        load_app("ld_many")


def test_import_errors_carry_their_message(modules: Path) -> None:
    write(modules, "ld_raises", "raise RuntimeError('no database')\n")
    with pytest.raises(AppLoadError, match="RuntimeError: no database"):
        load_app("ld_raises")
    write(modules, "ld_syntax", "def (:\n")
    with pytest.raises(AppLoadError, match=r"ld_syntax.py:2: invalid syntax"):
        load_app("ld_syntax")
    write(modules, "ld_needs", "import ld_not_installed\n")
    with pytest.raises(AppLoadError, match="No module named 'ld_not_installed'"):
        load_app("ld_needs")


def test_malformed_target() -> None:
    with pytest.raises(AppLoadError, match="expected MODULE or MODULE:ATTR"):
        load_app("worker.examples.fleet:")
