"""``worker shares``: share arithmetic, scraping real HTTP servers, the bars and the command."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.waiting import PROCESS
from worker.merged_metrics import merge
from worker.tools.shares import (
    InstanceShare,
    Reading,
    SharesError,
    compute_shares,
    measure,
    normalize_url,
    parse_reading,
    parse_readings,
    prometheus_shares,
)
from worker.tools.shares_view import BAR_WIDTH, render, run_shares


@dataclass
class FakeInstance:
    """A worker's /metrics page whose received counter rises by ``step`` on every scrape."""

    name: str
    step: int
    subscribed: int = 1
    in_flight: int = 0
    received: int = 0

    def page(self) -> str:
        self.received += self.step
        # Two kinds, so the rate must be summed over kinds: the event counter carries 3/4.
        events, statuses = self.received * 3 // 4, self.received - self.received * 3 // 4
        return (
            "# HELP worker_messages_received_total Messages received.\n"
            "# TYPE worker_messages_received_total counter\n"
            f'worker_messages_received_total{{kind="event"}} {events}.0\n'
            f'worker_messages_received_total{{kind="device_status"}} {statuses}.0\n'
            "# TYPE worker_in_flight gauge\n"
            f"worker_in_flight {self.in_flight}.0\n"
            "# TYPE worker_subscribed gauge\n"
            f"worker_subscribed {self.subscribed}.0\n"
            "# TYPE worker_info gauge\n"
            f'worker_info{{app="fleet",client_id="A:abc123:fleet",instance="{self.name}",'
            'profile="wiotp",version="0.1.0"} 1.0\n'
        )


Responder = Callable[[str], tuple[int, str]]


async def serve(respond: Responder) -> tuple[asyncio.Server, str]:
    """A real HTTP server on a free port; ``respond(path)`` gives the status and body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(PROCESS):
            head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ", 2)[1].decode()
        status, body = respond(target)
        data = body.encode()
        writer.write(
            f"HTTP/1.0 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def metrics_endpoint(instance: FakeInstance) -> Responder:
    """Serve the instance's page at /metrics and nothing else."""

    def respond(path: str) -> tuple[int, str]:
        return (200, instance.page()) if path == "/metrics" else (404, "")

    return respond


