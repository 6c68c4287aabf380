"""Closing what paho leaves behind, so that no ResourceWarning lands in an unrelated test."""

from __future__ import annotations

import contextlib
import gc
import ssl


def close_abandoned_tls_sockets(port: int) -> None:
    """Close the client sockets of failed TLS handshakes to ``port``.

    paho 2.x leaves the socket of a failed handshake open, held by the traceback of its error.
    Whichever drops that error last (often the executor thread that ran the connect, at a
    moment of its own) would then collect an open socket, and its ResourceWarning would land
    in whatever test runs at that moment. Call this while still holding the error (e.g. the
    ``pytest.raises`` result), so that the socket cannot have been collected yet: closing it
    then is deterministic. Only paho makes blocking ``ssl.SSLSocket`` objects in these tests.
    """
    for obj in gc.get_objects():
        if isinstance(obj, ssl.SSLSocket) and obj.fileno() != -1:
            with contextlib.suppress(OSError):  # a socket whose peer is unknown is closed too
                if obj.getpeername()[1] != port:
                    continue
            obj.close()
