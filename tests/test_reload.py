"""Live reload (``xmppd reload``, the control command ``reload``, SIGHUP): servers configured
by a TOML file, which the tests rewrite and have read again while clients stay connected."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import RawClient, _creds, stop_process

from xmppd.control.client import ControlFailed, call
from xmppd.control.protocol import socket_path
from xmppd.transport.tls import certificate_fingerprint, generate_self_signed

USERS = {"alice": "secret", "bob": "secret"}
DISCO_INFO = "<iq type='get' id='{id}' to='{to}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
DISCO_ITEMS = "<iq type='get' id='{id}' to='{to}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"


class Configured:
    """A TOML configuration file: a fixed head (data directory, ephemeral loopback ports)
    plus the body a test writes."""

    def __init__(self, tmp_path: Path, domains: tuple[str, ...] = ("localhost",),
                 c2s: tuple[str, str] = ("127.0.0.1:0", "127.0.0.1:0")) -> None:
        self.path = tmp_path / "xmppd.toml"
        self.data_dir = tmp_path / "data"
        self.c2s = c2s
        self.write(domains=domains)

    def write(self, body: str = "", domains: tuple[str, ...] = ("localhost",),
              server: str = "", allow_plain: bool = True) -> None:
        names = ", ".join(f'"{d}"' for d in domains)
        self.path.write_text(
            f'[server]\ndomains = [{names}]\ndata_dir = "{self.data_dir}"\n{server}'
            f'[c2s]\nlisten = ["{self.c2s[0]}"]\ndirect_tls = ["{self.c2s[1]}"]\n'
            f"allow_plain = {str(allow_plain).lower()}\n"
            '[http]\nlisten = ["127.0.0.1:0"]\nlisten_tls = ["127.0.0.1:0"]\n'
            f"{body}")

    def reload(self) -> dict:
        return call(socket_path(self.data_dir), "reload")


def _start(make_server, conf: Configured, users=USERS):
    return make_server(users=users, config_path=conf.path)


def ping(client: RawClient, ident: str) -> str:
    """A ping to the server; the answer (the session is alive and served)."""
    client.send(f"<iq type='get' id='{ident}'><ping xmlns='urn:xmpp:ping'/></iq>")
    return client.read_until(f"id=.{ident}.[^>]*(/>|>.*?</iq>)")


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).digest().hex(":").upper()


def tls_fingerprint(port: int, server_name: str | None) -> str:
    """The certificate a direct TLS handshake gets (``server_name`` None: no SNI)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as sock:
        return fingerprint(sock.getpeercert(binary_form=True))


# -- certificates ------------------------------------------------------------------------------


def test_reload_swaps_the_certificate_for_new_connections_and_keeps_sessions(
        make_server, tmp_path):
    cert, key = tmp_path / "localhost.crt", tmp_path / "localhost.key"
    generate_self_signed("localhost", cert, key)
    conf = Configured(tmp_path)
    body = f'[certificates."localhost"]\ncert = "{cert}"\nkey = "{key}"\n'
    conf.write(body)
    srv = _start(make_server, conf)
    first = certificate_fingerprint(cert)
    alice = RawClient(srv.port)
    alice.login("alice", "secret")
    assert fingerprint(alice.sock.getpeercert(binary_form=True)) == first

    generate_self_signed("localhost", cert, key)  # renewed in place, as ACME clients do
    second = certificate_fingerprint(cert)
    assert second != first
    result = conf.reload()
    assert f"certificates.localhost: new certificate (SHA-256 {second}) for new connections" \
        in result["applied"]
    assert result["restart"] == [] and result["failed"] == []

    bob = RawClient(srv.port)  # STARTTLS
    bob.login("bob", "secret")
    assert fingerprint(bob.sock.getpeercert(binary_form=True)) == second
    assert tls_fingerprint(srv.tls_port, "localhost") == second  # direct TLS, SNI
    assert tls_fingerprint(srv.tls_port, None) == second  # direct TLS, no SNI: the default
    # the established session goes on, on its old certificate
    assert fingerprint(alice.sock.getpeercert(binary_form=True)) == first
    assert 'type="result"' in ping(alice, "after")

    assert "certificates" not in " ".join(conf.reload()["applied"])  # unchanged: not reported


# -- limits, client settings, module options ----------------------------------------------------


