"""The ``xmppd`` command, run in subprocesses: accounts against a running server,
``check`` on broken configurations, ``cert generate`` and ``--version``."""

from __future__ import annotations

import base64
import datetime
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import RawClient, stop_process

import xmppd
from xmppd.transport.tls import generate_self_signed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def xmppd_cmd(*args: str, config: Path | None = None, data_dir: Path | None = None,
              input: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if data_dir is not None:
        env["XMPPD_DATA_DIR"] = str(data_dir)
    argv = [sys.executable, "-m", "xmppd.cli", *args]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(argv, input=input, capture_output=True, text=True, env=env, timeout=60)


def write_config(tmp_path: Path, body: str = "", port: int = 0, tls_port: int = 0) -> Path:
    path = tmp_path / "xmppd.toml"
    # No HTTP listener unless the test configures one: the defaults are fixed ports.
    no_http = "" if "[http]" in body else "[http]\nlisten = []\nlisten_tls = []\n"
    path.write_text(
        no_http + "[server]\ndomains = [\"localhost\"]\ndata_dir = \"data\"\nlog_level = \"warning\"\n"
        f"[c2s]\nlisten = [\"127.0.0.1:{port or free_port()}\"]\n"
        f"direct_tls = [\"127.0.0.1:{tls_port or free_port()}\"]\nallow_plain = true\n" + body
    )
    return path


class RunningServer:
    """``xmppd run`` in a subprocess, ready once its STARTTLS port accepts connections."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xmppd.cli", "run", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"xmppd run exited: {self.proc.communicate()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("xmppd run did not start listening") from None
                time.sleep(0.05)

    def stop(self) -> int:
        try:
            return stop_process(self.proc, 15)
        finally:
            self.proc.communicate()


def can_login(port: int, user: str, password: str) -> bool:
    """STARTTLS + PLAIN: True on <success/>, False on <not-authorized/>."""
    client = RawClient(port)
    try:
        client.header()
        client.starttls()
        client.header()
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        answer = client.read_until(r"<success[^>]*(/>|>.*?</success>)|</failure>")
        assert "<success" in answer or "<not-authorized/>" in answer, answer
        return "<success" in answer
    finally:
        client.close()


# -- accounts ---------------------------------------------------------------------------------


def test_accounts_with_a_running_server(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port=port)
    made = xmppd_cmd("adduser", "alice@localhost", config=config, input="first pw\n")
    assert made.returncode == 0, made.stderr
    assert "created alice@localhost" in made.stdout
    server = RunningServer(config, port)
    try:
        assert can_login(port, "alice", "first pw")
        assert not can_login(port, "bob", "first pw")

        changed = xmppd_cmd("passwd", "alice@localhost", config=config, input="second pw\n")
        assert changed.returncode == 0, changed.stderr
        assert not can_login(port, "alice", "first pw")
        assert can_login(port, "alice", "second pw")

        watcher = RawClient(port)
        watcher.login("alice", "second pw")
        gone = xmppd_cmd("deluser", "alice@localhost", config=config)
        assert gone.returncode == 0 and "deleted alice@localhost" in gone.stdout
        assert not can_login(port, "alice", "second pw")
        # the deleted account's session is ended, with the reason
        text = watcher.read_closed()
        assert "<not-authorized xmlns=" in text and "account deleted" in text
        assert xmppd_cmd("adduser", "bob@localhost", config=config, input="pw\n").returncode == 0
        watcher = RawClient(port)
        watcher.login("bob", "pw")
    finally:
        assert server.stop() == 0
    # a clean stop tells connected clients why
    text = watcher.read_closed()
    assert "<system-shutdown xmlns=" in text and text.rstrip().endswith("</stream:stream>")


def test_account_errors(tmp_path):
    config = write_config(tmp_path)
    assert xmppd_cmd("adduser", "alice@localhost", config=config, input="pw\n").returncode == 0
    again = xmppd_cmd("adduser", "alice@localhost", config=config, input="pw\n")
    assert again.returncode != 0 and "exists already" in again.stderr
    for command in ("passwd", "deluser"):
        missing = xmppd_cmd(command, "nobody@localhost", config=config, input="pw\n")
        assert missing.returncode != 0 and "no account nobody@localhost" in missing.stderr
    other = xmppd_cmd("adduser", "alice@example.org", config=config, input="pw\n")
    assert other.returncode != 0 and "not a domain of this server" in other.stderr
    bad = xmppd_cmd("adduser", "alice@localhost/res", config=config, input="pw\n")
    assert bad.returncode != 0 and "not an account address" in bad.stderr
    empty = xmppd_cmd("adduser", "bob@localhost", config=config, input="\n")
    assert empty.returncode != 0 and "empty password" in empty.stderr


def test_import_accounts(tmp_path):
    port = free_port()
    config = write_config(tmp_path, port=port)
    assert xmppd_cmd("adduser", "alice@localhost", config=config, input="old\n").returncode == 0
    lines = "# benchmark users\nalice@localhost\tnew\nbob@localhost\tp w\n\nCarol@localhost\tc\n"
    done = xmppd_cmd("import-accounts", "-", config=config, input=lines)
    assert done.returncode == 0, done.stderr
    assert "created 2 of 3 accounts" in done.stdout
    assert "alice@localhost exists already" in done.stderr
    server = RunningServer(config, port)
    try:
        assert can_login(port, "alice", "old")  # an existing account is left alone
        assert can_login(port, "bob", "p w")
        assert can_login(port, "carol", "c")  # the localpart is normalized
    finally:
        server.stop()
    bad = xmppd_cmd("import-accounts", "-", config=config, input="dave@localhost pw\n")
    assert bad.returncode != 0 and "line 1" in bad.stderr
    ctrl = xmppd_cmd("import-accounts", "-", config=config, input="\ndave@localhost\tp\x01\n")
    assert ctrl.returncode != 0 and "line 2: password is not a valid" in ctrl.stderr


def test_adduser_uses_the_data_dir_from_the_environment(tmp_path):
    done = xmppd_cmd("adduser", "carol@localhost", data_dir=tmp_path / "env", input="pw\n")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env" / "xmppd.sqlite3").exists()


# -- check ---------------------------------------------------------------------------------------


def test_check_good_configuration(tmp_path):
    config = write_config(tmp_path)
    first = xmppd_cmd("check", config=config)
    assert first.returncode == 0 and "generated on first start" in first.stdout
    generate_self_signed("localhost", tmp_path / "data/certs/localhost.crt",
                         tmp_path / "data/certs/localhost.key")
    second = xmppd_cmd("check", config=config)
    assert second.returncode == 0 and "configuration OK" in second.stdout


def test_check_bad_toml(tmp_path):
    config = tmp_path / "xmppd.toml"
    config.write_text("[server\ndomains = [\"localhost\"]\n")
    result = xmppd_cmd("check", config=config)
    assert result.returncode != 0
    assert "configuration error" in result.stderr and "xmppd.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_unknown_key(tmp_path):
    config = write_config(tmp_path, "[limits]\nmax_stanza_bytes = 10\n")
    result = xmppd_cmd("check", config=config)
    assert result.returncode != 0
    assert re.search(r"unknown setting.*limits.*max_stanza_bytes", result.stderr)


def test_check_missing_config_file(tmp_path):
    result = xmppd_cmd("check", config=tmp_path / "absent.toml")
    assert result.returncode != 0 and "does not exist" in result.stderr


def test_check_missing_certificate_file(tmp_path):
    config = write_config(tmp_path, '[certificates."localhost"]\ncert = "nope.crt"\nkey = "nope.key"\n')
    result = xmppd_cmd("check", config=config)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert f"certificate file {tmp_path / 'nope.crt'} is missing" in out
    assert "key file" in out


def _write_cert(path: Path, key, *, days: tuple[int, int], name: str = "localhost") -> None:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


@pytest.mark.parametrize("case,message", [
    ("expired", "certificate expired"),
    ("mismatched", "private key does not match"),
    ("wrong-name", "does not cover localhost"),
])
def test_check_bad_certificate(tmp_path, case, message):
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    days = (-30, -1) if case == "expired" else (-1, 30)
    _write_cert(tmp_path / "c.crt", key, days=days,
                name="example.org" if case == "wrong-name" else "localhost")
    _write_key(tmp_path / "c.key", other if case == "mismatched" else key)
    config = write_config(tmp_path, '[certificates."localhost"]\ncert = "c.crt"\nkey = "c.key"\n')
    result = xmppd_cmd("check", config=config)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


# -- cert generate and --version ---------------------------------------------------------------------


def test_cert_generate(tmp_path):
    config = write_config(tmp_path)  # free ports: check binds them
    result = xmppd_cmd("cert", "generate", "localhost", config=config)
    assert result.returncode == 0, result.stderr
    certs = tmp_path / "data" / "certs"
    crt, key = certs / "localhost.crt", certs / "localhost.key"
    assert f"wrote {crt} and {key}" in result.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    check = xmppd_cmd("check", config=config)
    assert check.returncode == 0 and "configuration OK" in check.stdout


def test_version():
    result = xmppd_cmd("--version")
    assert result.returncode == 0
    m = re.fullmatch(r"xmppd (\S+) \((.+)\)\n", result.stdout)
    assert m and m.group(1) == xmppd.__version__
    if os.environ.get("XMPPD_PURE_PYTHON") == "1":
        assert m.group(2) == "pure-Python"
    else:
        assert m.group(2) in ("compiled (Cython)", "pure-Python") or m.group(2).startswith("mixed")


def test_no_command_prints_help():
    result = xmppd_cmd()
    assert result.returncode == 2 and "usage: xmppd" in result.stdout
