"""The README stays a short front page whose links work; the docs document every setting."""

from __future__ import annotations

import re
from pathlib import Path

from worker.options import OPTIONS

ROOT = Path(__file__).parent.parent
README_PATH = ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
SETTINGS_PAGE = ROOT / "docs" / "reference" / "settings.md"

#: the test's bound, and the README's promise: a front page, not the manual
README_LIMIT = 15_360
#: a Markdown link or image target: [text](target) or ![alt](target "title")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: a Markdown file named anywhere in the text, linked or not
MD_NAME = re.compile(r"(?<![\w./-])([\w./-]+\.md)\b")


def relative_targets(markdown: str) -> list[str]:
    """The link targets of a Markdown text that point into the repository (anchors dropped)."""
    targets = []
    for target in LINK.findall(markdown):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        targets.append(target.split("#", 1)[0])
    return targets


def missing_targets(markdown: str, base: Path) -> list[str]:
    """Relative link targets that name no file or directory under ``base``."""
    return [target for target in relative_targets(markdown) if not (base / target).exists()]


def test_readme_opens_with_the_two_commands() -> None:
    head = README[:1500]
    assert "make demo" in head and "make test" in head


def test_readme_is_a_short_front_page() -> None:
    size = len(README_PATH.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; the limit is {README_LIMIT}"


def test_every_relative_link_in_the_readme_points_to_a_file() -> None:
    assert len(relative_targets(README)) >= 10, "the README should link into docs/"
    assert missing_targets(README, ROOT) == []


def test_the_link_check_finds_a_broken_link() -> None:
    text = "[ok](README.md) [gone](docs/nowhere.md#part) [web](https://example.com) [top](#why)"
    assert relative_targets(text) == ["README.md", "docs/nowhere.md"]
    assert missing_targets(text, ROOT) == ["docs/nowhere.md"]


def test_every_markdown_file_the_readme_names_is_in_the_repository() -> None:
    names = set(MD_NAME.findall(README))
    known = {
        path.relative_to(ROOT).as_posix()
        for path in ROOT.rglob("*.md")
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)  # .venv
    }
    known |= {Path(path).name for path in known}
    assert names, "the README names no Markdown file at all"
    assert sorted(names - known) == []


def test_every_variable_and_flag_is_in_the_settings_reference() -> None:
    page = SETTINGS_PAGE.read_text(encoding="utf-8")
    missing = [
        name
        for option in OPTIONS
        for name in (*option.envs, option.flag.split("/")[0])
        if f"`{name}`" not in page
    ]
    assert missing == []


def _layer_rows() -> list[list[str]]:
    """The layers of the import-linter contract, each a list of module names, from the top."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [layers] = [
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    ]
    return [[m.strip() for m in re.split(r"[|:]", layer)] for layer in layers]


def test_the_architecture_page_draws_the_layers_the_contract_enforces() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split("## The layers", 1)[1].split("\n## ", 1)[0]
    drawn = []
    for line in section.splitlines():
        cells = re.split(r"(?<!\\)\|", line)
        if len(cells) < 4 or "`" not in cells[2]:
            continue  # not a table row naming modules
        drawn.append(sorted(m.strip().strip("`") for m in cells[2].split("\\|")))
    assert drawn == [sorted(row) for row in _layer_rows()]
