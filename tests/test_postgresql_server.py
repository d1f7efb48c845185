"""xmppd on PostgreSQL end to end: the account commands, ``xmppd check``, two clients (a
message, a roster push, an offline message), ``kill -9`` and a restart on the same
database; and a server that cannot reach PostgreSQL at start."""

from __future__ import annotations

import re
import signal
import subprocess

from support import RawClient
from test_durability import cli, free_port, start

ROSTER = "jabber:iq:roster"


def write_config(tmp_path, storage: str) -> tuple:
    port = free_port()
    config = tmp_path / "xmppd.toml"
    config.write_text(
        f'[http]\nlisten = []\nlisten_tls = []\n[server]\ndomains = ["localhost"]\n'
        f'data_dir = "{tmp_path / "data"}"\nstorage = "{storage}"\n'
        f'[c2s]\nlisten = ["127.0.0.1:{port}"]\ndirect_tls = []\nallow_plain = true\n'
    )
    return config, port


def command(config, *args: str, stdin: str | None = None) -> tuple[int, str]:
    proc = cli(config, *args, stdin=stdin, log=subprocess.PIPE)
    out, _ = proc.communicate(stdin, timeout=60)
    return proc.returncode, out


def login(port: int, user: str, password: str = "secret") -> RawClient:
    client = RawClient(port)
    client.login(user, password)
    client.send(f"<iq type='get' id='roster0'><query xmlns='{ROSTER}'/></iq>")
    client.read_until(r"id=.roster0.[^>]*>.*?</iq>|id=.roster0.[^>]*/>")
    return client


def ping(client: RawClient, id: str) -> str:
    client.send(f"<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return client.read_until(f"id=.{id}.")


def test_xmppd_on_postgresql(tmp_path, postgresql_server):
    config, port = write_config(tmp_path, postgresql_server.create_database())
    code, out = command(config, "check")
    assert code == 0 and out.endswith("configuration OK\n"), out
    for user in ("alice", "bob", "carol"):
        assert command(config, "adduser", f"{user}@localhost", stdin="secret\n")[0] == 0
    code, out = command(config, "adduser", "bob@localhost", stdin="secret\n")
    assert code == 1 and "exists already" in out
    assert command(config, "passwd", "carol@localhost", stdin="changed\n")[0] == 0

    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed at the end
    server = start(config, port, log)
    try:
        alice, bob = login(port, "alice"), login(port, "bob")
        # a roster push to alice (and its result)
        alice.send(f"<iq type='set' id='add1'><query xmlns='{ROSTER}'>"
                   "<item jid='bob@localhost' name='Bob'><group>Friends</group></item>"
                   "</query></iq>")
        alice.read_until(r"<iq[^>]*type=.set.*?<item[^>]*jid=.bob@localhost.*?</iq>")
        alice.read_until("id=.add1.")
        # a message between two online clients
        alice.send("<message to='bob@localhost/raw' type='chat'><body>hello bob</body></message>")
        assert "hello bob" in bob.read_until("</message>")
        # bob goes away: the next message is stored offline (acknowledged by the pong after it)
        bob.close()
        ping(alice, "p0")  # bob's unavailable processed
        alice.send("<message to='bob@localhost' type='chat'><body>while away</body></message>")
        ping(alice, "p1")
        # carol's new password works, the old one does not
        carol = RawClient(port)
        carol.login("carol", "changed")
        carol.close()

        server.send_signal(signal.SIGKILL)
        server.wait(10)
        alice.close()

        server = start(config, port, log)
        bob = RawClient(port)
        bob.login("bob", "secret")
        bob.send("<presence/>")
        got = ping(bob, "after")
        assert re.findall(r"<body>(.*?)</body>", got) == ["while away"]
        bob.close()
        alice = login(port, "alice")
        alice.send(f"<iq type='get' id='r2'><query xmlns='{ROSTER}'/></iq>")
        roster = alice.read_until(r"id=.r2.[^>]*>.*?</iq>")
        assert re.search(r"<item[^>]*jid=.bob@localhost.[^>]*name=.Bob.|<item[^>]*name=.Bob."
                         r"[^>]*jid=.bob@localhost.", roster), roster
        assert "<group>Friends</group>" in roster
        alice.close()

        # deluser through the running server: bob's login now fails
        assert command(config, "deluser", "bob@localhost")[0] == 0
        gone = RawClient(port)
        gone.header()
        gone.starttls()
        gone.header()
        gone.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                  "AGJvYgBzZWNyZXQ=</auth>")
        assert "not-authorized" in gone.read_until("</failure>")
        gone.close()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)
        log.close()


def test_no_postgresql_at_start_is_one_line_and_an_exit(tmp_path):
    url = f"postgresql://xmppd:hunter2@127.0.0.1:{free_port()}/xmppd?connect_timeout=5"
    config, _ = write_config(tmp_path, url)
    assert command(config, "check")[0] == 0  # the URL is sound; the server is seen at start
    for args in (("run",), ("adduser", "alice@localhost")):
        code, out = command(config, *args, stdin="secret\n")
        assert code == 1, out
        errors = [line for line in out.splitlines() if "xmppd:" in line]
        assert errors == [
            f"xmppd: storage: cannot connect to PostgreSQL {url.replace('hunter2', '***')}:"
            f" {errors[0].split(': ', 3)[3]}"], out
        assert "Connect call failed" in out or "refused" in out
        assert "Traceback" not in out and "hunter2" not in out


def test_check_refuses_a_malformed_postgresql_url(tmp_path):
    config, _ = write_config(tmp_path, "postgresql://xmppd:hunter2@localhost:five/xmppd")
    code, out = command(config, "check")
    assert code == 1
    assert "server.storage: bad port in PostgreSQL URL" in out and "hunter2" not in out
