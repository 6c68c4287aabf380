"""The demo's results: per-phase verdicts, the exactly-once check, the table, JSON and SVG.

Pure functions over plain data, so they are tested without processes. The chart is written by
hand (a few dozen SVG elements): a line per instance of its share over time, the phases as
shaded bands with their names, and a legend.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Final

#: a phase passes when every running instance is within this many points of its expected share
TOLERANCE: Final = 0.10
COLOURS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
#: how many example sequence numbers the report names when some were lost or duplicated
EXAMPLES: Final = 10

#: instance name -> share (0..1), None when the instance was not running
Shares = dict[str, float | None]


@dataclass
class PhaseResult:
    """One phase: what IBM's example expects, what was measured over the window, and the verdict."""

    name: str
    says: str
    expected: Shares
    measured: Shares = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    #: seconds since the demo started: the phase's start, and its measurement window
    started: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)

    @property
    def misses(self) -> list[str]:
        """Instances whose measured share is off by more than TOLERANCE (or was not measured)."""
        off = []
        for name, want in self.expected.items():
            if want is None:
                continue
            got = self.measured.get(name)
            if got is None or abs(got - want) > TOLERANCE:
                off.append(name)
        return off

    @property
    def ok(self) -> bool:
        """Every running instance within TOLERANCE of its expected share."""
        return not self.misses

    def as_dict(self) -> dict[str, object]:
        """The phase in the results JSON."""
        return {
            "name": self.name,
            "says": self.says,
            "started": round(self.started, 3),
            "window": [round(self.window[0], 3), round(self.window[1], 3)],
            "expected": self.expected,
            "measured": {k: _round(v) for k, v in self.measured.items()},
            "rates": {k: round(v, 2) for k, v in self.rates.items()},
            "ok": self.ok,
        }


@dataclass(frozen=True)
class Delivery:
    """The exactly-once check: every acknowledged event handled once, nothing else handled."""

    sent: int
    failed: int
    handled: int
    per_instance: dict[str, int]
    lost: list[int]
    duplicates: list[int]
    unexpected: list[int]

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing handled twice, nothing handled that was never sent."""
        return not (self.lost or self.duplicates or self.unexpected)

    def summary(self) -> str:
        """One line: the counts, and examples of what went wrong."""
        text = (
            f"events: {self.sent} sent and acknowledged, {self.handled} handled "
            f"({', '.join(f'{k} {v}' for k, v in self.per_instance.items())}); "
        )
        if self.ok:
            return text + "each handled exactly once"
        problems = [
            f"{len(found)} {what} (e.g. {found[:EXAMPLES]})"
            for what, found in (
                ("lost", self.lost),
                ("handled more than once", self.duplicates),
                ("handled but never acknowledged", self.unexpected),
            )
            if found
        ]
        return text + "; ".join(problems)

    def as_dict(self) -> dict[str, object]:
        """The check in the results JSON (examples only, not every number)."""
        return {
            "sent": self.sent,
            "publish_failed": self.failed,
            "handled": self.handled,
            "per_instance": self.per_instance,
            "lost": len(self.lost),
            "duplicates": len(self.duplicates),
            "unexpected": len(self.unexpected),
            "examples": {
                "lost": self.lost[:EXAMPLES],
                "duplicates": self.duplicates[:EXAMPLES],
                "unexpected": self.unexpected[:EXAMPLES],
            },
            "exactly_once": self.ok,
        }


def read_ledger(path: Path) -> list[int]:
    """The sequence numbers in one instance's ledger (whole lines only; none if missing)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split("\n")[:-1] if line.strip()]


def check_delivery(
    acked: Iterable[int], failed: Iterable[int], ledgers: Mapping[str, Sequence[int]]
) -> Delivery:
    """Compare what the platform acknowledged with what the instances' ledgers hold.

    An event whose publish failed may or may not have arrived, so handling it once is fine;
    handling it twice is still a duplicate.
    """
    sent, maybe = set(acked), set(failed)
    seen: Counter[int] = Counter()
    for numbers in ledgers.values():
        seen.update(numbers)
    return Delivery(
        sent=len(sent),
        failed=len(maybe),
        handled=sum(seen.values()),
        per_instance={name: len(numbers) for name, numbers in ledgers.items()},
        lost=sorted(n for n in sent if n not in seen),
        duplicates=sorted(n for n, c in seen.items() if c > 1),
        unexpected=sorted(n for n in seen if n not in sent and n not in maybe),
    )


# --- the table -----------------------------------------------------------------------------------


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _cell(measured: float | None, expected: float | None) -> str:
    if expected is None:
        return "-" if not measured else f"{measured:.0%} (-)"
    got = "?" if measured is None else f"{measured * 100:.1f}%"
    return f"{got} ({expected * 100:.0f}%)"


