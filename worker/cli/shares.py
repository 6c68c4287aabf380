"""``worker shares``: each instance's share of the load, from its metrics or Prometheus."""

from __future__ import annotations

import sys

import click

from worker.cli import EXIT_USAGE, fail, main


@main.command()
@click.argument("urls", nargs=-1, metavar="[URL]...")
@click.option(
    "--prometheus",
    metavar="URL",
    help="Read the recorded shares (worker:load_share:ratio) from this Prometheus server "
    "instead of scraping the instances.",
)
@click.option("--app", metavar="APP", help="With --prometheus: only this application.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes; also the window over which msg/s is measured.",
)
@click.option(
    "--timeout",
    "request_timeout",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds to wait for one scrape or query.",
)
@click.option("--once", is_flag=True, help="Print one snapshot (over one interval) and exit.")
@click.option(
    "--json",
    "json_output",
    is_flag=True,
    help="One JSON line per snapshot (instance, url, share, rate, in_flight, state).",
)
def shares(
    urls: tuple[str, ...],
    prometheus: str | None,
    app: str | None,
    interval: float,
    request_timeout: float,
    once: bool,
    json_output: bool,
) -> None:
    """Show each instance's share of the load: one bar per instance, refreshed in place.

    URL is an instance's metrics endpoint: http://host:9100/metrics, or just host:9100.
    An instance that does not answer is shown as down.
    """
    # Imported here so that the other commands do not load the HTTP client at start-up.
    import asyncio

    from worker.tools.shares import SharesError
    from worker.tools.shares_view import run_shares

    view = run_shares(
        urls,
        prometheus=prometheus,
        app=app,
        interval=interval,
        request_timeout=request_timeout,
        once=once,
        json_output=json_output,
        out=sys.stdout,
    )
    try:
        asyncio.run(view)
    except SharesError as exc:
        fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live view ends: not an error
