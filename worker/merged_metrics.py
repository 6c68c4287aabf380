"""One ``/metrics`` page for several worker processes: every process's series with a
``process`` label, and the scaling signal summed for the whole pod.

``worker run --workers N`` runs N processes; Prometheus scrapes one endpoint per pod. Each
process keeps its own registry (no shared files, no locks on the message path), and the
supervisor merges their pages at scrape time:

- every series of process ``n`` gets ``process="n"``. Prometheus sums them (the recording
  rules all ``sum by (instance, job)``), so no series is counted twice, and a restarted
  process shows as the counter reset of its own series, which ``rate`` already handles;
- the three scaling gauges (``worker.saturation``) are the pod's: one series each, without
  ``process``: ``worker_concurrency`` and ``worker_busy_lanes`` summed, and
  ``worker_handler_saturation`` their ratio. A scaler that reads one number per pod (KEDA's
  Metrics API scaler takes the first series that matches) then reads the pod's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

#: the scaling gauges, summed per pod rather than labelled per process
POD_GAUGES: Final = frozenset(
    {"worker_concurrency", "worker_busy_lanes", "worker_handler_saturation"}
)


class _Family:
    """One family's comment lines and its samples, from every process."""

    __slots__ = ("comments", "samples")

    def __init__(self) -> None:
        self.comments: list[str] = []
        self.samples: list[str] = []


def merge(pages: Mapping[str, str]) -> bytes:
    """The text exposition of every page (process label → its ``/metrics`` text), merged.

    The pages are prometheus_client's own output, so they are relabelled line by line rather
    than parsed into objects and written again: a scrape during a benchmark must cost the
    supervisor little. ValueError naming the process when a line is not the text format.
    """
    families: dict[str, _Family] = {}
    pod = dict.fromkeys(("worker_concurrency", "worker_busy_lanes"), 0.0)
    for process, text in pages.items():
        name = ""
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                name = _comment_family(line, process)
                family = families.setdefault(name, _Family())
                if name not in POD_GAUGES and len(family.comments) < 2:
                    family.comments.append(line)
                continue
            sample, value = _sample(line, process)
            if name in POD_GAUGES:
                if name in pod:
                    pod[name] += value
                continue
            families.setdefault(name, _Family()).samples.append(sample)
    lines = []
    for name, family in families.items():
        if name not in POD_GAUGES:
            lines += family.comments + family.samples
    if pages:
        lines += _pod_lines(pod["worker_concurrency"], pod["worker_busy_lanes"])
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _comment_family(line: str, process: str) -> str:
    """The family a ``# HELP name ...`` or ``# TYPE name type`` line is about."""
    parts = line.split(" ", 3)
    if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
        raise ValueError(f"process {process}: not the Prometheus text format: {line[:80]!r}")
    return parts[2]


def _sample(line: str, process: str) -> tuple[str, float]:
    """The sample line with ``process`` added to its labels, and its value."""
    head, _, raw = line.rpartition(" ")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not head or (value != value and raw != "NaN") or ("{" in head) != head.endswith("}"):
        raise ValueError(f"process {process}: not the Prometheus text format: {line[:80]!r}")
    label = f'process="{process}"'
    if "{" in head:
        name, _, labels = head.partition("{")
        sep = "," if labels != "}" else ""
        return f"{name}{{{label}{sep}{labels} {raw}", value
    return f"{head}{{{label}}} {raw}", value


def _pod_lines(lanes: float, busy: float) -> list[str]:
    """The scaling gauges of the whole pod."""
    saturation = min(1.0, busy / lanes) if lanes else 0.0
    values = (
        ("worker_concurrency", "Lanes of every process of this pod", lanes),
        ("worker_busy_lanes", "Lanes busy on average, every process of this pod", busy),
        ("worker_handler_saturation", "Share of this pod's lane time in handlers", saturation),
    )
    lines = []
    for name, doc, value in values:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge", f"{name} {value!r}"]
    return lines
