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
from typing import Any, Final, cast

from worker.platform.sockets import feed, release

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
        #: what the socket read before the TLS layer took it over (see data_received)
        self._early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        # Nothing may be read before start_tls takes the socket: the ClientHello is its.
        transport.pause_reading()
        self._handshakes.started(self)
        if self._transport is not None:
            self._task = asyncio.get_running_loop().create_task(self._upgrade())

    def data_received(self, data: bytes) -> None:
        """The start of the handshake, read before the TLS layer took the socket.

        asyncio reads nothing while reading is paused, but uvloop makes its first read even
        when ``connection_made`` paused it: a client's ClientHello that had already arrived
        comes here. It is kept and handed to the TLS layer first (uvloop's own ``start_tls``
        would lose it, and the handshake would hang until its timeout).
        """
        self._early += data
        if len(self._early) > READ_BUFFER:  # more than a ClientHello: not a TLS client
            self.drop()

    def connection_lost(self, exc: Exception | None) -> None:
        release(self._transport)
        self._handshakes.ended(self)

    def drop(self) -> None:
        """Give up on this handshake (the limit was reached and it is the oldest)."""
        self._handshakes.ended(self)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
            release(transport)  # aborted: it reads no more, and connection_lost cannot see it
        # Forgotten before it is cancelled: the task keeps its CancelledError, whose traceback
        # holds this gate, so gate -> task would make a cycle that only the cyclic garbage
        # collector frees, and with thousands of dropped handshakes that comes late.
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _upgrade(self) -> None:
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            tls = await _start_tls(
                loop, transport, self, self._context, self._timeout, bytes(self._early)
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError):
            # A failed or abandoned handshake: nothing to report but the closed socket.
            with contextlib.suppress(Exception):
                transport.abort()
            return
        finally:
            self._handshakes.ended(self)
            self._task = None  # done: no cycle through the task (see drop)
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

    def connection_lost(self, exc: BaseException | None) -> None:
        release(self._transport)
        super().connection_lost(exc)
        # The socket is gone: its read buffer and OpenSSL's state go now, whoever still holds
        # this object (a failed handshake's exception, a reference cycle) and for how long.
        # (Every later use of the SSL object is behind a state check that UNWRAPPED fails.)
        self._ssl_buffer = bytearray()
        self._ssl_buffer_view = memoryview(self._ssl_buffer)
        self._extra.pop("ssl_object", None)
        self._sslobj = None


async def _start_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    handshake_timeout: float,
    early: bytes = b"",
) -> asyncio.Transport:
    """``loop.start_tls`` (server side), with :class:`_SslProtocol`; the same steps, and
    ``early``, what the socket read before, handed to the TLS layer first."""
    waiter = loop.create_future()
    tls: Any = _SslProtocol(
        loop, protocol, context, waiter, server_side=True, call_connection_made=False,
        ssl_handshake_timeout=math.ceil(handshake_timeout),
    )  # fmt: skip
    transport.pause_reading()
    transport.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, transport)
    fed = loop.call_soon(feed, tls, early)
    resume = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        transport.close()
        for step in (made, fed, resume):
            step.cancel()
        raise
    finally:
        # A failed handshake's exception is in the waiter, and its traceback holds this frame
        # and so the waiter: a cycle that would keep the handshake's buffers until the cyclic
        # garbage collector runs.
        del waiter
    app: asyncio.Transport = tls._app_transport
    return app
