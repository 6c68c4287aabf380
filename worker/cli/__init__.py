"""The ``worker`` command group, and its exit codes: they live here and only here.

0 ok · 1 the demo's check failed, or events could not be published · 2 usage or configuration
· 3 cannot import the handlers module · 4 could not connect or not authorised · 130 a second
Ctrl-C cut ``worker run``'s drain short.

Each command family is a module of this package that registers its commands on ``main``:
``run`` (run, check), ``platform``, ``shares``, ``tools`` (publish, simulate, subscribe),
``demo`` and ``asyncapi``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn, TypeVar

import click

from worker import __version__
from worker.config import Settings, load_settings
from worker.errors import ConfigError
from worker.options import OPTIONS, Option

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
    return setting_flags(func, OPTIONS, accepted=True)


def setting_flags(func: F, options: Iterable[Option], *, accepted: bool) -> F:
    """One flag per option, in table order; its help names the default and the variables."""
    for option in reversed(tuple(options)):
        metavar = None if option.is_flag else option.field.upper()
        decorator = click.option(
            option.flag,
            option.field,
            default=None,
            metavar=metavar,
            help=flag_help(option, accepted=accepted),
        )
        func = decorator(func)
    return func


def flag_help(option: Option, *, accepted: bool) -> str:
    """A flag's help, all from the table: what it does, accepts, defaults to, and its variables."""
    shown = f" Accepted: {option.accepted}." if accepted else ""
    envs = " / ".join(option.envs)
    return f"{option.help}.{shown} Default: {option.shown_default}. [env: {envs}]"


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


# Importing the command modules registers their commands on ``main``; they import the names
# above, so this comes last. ``worker.cli:main`` is then the whole command wherever it is used.
from worker.cli import asyncapi, demo, platform, run, shares, tools  # noqa: E402, F401
