"""``xmppd storage copy FROM TO``: a server's SQLite data copied into PostgreSQL serves the
same users (a login over TCP, the roster, an offline message); the command's refusals
are one line each, without a traceback or a password."""

from __future__ import annotations

import re

import pytest
from support import RawClient

from xmppd import cli
from xmppd.preflight import lock_data_dir

ROSTER = "jabber:iq:roster"


def copy(capsys, *args: str) -> tuple[int, str]:
    """``xmppd storage copy ARGS`` in this process: (status, stdout + stderr)."""
    try:
        code = cli.main(["storage", "copy", *args])
    except SystemExit as exc:
        code = 1
        print(exc.code, file=__import__("sys").stderr)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_copy_serves_the_same_users(make_server, tmp_path, postgresql_url, capsys):
    srv = make_server(users={"alice": "secret", "bob": "wonderland"}, allow_plain=True)
    alice = RawClient(srv.port)
    alice.login("alice", "secret")
    alice.send(f"<iq type='set' id='add1'><query xmlns='{ROSTER}'><item jid='bob@localhost' "
               "name='Bob'><group>Friends</group></item></query></iq>")
    alice.read_until("id=.add1.")
    alice.send("<message to='bob@localhost' type='chat'><body>while away</body></message>")
    alice.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    alice.read_until("id=.p1.")  # the message was stored before the pong
    alice.close()
    source = f"sqlite://{srv.config.data_dir / 'xmppd.sqlite3'}"
    srv.stop()

    code, out = copy(capsys, source, postgresql_url)
    assert code == 0, out
    assert "accounts: 2 copied" in out and "archive offline: 1 copied" in out
    assert out.rstrip().endswith("verified")
    code, out = copy(capsys, source, postgresql_url)  # once only
    assert code == 1 and "it is not empty (2 account(s)" in out, out

    copied = make_server(data_dir=tmp_path / "copy", storage=postgresql_url, allow_plain=True)
    bob = RawClient(copied.port)
    bob.login("bob", "wonderland")
    bob.send("<presence/>")
    bob.send("<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert re.findall(r"<body>(.*?)</body>", bob.read_until("id=.p2.")) == ["while away"]
    bob.close()
    alice = RawClient(copied.port)
    alice.login("alice", "secret")
    alice.send(f"<iq type='get' id='r1'><query xmlns='{ROSTER}'/></iq>")
    roster = alice.read_until(r"id=.r1.[^>]*>.*?</iq>")
    assert "bob@localhost" in roster and "<group>Friends</group>" in roster
    alice.close()


def test_refusals(tmp_path, capsys):
    tmp = tmp_path
    (tmp / "data").mkdir()
    db = tmp / "data" / "xmppd.sqlite3"
    db.write_bytes(b"")  # exists; never opened by the refusals below
    for args, message in (
        (("mysql://x/y", f"sqlite://{tmp}/b"), "xmppd: FROM 'mysql://x/y': unknown storage "
         "scheme 'mysql'"),
        ((f"sqlite://{db}", "postgresql://u:hunter2@localhost:five/db"),
         "xmppd: TO 'postgresql://u:***@localhost:five/db': bad port in PostgreSQL URL"),
        ((f"sqlite://{tmp}/none.sqlite3", f"sqlite://{tmp}/b"),
         f"xmppd: FROM: no SQLite database at {tmp}/none.sqlite3"),
        ((f"sqlite://{db}", "memory:"), "xmppd: TO: memory: keeps nothing"),
        ((f"sqlite://{db}", f"sqlite:{db}"), "xmppd: FROM and TO are the same database"),
    ):
        code, out = copy(capsys, *args)
        assert code == 1 and out.startswith(message), out
        assert "Traceback" not in out and "hunter2" not in out
    lock = lock_data_dir(tmp / "data")  # a server running on that directory
    try:
        code, out = copy(capsys, f"sqlite://{db}", f"sqlite://{tmp}/b")
    finally:
        lock.release()
    assert code == 1 and re.match(rf"xmppd: FROM: an xmppd \(PID \d+\) is running on "
                                  rf"{tmp}/data: stop it", out), out
    assert not (tmp / "b").exists()


@pytest.mark.parametrize("target", ["postgresql", "directory"])
def test_an_unusable_target_is_one_line(tmp_path, capsys, target):
    from pgserver import free_port

    source = tmp_path / "a.sqlite3"
    code, out = copy(capsys, f"sqlite://{tmp_path}/seed.sqlite3", f"sqlite://{source}")
    assert code == 1  # no seed: a source is never created
    source.write_bytes(b"")
    if target == "postgresql":
        url = f"postgresql://xmppd:hunter2@127.0.0.1:{free_port()}/xmppd?connect_timeout=5"
        expected = "xmppd: TO: cannot connect to PostgreSQL postgresql://xmppd:***@127.0.0.1"
    else:
        (tmp_path / "file").write_text("")
        url = f"sqlite://{tmp_path}/file/x.sqlite3"
        expected = f"xmppd: TO: {tmp_path}/file: "
    code, out = copy(capsys, f"sqlite://{source}", url)
    assert code == 1 and out.startswith(expected), out
    assert "Traceback" not in out and "hunter2" not in out and len(out.splitlines()) == 1
