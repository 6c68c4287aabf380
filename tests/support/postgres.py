"""A private PostgreSQL cluster: ``initdb`` in a temporary folder, a Unix socket in that folder.

::

    with postgres_cluster() as pg:          # initdb, pg_ctl start -w (with a deadline)
        dsn = pg.dsn()                      # postgresql://postgres@/postgres?host=FOLDER
        pg.stop()                           # pg_ctl stop -m fast: the database goes away
        pg.start()                          # and comes back with its data
    # stopped (if still running) and the folder removed, also when the body raised

The server listens on no TCP port at all (``listen_addresses=''``), only on a socket in its
own folder, so clusters never clash with each other or with anything else on the machine.
PostgreSQL refuses to run as root; as root the cluster belongs to ``nobody``, who owns the
folder (mode 0700: other users of the machine cannot reach the socket), and the tools run
through ``runuser``. Authentication is ``trust``: the folder is the access control.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

#: where Debian installs the server binaries, one folder per major version
DEBIAN_ROOT: Final = Path("/usr/lib/postgresql")
SUPERUSER: Final = "postgres"
#: only names the socket file (``.s.PGSQL.5432``): nothing listens on a TCP port
PORT: Final = 5432
#: the user that owns a cluster started by root
UNPRIVILEGED: Final = "nobody"
#: initdb, start and stop each finish well within this on a busy two-core machine
DEADLINE: Final = 60
#: settings for throwaway test data: no fsync (durability across a power cut is not tested)
FAST: Final[Mapping[str, str]] = {"fsync": "off", "synchronous_commit": "off"}


class PostgresError(Exception):
    """A PostgreSQL tool failed or overran its deadline; the message carries its output."""


def postgres_bindir() -> Path | None:
    """The folder of the newest installed ``initdb`` (Debian's or on PATH), or None."""
    found = sorted(DEBIAN_ROOT.glob("*/bin/initdb"), key=lambda p: _major(p.parents[1].name))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _major(version: str) -> int:
    return int(version) if version.isdigit() else -1


@dataclass
class PostgresCluster:
    """One cluster in ``folder``: data in ``folder/data``, the socket in ``folder`` itself."""

    bindir: Path
    folder: Path
    #: the OS user the server runs as; None: this process's user
    owner: str | None = None
    #: ``postgres -c`` settings (name -> value)
    settings: Mapping[str, str] = field(default_factory=dict)
    running: bool = False

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL that reaches this cluster through its socket."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.folder}&port={PORT}"

    def init(self) -> None:
        """``initdb`` (superuser ``postgres``, trust authentication, UTF-8)."""
        self._tool("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                   "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions")  # fmt: skip

    def start(self) -> None:
        """``pg_ctl start -w``: returns once the server accepts connections."""
        options = [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{self.folder}'",
            f"-p {PORT}",
            *(f"-c {name}={value}" for name, value in self.settings.items()),
        ]
        self._tool("pg_ctl", "start", "-w", "-t", str(DEADLINE), "-D", str(self.data),
                   "-l", str(self.log), "-o", " ".join(options))  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE -w``: ``fast`` rolls back open transactions and disconnects
        every client; ``immediate`` is a crash (recovery at the next start)."""
        self._tool("pg_ctl", "stop", "-w", "-t", str(DEADLINE), "-m", mode, "-D", str(self.data))
        self.running = False

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql (stop at the first error); its unaligned output."""
        return self._tool("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          "-h", str(self.folder), "-p", str(PORT), "-U", SUPERUSER,
                          "-d", database, "-c", sql)  # fmt: skip

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name``; the DSN of the new database."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def kill(self) -> None:
        """SIGKILL the postmaster (when ``stop`` itself failed); its children follow it."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        self.running = False

    def _tool(self, name: str, *args: str) -> str:
        argv = [str(self.bindir / name), *args]
        if self.owner is not None:
            argv = ["runuser", "-u", self.owner, "--", *argv]
        try:
            done = subprocess.run(
                argv, cwd=self.folder, capture_output=True, text=True, timeout=DEADLINE
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(f"{name} did not finish within {DEADLINE}s; {self.tail()}") from exc
        if done.returncode != 0:
            raise PostgresError(
                f"{name} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
                f"; {self.tail()}"
            )
        return done.stdout

    def tail(self) -> str:
        """The end of the server log, for error messages."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            return "(no server log)"
        return f"server log {self.log}:\n" + "\n".join(lines)


@contextlib.contextmanager
def postgres_cluster(
    bindir: Path | None = None, settings: Mapping[str, str] = FAST
) -> Iterator[PostgresCluster]:
    """A started cluster in a new temporary folder; stopped and removed on exit.

    The folder is made directly under the system's temporary directory: a Unix socket path
    must fit in 107 bytes, and pytest's ``tmp_path`` can be longer than that.
    """
    bindir = bindir or postgres_bindir()
    if bindir is None:
        raise PostgresError("PostgreSQL is not installed (scripts/system-deps.sh installs it)")
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    owner = UNPRIVILEGED if os.geteuid() == 0 else None
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    cluster = PostgresCluster(bindir, folder, owner, settings)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        _stop_quietly(cluster)
        shutil.rmtree(folder, ignore_errors=True)


def _stop_quietly(cluster: PostgresCluster) -> None:
    """Stop a cluster that may be running, half started or already stopped."""
    if not (cluster.data / "postmaster.pid").exists():
        return
    try:
        cluster.stop("immediate")  # throwaway data: no checkpoint needed
    except PostgresError:
        cluster.kill()
