"""``worker asyncapi``: the AsyncAPI 3.0 document of an App, on stdout or into a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from worker.cli import EXIT_APP, EXIT_USAGE, fail, main, resolve_settings, settings_options


@main.command()
@click.argument("target", metavar="MODULE[:ATTR] | FILE.py[:ATTR]")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the document to this file instead of stdout.",
)
@settings_options
def asyncapi(target: str, output: Path | None, **flags: Any) -> None:
    """Print the AsyncAPI 3.0 document (JSON) of the App of MODULE or FILE.py.

    Every route is a channel with a receive operation (its topic filter as the address, each
    "+" a parameter, the payload schema from the route's payload= model); every
    app.publishes_command / app.publishes_event is a channel with a send operation; the server
    is the broker of these settings. Exit 2: bad settings or unwritable output; 3: no App.
    """
    from worker.asyncapi import document
    from worker.errors import AppLoadError
    from worker.loader import load_app

    settings = resolve_settings(flags)
    try:
        app = load_app(target)
    except AppLoadError as exc:
        fail(EXIT_APP, str(exc))
    text = json.dumps(document(app, settings, target), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(EXIT_USAGE, f"--output {output}: cannot write: {exc.strerror or exc}")
