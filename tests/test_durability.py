"""Offline messages survive ``kill -9``: every message the server acknowledged (a pong after
it) is delivered after a restart, in order and exactly once; the database stays sound.
Against SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import RawClient

BURST = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(config: Path, *args: str, stdin: str | None = None, log=None) -> subprocess.Popen:
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-m", "xmppd.cli", "--config", str(config), *args],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, text=True,
    )


def start(config: Path, port: int, log) -> subprocess.Popen:
    proc = cli(config, "run", log=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise AssertionError("the server did not start listening")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request) -> str:
    """``server.storage`` for each backend: "" (the default, SQLite in the data directory) or
    a new database on the tests' PostgreSQL server."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgresql_server").create_database()


def with_accounts(tmp_path, storage: str = "") -> tuple:
    """A config (free port, data in ``tmp_path``, ``server.storage`` if given) with accounts
    alice and bob (password ``secret``), made by ``xmppd adduser``: (config path, port,
    data dir)."""
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "xmppd.toml"
    config.write_text(
        f'[http]\nlisten = []\nlisten_tls = []\n[server]\ndomains = ["localhost"]\ndata_dir = "{data}"\n'
        + (f'storage = "{storage}"\n' if storage else "")
        + f'[c2s]\nlisten = ["127.0.0.1:{port}"]\ndirect_tls = []\nallow_plain = true\n'
    )
    for user in ("alice", "bob"):
        proc = cli(config, "adduser", f"{user}@localhost", stdin="secret\n")
        proc.communicate("secret\n", timeout=30)
        assert proc.returncode == 0
    return config, port, data


def test_offline_messages_survive_kill_9(tmp_path, storage_url):
    config, port, data = with_accounts(tmp_path, storage_url)
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed at the end
    server = start(config, port, log)
    try:
        alice = RawClient(port)
        alice.login("alice", "secret")
        burst = "".join(
            f"<message to='bob@localhost' type='chat'><body>{k}</body></message>"
            f"<iq type='get' id='p{k}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
            for k in range(BURST)
        )
        alice.send(burst)
        alice.read_until(f"id=.p{BURST // 4}.")  # well into the burst
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        acked = [int(k) for k in re.findall(r"id=\"p(\d+)\"", alice.read_closed(2))]
        acked_max = max(acked, default=BURST // 4)
        alice.close()

        if not storage_url:
            conn = sqlite3.connect(data / "xmppd.sqlite3")
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()

        server = start(config, port, log)
        bob = RawClient(port)
        bob.login("bob", "secret")
        bob.send("<presence/>")
        bob.send("<iq type='get' id='end' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        got = [int(k) for k in re.findall(r"<body>(\d+)</body>", bob.read_until("id=.end."))]
        print(f"acknowledged up to {acked_max}, delivered {len(got)}")
        assert got == sorted(set(got)), "out of order or duplicated"
        assert set(range(acked_max + 1)) <= set(got), "an acknowledged message was lost"
        assert all(k < BURST for k in got)
        bob.close()
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()
