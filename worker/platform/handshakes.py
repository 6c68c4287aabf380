"""TLS listeners with a bound on handshakes in progress (``limits.handshakes``).

With ``loop.create_server(ssl=...)`` every accepted socket starts its handshake at once and
nothing counts them: thousands of clients that open a socket and never finish the handshake
each hold OpenSSL state and buffers until the handshake timeout. Here a TLS listener accepts
plain sockets through :class:`TlsGate`, which counts the handshake, upgrades the socket with
``loop.start_tls`` and only then makes the MQTT (or WebSocket) protocol. Past the limit the
handshake that started longest ago is dropped, and the hit counted: a client that completes
its handshake promptly is never the oldest for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

AppFactory = Callable[[], asyncio.BaseProtocol]


class Handshakes:
    """The handshakes in progress on one platform, oldest first."""

    def __init__(self, limit: int, on_limit: Callable[[], None]) -> None:
        self.limit = limit
        self._on_limit = on_limit
        self.active: dict[TlsGate, None] = {}

    def started(self, gate: TlsGate) -> None:
        """A handshake began; past the limit the oldest one is dropped."""
        self.active[gate] = None
        if len(self.active) > self.limit:
            oldest = next(iter(self.active))
            self._on_limit()
            oldest.drop()

    def ended(self, gate: TlsGate) -> None:
        """A handshake finished, failed or was dropped."""
        self.active.pop(gate, None)


class TlsGate(asyncio.Protocol):
    """A TLS socket until its handshake is done; then the application protocol takes over."""

    def __init__(
        self,
        handshakes: Handshakes,
        context: ssl.SSLContext,
        timeout: float,
        factory: AppFactory,
    ) -> None:
        self._handshakes = handshakes
        self._context = context
        self._timeout = timeout
        self._factory = factory
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # Nothing may be read before start_tls takes the socket: the ClientHello is its.
        transport.pause_reading()
        self._handshakes.started(self)
        if self._transport is not None:
            self._task = asyncio.get_running_loop().create_task(self._upgrade())

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshakes.ended(self)

    def drop(self) -> None:
        """Give up on this handshake (the limit was reached and it is the oldest)."""
        self._handshakes.ended(self)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        if self._task is not None:
            self._task.cancel()

    async def _upgrade(self) -> None:
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                transport,
                self,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError):
            # A failed or abandoned handshake: nothing to report but the closed socket.
            with contextlib.suppress(Exception):
                transport.abort()
            return
        finally:
            self._handshakes.ended(self)
        if tls is None or self._transport is None:
            return
        protocol = self._factory()
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
