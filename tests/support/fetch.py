"""A tiny HTTP client for the tests: one request, the whole answer, a deadline."""

from __future__ import annotations

import asyncio


async def fetch(
    port: int, path: str, *, host: str = "127.0.0.1", method: str = "GET", deadline: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lowercase names, body) of one request."""
    async with asyncio.timeout(deadline):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body
