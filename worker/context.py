"""What a handler can know about where it runs: ``async def handler(message, ctx: Context)``.

A handler that takes a second argument gets a :class:`Context` with each run: the worker's
settings, its instance name, the route, which run this is (1, then 2 on the first retry),
and a logger bound to the message. Nothing global: a test builds a Context of its own, and
two apps in one process each see their own settings.

::

    @app.event(event="reading")
    async def on_reading(event: Event, ctx: Context) -> None:
        ctx.log.info("temp %s", event.data["temp"])   # "... on_reading sensor/s1: temp 21"
        if ctx.attempt > 1:
            ...                                      # a retry: the first run may have written
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from worker.config import Settings


class MessageLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each line with the route and the message's device (or topic)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"{extra.get('route')} {extra.get('subject')}: {msg}", kwargs


class Context:
    """One handler run's surroundings (see the module docstring)."""

    __slots__ = ("_log", "attempt", "route", "settings", "subject", "topic")

    def __init__(
        self, settings: Settings, route: str, topic: str | None, subject: str, attempt: int
    ) -> None:
        #: the worker's settings (secrets masked in their repr)
        self.settings = settings
        #: the route's name, as in metrics and logs
        self.route = route
        #: the message's topic; None for a batch
        self.topic = topic
        #: ``type/id`` of the device, the app ID of an app status, or ``batch of N``
        self.subject = subject
        #: 1 for the first run, 2 for the first retry, ...
        self.attempt = attempt
        self._log: MessageLogger | None = None

    @property
    def instance(self) -> str:
        """This worker's instance name (``--instance``)."""
        return self.settings.instance

    @property
    def log(self) -> MessageLogger:
        """A logger (``worker.handlers.<route>``) whose lines name the route and the device."""
        if self._log is None:
            base = logging.getLogger(f"worker.handlers.{self.route}")
            self._log = MessageLogger(base, {"route": self.route, "subject": self.subject})
        return self._log

    def __repr__(self) -> str:
        return f"Context(route={self.route!r}, subject={self.subject!r}, attempt={self.attempt})"