def table(phases: Sequence[PhaseResult], instances: Sequence[str]) -> str:
    """A Markdown table: one row per phase, a column per instance: measured (expected)."""
    head = ["phase", *instances, "result"]
    rows = [head, ["---"] * len(head)]
    for number, phase in enumerate(phases, start=1):
        cells = [_cell(phase.measured.get(i), phase.expected.get(i)) for i in instances]
        verdict = "ok" if phase.ok else f"MISSED by more than {TOLERANCE:.0%}"
        rows.append([f"{number}. {phase.name}", *cells, verdict])
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = []
    for row in rows:
        if row[0] == "---":
            row = ["-" * w for w in widths]
        lines.append(
            "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        )
    return "\n".join(lines)


def results_json(
    setup: Mapping[str, object],
    phases: Sequence[PhaseResult],
    delivery: Delivery,
    timeline: Sequence[tuple[float, Shares]],
) -> str:
    """Everything as one JSON document: setup, phases, the delivery check, the timeline."""
    doc = {
        "setup": dict(setup),
        "ok": all(p.ok for p in phases) and delivery.ok,
        "phases": [p.as_dict() for p in phases],
        "delivery": delivery.as_dict(),
        "timeline": [
            {"t": round(t, 3), "shares": {k: _round(v) for k, v in shares.items()}}
            for t, shares in timeline
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


# --- the chart -----------------------------------------------------------------------------------

_W, _H = 760, 352
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 58, 48


def _x(t: float, span: float) -> float:
    return _LEFT + (_W - _LEFT - _RIGHT) * (t / span if span > 0 else 0.0)


def _y(share: float) -> float:
    return _TOP + (_H - _TOP - _BOTTOM) * (1.0 - share)


def _bands(phases: Sequence[PhaseResult], span: float) -> list[str]:
    parts = []
    for number, phase in enumerate(phases, start=1):
        x0 = _x(phase.started, span)
        x1 = _x(phases[number].started, span) if number < len(phases) else _x(span, span)
        shade = "#f2f2f2" if number % 2 else "#ffffff"
        parts.append(
            f'<rect x="{x0:.1f}" y="{_TOP}" width="{max(0.0, x1 - x0):.1f}" '
            f'height="{_H - _TOP - _BOTTOM}" fill="{shade}"/>'
        )
        # Labels alternate between two rows: a name may be wider than its band.
        parts.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{_TOP - 19 + 12 * (number % 2 == 0)}" '
            f'text-anchor="middle" font-size="11">{number}. {escape(phase.name)}</text>'
        )
    return parts


def _axes(span: float) -> list[str]:
    parts = []
    for pct in (0, 25, 33.3, 50, 75, 100):
        y = _y(pct / 100)
        dash = ' stroke-dasharray="3,3"' if pct not in (0, 100) else ""
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" '
            f'stroke="#bbbbbb"{dash}/>'
        )
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"{pct:g}%</text>"
        )
    step = max(1, round(span / 8))
    for second in range(0, int(span) + 1, step):
        x = _x(second, span)
        parts.append(
            f'<text x="{x:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle" '
            f'font-size="11">{second}s</text>'
        )
    return parts


def _lines(
    instances: Sequence[str], timeline: Sequence[tuple[float, Shares]], span: float
) -> list[str]:
    """One polyline per instance and run of samples; a gap where it was not running."""
    parts: list[str] = []
    for index, name in enumerate(instances):
        colour = COLOURS[index % len(COLOURS)]
        runs: list[list[str]] = [[]]
        for t, shares in timeline:
            share = shares.get(name)
            if share is None:
                runs.append([])
            else:
                runs[-1].append(f"{_x(t, span):.1f},{_y(share):.1f}")
        # Equal shares draw on top of each other: each line is narrower than the one before,
        # so all of them stay visible as stripes.
        width = max(1.5, 6.0 - 2.0 * index)
        parts.extend(
            f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
            f'stroke-width="{width:g}" stroke-linejoin="round"/>'
            for run in runs
            if run
        )
        legend_x = _LEFT + 10 + index * 120
        parts.append(
            f'<rect x="{legend_x}" y="{_H - 20}" width="14" height="4" fill="{colour}"/>'
            f'<text x="{legend_x + 20}" y="{_H - 14}" font-size="12">{escape(name)}</text>'
        )
    return parts


def chart_svg(
    title: str,
    subtitle: str,
    phases: Sequence[PhaseResult],
    instances: Sequence[str],
    timeline: Sequence[tuple[float, Shares]],
) -> str:
    """Each instance's share of the events over time, with the phases behind it."""
    span = max([t for t, _ in timeline] + [p.started for p in phases] + [1.0])
    body = [
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_LEFT}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{_W - _RIGHT}" y="18" font-size="11" text-anchor="end" fill="#555555">'
        f"{escape(subtitle)}</text>",
        *_bands(phases, span),
        *_axes(span),
        *_lines(instances, timeline, span),
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif">\n  ' + "\n  ".join(body) + "\n</svg>\n"
    )
