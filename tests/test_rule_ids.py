"""Every rule ID the repository cites (W12, S4, ...) is a heading of docs/platform/rules.md.

Code, tests, benchmarks and docs name the platform's rules by ID. A citation is only useful if
a reader can look it up, so each ID must resolve to a heading ``### W12. Title {#w12}`` of the
rule page, and the page itself must be well formed: one heading per rule, numbered without
gaps, each with the anchor that links such as ``rules.md#w12`` rely on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = Path("docs/platform/rules.md")
#: where citations are looked for: Python sources, markdown, and the deploy manifests
PY_DIRS = ("worker", "tests", "bench", "scripts")
MD_FILES = ("README.md", "BENCHMARKS.md")
MD_DIRS = ("docs",)
YAML_DIRS = ("deploy",)

#: a rule ID in text: W or S and a number (ruff codes in ``noqa`` comments are removed first)
CITATION = re.compile(r"(?<![\w.$])([WS])([1-9][0-9]{0,2})(?![\w])")
#: a range such as W24-W28 (hyphen or en dash) cites every rule in between as well
RANGE = re.compile(r"(?<![\w.$])([WS])([1-9][0-9]{0,2})\s*[-\u2013]\s*\1([1-9][0-9]{0,2})(?![\w])")
#: test names cite rules in lowercase: test_w37_w38_closes_...
TEST_NAME = re.compile(r"\btest_((?:[ws][1-9][0-9]{0,2}_)+)")
NOQA = re.compile(r"noqa\b.*$|ruff:.*$", re.MULTILINE)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
RULE_HEADING = re.compile(
    r"^(?P<id>(?P<letter>[WS])(?P<number>[1-9][0-9]{0,2}))\. (?P<title>[^{}]*[^{}\s]) "
    r"\{#(?P<anchor>[ws][1-9][0-9]{0,2})\}$"
)
LOOKS_LIKE_RULE = re.compile(r"^[WSws][0-9]+\b")
RULE_LINK = re.compile(r"rules\.md#([\w-]+)|\]\(#([\w-]+)\)")


# --- reading the rule page ----------------------------------------------------------------


def headings(text: str) -> Iterator[tuple[int, int, str]]:
    """(line number, level, title) of every markdown heading outside fenced code."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match is not None:
            yield number, len(match.group(1)), match.group(2)


def heading_problems(text: str) -> list[str]:
    """What is wrong with the rule headings of a rule page (empty when nothing is)."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, level, title in headings(text):
        if level != 3:
            if LOOKS_LIKE_RULE.match(title):
                problems.append(f"line {number}: a rule heading must be '### ', not {title!r}")
            continue
        match = RULE_HEADING.match(title)
        if match is None:
            problems.append(f"line {number}: expected '### W12. Short title {{#w12}}': {title!r}")
            continue
        rule = match["id"]
        if match["anchor"] != rule.lower():
            problems.append(f"line {number}: {rule} needs the anchor {{#{rule.lower()}}}")
        if rule in seen:
            problems.append(f"line {number}: {rule} is already the heading of line {seen[rule]}")
        seen[rule] = number
    for letter in "WS":
        numbers = [int(rule[1:]) for rule in seen if rule[0] == letter]
        if numbers != list(range(1, len(numbers) + 1)):
            problems.append(f"{letter} rules must be numbered 1, 2, 3, ... in order: {numbers}")
    return problems


def defined_rules(text: str) -> set[str]:
    """The IDs that have a well-formed heading."""
    return {
        match["id"]
        for _, level, title in headings(text)
        if level == 3 and (match := RULE_HEADING.match(title)) is not None
    }


# --- finding citations ----------------------------------------------------------------------


def citations(text: str) -> Iterator[tuple[int, str]]:
    """(line number, rule ID) of every rule cited in ``text``, ranges expanded."""
    for number, line in enumerate(NOQA.sub("", text).splitlines(), 1):
        for letter, digits in CITATION.findall(line):
            yield number, letter + digits
        for letter, first, last in RANGE.findall(line):
            for n in range(int(first) + 1, int(last)):
                yield number, f"{letter}{n}"
        for group in TEST_NAME.findall(line):
            for rule in group.strip("_").split("_"):
                yield number, rule.upper()


def cited_files(root: Path) -> Iterator[Path]:
    """The files whose citations must resolve."""
    for name in PY_DIRS:
        yield from sorted((root / name).rglob("*.py"))
    for name in MD_FILES:
        if (root / name).is_file():
            yield root / name
    for name in MD_DIRS:
        yield from sorted((root / name).rglob("*.md"))
    for name in YAML_DIRS:
        yield from sorted((root / name).rglob("*.yaml"))
        yield from sorted((root / name).rglob("*.yml"))


def unresolved(root: Path) -> list[str]:
    """``path:line: ID`` for every citation under ``root`` without a heading in the rule page."""
    known = defined_rules((root / RULES).read_text(encoding="utf-8"))
    missing = []
    for path in cited_files(root):
        if path.resolve() == Path(__file__).resolve():
            continue  # this file cites unknown rules on purpose, as samples
        text = path.read_text(encoding="utf-8")
        for number, rule in citations(text):
            if rule not in known:
                missing.append(f"{path.relative_to(root)}:{number}: {rule}")
    return missing


# --- the repository -------------------------------------------------------------------------


def test_every_cited_rule_has_a_heading() -> None:
    assert unresolved(ROOT) == []


def test_the_rule_headings_are_well_formed() -> None:
    assert heading_problems((ROOT / RULES).read_text(encoding="utf-8")) == []


def test_every_w_rule_says_what_the_local_platform_does_and_its_status() -> None:
    text = (ROOT / RULES).read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    lacking = [
        section.split(".", 1)[0]
        for section in sections
        if section.startswith("W")
        and ("**Local platform:**" not in section or "**Status:**" not in section)
    ]
    assert lacking == []


def test_links_to_rules_point_at_existing_anchors() -> None:
    anchors = {rule.lower() for rule in defined_rules((ROOT / RULES).read_text(encoding="utf-8"))}
    anchors |= {"sources"}
    broken = []
    for path in [ROOT / name for name in MD_FILES] + sorted((ROOT / "docs").rglob("*.md")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for match in RULE_LINK.finditer(text):
            anchor = match.group(1) or match.group(2)
            local = match.group(2) is not None
            if (path.name == RULES.name or not local) and anchor not in anchors:
                broken.append(f"{path.relative_to(ROOT)}: #{anchor}")
    assert broken == []


# --- the checks themselves --------------------------------------------------------------------

PAGE = """# Rules

