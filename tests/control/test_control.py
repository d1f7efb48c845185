"""The control socket end to end: ``xmppd status/online/kick/deluser/passwd`` against a
running server (another process talking to it), and deluser with no server running."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import RawClient

from xmppd.control.client import ControlFailed, ControlUnavailable, call
from xmppd.control.protocol import socket_path
from xmppd.modules._rosterdata import RosterStore
from xmppd.storage import open_storage

USERS = {"alice": "secret", "bob": "secret"}


def _cli(args: list[str], data_dir: Path, tmp_path: Path, stdin: str = "") -> subprocess.CompletedProcess:
    config = tmp_path / "cli.toml"
    config.write_text(f'[server]\ndomains = ["localhost"]\ndata_dir = "{data_dir}"\n'
                      'log_level = "warning"\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "xmppd.cli", "--config", str(config), *args],
                          input=stdin, capture_output=True, text=True, timeout=60, env=env)


def offline_count(srv, user: str) -> int:
    """How many offline messages ``user@localhost`` has stored (the offline module's archive)."""
    return srv.call(srv.server.storage.open_store("offline", "archive").count(f"{user}@localhost"))


def test_status_online_and_kick(make_server, tmp_path):
    srv = make_server(users=USERS, allow_plain=True)
    path = socket_path(srv.config.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    alice = RawClient(srv.port)
    alice.login("alice", "secret", resource="pc")
    status = call(path, "status")
    assert status["sessions"] == 1 and status["domains"] == ["localhost"]
    assert "presence" in status["modules"]
    assert call(path, "online") == ["alice@localhost/pc"]

    out = _cli(["online"], srv.config.data_dir, tmp_path)
    assert out.returncode == 0 and out.stdout.split() == ["alice@localhost/pc"]
    out = _cli(["kick", "alice@localhost"], srv.config.data_dir, tmp_path)
    assert out.returncode == 0 and "ended 1 session" in out.stdout
    assert "<policy-violation" in alice.read_closed()
    assert call(path, "online") == []


def test_control_errors(make_server):
    srv = make_server(users=USERS)
    path = socket_path(srv.config.data_dir)
    with pytest.raises(ControlFailed, match="unknown command"):
        call(path, "reboot")
    with pytest.raises(ControlFailed, match="not a JID"):
        call(path, "kick", jid="@@")
    with pytest.raises(ControlFailed, match="bad arguments"):
        call(path, "kick", user="alice@localhost")
    with pytest.raises(ControlFailed, match="no account"):
        call(path, "deluser", jid="nobody@localhost")
    answer = asyncio.run(srv.server.control.answer(b"not json\n"))
    assert answer == {"ok": False, "error": "malformed request"}


def test_status_without_a_running_server_is_one_clear_line(tmp_path):
    out = _cli(["status"], tmp_path / "empty", tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("xmppd: no server is running")
    with pytest.raises(ControlUnavailable):
        call(tmp_path / "nothing.sock", "status")


def test_deluser_while_running_ends_sessions_and_removes_everything(make_server, tmp_path):
    srv = make_server(users=USERS, allow_plain=True)
    bob = RawClient(srv.port)
    bob.login("bob", "secret")
    # a message for alice is stored offline, then alice is deleted while online
    bob.send("<message to='alice@localhost' type='chat'><body>for later</body></message>")
    bob.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    bob.read_until("id=.p.")
    assert offline_count(srv, "alice") == 1
    alice = RawClient(srv.port)
    alice.login("alice", "secret", resource="pc")
    out = _cli(["deluser", "alice@localhost"], srv.config.data_dir, tmp_path)
    assert out.returncode == 0, out.stderr
    closed = alice.read_closed()
    assert "<not-authorized" in closed and "account deleted" in closed
    assert not srv.call(srv.server.storage.account_exists("alice", "localhost"))
    assert offline_count(srv, "alice") == 0
    again = _cli(["deluser", "alice@localhost"], srv.config.data_dir, tmp_path)
    assert again.returncode == 1 and "no account alice@localhost" in again.stderr
    assert "Traceback" not in again.stderr
    bob.close()


def test_passwd_end_sessions(make_server, tmp_path):
    srv = make_server(users=USERS, allow_plain=True)
    alice = RawClient(srv.port)
    alice.login("alice", "secret")
    out = _cli(["passwd", "--end-sessions", "alice@localhost"], srv.config.data_dir, tmp_path,
               stdin="n3w-secret\n")
    assert out.returncode == 0, out.stderr
    assert "ended 1 session" in out.stdout
    assert "<reset" in alice.read_closed()
    again = RawClient(srv.port)
    again.login("alice", "n3w-secret")
    again.close()


def test_deluser_without_a_server_runs_the_modules_in_process(make_server, tmp_path):
    data = tmp_path / "d"
    srv = make_server(users=USERS, allow_plain=True, data_dir=data)
    bob = RawClient(srv.port)
    bob.login("bob", "secret")
    bob.send("<message to='alice@localhost' type='chat'><body>for later</body></message>")
    bob.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    bob.read_until("id=.p.")
    bob.close()
    srv.stop()
    assert not socket_path(data).exists()  # removed on a clean stop

    out = _cli(["deluser", "alice@localhost"], data, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "deleted alice@localhost" in out.stdout

    async def check() -> tuple[bool, int]:
        storage = await open_storage(f"sqlite:///{data / 'xmppd.sqlite3'}")
        try:
            return (await storage.account_exists("alice", "localhost"),
                    await storage.open_store("offline", "archive").count("alice@localhost"))
        finally:
            await storage.close()

    assert asyncio.run(check()) == (False, 0)


def test_deleted_account_leaves_its_contacts_rosters(make_server):
    from support import connect

    srv = make_server(users=USERS, allow_plain=True)
    alice = connect(srv, "alice")
    bob = connect(srv, "bob")
    bob.send("<presence/>")
    bob.read_until("<presence")
    alice.send("<presence to='bob@localhost' type='subscribe'/>")
    bob.read_until("type=.subscribe.")
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
    bob.read_until(r"subscription=.from.")
    call(socket_path(srv.config.data_dir), "deluser", jid="alice@localhost")
    push = bob.read_until(r"subscription=.remove.")
    assert "alice@localhost" in push
    roster = srv.call(RosterStore(srv.server.storage.open_store("roster")).get("bob@localhost"))
    assert roster.listed() == []
    bob.close()