def test_limits_client_settings_and_module_options_take_effect(make_server, tmp_path):
    conf = Configured(tmp_path)
    srv = _start(make_server, conf)
    alice = RawClient(srv.port)
    alice.login("alice", "secret", resource="one")
    long_name = "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>" \
                "<item jid='x@example.com' name='a long name'/></query></iq>"
    alice.send(long_name.format(id="r1"))
    assert 'type="result"' in alice.read_until("id=.r1.[^>]*(/>|>.*?</iq>)")

    conf.write("[limits]\nmax_stanza_size_bytes = 2000\nmax_resources_per_account = 1\n"
               "[modules.roster]\nmax_name_length = 5\n")
    result = conf.reload()
    assert "limits.max_stanza_size_bytes: 262144 -> 2000 (new connections; account limits " \
           "at once)" in result["applied"]
    assert "modules.roster: max_name_length changed" in result["applied"]
    assert srv.server.config.limits.max_stanza_size_bytes == 2000

    # the module option, at once, for the session that was there before
    alice.send(long_name.format(id="r2"))
    assert "not-acceptable" in alice.read_until("id=.r2.[^>]*>.*?</iq>")
    # an account limit, at once: a second resource is refused
    second = RawClient(srv.port)
    second.header()
    second.starttls()
    second.header()
    token = base64.b64encode(b"\0alice\0secret").decode()
    second.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    second.read_until("<success")
    second.header()
    second.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>two</resource></bind></iq>")
    assert "resource-constraint" in second.read_until("</iq>")
    # the stanza size limit: for connections made after the reload
    big = "<message to='alice@localhost/one'><body>" + "x" * 3000 + "</body></message>"
    bob = RawClient(srv.port)
    bob.login("bob", "secret")
    bob.send(big)
    assert "policy-violation" in bob.read_closed()
    assert 'type="result"' in ping(alice, "alive")  # the old session kept its limit
    alice.send(big.replace("alice@localhost/one", "bob@localhost"))
    assert 'type="result"' in ping(alice, "still")


def test_client_settings_apply_to_new_connections(make_server, tmp_path):
    conf = Configured(tmp_path)
    srv = _start(make_server, conf)
    conf.write(allow_plain=False)
    assert "c2s.allow_plain: true -> false (new connections)" in conf.reload()["applied"]
    client = RawClient(srv.port)
    client.header()
    client.starttls()
    assert "PLAIN" not in client.header()


# -- modules ---------------------------------------------------------------------------------------


def _features(client: RawClient, ident: str, to: str = "localhost") -> str:
    client.send(DISCO_INFO.format(id=ident, to=to))
    return client.read_until(f"id=.{ident}.[^>]*>.*?</iq>")


