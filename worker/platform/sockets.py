"""Letting a closed socket's transport go as soon as its connection is lost.

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
