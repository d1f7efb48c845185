"""Federation details operators and other servers depend on: the ``db:`` prefix on the
wire, client certificates that never lock a peer out, bidirectional streams (XEP-0288),
the log and the redacted trace, ``xmppd check`` and the DNS settings."""

from __future__ import annotations

import logging
import socket
import ssl
import threading

import pytest
from prosody import CertAuthority
from test_s2s import DB, RawPeer, closed_port, login, s2s_listener
from test_s2s import pair as pair  # a fixture

from xmppd.core.config import Certificate, Config, ConfigError, from_dict
from xmppd.preflight import federation_warnings
from xmppd.s2s.certs import tolerate_client_certificates
from xmppd.s2s.common import redact
from xmppd.s2s.dialback import dialback_key
from xmppd.s2s.inbound import S2SInStream
from xmppd.transport.tls import generate_self_signed

# -- the db: prefix (XEP-0220 §2) ---------------------------------------------------------------


def test_inbound_answers_are_prefixed_and_both_request_forms_are_accepted(pair):
    a, b, _ = pair
    peer = RawPeer(b.server.addresses["s2s"][0][1])
    stream_id = peer.open_secure("a.example", "b.example")
    # the unprefixed form (what older xmppd sent) is understood...
    peer.send("<result xmlns='jabber:server:dialback' from='a.example' to='b.example'>"
              f"{'0' * 64}</result>")
    answer = peer.read_until(r"<(db:)?result[^>]*>")
    # ...and every answer is written <db:result>, never <result xmlns='...dialback'>
    assert answer.lstrip().startswith("<db:result") and 'type="invalid"' in answer
    key = dialback_key(a.server.secret, "b.example", "a.example", stream_id)
    peer.send(f"<db:result {DB} from='a.example' to='b.example'>{key}</db:result>")
    answer = peer.read_until(r"<(db:)?result[^>]*>")
    assert answer.lstrip().startswith("<db:result") and 'type="valid"' in answer
    peer.close()


def test_verify_answers_are_prefixed(pair):
    a, _b, _ = pair
    peer = RawPeer(a.server.addresses["s2s"][0][1])
    peer.open_secure("b.example", "a.example")
    good = dialback_key(a.server.secret, "b.example", "a.example", "sid1")
    peer.send(f"<verify xmlns='jabber:server:dialback' from='b.example' to='a.example' "
              f"id='sid1'>{good}</verify>")
    answer = peer.read_until(r"<(db:)?verify[^>]*>")
    assert answer.lstrip().startswith("<db:verify") and 'type="valid"' in answer
    peer.close()


def test_outbound_dialback_request_is_prefixed(make_server):
    """A raw remote server (no TLS, dialback only) sees ``<db:result>`` from xmppd."""
    listener = socket.create_server(("127.0.0.1", 0))
    routes = {"raw.example": listener.getsockname()}
    a = make_server(users={"alice": "secret"}, domains=("a.example",), allow_plain=True,
                    s2s_routes=routes, s2s_require_encryption=False)
    alice = login(a, "alice", "a.example")
    alice.send("<message to='x@raw.example'><body>hi</body></message>")
    listener.settimeout(5)
    conn, _ = listener.accept()
    peer = RawPeer.__new__(RawPeer)
    peer.sock, peer.buffer, peer.timeout = conn, b"", 5.0
    header = peer.read_until(r"<stream:stream[^>]*>")
    assert "xmlns:db='jabber:server:dialback'" in header or 'xmlns:db="jabber:server:dialback"' in header
    peer.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
              "id='raw1' from='raw.example' to='a.example' version='1.0'><stream:features>"
              "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"
              "</stream:features>")
    request = peer.read_until(r"</(db:)?result>")
    assert request.lstrip().startswith("<db:result") and request.endswith("</db:result>")
    peer.close()
    alice.close()
    listener.close()


# -- client certificates (ca_file) ---------------------------------------------------------------


def _handshake(server_ctx: ssl.SSLContext, cert, key) -> str:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    client_ctx.load_cert_chain(cert, key)
    left, right = socket.socketpair()
    result: dict[str, str] = {}

    def serve():
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                result["got"] = "cert" if tls.getpeercert(binary_form=True) else "none"
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            result["got"] = f"failed: {exc}"

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(right) as tls:
            tls.send(b"x")
    except (ssl.SSLError, OSError):
        pass
    thread.join(5)
    return result.get("got", "timeout")