## A group

### W1. Host and ports {#w1}

### W2. Client IDs {#w2}

## Standard

### S1. The shared filter {#s1}
"""


def _tree(tmp_path: Path, source: str) -> Path:
    (tmp_path / "docs" / "platform").mkdir(parents=True)
    (tmp_path / RULES).write_text(PAGE, encoding="utf-8")
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "mod.py").write_text(source, encoding="utf-8")
    return tmp_path


def test_a_comment_citing_an_unknown_rule_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, "x = 1\ny = 2  # the size rule (W99)\n")
    assert unresolved(root) == ["worker/mod.py:2: W99"]


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        ('"""Takeover (W1-W3)."""\n', ["W3"]),  # a range cites what is between its ends too
        ("def test_w2_s4_refused() -> None: ...\n", ["S4"]),
        ("value = 1  # noqa: S101, W605 - ruff codes are not rules\n", []),
        ("protocol = ProtocolVersion.V311  # see W2, S1\n", []),
        ("B018 E914 W3C S1x\n", []),
    ],
)
def test_what_counts_as_a_citation(tmp_path: Path, source: str, missing: list[str]) -> None:
    found = [line.rsplit(": ", 1)[1] for line in unresolved(_tree(tmp_path, source))]
    assert found == missing


@pytest.mark.parametrize("dash", ["-", "\u2013", " - "])
def test_a_range_cites_every_rule_in_it(dash: str) -> None:
    cited = {rule for _, rule in citations(f"shared groups (W24{dash}W28)")}
    assert cited == {"W24", "W25", "W26", "W27", "W28"}


@pytest.mark.parametrize(
    ("heading", "problem"),
    [
        ("### W3 Missing period {#w3}", "expected '### W12."),
        ("### W3. No anchor", "expected '### W12."),
        ("### W3. Wrong anchor {#w4}", "needs the anchor {#w3}"),
        ("### W2. Twice {#w2}", "already the heading"),
        ("### W4. A gap {#w4}", "numbered 1, 2, 3"),
        ("## W3. Wrong level {#w3}", "must be '### '"),
    ],
)
def test_malformed_headings_are_reported(heading: str, problem: str) -> None:
    problems = heading_problems(PAGE + "\n" + heading + "\n")
    assert any(problem in line for line in problems), problems


def test_the_sample_page_is_well_formed() -> None:
    assert heading_problems(PAGE) == []
    assert defined_rules(PAGE) == {"W1", "W2", "S1"}
