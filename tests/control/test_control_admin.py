"""``xmppd announce``, ``xmppd invite`` and ``xmppd cert check`` as an operator runs them:
another process, against a running server (control socket) or none."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from support import RawClient

from xmppd.storage import open_storage
from xmppd.transport.tls import generate_self_signed

USERS = {"alice": "secret", "bob": "secret"}


def cli(args: list[str], data_dir: Path, tmp_path: Path, extra: str = "",
        stdin: str = "") -> subprocess.CompletedProcess:
    config = tmp_path / "cli.toml"
    config.write_text(f'[server]\ndomains = ["localhost"]\ndata_dir = "{data_dir}"\n'
                      f'log_level = "warning"\n{extra}')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "xmppd.cli", "--config", str(config), *args],
                          input=stdin, capture_output=True, text=True, timeout=60, env=env)


def test_announce_reaches_every_online_user(make_server, tmp_path):
    srv = make_server(users=USERS, allow_plain=True)
    alice = RawClient(srv.port)
    alice.login("alice", "secret", resource="pc")
    bob = RawClient(srv.port)
    bob.login("bob", "secret", resource="pc")
    out = cli(["announce", "--subject", "Maintenance", "Restart", "at", "noon"],
              srv.config.data_dir, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sent to 2 session(s)"
    for client in (alice, bob):
        msg = client.read_until("</message>")
        assert "type=\"headline\"" in msg.replace("'", '"')
        assert "<body>Restart at noon</body>" in msg and "<subject>Maintenance</subject>" in msg
        client.close()
    out = cli(["announce", "--domain", "elsewhere.example", "hi"], srv.config.data_dir, tmp_path)
    assert out.returncode == 1 and "not a domain of this server" in out.stderr
    out = cli(["announce"], srv.config.data_dir, tmp_path, stdin="\n")
    assert out.returncode == 1 and "needs a text" in out.stderr


def test_announce_without_a_running_server_is_one_clear_line(tmp_path):
    out = cli(["announce", "hello"], tmp_path / "empty", tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("xmppd: no server is running")


def test_invite_through_the_running_server(make_server, tmp_path):
    srv = make_server(users=USERS, allow_plain=True)
    out = cli(["invite", "--expires", "2h"], srv.config.data_dir, tmp_path)
    assert out.returncode == 0, out.stderr
    token, uri, until = out.stdout.splitlines()
    assert uri == f"xmpp:localhost?register;preauth={token}" and until.startswith("valid until")
    service = srv.server.services["register"]
    assert srv.call(service.valid_invite("localhost", token))
    out = cli(["invite", "--expires", "soon"], srv.config.data_dir, tmp_path)
    assert out.returncode == 2 and "not a duration" in out.stderr


def test_invite_without_a_server_is_stored_for_the_next_start(tmp_path):
    data = tmp_path / "data"
    out = cli(["invite"], data, tmp_path)
    assert out.returncode == 0, out.stderr
    token = out.stdout.splitlines()[0]

    async def stored() -> object:
        storage = await open_storage(f"sqlite:///{data / 'xmppd.sqlite3'}")
        try:
            return await storage.open_store("register").get("localhost", token)
        finally:
            await storage.close()

    assert isinstance(asyncio.run(stored()), dict)
    out = cli(["invite"], data, tmp_path, extra='[modules]\ndisabled = ["register"]\n')
    assert out.returncode == 1 and "the register module is not enabled" in out.stderr


def test_cert_check_from_the_config(tmp_path):
    data = tmp_path / "data"
    out = cli(["cert", "check"], data, tmp_path)
    assert out.returncode == 0, out.stdout
    assert "not generated yet" in out.stdout

    assert cli(["cert", "generate", "localhost"], data, tmp_path).returncode == 0
    out = cli(["cert", "check"], data, tmp_path)
    assert out.returncode == 0, out.stdout
    text = out.stdout
    assert f"certificate: {data / 'certs' / 'localhost.crt'} (self-signed, generated)" in text
    for name in ("localhost", "conference.localhost", "pubsub.localhost"):
        assert f"covers {name}: yes" in text
    days = int(re.search(r"\((\d+) days left\)", text).group(1))
    assert 3640 < days <= 3650
    out = cli(["cert", "check", "--warn-days", "5000"], data, tmp_path)
    assert out.returncode == 1 and "WARNING: the certificate expires in" in out.stdout

    other = tmp_path / "other"
    other.mkdir()
    generate_self_signed("other.example", other / "o.crt", other / "o.key")
    extra = (f'[certificates."localhost"]\ncert = "{other / "o.crt"}"\n'
             f'key = "{other / "o.key"}"\n')
    out = cli(["cert", "check"], data, tmp_path, extra=extra)
    assert out.returncode == 1
    assert "covers localhost: NO" in out.stdout
    assert "ERROR: the certificate does not cover conference.localhost" in out.stdout
    assert "certificates.\"localhost\"" in out.stdout

    missing = f'[certificates."localhost"]\ncert = "{tmp_path / "nope.crt"}"\nkey = "x.key"\n'
    out = cli(["cert", "check"], data, tmp_path, extra=missing)
    assert out.returncode == 1 and "ERROR: certificate file" in out.stdout
    assert "Traceback" not in out.stderr
