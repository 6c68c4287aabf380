"""What share of an application's load each instance carries, measured from the outside.

Two sources, one result (a list of :class:`InstanceShare`):

- the instances' own ``/metrics`` endpoints, scraped concurrently twice an interval apart:
  an instance's rate is the increase of ``worker_messages_received_total`` (summed over kinds)
  between the scrapes, its share that rate over the sum of all instances' rates. The page of
  ``worker run --workers N`` holds N group members, told apart by their ``process`` label:
  each is an instance of its own here (named by its ``worker_info``), as it is to the broker;
- a Prometheus server, asked for the recording rules ``worker:load_share:ratio`` and
  ``worker:messages_received:rate1m`` (deploy/prometheus/rules.yaml).

An instance that cannot be scraped is a row in state ``down``, never an exception: the view is
for watching instances come and go. Only bad input (a non-URL) and an unreachable Prometheus
raise :class:`SharesError`. Pages are read with :func:`worker.web.get`, the project's one small
HTTP client, so this needs nothing beyond prometheus_client.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlencode, urlsplit

from prometheus_client.parser import text_string_to_metric_families

from worker import web
from worker.errors import WorkerError

State = Literal["ready", "paused", "down"]

RECEIVED = "worker_messages_received_total"


class SharesError(WorkerError):
    """Bad input for a share measurement, or a Prometheus server that cannot answer."""


@dataclass(frozen=True)
class Reading:
    """One scrape of one instance; ``error`` is set (and the numbers are None) when it failed."""

    url: str
    at: float
    instance: str
    received: float | None = None
    in_flight: float | None = None
    subscribed: bool | None = None
    error: str | None = None
    #: the ``process`` label of one process of a ``--workers N`` page; None: the whole page
    process: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        """What pairs a reading with the same member's reading of the next round."""
        return self.url, self.process


@dataclass(frozen=True)
class InstanceShare:
    """One instance's row: its share of the total (0..1), msg/s, in-flight handlers, state."""

    instance: str
    url: str
    share: float
    rate: float
    in_flight: float | None
    state: State
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        """The machine-readable row (``worker shares --json``)."""
        return {
            "instance": self.instance,
            "url": self.url,
            "share": self.share,
            "rate": self.rate,
            "in_flight": self.in_flight,
            "state": self.state,
        }


def normalize_url(text: str, default_path: str = "/metrics") -> str:
    """``host:port`` or ``http(s)://host[:port][/path]`` as a full URL; SharesError otherwise."""
    candidate = text.strip()
    if "://" not in candidate:
        candidate = f"http://{candidate}"
    problem = f"not an http(s) URL: {text!r}"
    try:
        parts = urlsplit(candidate)
        parts.port  # noqa: B018 - a bad port only raises when read
    except ValueError as exc:
        raise SharesError(problem) from exc
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in text)
    ):
        raise SharesError(problem)
    path = parts.path if parts.path not in ("", "/") else default_path
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"


def host_label(url: str) -> str:
    """The name shown for an instance until its worker_info says otherwise."""
    return urlsplit(url).netloc


class _Member:
    """What one page says about one member (one process of a ``--workers N`` page)."""

    __slots__ = ("in_flight", "instance", "received", "subscribed")

    def __init__(self) -> None:
        self.received: float | None = None
        self.in_flight: float | None = None
        self.subscribed: bool | None = None
        self.instance: str | None = None

    def read(self, name: str, value: float, labels: dict[str, str]) -> None:
        if name == RECEIVED:
            self.received = (self.received or 0.0) + value
        elif name == "worker_in_flight":
            self.in_flight = (self.in_flight or 0.0) + value
        elif name == "worker_subscribed":
            self.subscribed = bool(self.subscribed) or value == 1
        elif name == "worker_info" and labels.get("instance"):
            self.instance = labels["instance"]