def test_enabling_and_disabling_modules(make_server, tmp_path):
    conf = Configured(tmp_path)
    srv = _start(make_server, conf)
    alice = RawClient(srv.port)
    alice.login("alice", "secret")
    assert "jabber:iq:version" in _features(alice, "d1")

    conf.write('[modules]\ndisabled = ["version", "carbons"]\n')
    result = conf.reload()
    assert "modules.version: unloaded" in result["applied"]
    # carbons keeps which sessions enabled it (and sasl2 uses it): not unloaded
    assert any(line.startswith("modules.carbons: disabling it needs a restart")
               for line in result["restart"])
    assert "version" not in srv.server.modules and "carbons" in srv.server.modules
    info = _features(alice, "d2")
    assert "jabber:iq:version" not in info and "urn:xmpp:carbons:2" in info
    alice.send("<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
    assert "service-unavailable" in alice.read_until("id=.v1.[^>]*>.*?</iq>")

    conf.write()
    result = conf.reload()
    assert "modules.version: loaded" in result["applied"]
    assert "jabber:iq:version" in _features(alice, "d3")
    alice.send("<iq type='get' id='v2' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
    assert "<name>xmppd</name>" in alice.read_until("id=.v2.[^>]*>.*?</iq>")
    assert 'type="result"' in ping(alice, "alive")


def test_module_options_reloaded_or_left_for_a_restart(make_server, tmp_path):
    conf = Configured(tmp_path)
    srv = _start(make_server, conf)
    alice = RawClient(srv.port)
    alice.login("alice", "secret")
    loaded = srv.server.modules.loaded["vcard"].module

    conf.write('[modules.vcard]\nmax_size = 300\n[modules.muc]\nhost = "chat.{domain}"\n')
    result = conf.reload()
    # vcard keeps nothing in memory: unloaded and loaded again with the option
    assert "modules.vcard: max_size changed (module reloaded)" in result["applied"]
    assert srv.server.modules.loaded["vcard"].module is not loaded
    # muc's rooms live on their service domain: a new one needs a restart
    assert any(line.startswith("modules.muc: host changed; needs a restart")
               for line in result["restart"])
    alice.send("<iq type='set' id='vc'><vCard xmlns='vcard-temp'><DESC>" + "x" * 400
               + "</DESC></vCard></iq>")
    assert "not-acceptable" in alice.read_until("id=.vc.[^>]*>.*?</iq>")
    alice.send(DISCO_ITEMS.format(id="it", to="localhost"))
    assert "conference.localhost" in alice.read_until("id=.it.[^>]*>.*?</iq>")
    # the change not applied is reported again until the restart
    assert any(line.startswith("modules.muc: host changed") for line in conf.reload()["restart"])


def test_a_module_enabled_by_a_reload_starts_as_at_start_up(make_server, tmp_path):
    conf = Configured(tmp_path)
    conf.write('[modules]\ndisabled = ["s2s"]\n[s2s]\nlisten = ["127.0.0.1:0"]\n')
    srv = _start(make_server, conf)
    assert not srv.server.addresses["s2s"]
    conf.write('[s2s]\nlisten = ["127.0.0.1:0"]\n')
    result = conf.reload()
    assert "modules.s2s: loaded" in result["applied"]
    assert ("modules.s2s: loaded; modules loaded without it use it only after a restart: "
            "component, muc, pubsub, upload") in result["restart"]
    # its listener opened (server-started, which it missed, ran for it)
    peer = RawClient(srv.server.addresses["s2s"][0][1])
    peer.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              "xmlns:stream='http://etherx.jabber.org/streams' "
              "xmlns:db='jabber:server:dialback' to='localhost' from='remote.example' "
              "version='1.0'>")
    assert "<starttls" in peer.read_until("</stream:features>")


# -- virtual hosts -----------------------------------------------------------------------------


def test_virtual_hosts_added_and_removed(make_server, tmp_path):
    conf = Configured(tmp_path, domains=("localhost", "example.net"))
    srv = _start(make_server, conf)
    srv.call(srv.server.storage.create_account("eve", "example.net", _creds("secret")))
    alice = RawClient(srv.port)
    alice.login("alice", "secret")
    eve = RawClient(srv.port)
    eve.login("eve", "secret", domain="example.net")

    conf.write(domains=("localhost", "example.org"))
    result = conf.reload()
    assert ("server.domains: added example.org; removed example.net (1 session(s) ended "
            "with host-gone)") in result["applied"]
    assert "<host-gone" in eve.read_closed()
    assert 'type="result"' in ping(alice, "alive")
    assert srv.server.router.hosts == {"localhost", "example.org"}

    new = RawClient(srv.port)
    assert "<starttls" in new.header("example.org")
    assert (conf.data_dir / "certs" / "example.org.crt").exists()  # generated, as at start
    assert "example.org" in tls_fingerprint_names(srv.tls_port, "example.org")
    gone = RawClient(srv.port)
    assert "host-unknown" in gone.header("example.net")
    # the per-domain services follow
    alice.send(DISCO_ITEMS.format(id="it", to="localhost"))
    alice.read_until("id=.it.[^>]*>.*?</iq>")
    srv.call(srv.server.storage.create_account("olga", "example.org", _creds("secret")))
    olga = RawClient(srv.port)
    olga.login("olga", "secret", domain="example.org")
    olga.send(DISCO_ITEMS.format(id="it2", to="example.org"))
    items = olga.read_until("id=.it2.[^>]*>.*?</iq>")
    assert "conference.example.org" in items and "pubsub.example.org" in items
    assert "example.net" not in items


def tls_fingerprint_names(port: int, server_name: str) -> str:
    """The subject of the certificate a direct TLS handshake for ``server_name`` gets."""
    from cryptography import x509

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as sock:
        return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).subject \
            .rfc4514_string()


# -- refused and restart-needed --------------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ("[modules.roster]\nmax_nme_length = 5\n",
     "modules.roster.max_nme_length: unknown option (roster has: max_name_length)"),
    ("[limits]\nmax_depth = -1\n", "limits.max_depth: expected a non-negative number"),
    ('[modules]\ndisabled = ["message"]\n', "modules.offline requires module 'message'"),
    ("[limits\n", "xmppd.toml"),
    ('[certificates."localhost"]\ncert = "/nonexistent.crt"\nkey = "/nonexistent.key"\n',
     "certificate file /nonexistent.crt is missing"),
])
def test_a_bad_configuration_is_refused_and_the_running_one_stays(make_server, tmp_path,
                                                                   body, message):
    conf = Configured(tmp_path)
    srv = _start(make_server, conf)
    alice = RawClient(srv.port)
    alice.login("alice", "secret")
    before = srv.server.config
    conf.write("[limits]\nmax_stanza_size_bytes = 1000\n" + body if "[limits]" not in body
               else body)
    with pytest.raises(ControlFailed) as refused:
        conf.reload()
    text = str(refused.value)
    assert text.startswith("configuration refused, the running configuration stays in force")
    assert message in text and "Traceback" not in text
    assert srv.server.config is before
    assert srv.server.config.limits.max_stanza_size_bytes == 262144
    assert 'type="result"' in ping(alice, "alive")


