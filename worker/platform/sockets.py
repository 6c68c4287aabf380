"""Socket helpers: letting a closed socket's transport go as soon as its connection is lost
(:func:`release`), and handing a protocol bytes read before it took the socket (:func:`feed`).

On Python 3.11 asyncio's socket transport keeps a bound method of itself
(``_read_ready_cb``) for as long as it exists: a reference cycle, so a closed transport, its
socket object and its buffers are freed only when the cyclic garbage collector next runs a
full collection, which after a flood of connections can be minutes later. Until then they
hold on to the heap pages around them, and the platform's resident memory stays at the
flood's peak (CPython gh-100348/gh-106503; later versions break the cycle themselves).
:func:`release` breaks it once the transport is done with, so reference counting frees it.
"""

from __future__ import annotations

import asyncio


def release(transport: asyncio.BaseTransport | None) -> None:
    """Break the closed ``transport``'s cycle; a no-op for transports without one (uvloop's,
    TLS and WebSocket transports, later Pythons). Call it once the transport is closed (from
    ``connection_lost``, or after ``abort``): it has stopped reading and never uses the
    callback again."""
    if getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None  # type: ignore[union-attr]


def feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Hand ``data`` to ``protocol`` as if its socket had just read it (buffered or not)."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)
            view = view[size:]
    elif isinstance(protocol, asyncio.Protocol):
        protocol.data_received(data)
