"""The platform server: its configuration, its listeners and its lifecycle.

``Platform`` listens on plain TCP and, when configured, on TLS, WebSocket and secure WebSocket
ports. Every listener creates the same :class:`~worker.platform.connection.MqttConnection`
protocol; only the ``secure`` and ``websocket`` flags differ (they show in status messages as
``Secure`` and the ``-ws`` protocol suffix, W32-W33). ``ready`` is set once every listener is
bound, and the bound ports are attributes, so tests use port 0 and never guess.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Self

from worker.errors import ConfigError
from worker.platform.auth import Credentials
from worker.platform.connection import MqttConnection
from worker.platform.handshakes import Handshakes, TlsGate
from worker.platform.hub import MAX_SUBSCRIPTIONS, Hub
from worker.platform.limits import Limit, Limits
from worker.platform.router import BUFFER_SIZE, Router, make_strategy
from worker.platform.rules import MAX_PAYLOAD, Authenticator

if TYPE_CHECKING:
    from worker.platform.metrics import PlatformMetrics

log = logging.getLogger("worker.platform")

ProtocolFactory = Callable[[], asyncio.Protocol]
"""Makes the MQTT protocol for one new connection."""
WebSocketWrapper = Callable[[ProtocolFactory], asyncio.BaseProtocol]
"""Given the MQTT protocol factory, make the protocol of one WebSocket connection.

