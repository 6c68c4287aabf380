"""The README documents every setting: each variable and each flag."""

from __future__ import annotations

from pathlib import Path

from worker.options import OPTIONS

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands() -> None:
    head = README[:1500]
    assert "make demo" in head and "make test" in head


def test_every_variable_and_flag_is_in_the_readme() -> None:
    missing = [
        name
        for option in OPTIONS
        for name in (*option.envs, option.flag.split("/")[0])
        if f"`{name}`" not in README
    ]
    assert missing == []