def parse_readings(url: str, at: float, text: str) -> list[Reading]:
    """One reading per process of the page (``process`` label), or one for a page without
    them; ValueError if the page serves no worker metrics."""
    members: dict[str | None, _Member] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _READ:
                process = sample.labels.get("process")
                member = members.get(process) or members.setdefault(process, _Member())
                member.read(sample.name, sample.value, sample.labels)
    if not members:
        # A page without a single worker series is some other exporter: say so.
        raise ValueError(f"{url} does not serve worker metrics")
    if len(members) > 1:
        members.pop(None, None)  # series without a process label are the pod's, not a member
    return [
        Reading(url, at, m.instance or _name(url, process), m.received, m.in_flight,
                m.subscribed, process=process)
        for process, m in sorted(members.items(), key=lambda item: _order(item[0]))
    ]  # fmt: skip


def parse_reading(url: str, at: float, text: str) -> Reading:
    """The whole page as one reading: its processes summed (ValueError if not worker metrics)."""
    readings = parse_readings(url, at, text)
    if len(readings) == 1:
        return replace(readings[0], process=None)
    received = [r.received for r in readings if r.received is not None]
    in_flight = [r.in_flight for r in readings if r.in_flight is not None]
    return Reading(
        url,
        at,
        host_label(url),
        math.fsum(received) if received else None,
        math.fsum(in_flight) if in_flight else None,
        any(r.subscribed for r in readings),
    )


_READ = frozenset({RECEIVED, "worker_in_flight", "worker_subscribed", "worker_info"})


def _name(url: str, process: str | None) -> str:
    return host_label(url) if process is None else f"{host_label(url)} process {process}"


def _order(process: str | None) -> tuple[int, str]:
    """Processes by number (``10`` after ``9``), the page's own series first."""
    if process is None:
        return -1, ""
    return (int(process), "") if process.isdigit() else (1 << 30, process)


