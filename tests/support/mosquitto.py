"""A real Mosquitto broker for the tests: own config in a temporary folder, a free port.

The port is found by binding port 0; on the rare collision (another process took it between
our probe and Mosquitto's bind) the broker exits at once and we retry on a new port.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.support.ports import free_port
from tests.support.waiting import PROCESS

MOSQUITTO: Final = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
_ATTEMPTS: Final = 5


def mosquitto_binary() -> str | None:
    """The broker's path, or None when it is not installed."""
    if os.access(MOSQUITTO, os.X_OK):
        return MOSQUITTO
    return shutil.which("mosquitto")


def password_line(user: str, password: str) -> str:
    """One line of a Mosquitto 2.x password file (PBKDF2-SHA512, as mosquitto_passwd writes)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass
class Mosquitto:
    """One broker process; ``restart`` keeps its port so clients can reconnect to it."""

    binary: str
    folder: Path
    users: dict[str, str] = field(default_factory=dict)
    #: QoS 1 messages in flight per client (Mosquitto's default is 20)
    max_inflight: int = 20
    #: (CA file, certificate, key) for a TLS listener instead of a plain one
    tls: tuple[Path, Path, Path] | None = None
    #: the text of an ACL file (``topic read x/#`` ...); None allows everything
    acl: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "mosquitto.log"

    def start(self) -> None:
        """Start on the current port (or a free one), waiting until it accepts connections."""
        for _ in range(_ATTEMPTS):
            if self.port == 0:
                self.port = free_port()
            if self._try_start():
                return
            self.port = 0
        raise RuntimeError(f"mosquitto did not start; see {self.log}:\n{self._log_tail()}")

    def stop(self) -> None:
        """Terminate the broker and wait for it (kill after a deadline)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port (every session and queue is lost)."""
        port = self.port
        self.stop()
        self.port = port
        deadline = time.monotonic() + PROCESS
        # The old listening socket may linger a moment; Mosquitto sets SO_REUSEADDR, so
        # retrying the same port until the deadline is enough.
        while not self._try_start():
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not restart on port {port}")
            time.sleep(0.05)

    def _try_start(self) -> bool:
        config = self._write_config()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + PROCESS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False  # most likely the port was taken meanwhile
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        return False

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            # Started as root, Mosquitto would drop to the 'mosquitto' user, who cannot read
            # this folder; naming the current user keeps it as it is.
            f"user {getpass.getuser()}",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
            "log_type unsubscribe",
            f"max_inflight_messages {self.max_inflight}",
            # Tests publish in bursts; the default queue of 1000 per client would drop QoS 1.
            # (Mosquitto 2.0 releases queued QoS 1 on each PUBACK while the queue is within
            # this bound, so with it the in-flight window holds only until acks flow.)
            "max_queued_messages 1000000",
        ]
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if self.acl is not None:
            acl = self.folder / "acl"
            acl.write_text(self.acl)
            lines.append(f"acl_file {acl}")
        if self.users:
            passwords = self.folder / "passwords"
            passwords.write_text("".join(password_line(u, p) + "\n" for u, p in self.users.items()))
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"
