"""Helpers of the hostile-input tests: a bystander that proves the platform still serves, attacks.

A :class:`Bystander` is an honest application and device on the platform under attack. Each
:meth:`Bystander.round_trip` publishes QoS 1 events and waits until every one of them came
through the platform to the application, so a test can check "the others are still served"
before, during and after an attack, each time under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import time
from contextlib import AsyncExitStack
from typing import Final

from tests.platform.rawclient import RawClient
from tests.support.credentials import API_KEY, DEVICE_TOKEN, ORG, TOKEN
from tests.support.fetch import fetch
from tests.support.waiting import NETWORK
from worker.mqtt import Connect, Disconnect, Puback, Publish, Subscribe, Subscription, encode

#: the bystander's device (its token is the test device token)
DEVICE: Final = f"d:{ORG}:sensor:bystander"
#: the bystander device's own events only: attackers publish events of their own
EVENTS: Final = "iot-2/type/sensor/id/bystander/evt/+/fmt/+"


class Bystander:
    """An application subscribed to every event and a device publishing them (QoS 1)."""

    def __init__(self, app: RawClient, device: RawClient) -> None:
        self.app = app
        self.device = device
        self.sent = 0
        #: the slowest round trip so far, in seconds
        self.worst = 0.0

    @classmethod
    async def join(
        cls, port: int, stack: AsyncExitStack, device: str = DEVICE, token: str = DEVICE_TOKEN
    ) -> Bystander:
        """Connect both clients (closed with ``stack``) and subscribe the application."""
        app = await RawClient.open(port)
        stack.push_async_callback(app.close)
        assert (await app.connect(f"a:{ORG}:bystander", API_KEY, TOKEN)).reason_code == 0
        assert (await app.subscribe(EVENTS, qos=1)).reason_codes == (1,)
        dev = await RawClient.open(port)
        stack.push_async_callback(dev.close)
        assert (await dev.connect(device, "use-token-auth", token)).reason_code == 0
        return cls(app, dev)

    async def round_trip(self, count: int = 20, within: float = NETWORK) -> float:
        """Publish ``count`` events and receive all of them in order; the seconds it took."""
        started = time.perf_counter()
        first = self.sent
        for n in range(first, first + count):
            self.device.send(
                Publish("iot-2/evt/tick/fmt/text", b"%d" % n, 1, packet_id=n % 65535 + 1)
            )
        self.sent += count
        acks = 0
        async with asyncio.timeout(within):
            for n in range(first, first + count):
                got = await self.app.publication(within)
                assert got.payload == b"%d" % n, (got.payload, n)
                assert got.packet_id is not None
                self.app.send(Puback(got.packet_id))
            while acks < count:
                if isinstance(await self.device.recv(within), Puback):
                    acks += 1
        took = time.perf_counter() - started
        self.worst = max(self.worst, took)
        return took


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def rss_kib(pid: int) -> int:
    """The resident set size of a process, in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


async def closed_by_server(client: RawClient, within: float) -> bool:
    """Read raw bytes until the server closes (True) or ``within`` passes (False); then close.

    Raw, because what a server answers to garbage (a 5.0 CONNACK, an HTTP 400) need not be
    MQTT that this client's codec expects.
    """
    reader = client._reader
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    finally:
        await client.close()
    return True


def valid_stream(n: int) -> bytes:
    """What an honest device sends: CONNECT, a few events, a subscribe, DISCONNECT."""
    parts = [encode(Connect(f"d:{ORG}:fuzz:f{n}", username="use-token-auth", password=b"x"))]
    parts += [encode(Publish("iot-2/evt/e/fmt/json", b'{"n": %d}' % i, 1, packet_id=i + 1))
              for i in range(3)]  # fmt: skip
    parts.append(encode(Subscribe(9, (Subscription("iot-2/cmd/+/fmt/+", 1),))))
    parts.append(encode(Disconnect()))
    return b"".join(parts)


def attack(rng: random.Random, n: int) -> tuple[bytes, bool]:
    """(bytes to send, whether to stall afterwards): mutated, truncated or random streams."""
    stream = bytearray(valid_stream(n))
    kind = n % 4
    if kind == 0:  # a few bytes flipped anywhere
        for _ in range(rng.randint(1, 4)):
            stream[rng.randrange(len(stream))] = rng.randrange(256)
    elif kind == 1:  # cut short, then closed
        del stream[rng.randrange(1, len(stream)) :]
    elif kind == 2:  # cut short, then left hanging (a half packet must not hold the socket)
        del stream[rng.randrange(1, len(stream)) :]
        return bytes(stream), True
    else:  # random bytes behind a valid CONNECT
        cut = len(encode(Connect(f"d:{ORG}:fuzz:f{n}", username="use-token-auth", password=b"x")))
        stream[cut:] = rng.randbytes(rng.randint(1, 300))
    return bytes(stream), False


async def trickle(port: int, data: bytes, gap: float = 0.05) -> float:
    """Send ``data`` a byte every ``gap`` seconds, then wait; seconds until the server closed."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(NETWORK):
            for byte in data:
                if reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(gap)  # pacing the attack, not synchronising
            while await reader.read(4096):
                pass
    except ConnectionError:
        pass  # the server closed while the attacker was still writing
    finally:
        writer.close()
    return time.perf_counter() - started


async def fleet_with_retained_status(port: int, devices: int) -> None:
    """Devices that came and went: each leaves a retained Disconnect status (W30)."""
    for n in range(devices):
        async with await RawClient.open(port) as device:
            await device.connect(f"d:{ORG}:fleet:f{n}", "use-token-auth", "x")
            device.send(Disconnect())
            await device.until_closed()


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` sockets: the even ones log in as devices and stay silent, the odd never speak."""
    writers = []
    # 50 at a time: more than the listen backlog (100) at once costs SYN retries of a second.
    for first in range(0, count, 50):
        batch = await asyncio.gather(*(_idle(port, n) for n in range(first, first + 50)))
        writers.extend(batch)
    return writers


async def _idle(port: int, n: int) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if n % 2 == 0:
        # keepalive 0: a logged-in client that never has to speak again (M311 3.1.2.10)
        connect = Connect(f"d:{ORG}:idle:i{n}", True, 0, "use-token-auth", b"x")
        writer.write(encode(connect))
        async with asyncio.timeout(NETWORK):
            assert await reader.readexactly(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return writer


async def writer_closed(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def devices_connected(metrics_port: int) -> float:
    """How many devices the platform's metrics say are connected."""
    _, _, body = await fetch(metrics_port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith('worker_platform_connections{client_class="d"}'):
            return float(line.split()[-1])
    raise AssertionError("no device connections gauge in /metrics")
