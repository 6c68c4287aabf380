"""A loopback TCP proxy for fault injection: pause, cut and delay, every operation bounded.

It stands between the workers and the broker (``await Proxy.start(host, port)``, then point
the workers at ``proxy.port``) and forwards bytes both ways, one pump per direction::

    await proxy.pause()      # a stall: stop forwarding, keep every socket open (TCP fills up)
    await proxy.resume()     # forward again, the held bytes first: nothing lost, nothing added
    await proxy.cut()        # a cut: close every connection (peers see the loss at once)
    proxy.refuse = True      # an outage: new connections are closed at once until False
    proxy.delay = 0.05       # latency added to every chunk, each way

A paused proxy holds new connections too, as a stalled network would. Every operation
finishes within ``NETWORK`` seconds or raises TimeoutError, so a wedged socket cannot hang
a test.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final, Self

from tests.support.waiting import NETWORK

_CHUNK: Final = 65536


class Proxy:
    """Forwards 127.0.0.1:``port`` (chosen by the OS) to ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        #: seconds added to every forwarded chunk
        self.delay = 0.0
        #: close new connections at once (the far side is unreachable)
        self.refuse = False
        #: connections accepted so far (a reconnect shows up here)
        self.accepted = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(cls, upstream_host: str, upstream_port: int) -> Self:
        """A proxy listening on a free loopback port."""
        proxy = cls(upstream_host, upstream_port)
        async with asyncio.timeout(NETWORK):
            proxy._server = await asyncio.start_server(proxy._accept, proxy.host, 0)
        proxy.port = int(proxy._server.sockets[0].getsockname()[1])
        return proxy

    @property
    def connections(self) -> int:
        """Connections being forwarded now."""
        return len(self._links)

    async def pause(self) -> None:
        """Stop forwarding in both directions; the sockets stay open."""
        self._flowing.clear()
        await asyncio.sleep(0)  # let pumps that are mid-write see it before we return

    async def resume(self) -> None:
        """Forward again."""
        self._flowing.set()
        await asyncio.sleep(0)

    async def cut(self) -> None:
        """Close every current connection, both sides, and wait until their pumps ended."""
        for writer in list(self._writers):
            writer.transport.abort()  # RST, like a network that dropped the path
        for pump in list(self._pumps):
            pump.cancel()  # a paused pump would not notice the abort
        # the links are the server's own tasks: they end by themselves once their pumps did
        links = list(self._links)
        if links:
            await asyncio.wait(links, timeout=NETWORK)
        if any(not link.done() for link in links):
            raise TimeoutError(f"the proxy's links did not close within {NETWORK}s")

    async def close(self) -> None:
        """Stop listening and cut everything."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._flowing.set()
        await self.cut()
        if server is not None:
            async with asyncio.timeout(NETWORK):
                await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refuse:
            writer.transport.abort()
            return
        link = asyncio.current_task()
        assert link is not None
        self._links.add(link)
        self._writers.add(writer)
        try:
            await self._link(reader, writer)
        finally:
            self._links.discard(link)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(NETWORK):
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except (OSError, TimeoutError):
            return  # the broker is down: the client sees its connection closed
        self._writers.add(up_writer)
        try:
            pumps = {
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            }
            self._pumps |= pumps
            try:
                # either side closing ends the link, as a TCP path does
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                self._pumps -= pumps
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                # While paused the chunk waits here and nothing more is read: the kernel
                # buffers fill and the sender stalls, exactly as on a stalled path.
                await self._flowing.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
