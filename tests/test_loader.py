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


def test_a_file_name_in_the_current_directory(modules: Path) -> None:
    write(modules, "ld_file", "app = App()\n")
    assert load_app("ld_file.py") is sys.modules["ld_file"].app


def test_a_relative_path_with_dot_slash(modules: Path) -> None:
    write(modules, "ld_dot", "app = App()\n")
    assert load_app("./ld_dot.py") is sys.modules["ld_dot"].app


def test_a_path_with_an_attribute_outside_the_current_directory(
    modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = modules / "ld_elsewhere"
    folder.mkdir()
    write(folder, "ld_far", "a = App()\nb = App()\n")
    monkeypatch.chdir(modules.parent)
    assert load_app(f"{modules.name}/ld_elsewhere/ld_far.py:b") is sys.modules["ld_far"].b


def test_a_file_in_a_package_keeps_its_relative_imports(modules: Path) -> None:
    package = modules / "ld_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("LIMIT = 80\n")
    write(package, "fleet", "from .settings import LIMIT\napp = App()\n")
    app = load_app("./ld_pkg/fleet.py")
    assert app is sys.modules["ld_pkg.fleet"].app
    assert sys.modules["ld_pkg.fleet"].LIMIT == 80


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ld_missing.py", r"'ld_missing.py': no such file \(looked from "),
        ("./ld_missing.py:app", r"'./ld_missing.py': no such file"),
        ("./ld_folder", r"'./ld_folder' is a folder; give the .py file"),
        ("./ld_text.txt", r"not a Python file \(expected a .py file\)"),
        ("./ld-dash.py", r"'ld-dash' is not an importable module name; rename the file"),
        ("./json.py", r"its module name 'json' is taken by .*json.*; rename the file"),
    ],
)
def test_file_path_errors_say_what_is_wrong(modules: Path, target: str, message: str) -> None:
    (modules / "ld_folder").mkdir()
    (modules / "ld_text.txt").write_text("")
    (modules / "ld-dash.py").write_text("")
    (modules / "json.py").write_text("")
    with pytest.raises(AppLoadError, match=message):
        load_app(target)
