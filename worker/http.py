"""The worker's ``/metrics``, ``/livez`` and ``/readyz``, served by :class:`worker.web.Server`.

The HTTP itself (limits, bad requests, HEAD, closing) is ``worker.web``'s, shared with the local
platform; this module only knows what the three paths answer:

- ``/metrics``: the injected Prometheus registry in the text exposition format.
- ``/livez``: 200 as long as the loop answers, with how long one turn of it took and the
  longest block the watchdog saw since the previous probe. A loop blocked by a handler
  cannot answer at all: the probe's timeout is the failure, and ``worker.watchdog`` logs
  why (how long, and the blocking call's stack).
- ``/readyz``: 200 only when the readiness callback has no objection, 503 with its reason;
  either way with the details callback's fields (the handling lag: is the worker keeping up).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker import web
from worker.errors import ConfigError
from worker.watchdog import LoopWatchdog

log = logging.getLogger(__name__)

_JSON: Final = "application/json"

#: Returns None when the instance is ready, else the reason it is not.
Readiness = Callable[[], str | None]
#: Fields added to every /readyz answer, read when asked.
Details = Callable[[], dict[str, object]]


class HttpServer:
    """Serves the three endpoints; ``start`` binds (port 0: any free port), ``close`` stops."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        readiness: Readiness,
        watchdog: LoopWatchdog | None = None,
        details: Details | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._readiness = readiness
        self._details = details
        self._watchdog = watchdog
        self._server = web.Server(
            {"/metrics": self._metrics, "/livez": self._livez, "/readyz": self._readyz}
        )

    @property
    def url(self) -> str:
        """The base URL, with the port actually bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start answering; ConfigError when the address cannot be bound."""
        try:
            await self._server.start(self.host, self.port)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-host/--metrics-port {self.host}:{self.port}: cannot listen: {exc}"
            ) from exc
        self.port = self._server.port
        log.info("metrics, liveness and readiness on %s/metrics /livez /readyz", self.url)

    async def close(self) -> None:
        """Stop listening; answers under way get a moment to finish (see worker.web)."""
        await self._server.close()

    async def _metrics(self) -> web.Response:
        return web.Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

    async def _livez(self) -> web.Response:
        lag = await _loop_lag()
        if self._watchdog is None:
            return web.Response(200, _json(status="ok", loop_lag_seconds=lag), _JSON)
        blocked = self._watchdog.take_longest()
        body = _json(status="ok", loop_lag_seconds=lag, blocked_seconds=blocked)
        return web.Response(200, body, _JSON)

    async def _readyz(self) -> web.Response:
        reason = self._readiness()
        details = self._details() if self._details is not None else {}
        if reason is None:
            return web.Response(200, _json(status="ready", **details), _JSON)
        return web.Response(503, _json(status="not ready", reason=reason, **details), _JSON)


async def _loop_lag() -> float:
    """How long one turn of the loop takes right now (the wait of everything queued)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(0)
    return round(loop.time() - started, 6)


def _json(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"
