"""Where the demo's events flow: the embedded platform, a Mosquitto of its own, or a URL.

Each yields a :class:`Broker`: the profile, address and credentials, the flags and environment
that make ``worker run`` join the scalable application, and the settings the simulator uses.

- ``embedded`` (default): the local Watson IoT platform in this process, on a free port,
  accepting any token (it listens on loopback only). Workers are ``A:demo01:demo``.
- ``mosquitto``: a Mosquitto process with its own config on a free port; workers use the
  ``mqtt`` profile, a ``$share/demo01:demo/...`` group.
- a URL: ``mqtt[s]://[user:password@]host[:port]`` for a standard broker (``mqtt`` profile), or
  ``wiotp[s]://KEY:TOKEN@host[:port]`` for a Watson IoT platform (e.g. ``worker platform``).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from worker.config import Settings, load_settings
from worker.errors import ConfigError, ConnectError
from worker.platform import Platform, PlatformConfig
from worker.tools.children import die_with_parent

ORG: Final = "demo01"
APP_ID: Final = "demo"
API_KEY: Final = f"a-{ORG}-demo"
API_TOKEN: Final = "demo-token"
MOSQUITTO_PATHS: Final = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
#: seconds for a broker to accept connections
START_DEADLINE: Final = 10.0
_SCHEMES: Final = {"mqtt": 1883, "mqtts": 8883, "wiotp": 1883, "wiotps": 8883}


@dataclass(frozen=True)
class Broker:
    """A running broker as the demo sees it."""

    kind: str
    host: str
    port: int
    profile: str = "wiotp"
    tls: bool = False
    api_key: str | None = None
    api_token: str | None = None
    username: str | None = None
    password: str | None = None
    app_id: str = APP_ID
    org: str = ORG
    #: the client ID, or the shared group, that "client one, two, three" of IBM's example share
    group: str = field(default="")

    def describe(self) -> str:
        """One line for the banner."""
        where = f"{self.host}:{self.port}{' (TLS)' if self.tls else ''}"
        return f"{self.kind} at {where}, {self.profile} profile, instances share {self.group}"

    def worker_flags(self) -> list[str]:
        """``worker run`` flags (secrets go in the environment, not on the command line)."""
        flags = ["--host", self.host, "--port", str(self.port), "--app-id", self.app_id]
        flags += ["--tls"] if self.tls else []
        if self.profile == "mqtt":
            flags += ["--profile", "mqtt", "--org", self.org]
        return flags

    def worker_env(self) -> dict[str, str]:
        """The credentials, as the worker reads them from its environment."""
        env: dict[str, str] = {}
        if self.api_key and self.api_token:
            env |= {"WIOTP_AUTH_KEY": self.api_key, "WIOTP_AUTH_TOKEN": self.api_token}
        if self.username:
            env["WORKER_USERNAME"] = self.username
        if self.password:
            env["WORKER_PASSWORD"] = self.password
        return env

    def settings(self) -> Settings:
        """Settings for the simulator (it picks its own client IDs)."""
        flags: dict[str, str] = {
            "host": self.host,
            "port": str(self.port),
            "tls": "true" if self.tls else "false",
            "profile": self.profile,
            "app_id": self.app_id,
            "identity": "standalone",
        }
        pairs = [("api_key", self.api_key), ("api_token", self.api_token)]
        pairs += [("username", self.username), ("password", self.password)]
        flags |= {name: value for name, value in pairs if value}
        if not self.api_key:
            flags["org"] = self.org
        return load_settings(env={}, flags=flags)


def _group(profile: str, org: str, app_id: str) -> str:
    return f"$share/{org}:{app_id}" if profile == "mqtt" else f"A:{org}:{app_id}"


def from_url(url: str) -> Broker:
    """A broker given by URL; ConfigError saying what is accepted when it is not one."""
    parts = urlsplit(url)
    accepted = "mqtt[s]://[user:password@]host[:port] or wiotp[s]://KEY:TOKEN@host[:port]"
    try:
        port = parts.port or _SCHEMES.get(parts.scheme, 0)
    except ValueError as exc:
        raise ConfigError(f"--broker {url!r}: {exc}; accepted: {accepted}") from exc
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ConfigError(f"--broker {url!r}: accepted are {accepted}")
    user = unquote(parts.username) if parts.username else None
    secret = unquote(parts.password) if parts.password else None
    tls = parts.scheme.endswith("s")
    if parts.scheme.startswith("mqtt"):
        return Broker("broker", parts.hostname, port, "mqtt", tls, None, None, user, secret,
                      group=_group("mqtt", ORG, APP_ID))  # fmt: skip
    if not (user and secret):
        raise ConfigError(f"--broker {url!r}: a wiotp URL needs KEY:TOKEN@ (an API key)")
    org = user.split("-")[1] if user.count("-") >= 2 else ORG
    return Broker("platform", parts.hostname, port, "wiotp", tls, user, secret, org=org,
                  group=_group("wiotp", org, APP_ID))  # fmt: skip


@contextlib.asynccontextmanager
async def embedded() -> AsyncIterator[Broker]:
    """The local platform in this process, on a free loopback port."""
    config = PlatformConfig(host="127.0.0.1", port=0, accept_any_key=True, buffer_size=1_000_000)
    async with Platform(config) as platform:
        group = _group("wiotp", ORG, APP_ID)
        yield Broker(
            "embedded platform",
            "127.0.0.1",
            platform.port,
            api_key=API_KEY,
            api_token=API_TOKEN,
            group=group,
        )


def mosquitto_binary() -> str:
    """Mosquitto's path; ConfigError with the fix when it is not installed."""
    for path in MOSQUITTO_PATHS:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("mosquitto")
    if found is None:
        raise ConfigError(
            "--broker mosquitto: mosquitto is not installed; install the Debian package "
            "(sudo apt-get install mosquitto) or run scripts/system-deps.sh"
        )
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mosquitto_config(folder: Path, port: int) -> Path:
    config = folder / "mosquitto.conf"
    config.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                # Started as root, Mosquitto would switch to a user who cannot read this folder.
                f"user {getpass.getuser()}",
                "allow_anonymous true",
                "persistence false",
                f"log_dest file {folder / 'mosquitto.log'}",
                # QoS 1 bursts must queue, not be dropped at the default 1000 per client.
                "max_queued_messages 1000000",
            ]
        )
        + "\n"
    )
    return config


