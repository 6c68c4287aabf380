"""The ``worker`` command. Exit codes live here and only here.

0 ok · 2 usage or configuration · 3 cannot import the handlers module · 4 could not connect
or not authorised · 130 a second Ctrl-C cut ``worker run``'s drain short.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final, NoReturn, TypeVar

import click

from worker import __version__
from worker.config import Settings, load_settings
from worker.errors import ConfigError
from worker.options import OPTIONS

EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
EXIT_APP: Final = 3
EXIT_CONNECT: Final = 4
#: a second Ctrl-C gave up the drain (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED: Final = 130

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    """Add one flag per setting (the same table as the environment variables)."""
    for option in reversed(OPTIONS):
        env_names = " / ".join(option.envs)
        help_text = (
            f"{option.help}. Accepted: {option.accepted}. Default: {option.default}. "
            f"[env: {env_names}]"
        )
        if option.is_flag:
            decorator = click.option(option.flag, option.field, default=None, help=help_text)
        else:
            metavar = option.field.upper()
            decorator = click.option(
                option.flag, option.field, default=None, metavar=metavar, help=help_text
            )
        func = decorator(func)
    return func


def resolve_settings(flags: dict[str, Any]) -> Settings:
    """Settings from the environment and these flags, or a clean exit 2 naming each problem."""
    try:
        return load_settings(flags=flags)
    except ConfigError as exc:
        fail(EXIT_USAGE, *exc.problems)


def fail(code: int, *lines: str) -> NoReturn:
    """Print each line as an error and exit with ``code`` (no traceback for user errors)."""
    for line in lines:
        click.echo(f"error: {line}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="worker")
def main() -> None:
    """Scalable IoT event workers for Watson IoT Platform and standard MQTT brokers."""


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
@click.argument("target", metavar="MODULE[:ATTR]")
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Exit 4 unless connected and subscribed within this time. Default: keep retrying.",
)
@settings_options
def run(target: str, startup_timeout: float | None, **flags: Any) -> None:
    """Serve the App of MODULE (its `app`, its only App, or MODULE:ATTR).

    Prints one line when subscribed: client ID, host:port, filters, metrics URL. SIGTERM or
    Ctrl-C unsubscribes, drains and exits 0; a second Ctrl-C gives up the drain (exit 130).
    SIGUSR1 pauses (unsubscribes, stays connected), SIGUSR2 resumes. Exit 2: bad settings;
    3: the module does not import or has no App; 4: cannot connect or not authorised.
    """
    # Imported here so that the other commands do not load the runtime at start-up.
    from worker import logs
    from worker.errors import AppLoadError, ConnectError
    from worker.loader import load_app
    from worker.runner import run_worker

    settings = resolve_settings(flags)
    logs.configure(settings.log_level, settings.log_format)
    try:
        app = load_app(target)
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

    from worker.shares import SharesError
    from worker.shares_view import run_shares

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


PORT = click.IntRange(0, 65535)


@main.command("platform")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=PORT, default=1883, show_default=True, help="Plain MQTT port (0: a free one)."
)
@click.option("--tls-port", type=PORT, help="MQTT over TLS 1.2 (IBM uses 8883).")
@click.option("--wss-port", type=PORT, help="MQTT over secure WebSocket (IBM uses 443).")
@click.option("--ws-port", type=PORT, help="MQTT over WebSocket without TLS.")
@click.option("--cert", metavar="FILE", help="Server certificate (PEM) for the TLS listeners.")
@click.option("--key", metavar="FILE", help="The certificate's private key (PEM).")
@click.option(
    "--dev-tls",
    metavar="DIR",
    help="Make (or reuse) a development CA and a certificate for localhost in DIR; "
    "clients trust DIR/ca.pem.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    metavar="KEY:TOKEN",
    help="An application API key (a-{org}-{rest}) and its token; repeatable.",
)
@click.option(
    "--keys",
    "keys_file",
    metavar="FILE",
    help='JSON file: {"api_keys": {KEY: TOKEN}, "device_tokens": {"d:org:type:id": TOKEN}}.',
)
@click.option(
    "--accept-any-key",
    is_flag=True,
    help="Development: any token for a well-formed API key or device.",
)
@click.option("--quickstart", is_flag=True, help="Open the 'quickstart' org, without login.")
@click.option(
    "--strategy",
    type=click.Choice(["round-robin", "random"]),
    default="round-robin",
    show_default=True,
    help="How a shared application (A:org:app) picks the instance for each message.",
)
@click.option("--seed", type=int, help="Seed for --strategy random (a repeatable sequence).")
@click.option("--metrics-port", type=PORT, help="Serve Prometheus metrics at /metrics here.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
def platform_command(log_level: str, **flags: Any) -> None:
    """Run a local MQTT server that behaves like Watson IoT Platform, for development and tests.

    With no credential flags it accepts any API key, on a loopback address only.
    """
    # Imported here so that the other commands do not load the server at start-up.
    import asyncio
    import logging

    from worker.platform.launch import Launch, prepare, serve

    flags["api_keys"] = tuple(flags["api_keys"])
    try:
        prepared = prepare(Launch(**flags))
        logging.basicConfig(
            level=log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        asyncio.run(serve(prepared, click.echo))
    except ConfigError as exc:
        # Bad flag combinations, and ports that cannot be bound, are the user's to fix.
        fail(EXIT_USAGE, *exc.problems)


if __name__ == "__main__":  # pragma: no cover
    main()
