"""The results of one invocation, the targets they are held against, and BENCHMARKS.md.

Targets are ratios to figures measured in the same invocation (the targets BENCHMARKS.md
lists). A target is "met", "not met", or "not measured" (its section did not run, or its
consumer was skipped); nothing here asserts: a benchmark reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.brokers import BrokerFigure, best_mosquitto
from bench.machine import Load
from bench.routing import Routing
from bench.scenarios import Group, Latency, Overload
from bench.throughput import MQTT5_ON_AIOMQTT, Figure, is_baseline

MB = 1024 * 1024


@dataclass
class Results:
    """Everything one ``python -m bench`` measured."""

    command: str
    date: str
    machine: dict[str, str]
    settings: dict[str, str]
    default_transport: str
    #: messages per throughput run
    messages: int
    loads: list[Load] = field(default_factory=list)
    throughput: list[Figure] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    overload: list[Overload] = field(default_factory=list)
    routing: Routing | None = None
    groups: list[Group] = field(default_factory=list)
    brokers: list[BrokerFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def baseline(self, qos: int) -> float:
        """The baseline's median rate at ``qos`` (0 when not measured)."""
        found = [f.median for f in self.throughput if is_baseline(f) and f.qos == qos]
        return found[0] if found else 0.0

    def ratio(self, figure: Figure) -> float:
        """``figure`` over the baseline of its QoS (0 when either is missing)."""
        base = self.baseline(figure.qos)
        return figure.median / base if base and figure.rates else 0.0


@dataclass(frozen=True)
class Target:
    """One line of the targets table."""

    what: str
    goal: str
    figure: str
    status: str


def _status(value: float | None, ok: Callable[[float], bool]) -> str:
    if value is None:
        return "not measured"
    return "met" if ok(value) else "**not met**"


def _at_least(need: float) -> Callable[[float], bool]:
    return lambda value: value >= need


def throughput_targets(r: Results) -> list[Target]:
    """The floor (0.85x) for every no-op worker figure that speaks the baseline's MQTT 3.1.1;
    the fast path's target (2x) and goals (4x / 2.5x) for the default transport's (the aiomqtt
    transport is the reference)."""
    out: list[Target] = []
    for f in r.throughput:
        if "no-op" not in f.name or f.name.endswith(MQTT5_ON_AIOMQTT):
            continue
        ratio = r.ratio(f) if not f.skipped else None
        shown = f"{ratio:.2f}x" if ratio is not None else f.skipped or "-"
        if f.dropped:
            shown += f" ({f.dropped:,} dropped)"
        goal = 4.0 if f.qos == 0 else 2.5
        checks = [(0.85, "floor")]
        if f.name.startswith(f"worker no-op, {r.default_transport}"):
            checks += [(2.0, "fast path"), (goal, "fast path goal")]
        for need, source in checks:
            out.append(
                Target(
                    f"{f.name}, QoS {f.qos} ({source})",
                    f">= {need:g}x baseline",
                    shown,
                    _status(ratio, _at_least(need)),
                )
            )
    return out


def _ratio_target(what: str, ratio: float, need: float) -> Target:
    return Target(what, f">= {need:.2f}x", f"{ratio:.2f}x", _status(ratio, _at_least(need)))


def other_targets(r: Results) -> list[Target]:
    """Latency, RSS, routing, group scaling and the platform."""
    out = [
        Target(
            f"latency p99 at 50% capacity, QoS {lat.qos} ({lat.transport})",
            "< 5 ms",
            f"{lat.summary.get('p99', 0) * 1000:.2f} ms",
            _status(lat.summary.get("p99"), lambda v: v < 0.005),
        )
        for lat in r.latency
    ]
    out += [
        Target(
            "peak RSS under sustained QoS 0 overload",
            "< 60 MB",
            f"{o.peak_rss / MB:.1f} MB ({o.dropped:,} drops counted)",
            _status(o.peak_rss / MB, lambda v: v < 60),
        )
        for o in r.overload
    ]
    return out + _scaling_targets(r)


def _scaling_targets(r: Results) -> list[Target]:
    """Routing (10,000 routes vs 1), the group (3 replicas vs 1), platform vs Mosquitto."""
    out = []
    if r.routing is not None:
        ratio = r.routing.median(r.routing.routes) / r.routing.median(1)
        out.append(_ratio_target(f"pipeline with {r.routing.routes:,} routes vs 1", ratio, 0.9))
    one = [g.median for g in r.groups if g.replicas == 1]
    three = [g.median for g in r.groups if g.replicas == 3]
    if one and three and one[0]:
        out.append(_ratio_target("3 replicas vs 1, I/O-bound handler", three[0] / one[0], 2.7))
    for qos in (0, 1):
        plat = [b.median for b in r.brokers if b.qos == qos and not b.is_mosquitto]
        mosq = best_mosquitto(r.brokers, qos)
        if plat and mosq:
            what = f"platform vs the faster Mosquitto, group of 3, QoS {qos}"
            out.append(_ratio_target(what, plat[0] / mosq, 0.25))
    return out


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def rate(value: float) -> str:
    """``123,456``."""
    return f"{value:,.0f}"
