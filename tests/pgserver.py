"""A throwaway PostgreSQL server for the tests: Debian's binaries, a fresh cluster in a
temporary directory, on an ephemeral loopback port (never the packaged service).

PostgreSQL refuses to run as root: as root, the cluster belongs to ``nobody`` and its
programs run through ``setpriv`` (util-linux, in every Debian), so that the same code
works on a developer's machine and in CI.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb, pg_ctl and psql."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        path = Path(d)
        if all((path / tool).exists() for tool in ("initdb", "pg_ctl", "postgres", "psql")):
            version = path.parent.name
            found.append((int(version) if version.isdigit() else 0, path))
    return max(found)[1] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgreSQLServer:
    """One cluster: ``start()``, ``create_database()`` -> URL, ``stop()``, ``destroy()``."""

    USER = "xmppd"

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        base = tempfile.gettempdir()
        if os.geteuid() == 0 and not os.stat(base).st_mode & 0o001:
            base = "/tmp"  # nobody must be able to reach its directory
        self.dir = Path(tempfile.mkdtemp(prefix="xmppd-pg-", dir=base))
        self.data = self.dir / "data"
        self.port = free_port()
        self._databases = 0
        self._schemas_db = False
        self._as: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._as = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                        "--clear-groups", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.USER,
                  "-E", "UTF8", "--locale=C", "--no-sync")

    def _run(self, tool: str, *args: str) -> str:
        done = subprocess.run([*self._as, str(self.bindir / tool), *args], cwd=self.dir,
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stderr or done.stdout}\n{tail}")
        return done.stdout

    def start(self) -> None:
        """Start (or start again, same data and port); returns once it accepts clients."""
        options = f"-k {self.dir} -p {self.port} -h 127.0.0.1 -c fsync=on -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` (clients disconnected), or ``immediate`` (as a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql; returns its unaligned output."""
        return subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, "-d", database,
             "-c", statement],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout

    def create_database(self) -> str:
        """A new empty database: its URL (a quarter of a second: fsync on)."""
        self._databases += 1
        name = f"test{self._databases}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def create_schema(self) -> str:
        """A new empty schema of the database ``xmppd``: the URL of a connection that
        sees only it (``search_path``, passed on by asyncpg as a server setting).  As
        independent as a new database for xmppd, and a hundred times faster to make."""
        if not self._schemas_db:  # (create_database() may have run first)
            self.create_database()
            self.sql("CREATE DATABASE xmppd")
            self._schemas_db = True
        self._databases += 1
        name = f"test{self._databases}"
        self.sql(f"CREATE SCHEMA {name}", database="xmppd")
        return self.url("xmppd") + f"?search_path={name}"

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)