def describe(exc: BaseException) -> str:
    """A short reason for a row or message; OSError texts carry errno noise."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def scrape(url: str, request_timeout: float, *, by_process: bool = False) -> list[Reading]:
    """One URL's reading (one per process with ``by_process``); a failure is a Reading with
    ``error`` set, never an exception."""
    try:
        text = (await web.get(url, request_timeout, accept="text/plain")).decode()
        at = time.monotonic()
        if by_process:
            return parse_readings(url, at, text)
        return [parse_reading(url, at, text)]
    except (OSError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
        return [Reading(url, time.monotonic(), host_label(url), error=describe(exc))]


async def scrape_all(
    urls: Sequence[str], request_timeout: float, *, by_process: bool = False
) -> list[Reading]:
    """Scrape every URL concurrently; the readings in the URLs' order.

    Without ``by_process`` there is exactly one reading per URL (a ``--workers N`` page
    summed); with it, one per process of such a page.
    """
    pages = await asyncio.gather(*(scrape(u, request_timeout, by_process=by_process) for u in urls))
    return [reading for page in pages for reading in page]


def instance_rate(before: Reading, after: Reading) -> float:
    """msg/s between two readings; a counter that went down means a restart, as in rate()."""
    if before.received is None or after.received is None or after.at <= before.at:
        return 0.0
    increase = after.received - before.received
    if increase < 0:
        increase = after.received
    return increase / (after.at - before.at)


def state_of(before: Reading, after: Reading) -> State:
    """down if either scrape failed, ready if subscribed, otherwise paused."""
    if before.error is not None or after.error is not None:
        return "down"
    return "ready" if after.subscribed else "paused"


def compute_shares(before: Sequence[Reading], after: Sequence[Reading]) -> list[InstanceShare]:
    """Each instance's rate and share from two scrape rounds of the same URLs.

    Readings are paired by URL and process, in the order of ``after``. A member that one round
    lacks (a process that appeared, or one its supervisor could not scrape) is a row without
    a rate, down when it is gone.
    """
    pairs = _pairs(before, after)
    rates = [instance_rate(b, a) if state_of(b, a) != "down" else 0.0 for b, a in pairs]
    total = math.fsum(rates)
    rows: list[InstanceShare] = []
    for (b, a), rate in zip(pairs, rates, strict=True):
        state = state_of(b, a)
        rows.append(
            InstanceShare(
                instance=a.instance if a.error is None else b.instance,
                url=a.url,
                share=rate / total if total > 0 else 0.0,
                rate=rate,
                in_flight=a.in_flight if state != "down" else None,
                state=state,
                error=a.error or b.error,
            )
        )
    return rows


def _pairs(before: Sequence[Reading], after: Sequence[Reading]) -> list[tuple[Reading, Reading]]:
    earlier = {r.key: r for r in before}
    pairs = [(earlier.pop(a.key, a), a) for a in after]  # new: its own before (no rate)
    gone = [(b, replace(b, error="no longer on its page")) for b in earlier.values()]
    return pairs + gone


async def watch(
    urls: Sequence[str], interval: float, request_timeout: float
) -> AsyncGenerator[list[InstanceShare], None]:
    """Shares over each consecutive interval, forever; each round's scrape is the next's start.

    Waiting ``interval`` between rounds is the measurement window of the rate, not a sync.
    """
    loop = asyncio.get_running_loop()
    before = await scrape_all(urls, request_timeout, by_process=True)
    started = loop.time()
    while True:
        await asyncio.sleep(max(0.0, started + interval - loop.time()))
        started = loop.time()
        after = await scrape_all(urls, request_timeout, by_process=True)
        yield compute_shares(before, after)
        before = after


async def measure(
    urls: Sequence[str], interval: float, request_timeout: float
) -> list[InstanceShare]:
    """One snapshot: the shares over one interval."""
    rounds = watch(urls, interval, request_timeout)
    try:
        return await anext(rounds)
    finally:
        await rounds.aclose()


async def prometheus_vector(
    base: str, query: str, request_timeout: float
) -> list[tuple[dict[str, str], float]]:
    """An instant query's samples as (labels, value); SharesError if Prometheus cannot answer."""
    url = f"{base.rstrip('/')}/api/v1/query?{urlencode({'query': query})}"
    try:
        doc = json.loads(await web.get(url, request_timeout, accept="application/json"))
        if doc.get("status") != "success" or doc["data"]["resultType"] != "vector":
            raise ValueError(doc.get("error") or "unexpected answer")
        return [(item["metric"], float(item["value"][1])) for item in doc["data"]["result"]]
    except TimeoutError as exc:
        raise SharesError(
            f"Prometheus at {base} did not answer within {request_timeout:g}s"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise SharesError(f"cannot query Prometheus at {base}: {describe(exc)}") from exc


def _by_target(samples: list[tuple[dict[str, str], float]]) -> dict[tuple[str, str], float]:
    return {(m.get("instance", ""), m.get("job", "")): v for m, v in samples}


async def prometheus_shares(
    base: str, request_timeout: float, app: str | None = None
) -> list[InstanceShare]:
    """The shares Prometheus records (worker:load_share:ratio), one row per scraped instance.

    Members are the targets that exported worker_info in the last 10 minutes and are still
    scraped, so an instance that stopped answering shows as down (up == 0) instead of vanishing.
    """
    app_filter = f"{{app={json.dumps(app)}}}" if app else ""
    queries = (
        f"max by (instance, job, app) (last_over_time(worker:instance_app:info{app_filter}[10m]))"
        " * on (instance, job) group_left () up",
        f"worker:load_share:ratio{app_filter}",
        f"worker:messages_received:rate1m{app_filter}",
        "worker_subscribed",
        "worker_in_flight",
    )
    members, shares, rates, subscribed, in_flight = await asyncio.gather(
        *(prometheus_vector(base, query, request_timeout) for query in queries)
    )
    share_of, rate_of = _by_target(shares), _by_target(rates)
    subscribed_of, in_flight_of = _by_target(subscribed), _by_target(in_flight)
    rows = []
    for labels, up in sorted(members, key=lambda item: item[0].get("instance", "")):
        key = (labels.get("instance", ""), labels.get("job", ""))
        state: State = "down" if up != 1 else "ready" if subscribed_of.get(key) == 1 else "paused"
        rows.append(
            InstanceShare(
                instance=key[0],
                url=key[0],
                share=share_of.get(key, 0.0) if state != "down" else 0.0,
                rate=rate_of.get(key, 0.0) if state != "down" else 0.0,
                in_flight=in_flight_of.get(key) if state != "down" else None,
                state=state,
            )
        )
    return rows
