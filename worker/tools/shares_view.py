"""The terminal side of ``worker shares``: bars, JSON lines, and the refresh loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncGenerator, Sequence
from typing import TextIO

from worker.tools.shares import InstanceShare, SharesError, normalize_url, prometheus_shares, watch

BAR_WIDTH = 40
CLEAR = "\x1b[H\x1b[J"  # cursor home, clear to end: the frame is redrawn in place


def bar(share: float, width: int = BAR_WIDTH) -> str:
    """A fixed-width bar, filled in proportion to ``share`` (0..1)."""
    filled = min(width, max(0, round(share * width)))
    return "█" * filled + "░" * (width - filled)


def row_line(row: InstanceShare, name_width: int) -> str:
    """One instance: name, bar, share %, msg/s, in-flight, state (and why it is down)."""
    in_flight = "-" if row.in_flight is None else f"{row.in_flight:g}"
    if row.state == "down":
        tail = f"down ({row.error})" if row.error else "down"
        blank = " " * BAR_WIDTH
        return f"{row.instance:<{name_width}}  {blank}  {'-':>6}  {'-':>10}  {'-':>5}  {tail}"
    return (
        f"{row.instance:<{name_width}}  {bar(row.share)}  {row.share * 100:5.1f}%"
        f"  {row.rate:8.1f}/s  {in_flight:>5}  {row.state}"
    )


def render(rows: Sequence[InstanceShare], interval: float, source: str) -> str:
    """The whole frame: a summary line, a column header, one bar per instance."""
    total = math.fsum(row.rate for row in rows)
    ready = sum(row.state == "ready" for row in rows)
    clock = time.strftime("%H:%M:%S")
    lines = [
        f"worker shares · {len(rows)} {'instance' if len(rows) == 1 else 'instances'}, "
        f"{ready} ready · {total:.1f} msg/s"
        f" · {source} · every {interval:g}s · {clock}",
    ]
    if not rows:
        lines.append("no instances")
        return "\n".join(lines) + "\n"
    name_width = max(len("instance"), *(len(row.instance) for row in rows))
    lines.append(
        f"{'instance':<{name_width}}  {'share':<{BAR_WIDTH}}  {'':>6}  {'msg/s':>10}"
        f"  {'busy':>5}  state"
    )
    lines.extend(row_line(row, name_width) for row in rows)
    return "\n".join(lines) + "\n"


def as_json(rows: Sequence[InstanceShare], interval: float, source: str) -> str:
    """One snapshot as a single JSON line: the totals and one object per instance."""
    doc = {
        "source": source,
        "interval": interval,
        "total_rate": math.fsum(row.rate for row in rows),
        "instances": [row.as_dict() for row in rows],
    }
    return json.dumps(doc, sort_keys=False)


async def prometheus_rounds(
    base: str, app: str | None, interval: float, request_timeout: float
) -> AsyncGenerator[list[InstanceShare], None]:
    """Prometheus' recorded shares now and then every ``interval`` (its rules do the rating)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        yield await prometheus_shares(base, request_timeout, app)
        await asyncio.sleep(max(0.0, started + interval - loop.time()))


async def run_shares(
    urls: Sequence[str],
    *,
    prometheus: str | None,
    app: str | None,
    interval: float,
    request_timeout: float,
    once: bool,
    json_output: bool,
    out: TextIO,
) -> None:
    """Draw (or print as JSON lines) the shares until cancelled, or once with ``once``.

    Raises SharesError for bad input or an unreachable Prometheus; down instances are rows.
    """
    if prometheus is not None and urls:
        raise SharesError("give instance URLs or --prometheus, not both")
    if prometheus is None and not urls:
        raise SharesError("give at least one instance /metrics URL, or --prometheus URL")
    if prometheus is not None:
        source = "prometheus"
        rounds = prometheus_rounds(normalize_url(prometheus, ""), app, interval, request_timeout)
    else:
        source = "metrics"
        rounds = watch([normalize_url(url) for url in urls], interval, request_timeout)
    live = not json_output and not once and out.isatty()
    async with contextlib.aclosing(rounds) as frames:
        async for rows in frames:
            if json_output:
                out.write(as_json(rows, interval, source) + "\n")
            else:
                out.write((CLEAR if live else "") + render(rows, interval, source))
                if not live and not once:
                    out.write("\n")  # a pipe gets frames one after another, a blank line apart
            out.flush()
            if once:
                return