def test_keys_that_need_a_restart_are_reported_and_logged(make_server, tmp_path, caplog):
    conf = Configured(tmp_path)
    srv = _start(make_server, conf)
    caplog.set_level(logging.WARNING, logger="xmppd.reload")
    conf.c2s = ("127.0.0.1:1", "127.0.0.1:0")
    conf.write("[s2s]\ntimeout_s = 5\n", server=f'storage = "sqlite:///{tmp_path}/other.db"\n')
    result = conf.reload()
    assert set(result["restart"]) == {
        "server.storage: changed; needs a restart (the running value stays in force)",
        "c2s.listen, c2s.direct_tls: changed; needs a restart (the running value stays in "
        "force)",
        "s2s.timeout_s: changed; needs a restart (the running value stays in force)",
    }
    assert result["applied"] == []
    cfg = srv.server.config
    assert cfg.storage == "" and cfg.s2s_timeout_s == 30.0 and cfg.c2s[0].port == 0
    logged = [r.getMessage() for r in caplog.records if r.name == "xmppd.reload"]
    assert "reload: server.storage: changed; needs a restart (the running value stays in " \
           "force)" in logged
    assert set(conf.reload()["restart"]) == set(result["restart"])  # until the restart


# -- the command line and SIGHUP ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))


def xmppd(*args: str, config: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xmppd.cli", *args, "--config", str(config)],
                          input=stdin, capture_output=True, text=True, timeout=120, env=_env())


class Running:
    """``xmppd run`` in a subprocess; its log lines collected as they come."""

    def __init__(self, config: Path, port: int) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xmppd.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"xmppd run exited: {self.lines}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "xmppd run did not start listening"
                time.sleep(0.05)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, after: int = 0) -> int:
        """The index of the first log line from ``after`` on that contains ``text``."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for i, line in enumerate(self.lines[after:], after):
                if text in line:
                    return i
            assert self.proc.poll() is None, f"xmppd run exited: {self.lines}"
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} in the log: {self.lines}")

    def stop(self) -> None:
        try:
            stop_process(self.proc, 15)
        finally:
            self._reader.join(5)


def test_sighup_and_xmppd_reload_on_a_running_xmppd(tmp_path):
    port = free_port()
    conf = Configured(tmp_path, c2s=(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}"))
    warning = 'log_level = "warning"\n'
    conf.write(server=warning)
    out = xmppd("adduser", "alice@localhost", config=conf.path, stdin="secret\n")
    assert out.returncode == 0, out.stderr
    server = Running(conf.path, port)
    try:
        alice = RawClient(port)
        alice.login("alice", "secret")

        # SIGHUP: the log level and a limit change; the reload's INFO summary shows the
        # new level is in force
        conf.write("[limits]\nmax_offline_messages = 5\n", server='log_level = "info"\n')
        server.proc.send_signal(signal.SIGHUP)
        done = server.wait_for("configuration reloaded from")
        assert any("reload: server.log_level: warning -> info" in line
                   for line in server.lines[:done])
        assert any("limits.max_offline_messages: 1000 -> 5" in line for line in server.lines)
        assert 'type="result"' in ping(alice, "p1")

        # a bad file on SIGHUP: refused in the log, naming the key; the server goes on
        conf.write("[limits]\nmax_ofline_messages = 5\n", server='log_level = "info"\n')
        server.proc.send_signal(signal.SIGHUP)
        refused = server.wait_for("reload refused", done)
        assert "unknown setting(s) in limits: max_ofline_messages" in server.lines[refused]
        assert not any("Traceback" in line for line in server.lines)
        assert 'type="result"' in ping(alice, "p2")

        # xmppd reload: the same refusal on the command line, status 1
        out = xmppd("reload", config=conf.path)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "max_ofline_messages" in out.stderr and "nothing was reloaded" in out.stderr
        # a module the server refuses (the command line reads only the keys)
        conf.write('[modules.roster]\nmax_nme_length = 5\n', server='log_level = "info"\n')
        out = xmppd("reload", config=conf.path)
        assert out.returncode == 1, out
        assert out.stderr.strip() == (
            "xmppd: configuration refused, the running configuration stays in force: "
            "modules.roster.max_nme_length: unknown option (roster has: max_name_length)")

        # a key that needs a restart: reported by the command and in the log
        conf.c2s = (f"127.0.0.1:{free_port()}", conf.c2s[1])
        conf.write("[limits]\nmax_offline_messages = 5\n", server='log_level = "info"\n')
        mark = len(server.lines)
        out = xmppd("reload", config=conf.path)
        assert out.returncode == 0, out.stderr
        assert "needs a restart: c2s.listen, c2s.direct_tls: changed; needs a restart" \
            in out.stdout
        server.wait_for("WARNING xmppd.reload: reload: c2s.listen, c2s.direct_tls: changed",
                        mark)
        assert 'type="result"' in ping(alice, "p3")
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_xmppd_reload_without_a_running_server(tmp_path):
    conf = Configured(tmp_path)
    out = xmppd("reload", config=conf.path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("xmppd: no server is running")