def closed_port_url() -> str:
    """A URL where nothing listens: the port was free a moment ago and is closed now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[list[str], list[FakeInstance]]]:
    """w1/w2/w3 step 500/300/200 per scrape, w4 paused, then one URL where nothing listens."""
    instances = [
        FakeInstance("w1", 500, in_flight=3),
        FakeInstance("w2", 300, in_flight=1),
        FakeInstance("w3", 200),
        FakeInstance("w4", 0, subscribed=0),
    ]
    servers, urls = [], []
    for instance in instances:
        server, base = await serve(metrics_endpoint(instance))
        servers.append(server)
        urls.append(f"{base}/metrics")
    yield [*urls, closed_port_url()], instances
    for server in servers:
        server.close()
        await server.wait_closed()


def reading(url: str, at: float, received: float | None, subscribed: bool = True) -> Reading:
    return Reading(url, at, url, received=received, in_flight=0.0, subscribed=subscribed)


def test_shares_are_rates_over_the_total_and_sum_to_one() -> None:
    urls = ["a", "b", "c"]
    before = [reading(u, 10.0, 1000.0) for u in urls]
    after = [reading("a", 12.0, 1100.0), reading("b", 12.0, 1060.0), reading("c", 12.0, 1040.0)]
    rows = compute_shares(before, after)
    assert [r.rate for r in rows] == [50.0, 30.0, 20.0]
    assert [r.share for r in rows] == pytest.approx([0.5, 0.3, 0.2])
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert {r.state for r in rows} == {"ready"}


def test_a_restarted_counter_counts_from_zero_and_down_or_idle_rows_have_no_share() -> None:
    before = [reading("a", 0.0, 5000.0), reading("b", 0.0, 10.0), reading("c", 0.0, 0.0)]
    failed = Reading("b", 1.0, "b", error="connection refused")
    after = [reading("a", 1.0, 40.0), failed, reading("c", 1.0, 0.0, subscribed=False)]
    rows = compute_shares(before, after)
    assert [(r.rate, r.share, r.state) for r in rows] == [
        (40.0, 1.0, "ready"),
        (0.0, 0.0, "down"),
        (0.0, 0.0, "paused"),
    ]
    assert rows[1].error == "connection refused" and rows[1].in_flight is None
    idle = compute_shares([reading("a", 0.0, 1.0)], [reading("a", 1.0, 1.0)])
    assert idle[0].share == 0.0


def test_each_process_of_a_workers_page_is_an_instance_of_its_own() -> None:
    # The supervisor's page of `worker run --workers 2`: the same series once per process.
    pods = [FakeInstance("pod-0", 300), FakeInstance("pod-1", 100)]
    url = "http://10.0.0.5:9100/metrics"

    def page() -> str:
        return merge({str(n): pod.page() for n, pod in enumerate(pods)}).decode()

    before = parse_readings(url, 0.0, page())
    after = parse_readings(url, 1.0, page())
    assert [(r.instance, r.process, r.received) for r in after] == [
        ("pod-0", "0", 600.0),
        ("pod-1", "1", 200.0),
    ]
    rows = compute_shares(before, after)
    assert [(r.instance, r.rate, r.share) for r in rows] == [
        ("pod-0", 300.0, 0.75),
        ("pod-1", 100.0, 0.25),
    ]
    # The whole page as one reading (what the demo reads): summed, named after its address.
    whole = parse_reading(url, 1.0, page())
    assert (whole.instance, whole.received, whole.process) == ("10.0.0.5:9100", 1200.0, None)


def test_a_process_missing_from_one_round_is_a_row_without_a_rate() -> None:
    def member(process: str, at: float, received: float) -> Reading:
        url = "http://pod:9100/metrics"
        return Reading(url, at, f"pod-{process}", received, subscribed=True, process=process)

    before = [member("0", 0.0, 10.0), member("1", 0.0, 10.0)]
    after = [member("0", 1.0, 30.0), member("2", 1.0, 5.0)]  # 1 went, 2 came (a restart)
    rows = compute_shares(before, after)
    assert [(r.instance, r.rate, r.state, r.error) for r in rows] == [
        ("pod-0", 20.0, "ready", None),
        ("pod-2", 0.0, "ready", None),
        ("pod-1", 0.0, "down", "no longer on its page"),
    ]


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("localhost:9100", "http://localhost:9100/metrics"),
        ("http://10.0.0.5:9100", "http://10.0.0.5:9100/metrics"),
        ("https://w1.example:443/custom/path", "https://w1.example:443/custom/path"),
    ],
)
def test_urls_are_completed(text: str, url: str) -> None:
    assert normalize_url(text) == url


@pytest.mark.parametrize("text", ["not a url", "ftp://host/metrics", "http://", "http://h:port"])
def test_non_urls_are_refused(text: str) -> None:
    with pytest.raises(SharesError, match="not an http"):
        normalize_url(text)


async def test_measure_scrapes_every_instance_and_marks_the_unreachable_one_down(
    fleet: tuple[list[str], list[FakeInstance]],
) -> None:
    urls, _ = fleet
    rows = await measure(urls, 0.3, 2.0)
    assert [r.instance for r in rows] == ["w1", "w2", "w3", "w4", urls[4][len("http://") : -8]]
    assert [r.state for r in rows] == ["ready", "ready", "ready", "paused", "down"]
    # Each scrape is timed on its own, so the concurrent scrapes differ by milliseconds.
    assert [r.share for r in rows] == pytest.approx([0.5, 0.3, 0.2, 0.0, 0.0], abs=0.03)
    assert rows[0].rate == pytest.approx(500 / 0.3, rel=0.2)
    assert [r.in_flight for r in rows] == [3.0, 1.0, 0.0, 0.0, None]
    assert rows[4].error == "connection refused"


async def test_a_page_that_is_not_worker_metrics_is_a_down_row() -> None:
    server, base = await serve(lambda path: (200, "node_load1 0.5\n") if path == "/" else (404, ""))
    try:
        rows = await measure([f"{base}/", f"{base}/missing"], 0.1, 2.0)
    finally:
        server.close()
        await server.wait_closed()
    assert [r.state for r in rows] == ["down", "down"]
    assert rows[0].error is not None and "does not serve worker metrics" in rows[0].error
    assert rows[1].error is not None and rows[1].error.startswith("HTTP 404")


def test_render_draws_one_bar_per_instance_in_proportion() -> None:
    rows = [
        InstanceShare("w1", "u1", 0.5, 50.0, 3.0, "ready"),
        InstanceShare("w2", "u2", 0.25, 25.0, 0.0, "ready"),
        InstanceShare("w3", "u3", 0.25, 25.0, 1.0, "paused"),
        InstanceShare("w4", "u4", 0.0, 0.0, None, "down", "timed out"),
    ]
    lines = render(rows, 2.0, "metrics").splitlines()
    assert "4 instances, 2 ready" in lines[0] and "100.0 msg/s" in lines[0]
    w1, w2, w3, w4 = lines[2:]
    assert w1.count("█") == BAR_WIDTH // 2 and w1.count("░") == BAR_WIDTH // 2
    assert w2.count("█") == BAR_WIDTH // 4
    assert " 50.0%" in w1 and "50.0/s" in w1 and w1.endswith("ready")
    assert w3.endswith("paused") and w4.endswith("down (timed out)") and "█" not in w4


async def run_command(*args: str) -> tuple[int, str, str]:
    """``worker shares`` as a real process, while this loop keeps serving the fake instances."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "shares",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(PROCESS):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_command_prints_one_json_snapshot(
    fleet: tuple[list[str], list[FakeInstance]],
) -> None:
    urls, _ = fleet
    code, out, err = await run_command("--once", "--json", "--interval", "0.3", *urls)
    assert code == 0, err
    doc = json.loads(out)
    rows = doc["instances"]
    assert set(rows[0]) == {"instance", "url", "share", "rate", "in_flight", "state"}
    assert [r["url"] for r in rows] == urls
    assert [r["state"] for r in rows] == ["ready", "ready", "ready", "paused", "down"]
    assert [r["share"] for r in rows] == pytest.approx([0.5, 0.3, 0.2, 0, 0], abs=0.03)
    assert doc["total_rate"] == pytest.approx(sum(r["rate"] for r in rows))


