"""The accounting invariant: every published message is handled, dead-lettered, dropped with a
counted reason, or lost in a way the broker's documented semantics explain. Nothing else.

::

    published (confirmed by PUBACK)
        = handled                       the record files: per-message truth
        + dead-lettered                 worker_dead_letters_total
        + dropped, by reason            worker_messages_dropped_total{reason}
        + failed, counted by outcome    error/timeout/decode_error with no sink to take them
        + lost by broker semantics      at most ``lost_bound``, for the reason the fault gives

Counts come from each worker's last ``/metrics`` (for a killed worker: the scrape taken just
before the kill). Duplicates (a number handled twice) are counted and must stay within
``duplicate_bound``. Numbers sent on a publisher connection that was lost before the PUBACK
are *unconfirmed*: the broker may or may not have taken them, so either fate is explained;
they are reported apart and never resent. :meth:`Ledger.check` raises with the whole ledger
as the message, so a failure says at once which line does not add up.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

Samples = Mapping[str, float]
_KEY: Final = re.compile(r"^(\w+)(?:\{(.*)\})?$")
_LABEL: Final = re.compile(r'(\w+)="([^"]*)"')
_FAILED: Final = ("error", "timeout", "decode_error")


def family(samples: Samples, name: str, label: str) -> Counter[str]:
    """Sum of the samples of ``name`` by the value of ``label`` (one worker's scrape)."""
    out: Counter[str] = Counter()
    for key, value in samples.items():
        match = _KEY.match(key)
        if not match or match.group(1) != name:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        out[labels.get(label, "")] += int(value)
    return out


@dataclass
class Ledger:
    """One fault's ledger; build it with :func:`ledger`."""

    fault: str
    published: int
    unconfirmed: int
    handled: int
    unconfirmed_handled: int
    dead_lettered: int
    dropped: Counter[str]
    failed: int
    missing: int
    lost_bound: int
    lost_reason: str
    duplicates: int
    duplicate_bound: int
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Confirmed messages neither handled nor counted: what the broker semantics explain."""
        return self.missing - self.dead_lettered - sum(self.dropped.values()) - self.failed

    def report(self) -> str:
        """The ledger as a small table, then every problem."""
        drops = ", ".join(f"{r} {n}" for r, n in sorted(self.dropped.items()) if n) or "0"
        rows = [
            f"ledger of fault: {self.fault}",
            f"  published (confirmed by PUBACK)     {self.published}",
            f"  unconfirmed (lost before PUBACK)    {self.unconfirmed}"
            f" ({self.unconfirmed_handled} of them handled)",
            f"  handled (distinct, confirmed)       {self.handled}",
            f"  dead-lettered                       {self.dead_lettered}",
            f"  dropped, by reason                  {drops}",
            f"  failed, counted by outcome          {self.failed}",
            f"  lost by broker semantics            {self.lost} (bound {self.lost_bound}:"
            f" {self.lost_reason})",
            f"  duplicates                          {self.duplicates}"
            f" (bound {self.duplicate_bound})",
            f"  unexplained                         {'; '.join(self.problems) or 'none'}",
        ]
        return "\n".join(rows)

    def check(self) -> None:
        """AssertionError with the report when anything is unexplained."""
        assert not self.problems, self.report()


def ledger(
    fault: str,
    *,
    confirmed: Iterable[int],
    unconfirmed: Iterable[int] = (),
    handled: Sequence[Iterable[int]],
    scrapes: Sequence[Samples],
    lost_bound: int = 0,
    lost_reason: str = "none expected",
    duplicate_bound: int = 0,
) -> Ledger:
    """The ledger of one fault from the publisher's truth, the record files and the scrapes."""
    sent, maybe = set(confirmed), set(unconfirmed) - set(confirmed)
    seen: Counter[int] = Counter()
    for numbers in handled:
        seen.update(numbers)
    dropped: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    dead = 0
    for samples in scrapes:
        dropped.update(family(samples, "worker_messages_dropped_total", "reason"))
        outcomes.update(family(samples, "worker_messages_handled_total", "outcome"))
        dead += sum(family(samples, "worker_dead_letters_total", "route").values())
    # a failure whose dead letter could not be kept is counted once, as dropped
    # (dead_letter_failed), and not by its outcome
    failed = sum(outcomes[o] for o in _FAILED)
    book = Ledger(
        fault, len(sent), len(maybe), len(sent & seen.keys()), len(maybe & seen.keys()),
        dead, +dropped, failed, len(sent - seen.keys()), lost_bound, lost_reason,
        sum(c - 1 for c in seen.values()), duplicate_bound,
    )  # fmt: skip
    book.problems = _problems(book, seen, sent | maybe)
    return book


def _problems(book: Ledger, seen: Counter[int], published: set[int]) -> list[str]:
    """Every way the ledger fails to add up."""
    problems = []
    strangers = sorted(seen.keys() - published)
    if strangers:
        problems.append(f"{len(strangers)} handled but never published, e.g. {strangers[:5]}")
    if book.lost < 0:
        problems.append(f"{-book.lost} more failures counted than messages missing")
    if book.lost > book.lost_bound:
        problems.append(f"{book.lost} lost, more than the bound {book.lost_bound}")
    if book.duplicates > book.duplicate_bound:
        twice = sorted(n for n, c in seen.items() if c > 1)[:5]
        problems.append(f"{book.duplicates} duplicates over the bound, e.g. {twice}")
    return problems


def conservation(name: str, samples: Samples) -> list[str]:
    """One live worker's own books: received = outcomes + drops (each counted once)."""
    received = sum(family(samples, "worker_messages_received_total", "kind").values())
    outcomes = sum(family(samples, "worker_messages_handled_total", "outcome").values())
    dropped = family(samples, "worker_messages_dropped_total", "reason")
    books = outcomes + sum(dropped.values())
    if received == books:
        return []
    return [f"{name}: received {received} but accounted {books} ({outcomes} outcomes, {dropped})"]
