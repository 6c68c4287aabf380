"""``worker platform``: the local Watson IoT-compatible MQTT server, for development."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from worker.cli import EXIT_USAGE, fail, main
from worker.errors import ConfigError

PORT = click.IntRange(0, 65535)


def _is_this_process() -> bool:
    """Whether this process was started as ``worker platform`` (the ``worker`` script or
    ``python -m worker.cli``), rather than a program calling the command in-process, such as
    a test's CliRunner, which must never be replaced by a new run of itself."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    started_as_cli = Path(sys.argv[0]).name == "worker" or (
        main_spec is not None and main_spec.name.startswith("worker.cli")
    )
    return started_as_cli and sys.argv[1:2] == ["platform"]


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
    "--limit",
    "limits",
    multiple=True,
    metavar="NAME=VALUE",
    help="Change one limit (docs/platform/index.md, Limits), e.g. session_expiry=600; repeatable.",
)
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
    import logging

    from worker import collector, loops
    from worker.platform.launch import Launch, prepare, serve
    from worker.platform.memory import use_c_allocator

    if _is_this_process():
        use_c_allocator()  # may run the command again, at once, in this same process

    flags["api_keys"] = tuple(flags["api_keys"])
    flags["limits"] = tuple(flags["limits"])
    try:
        prepared = prepare(Launch(**flags))
        logging.basicConfig(
            level=log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        # Each subscription, session and queued message is a few long-lived objects: with the
        # default young threshold, a storm of 100,000 shared subscriptions set off a full
        # collection every quarter of growth, each walking them all (up to 90 ms of stall).
        collector.tune()
        # asyncio's loop, not uvloop's: see "Event loops" in docs/platform/index.md
        loops.run(serve(prepared, click.echo), "asyncio")
    except ConfigError as exc:
        # Bad flag combinations, and ports that cannot be bound, are the user's to fix.
        fail(EXIT_USAGE, *exc.problems)
