"""``worker publish``, ``worker simulate`` and ``worker subscribe``: the tools, and their flags."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import click

from worker.cli import (
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    F,
    fail,
    main,
    resolve_settings,
    setting_flags,
)
from worker.config import Settings
from worker.options import OPTIONS

#: the settings a tool that only publishes needs: where and as whom to connect
_TOOL_FIELDS: Final = frozenset(
    (
        "api_key", "api_token", "app_id", "org", "profile", "host", "domain", "port",
        "mqtt_transport", "tls", "cafile", "keepalive", "username", "password", "qos",
    )
)  # fmt: skip


def tool_options(func: F) -> F:
    """The connection flags of ``settings_options`` (same names, same variables), no others."""
    return setting_flags(func, (o for o in OPTIONS if o.field in _TOOL_FIELDS), accepted=False)


def tool_settings(flags: dict[str, Any]) -> Settings:
    """Settings for a publishing tool; it has its own client ID, so the identity is moot."""
    return resolve_settings({**flags, "identity": "standalone"})


def run_tool(work: Any, settings: Settings | None = None) -> Any:
    """Run a tool's coroutine: exit 4 when it cannot connect, 2 for a bad message or file.

    With ``settings``, a failed connection is explained as the worker explains it (a hint
    for TLS spoken to a plain port and the reverse, never an empty reason).
    """
    import asyncio

    from worker.connection import connect_options
    from worker.errors import ConnectError, NotAuthorized
    from worker.tools.publish import PublishError
    from worker.transports import hints

    try:
        return asyncio.run(work)
    except ConnectError as exc:
        if settings is None or isinstance(exc, NotAuthorized):
            fail(EXIT_CONNECT, str(exc))
        fail(EXIT_CONNECT, hints.explain(exc, connect_options(settings)))
    except PublishError as exc:
        fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


_FORMAT = click.option(
    "--format", "fmt", default="json", show_default=True, help="The fmt topic level."
)
_JSON = click.option("--json", "json_text", metavar="JSON", help="The payload, checked as JSON.")
_DATA = click.option(
    "--data", metavar="TEXT", help="The payload as it is; JSON on --format json (the default)."
)
_CLIENT_ID = click.option("--client-id", help="Client ID to publish as. Default: a:ORG:publish-…")


def _message_options(func: F) -> F:
    """The flags of one published message: payload, format, client ID, connection."""
    for decorator in (tool_options, _CLIENT_ID, _FORMAT, _DATA, _JSON):
        func = decorator(func)
    return func


@main.group()
def publish() -> None:
    """Publish events or commands as an application, from the shell or a JSON-lines file.

    The topic is checked by the iot-2 rules and the payload against the 131072-byte limit
    before anything is sent. Exit 2: a bad message or file; 4: cannot connect.
    """


def _publish_one(kind: str, parts: tuple[str, str, str], flags: dict[str, Any]) -> None:
    from worker.tools import publish as pub

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
        pub.publish_one(pub.tool_options(settings, "publish", client_id), message, settings.qos),
        settings,
    )
    click.echo(f"published {len(message.payload)} bytes to {message.topic}")


@publish.command("event")
@click.argument("device_type", metavar="TYPE")
@click.argument("device_id", metavar="ID")
@click.argument("event", metavar="EVENT")
@_message_options
def publish_event(device_type: str, device_id: str, event: str, **flags: Any) -> None:
    """Publish EVENT as if device TYPE/ID had sent it (iot-2/type/T/id/D/evt/E/fmt/F)."""
    _publish_one("event", (device_type, device_id, event), flags)


@publish.command("command")
@click.argument("device_type", metavar="TYPE")
@click.argument("device_id", metavar="ID")
@click.argument("command", metavar="CMD")
@_message_options
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
    from worker.tools import publish as pub

    settings = tool_settings(flags)
    try:
        found = pub.read_replay(file)
    except pub.PublishError as exc:
        fail(EXIT_USAGE, str(exc))
    options = pub.tool_options(settings, "replay", client_id)

    def report(progress: pub.ReplayProgress) -> None:
        click.echo(progress.line(), err=True)

    done = run_tool(
        pub.replay(options, found, rate=rate, qos=settings.qos, report=report), settings
    )
    click.echo(f"replayed {done.sent} events from {file}")


@main.command()
@click.argument("filters", nargs=-1, metavar="[FILTER]...")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--client-id", help="Client ID to subscribe as. Default: a:ORG:subscribe-…")
@tool_options
def subscribe(
    filters: tuple[str, ...], count: int | None, as_json: bool, client_id: str | None, **flags: Any
) -> None:
    """Print the messages on FILTER (default: every device event), one a line, for debugging.

    Connects with the same settings as `worker run` (profile, host, TLS, credentials) under
    a client ID of its own, so it sees copies and never takes messages from the workers. Runs
    until --count messages or Ctrl-C. Exit 2: a bad filter; 4: cannot connect or subscribe.
    """
    from worker.tools import publish as pub
    from worker.tools import subscribe as sub

    settings = tool_settings(flags)
    try:
        chosen = sub.check_filters(filters, wiotp=settings.profile.value == "wiotp")
    except pub.PublishError as exc:
        fail(EXIT_USAGE, str(exc))
    options = pub.tool_options(settings, "subscribe", client_id)

    def show(message: Any) -> None:
        click.echo(sub.line(message, as_json=as_json))

    def subscribed(done: list[str]) -> None:
        where = f"{options.host}:{options.port}"
        click.echo(f"subscribed to {', '.join(done)} on {where} as {options.client_id}", err=True)

    work = sub.watch(options, chosen, settings.qos, show, count=count, on_subscribed=subscribed)
    try:
        run_tool(work, settings)
    except SystemExit as exc:
        if exc.code != EXIT_INTERRUPTED:
            raise  # Ctrl-C is how a watch ends: exit 0


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
@click.option(
    "--temp-range",
    metavar="LOW:HIGH",
    help="Temperatures start and stay between LOW and HIGH (no hot spikes). "
    "Default: start at 18-24, walk within 5-35, rare spikes above 80.",
)
@click.option(
    "--template",
    metavar="JSON",
    help="The payload as a JSON object with placeholders {temp} {seq} {ts} {device_type} "
    """{device_id}, e.g. '{"t": "{temp}", "n": "{seq}"}'. Default: {"temp", "seq", "ts"}.""",
)
@_CLIENT_ID
@tool_options
def simulate(**flags: Any) -> None:
    """Simulate devices sending `reading` events ({"temp", "seq", "ts"}) at a steady rate.

    Prints a progress line every second (sent, rate, errors) and a summary at the end; runs
    until --count or --duration, or Ctrl-C. Exit 1 when some events could not be published,
    2 for a bad option, 4 when the fleet cannot connect (a platform that refuses the devices:
    give them tokens, see `worker platform --help`, or use --as app).
    """
    from worker.tools.sim_payload import PayloadOptionError, Template, temp_range
    from worker.tools.simulate import Mode, SimConfig, SimStats, Simulator

    sim = {k: flags.pop(k) for k in ("devices", "rate", "count", "duration", "churn", "seed")}
    try:
        shape = flags.pop("template")
        template = None if shape is None else Template.parse(shape)
        low_high = flags.pop("temp_range")
        bounds = None if low_high is None else temp_range(low_high)
    except PayloadOptionError as exc:
        fail(EXIT_USAGE, str(exc))
    types = tuple(t.strip() for t in flags.pop("types").split(",") if t.strip())
    if not types:
        fail(EXIT_USAGE, "--types: give at least one device type")
    mode, token, client_id = flags.pop("mode"), flags.pop("device_token"), flags.pop("client_id")
    settings = tool_settings(flags)
    chosen: Mode = "app" if settings.profile.value == "mqtt" else "device"
    if mode == "app" or mode == "device":  # click.Choice allows nothing else
        chosen = mode
    config = SimConfig(
        types=types, mode=chosen, device_token=token, qos=settings.qos, client_id=client_id,
        temp_range=bounds, template=template, **sim,
    )  # fmt: skip
    last = [0, 0.0]  # sent and clock at the previous line: the rate is over the last second

    def report(stats: SimStats) -> None:
        import time

        now = time.monotonic()
        rate = (stats.sent - last[0]) / max(now - last[1], 1e-9) if last[1] else stats.sent
        last[:] = [stats.sent, now]
        click.echo(stats.line(rate), err=True)

    stats = run_tool(Simulator(config, settings).run(report), settings)
    elapsed = max(1e-9, stats.elapsed)
    click.echo(
        f"sent {stats.sent} events in {elapsed:.1f}s ({stats.sent / elapsed:.1f}/s), "
        f"{stats.errors} errors"
    )
    if stats.errors:
        sys.exit(EXIT_FAILED)
