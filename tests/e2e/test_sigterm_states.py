"""SIGTERM stops ``worker run`` promptly in every state before serving: mid-handshake and
during the backoff between attempts (serving and draining are covered by the drain tests)."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.support.processes import ROOT, clean_env
from tests.support.waiting import PROCESS, until

#: far below the 10 s connect timeout and the backoff's 30 s cap: "promptly"
PROMPT = 2.5


class Run:
    """A ``worker run`` process and the lines it logged so far."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def pump(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def logged(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in self.lines)

    async def stop_within(self, seconds: float) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), PROCESS)
        return code, loop.time() - started


@asynccontextmanager
async def worker_run(port: int) -> AsyncIterator[Run]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "run", "worker.examples.fleet",
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
        cwd=ROOT, env=clean_env(WORKER_ORG="abc123"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    run = Run(proc)
    pump = asyncio.create_task(run.pump())
    try:
        yield run
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await pump


async def test_sigterm_during_a_connection_attempt_stops_at_once() -> None:
    """A host that accepts TCP and never answers CONNECT: the attempt would last 10 s."""
    accepted = asyncio.Event()
    holding: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holding.append(writer)
        accepted.set()
        await reader.read()  # until the worker goes away; never a CONNACK

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, worker_run(port) as run:
        await asyncio.wait_for(accepted.wait(), PROCESS)
        code, took = await run.stop_within(PROMPT)
        assert code == 0, run.lines
        assert took < PROMPT, f"took {took:.1f}s: {run.lines}"
        assert not run.logged("retrying"), run.lines
        for writer in holding:
            writer.close()


async def test_sigterm_during_the_backoff_stops_at_once() -> None:
    """A refused port: wait until the backoff is seconds long, then SIGTERM."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # the port is now closed: every attempt is refused
    async with worker_run(port) as run:
        await until(lambda: run.logged(r"retrying in [2-9]\.\d+s"), "a backoff of seconds")
        code, took = await run.stop_within(PROMPT)
        assert code == 0, run.lines
        assert took < PROMPT, f"took {took:.1f}s: {run.lines}"
        assert run.logged("stopped")


async def skip_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one MQTT packet: (its first byte, its body)."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


def suback_for(body: bytes) -> bytes:
    """A SUBACK granting QoS 1 to every filter of a SUBSCRIBE body (MQTT 3.1.1)."""
    packet_id, at, granted = body[:2], 2, 0
    while at < len(body):
        at += 2 + int.from_bytes(body[at : at + 2], "big") + 1
        granted += 1
    return bytes([0x90, 2 + granted]) + packet_id + bytes([1] * granted)


async def test_sigterm_while_waiting_for_a_suback_stops_at_once() -> None:
    """A server that accepts the connection and never answers the SUBSCRIBE: without a stop
    that gives way, the worker waited until its keepalive gave the connection up (a minute)."""
    subscribe_seen = asyncio.Event()
    holding: list[asyncio.StreamWriter] = []

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holding.append(writer)
        await skip_packet(reader)  # the CONNECT
        writer.write(bytes([0x20, 2, 0, 0]))  # CONNACK, accepted
        await writer.drain()
        first = await reader.read(1)
        if first[:1] == b"\x82":  # SUBSCRIBE
            subscribe_seen.set()
        await reader.read()  # never a SUBACK

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, worker_run(port) as run:
        await asyncio.wait_for(subscribe_seen.wait(), PROCESS)
        code, took = await run.stop_within(PROMPT)
        assert code == 0, run.lines
        assert took < PROMPT, f"took {took:.1f}s: {run.lines}"
        for writer in holding:
            writer.close()


async def test_sigterm_while_a_reconnect_waits_for_its_suback_stops_at_once() -> None:
    """Served once, then the connection is lost and the new one's SUBSCRIBE is never answered:
    the drain must not wait for that SUBACK (it would until --drain-timeout)."""
    connections = 0
    second_subscribe = asyncio.Event()
    holding: list[asyncio.StreamWriter] = []

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        holding.append(writer)
        await skip_packet(reader)  # the CONNECT
        writer.write(bytes([0x20, 2, 0, 0]))  # CONNACK, accepted
        kind, body = await skip_packet(reader)
        assert kind == 0x82, kind  # SUBSCRIBE
        if connections > 1:
            second_subscribe.set()
            await reader.read()  # never a SUBACK
            return
        writer.write(suback_for(body))
        await writer.drain()
        writer.close()  # lost: the worker reconnects

    server = await asyncio.start_server(once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, worker_run(port) as run:
        await asyncio.wait_for(second_subscribe.wait(), PROCESS)
        code, took = await run.stop_within(PROMPT)
        assert code == 0, run.lines
        assert took < PROMPT, f"took {took:.1f}s: {run.lines}"
        for writer in holding:
            writer.close()