The WebSocket protocol does the HTTP upgrade, then calls the factory and drives the MQTT
protocol with a transport of its own (``write`` frames the bytes; ``close``,
``get_extra_info``, ``pause_writing``/``resume_writing`` pass through).
"""


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """Everything one platform needs; frozen, built once (by the CLI, a test or a fixture).

    Ports: ``0`` picks a free port, ``None`` disables that listener. Credentials come either as
    the two tables (``api_keys``: API key -> token; ``device_tokens``: ``d:``/``g:`` client
    ID -> token) or as a ready ``credentials`` object, which then wins.
    """

    host: str = "127.0.0.1"
    port: int | None = 1883
    api_keys: Mapping[str, str] = field(default_factory=dict)
    device_tokens: Mapping[str, str] = field(default_factory=dict)
    #: development switch: any token is accepted for a well-formed key or device (W5)
    accept_any_key: bool = False
    #: open the ``quickstart`` org without authentication, with its restrictions (W41)
    quickstart: bool = False
    credentials: Authenticator | None = None
    #: how a shared group picks a member: ``round-robin`` or ``random`` (W28)
    strategy: str = "round-robin"
    #: seed of the ``random`` strategy, for a reproducible sequence
    seed: int | None = None
    max_qos: int = 2
    max_payload: int = MAX_PAYLOAD
    #: messages kept per subscription while its client cannot take them (W21)
    buffer_size: int = BUFFER_SIZE
    #: unacknowledged QoS 1/2 messages per client before the rest wait in the buffer; a
    #: window this wide keeps QoS 1 delivery from waiting on every round trip
    max_inflight: int = 1000
    #: filters one client may hold; further new filters get SUBACK FAILURE (5.0: QUOTA_EXCEEDED)
    max_subscriptions: int = MAX_SUBSCRIPTIONS
    #: seconds a new socket has to send CONNECT
    connect_timeout: float = 10.0
    #: keepalive cap for clients other than ``A:org:app`` (which is capped at 3600, W23)
    max_keepalive: int | None = None
    #: bytes in a socket's write buffer before its subscriber counts as slow
    write_buffer_high: int = 256 * 1024
    tls_port: int | None = None
    ssl_context: ssl.SSLContext | None = None
    ws_port: int | None = None
    wss_port: int | None = None
    #: the WebSocket layer for ``ws_port`` / ``wss_port``; None: ``worker.platform.websocket``
    websocket: WebSocketWrapper | None = None
    metrics: PlatformMetrics | None = None
    #: memory and work bounds, each counted when hit (docs/platform/index.md, "Limits")
    limits: Limits = field(default_factory=Limits)
    #: seconds ``close`` waits for clients to go before dropping their sockets
    shutdown_grace: float = 5.0

    def check(self) -> None:
        """Raise ConfigError naming every bad value."""
        problems = []
        if self.strategy not in ("round-robin", "random"):
            problems.append(f"strategy {self.strategy!r}: accepted are round-robin and random")
        if self.max_qos not in (0, 1, 2):
            problems.append(f"max_qos {self.max_qos!r}: accepted are 0, 1 and 2")
        for name in ("port", "tls_port", "ws_port", "wss_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                problems.append(f"{name} {value!r}: accepted is 0-65535 (0 picks a free port)")
        if (self.tls_port is not None or self.wss_port is not None) and self.ssl_context is None:
            problems.append("tls_port and wss_port need an ssl_context")
        for name in ("buffer_size", "max_inflight", "max_payload", "max_subscriptions"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        problems.extend(self.limits.problems())
        if problems:
            raise ConfigError(problems)

    def authenticator(self) -> Authenticator:
        """The credentials object: ``credentials`` if given, else one built from the tables."""
        if self.credentials is not None:
            return self.credentials
        return Credentials(
            api_keys={k: v.encode() for k, v in self.api_keys.items()},
            device_tokens={k: v.encode() for k, v in self.device_tokens.items()},
            accept_any_key=self.accept_any_key,
            quickstart=self.quickstart,
        )


class Platform:
    """A running local platform: ``async with Platform(config) as p: ... p.port ...``."""

    def __init__(self, config: PlatformConfig | None = None) -> None:
        self.config = config or PlatformConfig()
        self.config.check()
        metrics = self.config.metrics
        limits = self.config.limits
        self.router = Router(
            make_strategy(self.config.strategy, self.config.seed),
            self.config.buffer_size,
            group_observer=metrics.group if metrics is not None else None,
            tally=metrics,
            max_queued_bytes=limits.queued_bytes,
            max_retained=limits.retained,
        )
        self.hub = Hub(
            authenticator=self.config.authenticator(),
            router=self.router,
            max_qos=self.config.max_qos,
            max_payload=self.config.max_payload,
            max_inflight=self.config.max_inflight,
            max_subscriptions=self.config.max_subscriptions,
            connect_timeout=self.config.connect_timeout,
            max_keepalive=self.config.max_keepalive,
            write_buffer_high=self.config.write_buffer_high,
            metrics=metrics,
            limits=limits,
        )
        if metrics is not None:
            hub, router = self.hub, self.router
            metrics.watch(
                queued_bytes=lambda: router.queued_bytes,
                sessions=lambda: hub.attached + len(hub.offline),
                retained=lambda: router.retained_count,
            )
        self._handshakes = Handshakes(
            limits.handshakes,
            on_limit=lambda: self.hub.limit(Limit.HANDSHAKES),
            on_end=self.hub.trimmer.handshake_ended,
        )
        #: set once every listener is bound
        self.ready = asyncio.Event()
        self._servers: dict[str, asyncio.Server] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind every configured listener, then set :attr:`ready`."""
        cfg = self.config
        listeners = (
            ("tcp", cfg.port, None, False),
            ("tls", cfg.tls_port, cfg.ssl_context, False),
            ("ws", cfg.ws_port, None, True),
            ("wss", cfg.wss_port, cfg.ssl_context, True),
        )
        try:
            for name, port, context, websocket in listeners:
                if port is not None:
                    self._servers[name] = await self._listen(port, context, websocket)
        except OSError as exc:
            await self.close()
            raise ConfigError(f"cannot listen on {cfg.host}: {exc.strerror or exc}") from exc
        except ConfigError:
            await self.close()
            raise
        self.ready.set()
        log.info("platform listening on %s", self.describe())

    async def _listen(
        self, port: int, context: ssl.SSLContext | None, websocket: bool
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        mqtt = self.protocol_factory(secure=context is not None, websocket=websocket)
        factory: Callable[[], asyncio.BaseProtocol] = mqtt
        if websocket:
            wrap = self.config.websocket or _default_websocket()
            factory = lambda: wrap(mqtt)  # noqa: E731
        if context is None:
            return await loop.create_server(factory, self.config.host, port)
        # The CONNECT deadline starts when the protocol is made, which for TLS is after the
        # handshake; without a handshake timeout, a socket that never says hello would hold on
        # for asyncio's default of 60 s, outlasting the connect timeout. The gate also bounds
        # how many handshakes are in progress (limits.handshakes).
        timeout, app = self.config.connect_timeout, factory
        handshakes = self._handshakes

        def gate() -> asyncio.BaseProtocol:
            return TlsGate(handshakes, context, timeout, app)

        return await loop.create_server(gate, self.config.host, port)

    async def close(self) -> None:
        """Stop listening, close every connection, wait for their sockets (idempotent)."""
        servers = list(self._servers.values())
        self._servers.clear()
        for server in servers:
            server.close()
        await self.hub.shutdown(self.config.shutdown_grace)
        for server in servers:
            await server.wait_closed()
        self.ready.clear()

    # --- embedding ----------------------------------------------------------------------------

    def protocol_factory(self, *, secure: bool = False, websocket: bool = False) -> ProtocolFactory:
        """The MQTT protocol for connections an adapter accepts itself (a WebSocket layer)."""

        def factory() -> asyncio.Protocol:
            return MqttConnection(self.hub, secure=secure, websocket=websocket)

        return factory

    def _bound(self, name: str) -> int | None:
        server = self._servers.get(name)
        if server is None or not server.sockets:
            return None
        return int(server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The bound plain TCP port (after start)."""
        port = self._bound("tcp")
        if port is None:
            raise RuntimeError("the platform has no plain TCP listener running")
        return port

    @property
    def tls_port(self) -> int | None:
        """The bound TLS port, or None without a TLS listener."""
        return self._bound("tls")

    @property
    def ws_port(self) -> int | None:
        """The bound WebSocket port, or None."""
        return self._bound("ws")

    @property
    def wss_port(self) -> int | None:
        """The bound secure WebSocket port, or None."""
        return self._bound("wss")

    def describe(self) -> str:
        """``tcp 127.0.0.1:1883, tls ...`` for logs and banners."""
        parts = [f"{name} {self.config.host}:{self._bound(name)}" for name in self._servers]
        return ", ".join(parts) or "nothing"

    def kick(self, client_id: str) -> int:
        """Disconnect a client with close code 94, as an administrator would (W40)."""
        return self.hub.kick(client_id)

    @property
    def connections(self) -> int:
        """Open client sockets now."""
        return len(self.hub.connections)


def _default_websocket() -> WebSocketWrapper:
    # Imported on demand: a platform without WebSocket listeners never loads the layer.
    from worker.platform.websocket import WebSocketProtocol

    return WebSocketProtocol
