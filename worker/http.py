"""One small HTTP/1.1 server on the event loop: ``/metrics``, ``/livez`` and ``/readyz``.

No threads and no web framework: probes and scrapes are a few requests a second, each answered
from memory, so ``asyncio.start_server`` with one read per request is enough. Every answer
closes its connection, which keeps the server free of keep-alive state.

- ``/metrics``: the injected Prometheus registry in the text exposition format.
- ``/livez``: 200 as long as the loop answers, with how long one turn of it took and the
  longest block the watchdog saw since the previous probe. A loop blocked by a handler
  cannot answer at all: the probe's timeout is the failure, and ``worker.watchdog`` logs
  why (how long, and the blocking call's stack).
- ``/readyz``: 200 only when the readiness callback has no objection, 503 with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.errors import ConfigError
from worker.watchdog import LoopWatchdog

log = logging.getLogger(__name__)

#: how long a client may take to send its request head
READ_TIMEOUT: Final = 5.0
_HEAD_LIMIT: Final = 16 * 1024
_JSON: Final = "application/json"
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}

#: Returns None when the instance is ready, else the reason it is not.
Readiness = Callable[[], str | None]
Response = tuple[int, str, bytes]


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
    ) -> None:
        self.host = host
        self.port = port
        self._registry = registry
        self._readiness = readiness
        self._watchdog = watchdog
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """The base URL, with the port actually bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start answering; ConfigError when the address cannot be bound."""
        try:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, limit=_HEAD_LIMIT
            )
        except OSError as exc:
            raise ConfigError(
                f"--metrics-host/--metrics-port {self.host}:{self.port}: cannot listen: {exc}"
            ) from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics, liveness and readiness on %s/metrics /livez /readyz", self.url)

    async def close(self) -> None:
        """Stop listening; requests being answered finish on their own."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
            status, content_type, body = await self._answer(method, path)
            writer.write(_response(status, content_type, body, with_body=method != "HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that sends nothing sensible just gets the connection closed
        except ValueError:
            writer.write(_response(400, "text/plain", b"bad request\n"))
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, method: str, path: str) -> Response:
        if path not in ("/metrics", "/livez", "/readyz"):
            return 404, "text/plain", b"not found; try /metrics, /livez or /readyz\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/livez":
            lag = await _loop_lag()
            if self._watchdog is None:
                return 200, _JSON, _json(status="ok", loop_lag_seconds=lag)
            blocked = self._watchdog.take_longest()
            return 200, _JSON, _json(status="ok", loop_lag_seconds=lag, blocked_seconds=blocked)
        reason = self._readiness()
        if reason is None:
            return 200, _JSON, _json(status="ready")
        return 503, _JSON, _json(status="not ready", reason=reason)


async def _loop_lag() -> float:
    """How long one turn of the loop takes right now (the wait of everything queued)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(0)
    return round(loop.time() - started, 6)


def _request_line(head: bytes) -> tuple[str, str]:
    """(method, path without query) of a request head; ValueError when it is not HTTP."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"not an HTTP request line: {line[:80]!r}")
    return parts[0], parts[1].split("?", 1)[0]


def _response(status: int, content_type: str, body: bytes, *, with_body: bool = True) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (body if with_body else b"")


def _json(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"