async def _accepting(port: int, process: asyncio.subprocess.Process) -> bool:
    """Wait until the port accepts a connection (True) or the process exits (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_DEADLINE
    while loop.time() < deadline and process.returncode is None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # polling a port that is not open yet, with a deadline
            continue
        writer.close()
        return True
    return False


@contextlib.asynccontextmanager
async def mosquitto(folder: Path) -> AsyncIterator[Broker]:
    """A Mosquitto of the demo's own, stopped on the way out."""
    binary = mosquitto_binary()  # the folder exists: run_demo made it
    for _ in range(5):  # another process may take the probed port before Mosquitto binds it
        port = _free_port()
        process = await asyncio.create_subprocess_exec(
            binary, "-c", str(_mosquitto_config(folder, port)),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            if await _accepting(port, process):
                yield Broker("mosquitto", "127.0.0.1", port, "mqtt",
                             group=_group("mqtt", ORG, APP_ID))  # fmt: skip
                return
        finally:
            if process.returncode is None:
                process.terminate()
                await asyncio.wait_for(process.wait(), START_DEADLINE)
    raise ConnectError(f"mosquitto did not start; see {folder / 'mosquitto.log'}")


@contextlib.asynccontextmanager
async def open_broker(spec: str, folder: Path) -> AsyncIterator[Broker]:
    """``embedded``, ``mosquitto`` or a URL, running for the duration of the block."""
    if spec == "embedded":
        async with embedded() as broker:
            yield broker
    elif spec == "mosquitto":
        async with mosquitto(folder) as broker:
            yield broker
    else:
        yield from_url(spec)
