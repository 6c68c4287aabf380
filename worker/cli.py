"""The ``worker`` command. Exit codes live here and only here.

0 ok · 1 the demo's check failed, or events could not be published · 2 usage or configuration
· 3 cannot import the handlers module · 4 could not connect or not authorised · 130 a second
Ctrl-C cut ``worker run``'s drain short.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click

from worker import __version__
from worker.config import Settings, load_settings
from worker.errors import ConfigError
from worker.options import OPTIONS

if TYPE_CHECKING:
    from worker.demo import Outcome

EXIT_OK: Final = 0
#: ``worker demo`` saw a share off the expected split or an event lost or handled twice;
#: ``worker simulate`` could not publish some events
EXIT_FAILED: Final = 1
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


# --- publishing and simulating -----------------------------------------------------------------

#: the settings a tool that only publishes needs: where and as whom to connect
_TOOL_FIELDS: Final = frozenset(
    (
        "api_key", "api_token", "app_id", "org", "profile", "host", "domain", "port",
        "mqtt_transport", "tls", "cafile", "keepalive", "username", "password", "qos",
    )
)  # fmt: skip


def tool_options(func: F) -> F:
    """The connection flags of ``settings_options`` (same names, same variables), no others."""
    for option in reversed(OPTIONS):
        if option.field not in _TOOL_FIELDS:
            continue
        help_text = f"{option.help}. Default: {option.default}. [env: {' / '.join(option.envs)}]"
        if option.is_flag:
            func = click.option(option.flag, option.field, default=None, help=help_text)(func)
        else:
            metavar = option.field.upper()
            decorator = click.option(
                option.flag, option.field, default=None, metavar=metavar, help=help_text
            )
            func = decorator(func)
    return func


def tool_settings(flags: dict[str, Any]) -> Settings:
    """Settings for a publishing tool; it has its own client ID, so the identity is moot."""
    return resolve_settings({**flags, "identity": "standalone"})


def run_tool(work: Any) -> Any:
    """Run a tool's coroutine: exit 4 when it cannot connect, 2 for a bad message or file."""
    import asyncio

    from worker.errors import ConnectError
    from worker.publish import PublishError

    try:
        return asyncio.run(work)
    except ConnectError as exc:
        fail(EXIT_CONNECT, str(exc))
    except PublishError as exc:
        fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


_FORMAT = click.option(
    "--format", "fmt", default="json", show_default=True, help="The fmt topic level."
)
_JSON = click.option("--json", "json_text", metavar="JSON", help="The payload, checked as JSON.")
_DATA = click.option("--data", metavar="TEXT", help="The payload as it is (e.g. --format text).")
_CLIENT_ID = click.option("--client-id", help="Client ID to publish as. Default: a:ORG:publish-…")


@main.group()
def publish() -> None:
    """Publish events or commands as an application, from the shell or a JSON-lines file.

    The topic is checked by the iot-2 rules and the payload against the 131072-byte limit
    before anything is sent. Exit 2: a bad message or file; 4: cannot connect.
    """


def _publish_one(kind: str, parts: tuple[str, str, str], flags: dict[str, Any]) -> None:
    from worker import publish as pub

    fmt, json_text, data = flags.pop("fmt"), flags.pop("json_text"), flags.pop("data")
    client_id = flags.pop("client_id")
    settings = tool_settings(flags)
    try:
        payload = pub.payload_of(fmt, json_text, data)
        build = pub.event_message if kind == "event" else pub.command_message
        message = build(*parts, fmt, payload)
    except pub.PublishError as exc:
        fail(EXIT_USAGE, str(exc))
    run_tool(
        pub.publish_one(pub.tool_options(settings, "publish", client_id), message, settings.qos)
    )
    click.echo(f"published {len(message.payload)} bytes to {message.topic}")


@publish.command("event")
@click.argument("device_type", metavar="TYPE")
@click.argument("device_id", metavar="ID")
@click.argument("event", metavar="EVENT")
@_JSON
@_DATA
@_FORMAT
@_CLIENT_ID
@tool_options
def publish_event(device_type: str, device_id: str, event: str, **flags: Any) -> None:
    """Publish EVENT as if device TYPE/ID had sent it (iot-2/type/T/id/D/evt/E/fmt/F)."""
    _publish_one("event", (device_type, device_id, event), flags)


@publish.command("command")
@click.argument("device_type", metavar="TYPE")
@click.argument("device_id", metavar="ID")
@click.argument("command", metavar="CMD")
@_JSON
@_DATA
@_FORMAT
@_CLIENT_ID
@tool_options
def publish_command(device_type: str, device_id: str, command: str, **flags: Any) -> None:
    """Send command CMD to device TYPE/ID (iot-2/type/T/id/D/cmd/C/fmt/F)."""
    _publish_one("command", (device_type, device_id, command), flags)


