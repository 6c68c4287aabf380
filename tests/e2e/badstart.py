"""An app whose startup hook fails: the worker must exit 3 and name the hook."""

from __future__ import annotations

from worker import App, ConfigError, Event

app = App()


@app.on_startup
async def open_database() -> None:
    raise RuntimeError("database unreachable")


@app.event()
async def on_event(event: Event) -> None:
    """Never reached: startup fails first."""


config_app = App()


@config_app.on_startup
async def read_settings() -> None:
    raise ConfigError("DATABASE_URL is not set: accepted is a PostgreSQL URL")


@config_app.event()
async def on_config_event(event: Event) -> None:
    """Never reached: startup fails first."""
