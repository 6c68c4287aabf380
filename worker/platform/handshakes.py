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
import math
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any, Final

READ_BUFFER: Final = 32 * 1024
"""Bytes of read buffer per TLS socket: a TLS record is at most 16 KiB and its header."""

AppFactory = Callable[[], asyncio.BaseProtocol]


class Handshakes:
    """The handshakes in progress on one platform, oldest first."""

    def __init__(
        self, limit: int, on_limit: Callable[[], None], on_end: Callable[[], None] | None = None
    ) -> None:
        self.limit = limit
        self._on_limit = on_limit
        self._on_end = on_end
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
        if gate in self.active:
            del self.active[gate]
            if self._on_end is not None:
                self._on_end()


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
            tls = await _start_tls(loop, transport, self, self._context, self._timeout)
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


class _SslProtocol(sslproto.SSLProtocol):
    """asyncio's TLS layer with a read buffer of :data:`READ_BUFFER` instead of 256 KiB: the
    buffer is allocated per socket at the start of the handshake, so with asyncio's size
    thousands of half-open handshakes cost a gigabyte."""

    max_size = READ_BUFFER


async def _start_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    handshake_timeout: float,
) -> asyncio.Transport:
    """``loop.start_tls`` (server side), with :class:`_SslProtocol`; the same steps."""
    waiter = loop.create_future()
    tls: Any = _SslProtocol(
        loop, protocol, context, waiter, server_side=True, call_connection_made=False,
        ssl_handshake_timeout=math.ceil(handshake_timeout),
    )  # fmt: skip
    transport.pause_reading()
    transport.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, transport)
    resume = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resume.cancel()
        raise
    app: asyncio.Transport = tls._app_transport
    return app