async def test_command_draws_bars(fleet: tuple[list[str], list[FakeInstance]]) -> None:
    urls, _ = fleet
    code, out, err = await run_command("--once", "--interval", "0.3", *urls)
    assert code == 0, err
    lines = out.splitlines()
    assert "5 instances, 3 ready" in lines[0]
    bars = {line.split()[0]: line for line in lines[2:]}
    assert abs(bars["w1"].count("█") - BAR_WIDTH * 0.5) <= 2
    assert abs(bars["w3"].count("█") - BAR_WIDTH * 0.2) <= 2
    assert bars["w4"].endswith("paused")
    assert lines[-1].endswith("down (connection refused)")


async def test_command_refuses_bad_input_with_exit_2() -> None:
    code, out, err = await run_command("--once", "not a url")
    assert (code, out) == (2, "")
    assert err.strip() == "error: not an http(s) URL: 'not a url'"
    code, _, err = await run_command("--once")
    assert code == 2 and "at least one instance" in err
    code, _, err = await run_command("--once", "--prometheus", closed_port_url())
    assert code == 2
    assert "cannot query Prometheus" in err and "connection refused" in err
    assert "Traceback" not in err


def prometheus_api(path: str) -> tuple[int, str]:
    """Answers like Prometheus' /api/v1/query for the queries prometheus_shares sends."""
    query = parse_qs(urlsplit(path).query)["query"][0]
    if query.startswith("max by (instance, job, app)"):
        # p3 is a target Prometheus can no longer scrape (up == 0).
        result = [("p1", 1.0), ("p2", 1.0), ("p3", 0.0)]
    elif query.startswith("worker:load_share:ratio"):
        result = [("p1", 0.75), ("p2", 0.25)]
    elif query.startswith("worker:messages_received:rate1m"):
        result = [("p1", 75.0), ("p2", 25.0)]
    elif query == "worker_subscribed":
        result = [("p1", 1.0), ("p2", 0.0)]
    else:
        result = [("p1", 4.0), ("p2", 0.0)]
    vector = [
        {"metric": {"instance": f"{i}:9100", "job": "worker", "app": "fleet"}, "value": [0, str(v)]}
        for i, v in result
    ]
    body = {"status": "success", "data": {"resultType": "vector", "result": vector}}
    return 200, json.dumps(body)


async def test_prometheus_mode_reads_the_recorded_shares() -> None:
    server, base = await serve(prometheus_api)
    try:
        rows = await prometheus_shares(base, 2.0, app="fleet")
        buffer = io.StringIO()  # not a terminal, as when the command is piped
        await run_shares(
            (),
            prometheus=base,
            app="fleet",
            interval=1.0,
            request_timeout=2.0,
            once=True,
            json_output=True,
            out=buffer,
        )
    finally:
        server.close()
        await server.wait_closed()
    assert [(r.instance, r.share, r.rate, r.in_flight, r.state) for r in rows] == [
        ("p1:9100", 0.75, 75.0, 4.0, "ready"),
        ("p2:9100", 0.25, 25.0, 0.0, "paused"),
        ("p3:9100", 0.0, 0.0, None, "down"),
    ]
    doc = json.loads(buffer.getvalue())
    assert doc["source"] == "prometheus" and len(doc["instances"]) == 3
