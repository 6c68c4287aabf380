"""``worker demo``: the horizontal-scaling scenario on one machine, and its summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from worker.cli import EXIT_CONNECT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, fail, main
from worker.errors import ConfigError

if TYPE_CHECKING:
    from worker.tools.demo import DemoConfig, DemoResult


@main.command()
@click.option(
    "--broker",
    default="embedded",
    show_default=True,
    metavar="embedded|mosquitto|URL",
    help="The local Watson IoT platform in this process; a Mosquitto of the demo's own (the "
    "mqtt profile, $share groups); or mqtt[s]://[user:password@]host[:port], "
    "wiotp[s]://KEY:TOKEN@host[:port].",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=6),
    default=60.0,
    show_default=True,
    help="Seconds for the six phases together (each settles, then is measured).",
)
@click.option(
    "--rate", type=click.FloatRange(min=1), default=100.0, show_default=True, help="Events/s."
)
@click.option("--devices", type=click.IntRange(min=1), default=12, show_default=True)
@click.option(
    "--sim-as",
    type=click.Choice(["device", "app"]),
    help="How the fleet publishes. Default: device on a platform, app on a standard broker.",
)
@click.option(
    "--no-live",
    is_flag=True,
    help="No live view: a line per phase, then the summary (for scripts and CI). Also the "
    "mode when the output is not a terminal.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for demo.json, demo.svg and every process's log.",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Seconds each worker may take to drain after SIGTERM.",
)
@click.option(
    "--autoscale",
    is_flag=True,
    help="Instead of the six phases: the load rises and falls, and the scaling policy of "
    "docs/scaling.md adds and drains instances from their own /metrics (autoscale.json, "
    "autoscale.svg).",
)
def demo(
    broker: str,
    duration: float,
    rate: float,
    devices: int,
    sim_as: str | None,
    no_live: bool,
    out: Path,
    drain_timeout: float,
    autoscale: bool,
) -> None:
    """Horizontal scaling on one machine: the documented scalable-application scenario, live.

    Starts the broker, a simulated fleet and `worker run worker.examples.fleet` replicas, and
    replays: one instance takes 100%; a second joins (50/50); a third (a third each); two
    and three pause (one takes 100%); they resume; two and three scale down by SIGTERM. Shows
    each instance's share from its /metrics, then a summary table and the exactly-once check,
    and writes demo.json and demo.svg. Exit 1 when a phase misses its expected split by more
    than 10 points, or an event was lost or handled twice.
    """
    import asyncio

    from worker.errors import ConnectError
    from worker.tools.demo import DemoConfig, log_to, run_demo
    from worker.tools.demo_procs import DemoError
    from worker.tools.simulate import Mode

    out.mkdir(parents=True, exist_ok=True)
    mode: Mode | None = "device" if sim_as == "device" else "app" if sim_as == "app" else None
    live = not no_live and sys.stdout.isatty()
    config = DemoConfig(broker, duration, rate, devices, mode, live, out, drain_timeout)
    if autoscale:
        _autoscale(config)
        return
    try:
        # The embedded platform and the fleet log to a file, not over the live view.
        with log_to(out / "demo.log"):
            outcome = asyncio.run(run_demo(config, sys.stdout))
    except ConfigError as exc:
        fail(EXIT_USAGE, *exc.problems)
    except ConnectError as exc:
        fail(EXIT_CONNECT, str(exc))
    except DemoError as exc:
        fail(EXIT_FAILED, str(exc))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
        sys.exit(EXIT_INTERRUPTED)
    if not _demo_summary(outcome):
        sys.exit(EXIT_FAILED)


def _demo_summary(outcome: DemoResult) -> bool:
    """Print the demo's table, delivery check and files; whether the scenario held."""
    click.echo(f"\n{outcome.table}\n\n{outcome.delivery.summary()}")
    bad_exits = {name: code for name, code in outcome.exits.items() if code != 0}
    if bad_exits:
        click.echo(f"instances that did not exit cleanly: {bad_exits}")
    click.echo(f"results: {outcome.json_path}  chart: {outcome.svg_path}")
    click.echo("the documented scenario held" if outcome.ok else "the scenario did NOT hold")
    return outcome.ok


def _autoscale(config: DemoConfig) -> None:
    """``--autoscale``: run the policy against a rising and falling load; exit 1 unless it held."""
    import asyncio

    from worker.errors import ConnectError
    from worker.tools.demo import log_to
    from worker.tools.demo_autoscale import run_autoscale
    from worker.tools.demo_procs import DemoError

    try:
        with log_to(config.out / "demo.log"):
            result = asyncio.run(run_autoscale(config, sys.stdout))
    except ConfigError as exc:
        fail(EXIT_USAGE, *exc.problems)
    except ConnectError as exc:
        fail(EXIT_CONNECT, str(exc))
    except DemoError as exc:
        fail(EXIT_FAILED, str(exc))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(EXIT_INTERRUPTED)
    click.echo(f"\n{result.summary()}")
    if not result.ok:
        sys.exit(EXIT_FAILED)
