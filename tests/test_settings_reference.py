"""Each setting is written once, in ``worker.options.OPTIONS``, and everything else agrees.

The flags of every command, their help, the defaults of ``Settings`` and of ``load_settings``,
and docs/reference/settings.md are all checked against the table, so a default or a flag
changed in one place only fails here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from types import ModuleType

import click
import pytest

from worker.cli import flag_help, main
from worker.config import Settings, load_settings
from worker.options import OPTIONS, Option, by_field
from worker.parsers import integer

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "settings.md"
FIELDS = frozenset(f.name for f in fields(Settings))
FIXED = [option for option in OPTIONS if option.default is not None]
NAMES = frozenset(option.field for option in OPTIONS)


def renderer() -> ModuleType:
    """scripts/render_settings.py, loaded as a module."""
    spec = importlib.util.spec_from_file_location(
        "render_settings", ROOT / "scripts/render_settings.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands(
    group: click.Group = main, prefix: str = "worker"
) -> Iterator[tuple[str, click.Command]]:
    """Every command under ``group``, with its full name."""
    for name, command in sorted(group.commands.items()):
        full = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from commands(command, full)
        else:
            yield full, command


def flag_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]


# --- the reference page ------------------------------------------------------------------------


def test_the_reference_page_is_the_rendered_table() -> None:
    assert PAGE.read_text(encoding="utf-8") == renderer().render(), (
        "docs/reference/settings.md is out of date: run python scripts/render_settings.py"
    )


def test_the_check_mode_tells_a_stale_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = renderer()
    page = tmp_path / "settings.md"
    monkeypatch.setattr(module, "PAGE", page)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    page.write_text(module.render().replace("| 1-3600 |", "| 1-60 |"), encoding="utf-8")
    assert module.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0


def test_every_variable_and_flag_is_on_the_page() -> None:
    page = PAGE.read_text(encoding="utf-8")
    names = [name for option in OPTIONS for name in (*option.envs, *option.flags)]
    assert [name for name in names if f"`{name}`" not in page] == []


def test_every_row_shows_what_its_parser_accepts_and_its_default() -> None:
    rows = {row.split(" | ")[0]: row for row in PAGE.read_text(encoding="utf-8").splitlines()}
    for option in OPTIONS:
        row = rows["| " + " ".join(f"`{name}`" for name in option.envs)]
        assert f" | {option.accepted} | {option.shown_default} | " in row


# --- the command line ------------------------------------------------------------------------


def test_check_has_one_flag_per_setting_and_no_other() -> None:
    params = {p.name: p for p in flag_options(main.commands["check"])}
    assert set(params) == {option.field for option in OPTIONS}
    for option in OPTIONS:
        param = params[option.field]
        assert (*param.opts, *param.secondary_opts) == option.flags
        assert param.help == flag_help(option, accepted=True)


def table_help(option: Option) -> set[str]:
    """The help a flag of this setting has: with or without the accepted values."""
    return {flag_help(option, accepted=True), flag_help(option, accepted=False)}


def test_every_settings_flag_of_every_command_is_its_table_row() -> None:
    """A command that takes settings takes them as the table says; no flag claims a variable
    the table does not know (``[env: ...]`` in its help)."""
    taking: set[str] = set()
    for name, command in commands():
        params = flag_options(command)
        if not any(p.help in table_help(by_field(str(p.name))) for p in params if p.name in NAMES):
            continue  # not a settings command: its --host or --drain-timeout are its own
        taking.add(name)
        for param in params:
            if param.name not in NAMES:
                assert "[env:" not in (param.help or ""), f"{name} {param.opts}: not in the table"
                continue
            option = by_field(str(param.name))
            assert (*param.opts, *param.secondary_opts) == option.flags, f"{name} {param.opts}"
            assert param.help in table_help(option), f"{name} {param.opts}: help not the table's"
            assert param.default is None, f"{name} {param.opts}: the default is the table's"
    expected = {
        "check", "run", "simulate", "publish event", "publish command", "publish replay",
        "asyncapi", "subscribe",
    }  # fmt: skip
    assert taking == {f"worker {command}" for command in expected}


def test_no_flag_outside_the_table_claims_a_variable() -> None:
    for name, command in commands():
        for param in flag_options(command):
            if "[env:" in (param.help or ""):
                option = by_field(str(param.name))
                assert param.help in table_help(option), f"{name} {param.opts}"


def test_a_flags_help_says_what_it_accepts_its_default_and_its_variables() -> None:
    option = by_field("api_key")
    text = flag_help(option, accepted=True)
    assert text == (
        "application API key; the org is taken from it. Accepted: a-{org}-{rest}. "
        "Default: none (quickstart). [env: WIOTP_AUTH_KEY / WIOTP_API_KEY]"
    )
    assert "Accepted" not in flag_help(option, accepted=False)


# --- the defaults ------------------------------------------------------------------------------


@pytest.mark.parametrize("option", FIXED, ids=lambda o: o.field)
def test_a_fixed_default_parses_and_is_the_settings_default(option: Option) -> None:
    assert option.default is not None
    value = option.parse(option.default)
    if option.field in FIELDS:
        assert getattr(Settings(), option.field) == value


def test_load_settings_uses_the_table_defaults() -> None:
    settings = load_settings({"WORKER_ORG": "abc123"}, {})  # quickstart refuses A: IDs
    for option in FIXED:
        assert option.default is not None
        if option.field in FIELDS:
            assert getattr(settings, option.field) == option.parse(option.default), option.field
    domain = by_field("domain").default
    assert settings.host == f"{settings.org}.messaging.{domain}"


def test_every_setting_has_a_field_or_is_folded_into_one() -> None:
    assert {o.field for o in OPTIONS} - FIELDS == {"instance_id", "domain"}
    assert len({flag for o in OPTIONS for flag in o.flags}) == sum(len(o.flags) for o in OPTIONS)
    assert len({env for o in OPTIONS for env in o.envs}) == sum(len(o.envs) for o in OPTIONS)


def test_an_option_has_a_default_or_a_rule_not_both() -> None:
    common = {"field": "x", "envs": ("X",), "flag": "--x", "parse": integer(1, 2), "help": "x"}
    with pytest.raises(ValueError, match="not both"):
        Option(**common, default="1", default_rule="one")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        Option(**common)  # type: ignore[arg-type]


def test_a_parser_says_what_it_accepts() -> None:
    assert integer(1, 10_000).accepts == "1-10000"
    assert integer(0, 1).accepts == "0, 1"
    assert by_field("overflow").accepted == "drop-oldest, pace, block"
    with pytest.raises(ValueError, match="from 1 to 10000"):
        integer(1, 10_000)("0")
