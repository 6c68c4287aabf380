"""MQTT over WebSockets on asyncio: the listener for IBM's port-443 path.

The WebSocket layer sits between the socket and whatever serves MQTT, so the MQTT server does
not know it is there. After the handshake the inner side sees an ordinary asyncio transport
carrying the MQTT byte stream (each ``write`` becomes one binary frame; ``close`` sends a
close frame first). Two ways in, matching the two shapes of asyncio servers:

* protocols: wrap the factory given to ``loop.create_server``::

      await loop.create_server(lambda: WebSocketProtocol(make_mqtt_protocol), host, port,
                               ssl=context)

  ``make_mqtt_protocol`` returns an ``asyncio.Protocol`` or ``asyncio.BufferedProtocol``;
  its ``connection_made`` runs once the handshake has succeeded.
* streams: :func:`start_server` has the signature of ``asyncio.start_server``, so the same
  ``handle(reader, writer)`` serves TCP and WebSocket clients.

The transport answers ``get_extra_info("websocket")`` with the agreed subprotocol (``mqtt`` or
``mqttv3.1``), so status messages can say ``mqtt4-ws`` (W33); ``"websocket_path"`` is the
request path; anything else (``peername``, ``sslcontext``, ...) comes from the socket. Pings
are answered here; a failed handshake gets an HTTP 400 naming the problem and never reaches
the inner side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from worker.platform.sockets import feed, release
from worker.platform.ws_handshake import (
    DEFAULT_MAX_FRAME,
    SUBPROTOCOLS,
    HandshakeError,
    Received,
    ServerConnection,
    reject_response,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "SUBPROTOCOLS",
    "WebSocketProtocol",
    "WebSocketTransport",
    "start_server",
]

#: How long a client may take to send its upgrade request.
HANDSHAKE_TIMEOUT: Final = 10.0
#: How long to wait for the client's close frame after ours before dropping the socket.
CLOSE_TIMEOUT: Final = 5.0

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


class WebSocketProtocol(asyncio.Protocol):
    """Speaks WebSocket on the socket, and the inner protocol's bytes inside it."""

    def __init__(
        self,
        inner_factory: Callable[[], asyncio.BaseProtocol],
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self._inner_factory = inner_factory
        self._handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.connection = ServerConnection(max_frame)
        self.socket: asyncio.Transport | None = None
        self.inner: asyncio.BaseProtocol | None = None
        self._wrapper: WebSocketTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    # --- from the socket ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's: not an ABC subclass
        self.socket = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        result = self.connection.receive(data)
        self._act(result)

    def eof_received(self) -> bool | None:
        # A client that half-closes without a close frame is gone as far as MQTT cares.
        if self.inner is not None and isinstance(self.inner, asyncio.Protocol):
            return self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        release(self.socket)
        if self._wrapper is not None and not self._wrapper.lost:
            self._wrapper.lost = True
            if self.inner is not None:
                self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # --- internals ---

    def _act(self, result: Received) -> None:
        socket = self.socket
        assert socket is not None
        if result.reply:
            socket.write(result.reply)
        if result.opened:
            self._cancel_timer()
            self._wrapper = WebSocketTransport(self)
            self.inner = self._inner_factory()
            self.inner.connection_made(self._wrapper)
        if result.data and self.inner is not None:
            feed(self.inner, result.data)
        if result.closed:
            if self._wrapper is not None:
                self._wrapper.close_code = result.close_code
            socket.close()

    def _handshake_expired(self) -> None:
        self._timer = None
        if self.socket is not None and self.inner is None:
            error = HandshakeError(f"no upgrade request within {self._handshake_timeout} s")
            self.socket.write(reject_response(error, status="408 Request Timeout"))
            self.socket.close()

    def start_close_timer(self) -> None:
        """Drop the socket if the client does not answer our close frame in time."""
        if self.socket is not None and self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.close_timeout, self.socket.close)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class WebSocketTransport(asyncio.Transport):
    """The transport the inner protocol sees: writes become binary frames."""

    def __init__(self, outer: WebSocketProtocol) -> None:
        super().__init__()
        self._outer = outer
        self._closing = False
        #: the socket is gone
        self.lost = False
        #: the WebSocket close code once the connection has closed (1005: none was given)
        self.close_code: int | None = None

    @property
    def _socket(self) -> asyncio.Transport:
        assert self._outer.socket is not None
        return self._outer.socket

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "websocket":
            return self._outer.connection.subprotocol
        if name == "websocket_path":
            request = self._outer.connection.request
            return None if request is None else request.path
        return self._socket.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing or self.lost or self._socket.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.is_closing():
            frame = self._outer.connection.send(bytes(data))
            if frame:
                self._socket.write(frame)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        """Send a normal close frame (1000), then close the socket when the client answers."""
        self.close_with(1000)

    def close_with(self, code: int, reason: str = "") -> None:
        """Close with a WebSocket status code, e.g. 1008 (policy) or 1011 (server error)."""
        if self._closing or self.lost:
            return
        self._closing = True
        frame = self._outer.connection.close(code, reason)
        if frame and not self._socket.is_closing():
            self._socket.write(frame)
            self._outer.start_close_timer()
        else:
            self._socket.close()

    def abort(self) -> None:
        self._closing = True
        self._socket.abort()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a WebSocket has no half-close; use close()")

    def pause_reading(self) -> None:
        self._socket.pause_reading()

    def resume_reading(self) -> None:
        self._socket.resume_reading()

    def is_reading(self) -> bool:
        return self._socket.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._socket.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._socket.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._socket.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._outer.inner = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._outer.inner is not None
        return self._outer.inner


async def start_server(
    client_connected_cb: ClientConnected,
    host: str | None = None,
    port: int | None = None,
    *,
    limit: int = 2**16,
    max_frame: int = DEFAULT_MAX_FRAME,
    **kwds: Any,
) -> asyncio.Server:
    """``asyncio.start_server`` for MQTT over WebSocket: ``client_connected_cb(reader, writer)``
    runs after a successful handshake, with streams of the MQTT bytes. ``kwds`` go to
    ``loop.create_server`` (``ssl``, ``backlog``, ...)."""
    loop = asyncio.get_running_loop()

    def streams() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await loop.create_server(
        lambda: WebSocketProtocol(streams, max_frame=max_frame), host, port, **kwds
    )