@publish.command("replay")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Events per second; 0: as fast as the platform acknowledges them.",
)
@_CLIENT_ID
@tool_options
def publish_replay(file: Path, rate: float, client_id: str | None, **flags: Any) -> None:
    """Re-publish past device events from a JSON-lines FILE, in order, at RATE per second.

    One object a line: {"type": "sensor", "id": "s-001", "event": "reading", "data": {...}}
    ("typeId", "deviceId", "eventId" and "format" are understood too). Every line is checked
    before the first is sent.
    """
    from worker import publish as pub

    settings = tool_settings(flags)
    try:
        found = pub.read_replay(file)
    except pub.PublishError as exc:
        fail(EXIT_USAGE, str(exc))
    options = pub.tool_options(settings, "replay", client_id)

    def report(progress: pub.ReplayProgress) -> None:
        click.echo(progress.line(), err=True)

    done = run_tool(pub.replay(options, found, rate=rate, qos=settings.qos, report=report))
    click.echo(f"replayed {done.sent} events from {file}")


@main.command()
@click.option("--devices", type=click.IntRange(min=1), default=12, show_default=True)
@click.option(
    "--types",
    default="sensor,thermostat,meter",
    show_default=True,
    help="Comma-separated device types; devices are spread over them.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=50.0,
    show_default=True,
    help="Events per second, all devices together (0: as fast as acknowledged).",
)
@click.option("--count", type=click.IntRange(min=0), help="Stop after this many events.")
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.option(
    "--as",
    "mode",
    type=click.Choice(["device", "app"]),
    help="Connect every device as itself (d:org:type:id), or publish for them as one "
    "application. Default: device on a Watson IoT platform, app on a standard broker.",
)
@click.option(
    "--churn",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Every this many seconds one device disconnects and comes back (0: never).",
)
@click.option(
    "--device-token", default="demo-token", show_default=True, help="Every device's token."
)
@click.option("--seed", type=int, help="Seed for the readings (a repeatable run).")
@_CLIENT_ID
@tool_options
def simulate(**flags: Any) -> None:
    """Simulate devices sending `reading` events ({"temp", "seq", "ts"}) at a steady rate.

    Prints a progress line every second (sent, rate, errors) and a summary at the end; runs
    until --count or --duration, or Ctrl-C. Exit 1 when some events could not be published,
    4 when the fleet cannot connect.
    """
    from worker.simulate import Mode, SimConfig, SimStats, Simulator

    sim = {k: flags.pop(k) for k in ("devices", "rate", "count", "duration", "churn", "seed")}
    types = tuple(t.strip() for t in flags.pop("types").split(",") if t.strip())
    if not types:
        fail(EXIT_USAGE, "--types: give at least one device type")
    mode, token, client_id = flags.pop("mode"), flags.pop("device_token"), flags.pop("client_id")
    settings = tool_settings(flags)
    chosen: Mode = "app" if settings.profile.value == "mqtt" else "device"
    if mode == "app" or mode == "device":  # click.Choice allows nothing else
        chosen = mode
    config = SimConfig(
        types=types, mode=chosen, device_token=token, qos=settings.qos, client_id=client_id, **sim
    )
    last = [0, 0.0]  # sent and clock at the previous line: the rate is over the last second

    def report(stats: SimStats) -> None:
        import time

        now = time.monotonic()
        rate = (stats.sent - last[0]) / max(now - last[1], 1e-9) if last[1] else stats.sent
        last[:] = [stats.sent, now]
        click.echo(stats.line(rate), err=True)

    stats = run_tool(Simulator(config, settings).run(report))
    elapsed = max(1e-9, stats.elapsed)
    click.echo(
        f"sent {stats.sent} events in {elapsed:.1f}s ({stats.sent / elapsed:.1f}/s), "
        f"{stats.errors} errors"
    )
    if stats.errors:
        sys.exit(EXIT_FAILED)


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
def demo(
    broker: str,
    duration: float,
    rate: float,
    devices: int,
    sim_as: str | None,
    no_live: bool,
    out: Path,
    drain_timeout: float,
) -> None:
    """Horizontal scaling on one machine: the documented scalable-application scenario, live.

    Starts the broker, a simulated fleet and `worker run handlers.example` replicas, and
    replays: one instance takes 100%; a second joins (50/50); a third (a third each); two
    and three pause (one takes 100%); they resume; two and three scale down by SIGTERM. Shows
    each instance's share from its /metrics, then a summary table and the exactly-once check,
    and writes demo.json and demo.svg. Exit 1 when a phase misses its expected split by more
    than 10 points, or an event was lost or handled twice.
    """
    import asyncio

    from worker.demo import DemoConfig, log_to, run_demo
    from worker.demo_procs import DemoError
    from worker.errors import ConnectError
    from worker.simulate import Mode

    out.mkdir(parents=True, exist_ok=True)
    mode: Mode | None = "device" if sim_as == "device" else "app" if sim_as == "app" else None
    live = not no_live and sys.stdout.isatty()
    config = DemoConfig(broker, duration, rate, devices, mode, live, out, drain_timeout)
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


def _demo_summary(outcome: Outcome) -> bool:
    """Print the demo's table, delivery check and files; whether the scenario held."""
    click.echo(f"\n{outcome.table}\n\n{outcome.delivery.summary()}")
    bad_exits = {name: code for name, code in outcome.exits.items() if code != 0}
    if bad_exits:
        click.echo(f"instances that did not exit cleanly: {bad_exits}")
    click.echo(f"results: {outcome.json_path}  chart: {outcome.svg_path}")
    click.echo("the documented scenario held" if outcome.ok else "the scenario did NOT hold")
    return outcome.ok


if __name__ == "__main__":  # pragma: no cover
    main()
