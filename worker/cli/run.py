"""``worker run`` and ``worker check``: serve an App, or show who it would connect as."""

from __future__ import annotations

import sys
from typing import Any

import click

from worker.cli import (
    EXIT_APP,
    EXIT_CONNECT,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    fail,
    main,
    resolve_settings,
    settings_options,
)
from worker.config import Settings
from worker.errors import ConfigError


@main.command()
@settings_options
def check(**flags: Any) -> None:
    """Resolve the settings and print who this worker would connect as (secrets masked)."""
    settings = resolve_settings(flags)
    rows = settings.describe()
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        click.echo(f"{key + ':':<{width + 1}} {value}")


@main.command()
@click.argument("target", metavar="MODULE[:ATTR] | FILE.py[:ATTR]")
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Exit 4 unless connected and subscribed within this time. Default: keep retrying.",
)
@settings_options
def run(target: str, startup_timeout: float | None, **flags: Any) -> None:
    """Serve the App of MODULE or FILE.py (its `app`, its only App, or the one after ":").

    Prints one line when subscribed: client ID, host:port, filters, metrics URL. SIGTERM or
    Ctrl-C unsubscribes, drains and exits 0; a second Ctrl-C gives up the drain (exit 130).
    SIGUSR1 pauses (unsubscribes, stays connected), SIGUSR2 resumes. Exit 2: bad settings;
    3: the module does not import (its own settings included), has no App or its App no
    handler, or a startup hook failed; 4: cannot connect or not authorised.
    With --workers N, N processes under one supervisor that forwards these signals.
    """
    # Imported here so that the other commands do not load the runtime at start-up.
    from worker import collector, logs
    from worker.errors import AppLoadError, ConnectError
    from worker.loader import load_app, require_handlers
    from worker.runner import run_worker

    settings = resolve_settings(flags)
    logs.configure(settings.log_level, settings.log_format)
    try:
        app = require_handlers(load_app(target), target)
        if settings.workers > 1:  # the App imports: now the processes can start
            _supervise(target, settings, {**flags, "startup_timeout": startup_timeout})
        collector.tune()  # the App is imported: what exists now lives as long as the process
        worker = run_worker(
            app,
            settings,
            startup_timeout=startup_timeout,
            on_ready=lambda w: click.echo(w.describe()),
        )
    except AppLoadError as exc:
        fail(EXIT_APP, str(exc))
    except ConnectError as exc:  # NotAuthorized included: its text says who refused what
        fail(EXIT_CONNECT, str(exc))
    except ConfigError as exc:
        fail(EXIT_USAGE, *exc.problems)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)  # before the worker took over Ctrl-C
    if worker.forced:
        sys.exit(EXIT_INTERRUPTED)


def _supervise(target: str, settings: Settings, flags: dict[str, Any]) -> None:
    """``--workers N``: run the processes, exit with the supervisor's code."""
    from worker.supervisor import run_supervisor

    try:
        code = run_supervisor(target, settings, flags)
    except ConfigError as exc:
        fail(EXIT_USAGE, *exc.problems)
    sys.exit(code)