def test_stdlib_cert_optional_fails_on_a_self_signed_client_but_tolerant_context_does_not(tmp_path):
    """Why certs.py installs its own verify callback: ``CERT_OPTIONAL`` alone aborts the
    handshake on a certificate that does not verify, CA file or not."""
    generate_self_signed("server.example", tmp_path / "s.crt", tmp_path / "s.key")
    generate_self_signed("peer.example", tmp_path / "p.crt", tmp_path / "p.key")
    ca = CertAuthority(tmp_path / "ca")

    def context(tolerant: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(ca.path)
        if tolerant:
            assert tolerate_client_certificates(ctx)
        return ctx

    assert _handshake(context(False), tmp_path / "p.crt", tmp_path / "p.key").startswith("failed")
    assert _handshake(context(True), tmp_path / "p.crt", tmp_path / "p.key") == "cert"
    assert _handshake(context(True), *ca.issue("good.example")) == "cert"


def test_ca_file_does_not_lock_out_a_self_signed_peer(make_server, tmp_path):
    """A has a CA-issued certificate and a CA file; B only a self-signed certificate:
    B's client certificate does not verify, so B goes on with dialback, both ways."""
    ca = CertAuthority(tmp_path / "ca")
    routes: dict[str, tuple[str, int]] = {}
    cert, key = ca.issue("a.example")
    a = make_server(users={"alice": "secret"}, domains=("a.example",), allow_plain=True,
                    s2s=s2s_listener(), s2s_routes=routes, s2s_ca_file=ca.path,
                    certificates={"a.example": Certificate(cert, key)}, s2s_bidi=False)
    b = make_server(users={"bob": "secret"}, domains=("b.example",), allow_plain=True,
                    s2s=s2s_listener(), s2s_routes=routes, s2s_bidi=False)
    routes["a.example"] = a.server.addresses["s2s"][0]
    routes["b.example"] = b.server.addresses["s2s"][0]
    alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
    bob.send("<message to='alice@a.example/raw'><body>selfsigned</body></message>")
    alice.read_until("selfsigned")
    alice.send("<message to='bob@b.example/raw'><body>back</body></message>")
    bob.read_until("back")
    inbound = [s for s in a.server.streams if isinstance(s, S2SInStream)]
    assert inbound and not any(s.sasl_done for s in inbound)
    assert all(s.secure for s in inbound)
    alice.close()
    bob.close()


# -- bidirectional streams (XEP-0288) -------------------------------------------------------------


def test_bidi_over_dialback_answers_over_the_inbound_stream(pair):
    from xmppd.modules.s2s import manager_for

    a, b, _ = pair
    alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
    alice.send("<message to='bob@b.example/raw'><body>one</body></message>")
    bob.read_until("one")
    bob.send("<message to='alice@a.example/raw'><body>two</body></message>")
    alice.read_until("two")
    # B's own link to A exists only to verify A's dialback key; B's stanzas take A's stream
    bidi = manager_for(b.server).bidi_in[("b.example", "a.example")]
    assert bidi.bidi and ("a.example", "b.example") in bidi.authorized
    assert manager_for(a.server).links[("a.example", "b.example")].stream.bidi
    alice.close()
    bob.close()


def test_bidi_over_sasl_external_needs_a_single_connection(make_server, tmp_path):
    from xmppd.modules.s2s import manager_for

    ca = CertAuthority(tmp_path / "ca")
    routes: dict[str, tuple[str, int]] = {}

    def make(domain, users):
        cert, key = ca.issue(domain)
        return make_server(users=users, domains=(domain,), allow_plain=True, s2s=s2s_listener(),
                           s2s_routes=routes, certificates={domain: Certificate(cert, key)},
                           s2s_ca_file=ca.path, s2s_use_system_ca=False)

    a, b = make("a.example", {"alice": "secret"}), make("b.example", {"bob": "secret"})
    routes["a.example"] = a.server.addresses["s2s"][0]
    routes["b.example"] = b.server.addresses["s2s"][0]
    alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
    alice.send("<message to='bob@b.example/raw'><body>one</body></message>")
    bob.read_until("one")
    bob.send("<message to='alice@a.example/raw'><body>two</body></message>")
    alice.read_until("two")
    bob.send("<iq type='get' id='v1' to='a.example'><query xmlns='jabber:iq:version'/></iq>")
    assert "jabber:iq:version" in bob.read_until("</iq>")
    assert not manager_for(b.server).links  # B never connected to A
    assert not [s for s in a.server.streams if isinstance(s, S2SInStream)]
    inbound = [s for s in b.server.streams if isinstance(s, S2SInStream)]
    assert len(inbound) == 1 and inbound[0].bidi and inbound[0].sasl_done
    alice.close()
    bob.close()


def test_bidi_is_not_offered_after_authentication_nor_to_a_peer_that_disabled_it(make_server):
    b = make_server(domains=("b.example",), s2s=s2s_listener(), s2s_bidi=False)
    peer = RawPeer(b.server.addresses["s2s"][0][1])
    peer.s2s_header("a.example", "b.example")
    peer.starttls()
    features = peer.s2s_header("a.example", "b.example")
    assert "urn:xmpp:features:bidi" not in features
    peer.send("<bidi xmlns='urn:xmpp:bidi'/>")
    assert "policy-violation" in peer.read_closed()


# -- log, trace, check, DNS settings ------------------------------------------------------------


def test_trace_redacts_dialback_keys_and_sasl_payloads():
    text = redact(b"<db:result from='a' to='b'>s3cr3tkey</db:result>"
                  b"<verify xmlns='jabber:server:dialback' id='x'>k2</verify>"
                  b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>YS5leGFtcGxl</auth>"
                  b"<message to='x@b'><body>kept</body></message><db:result type='valid'/>")
    assert "s3cr3tkey" not in text and "k2" not in text and "YS5leGFtcGxl" not in text
    assert text.count("[redacted]") == 3 and "<body>kept</body>" in text


def test_stream_log_names_peer_direction_tls_and_method(pair, caplog):
    a, b, _ = pair
    caplog.set_level(logging.DEBUG, logger="xmppd.s2s")
    alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
    alice.send("<message to='bob@b.example/raw'><body>logged</body></message>")
    bob.read_until("logged")
    text = caplog.text
    assert "s2s outbound to" in text and "a.example -> b.example authenticated by dialback over TLSv1" in text
    assert "s2s inbound from" in text and "authenticated by dialback over TLSv1" in text
    assert ">>" in text and "<db:result" in text  # the trace...
    key_lines = [line for line in text.splitlines() if "<db:result" in line and "type=" not in line]
    assert key_lines and all("[redacted]" in line for line in key_lines)  # ...without keys
    alice.close()
    bob.close()


def test_refused_dialback_is_logged_with_the_reason(pair, caplog):
    _a, b, routes = pair
    caplog.set_level(logging.INFO, logger="xmppd.s2s")
    routes["evil.example"] = ("127.0.0.1", closed_port())
    peer = RawPeer(b.server.addresses["s2s"][0][1])
    peer.open_secure("evil.example", "b.example")
    peer.send(f"<db:result {DB} from='evil.example' to='b.example'>{'1' * 64}</db:result>")
    peer.read_until(r"<(db:)?result[^>]*>")
    assert "evil.example -> b.example not authenticated: dialback key not confirmed" in caplog.text
    peer.close()


def test_check_warns_about_dialback_without_a_listener(tmp_path):
    base = Config(domains=("example.org",), data_dir=tmp_path)
    assert any("dialback" in w for w in federation_warnings(base))
    assert not federation_warnings(base.replace(s2s=s2s_listener()))
    assert not federation_warnings(base.replace(s2s_dialback=False))
    assert not federation_warnings(base.replace(modules_disabled=("s2s",)))


def test_nameservers_and_dns_timeout_are_validated():
    def load(s2s):
        return from_dict({"server": {"domains": ["example.org"]}, "s2s": s2s})

    cfg = load({"nameservers": ["127.0.0.1:5353", "::1", "[::1]:54"], "dns_timeout_s": 2})
    assert cfg.s2s_nameservers == (("127.0.0.1", 5353), ("::1", 53), ("::1", 54))
    assert cfg.s2s_dns_timeout_s == 2.0
    for bad in ({"nameservers": ["dns.example"]}, {"nameservers": ["1.2.3.4:99999"]},
                {"dns_timeout_s": 0}, {"nameservers": "1.2.3.4"}):
        with pytest.raises(ConfigError, match="s2s"):
            load(bad)


def test_configured_nameservers_are_used_for_srv(make_server):
    from prosody import DNSServer

    from xmppd.modules.s2s import manager_for

    with DNSServer({("_xmpp-server._tcp.far.example", "SRV"): ["0 0 5999 far.example."],
                    ("far.example", "A"): ["127.0.0.1"]}) as dns:
        ip, port = dns.address
        a = make_server(domains=("a.example",), s2s_nameservers=((ip, port),), s2s_dns_timeout_s=2)
        resolver = manager_for(a.server).resolver
        import asyncio

        targets = asyncio.run(resolver.resolve("far.example"))
        assert [(t.host, t.port) for t in targets] == [("127.0.0.1", 5999)]
        assert ("_xmpp-server._tcp.far.example", "SRV") in dns.queries
