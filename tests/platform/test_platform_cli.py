"""``worker platform`` as a user runs it: a real process, its banner, signals and exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.credentials import ORG, STRONG_TOKEN
from tests.support.waiting import PROCESS
from worker.cli import main
from worker.mqtt import Connack, Connect, PacketReader, encode
from worker.platform import memory

KEY, TOKEN = f"a-{ORG}-clitest", STRONG_TOKEN


@dataclass
class Running:
    process: asyncio.subprocess.Process
    banner: list[str]

    def url(self, scheme: str) -> int:
        """The port of the listener announced with ``scheme://``."""
        for line in self.banner:
            found = re.search(rf"\b{scheme}://127\.0\.0\.1:(\d+)", line)
            if found:
                return int(found.group(1))
        raise AssertionError(f"no {scheme}:// listener in the banner:\n" + "\n".join(self.banner))

    async def stop(self, sig: signal.Signals) -> tuple[int, str, str]:
        """Send ``sig``; return the exit code and the rest of stdout and stderr."""
        self.process.send_signal(sig)
        async with asyncio.timeout(PROCESS):
            out, err = await self.process.communicate()
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), err.decode()


async def start(*args: str, allocator: str | None = None) -> Running:
    """Start ``worker platform`` and wait for its ``ready`` line; ``allocator`` is the
    PYTHONMALLOC it is given (none by default)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WIOTP_", "WORKER_")) and k != "PYTHONMALLOC"
    }
    if allocator is not None:
        env["PYTHONMALLOC"] = allocator
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "platform",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    banner: list[str] = []
    try:
        async with asyncio.timeout(PROCESS):
            while not banner or not banner[-1].startswith("ready"):
                line = await process.stdout.readline()
                if not line:
                    break
                banner.append(line.decode().rstrip("\n"))
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    if not banner or not banner[-1].startswith("ready"):
        _, err = await process.communicate()
        raise AssertionError(f"no ready line; stderr:\n{err.decode()}")
    return Running(process, banner)


async def connect(
    port: int,
    client_id: str,
    username: str | None,
    password: str | None,
    context: ssl.SSLContext | None = None,
) -> int:
    """One MQTT 3.1.1 CONNECT; the CONNACK return code."""
    async with asyncio.timeout(PROCESS):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost" if context else None
        )
        try:
            secret = password.encode() if password is not None else None
            writer.write(encode(Connect(client_id, username=username, password=secret)))
            packets = PacketReader(max_packet_size=4096)
            while True:
                data = await reader.read(4096)
                assert data, "the platform closed the connection without a CONNACK"
                for packet in packets.feed(data):
                    assert isinstance(packet, Connack)
                    return packet.reason_code
        finally:
            writer.close()
            # A refused client is dropped by the server; that is the point, not an error.
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


async def scrape(port: int) -> str:
    async with asyncio.timeout(PROCESS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
    return response.decode()


async def test_w1_w5_the_platform_serves_tcp_tls_and_metrics_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    running = await start(
        "--port", "0", "--tls-port", "0", "--dev-tls", str(tmp_path / "tls"),
        "--api-key", f"{KEY}:{TOKEN}", "--metrics-port", "0",
    )  # fmt: skip
    banner = "\n".join(running.banner)
    assert TOKEN not in banner
    assert f"api key {KEY}  token MP******" in banner
    assert f"CA file {tmp_path / 'tls' / 'ca.pem'}" in banner
    assert "worker run worker.examples.fleet --host 127.0.0.1 --port" in banner
    try:
        tcp, tls_port = running.url("mqtt"), running.url("mqtts")
        assert await connect(tcp, "a:abc123:cli", KEY, TOKEN) == 0
        assert await connect(tcp, "a:abc123:cli2", KEY, "wrong") == 5
        context = ssl.create_default_context(cafile=tmp_path / "tls" / "ca.pem")
        assert await connect(tls_port, "a:abc123:cli3", KEY, TOKEN, context) == 0
        text = await scrape(running.url("http"))
        assert 'worker_platform_connects_total{client_class="a"} 2.0' in text
        assert 'worker_platform_connects_refused_total{reason="not_authorized"} 1.0' in text
    finally:
        code, out, err = await running.stop(signal.SIGTERM)
    assert code == 0, err
    assert "stopping" in out
    assert "Traceback" not in err


async def test_without_credentials_any_key_works_on_loopback_and_sigint_stops() -> None:
    running = await start("--port", "0", "--ws-port", "0")
    try:
        assert any("any key is accepted on this loopback" in line for line in running.banner)
        assert running.url("ws") > 0
        assert await connect(running.url("mqtt"), "A:xyz789:app", "a-xyz789-any", "x") == 0
    finally:
        code, _, err = await running.stop(signal.SIGINT)
    assert code == 0, err


def _allocator_of(pid: int) -> str | None:
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"PYTHONMALLOC="):
            return entry.split(b"=", 1)[1].decode()
    return None


@pytest.mark.skipif(memory._malloc_trim() is None, reason="glibc only")
@pytest.mark.parametrize(("given", "used"), [(None, "malloc"), ("pymalloc", "pymalloc")])
async def test_the_platform_runs_on_the_c_allocator_unless_told_otherwise(
    given: str | None, used: str
) -> None:
    """It starts itself again in the same process with PYTHONMALLOC=malloc (see
    worker.platform.memory), and then serves as ever; a PYTHONMALLOC it was given stays."""
    running = await start("--port", "0", "--api-key", f"{KEY}:{TOKEN}", allocator=given)
    try:
        assert _allocator_of(running.process.pid) == used
        assert await connect(running.url("mqtt"), f"A:{ORG}:alloc", KEY, TOKEN) == 0
    finally:
        code, _, err = await running.stop(signal.SIGTERM)
    assert code == 0, err


async def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", "platform",
            "--port", str(taken.getsockname()[1]),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(PROCESS):
            _, err = await process.communicate()
    assert process.returncode == 2
    assert "error: cannot listen on 127.0.0.1" in err.decode()
    assert "Traceback" not in err.decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "fair"], "Invalid value for '--strategy': 'fair' is not one of"),
        (["--port", "70000"], "Invalid value for '--port': 70000 is not in the range 0<=x<=65535"),
        (["--tls-port", "8883"], "error: --tls-port/--wss-port: need --cert FILE --key FILE, or"),
        (["--cert", "c.pem", "--tls-port", "1"], "error: --cert and --key: give both"),
        (["--dev-tls", "{tmp}"], "error: --cert/--key/--dev-tls: serve a TLS listener; add"),
        (["--host", "0.0.0.0"], "error: --host 0.0.0.0: a platform reachable from other machines"),
        (["--api-key", "nope"], "error: --api-key 'nope': expected KEY:TOKEN"),
        (["--keys", "{tmp}/missing.json"], "error: --keys {tmp}/missing.json: cannot read"),
        (["--seed", "7"], "error: --seed: only --strategy random uses a seed"),
        (
            ["--tls-port", "1", "--cert", "{tmp}/c.pem", "--key", "{tmp}/k.pem"],
            "error: --cert/--key: no such file",
        ),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, ["platform", *args])
    assert result.exit_code == 2, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
