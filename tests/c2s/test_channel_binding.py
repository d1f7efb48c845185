"""Channel binding that deployed clients use: tls-unique on TLS 1.2 (RFC 5929), a clear
refusal of it on TLS 1.3 (RFC 9266), over real sockets."""

from __future__ import annotations

import re
import ssl

from support import RawClient
from test_c2s import scram_plus


def _tls_client(port: int, max_version: ssl.TLSVersion) -> tuple[RawClient, str]:
    client = RawClient(port)
    client.header()
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    client.read_until("<proceed[^>]*/>")
    client.buffer = b""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = max_version
    client.sock = ctx.wrap_socket(client.sock, server_hostname="localhost")
    return client, client.header()


def test_tls_unique_is_offered_and_works_on_tls_12(server):
    client, features = _tls_client(server.port, ssl.TLSVersion.TLSv1_2)
    assert client.sock.version() == "TLSv1.2"
    assert re.search(r"<channel-binding type=['\"]tls-unique['\"]", features)
    data = client.sock.get_channel_binding("tls-unique")
    assert "<success" in scram_plus(client, "alice", "secret", "tls-unique", data)
    client.close()


def test_tls_unique_on_tls_13_is_refused_with_a_reason_and_not_offered(server):
    client, features = _tls_client(server.port, ssl.TLSVersion.TLSv1_3)
    assert client.sock.version() == "TLSv1.3"
    assert "tls-unique" not in features
    answer = scram_plus(client, "alice", "secret", "tls-unique", b"\x00" * 12)
    assert "<not-authorized/>" in answer and "TLS 1.3" in answer
    client.close()


def test_negotiation_errors_do_not_lock_an_account_out(server):
    """More negotiation failures than max_auth_failures (3) on one connection, then the
    right password: the failures were not password failures, so the login works."""
    client, _ = _tls_client(server.port, ssl.TLSVersion.TLSv1_3)
    for _ in range(4):
        assert "<failure" in scram_plus(client, "alice", "secret", "tls-unique", b"x" * 12)
    assert "<success" in scram_plus(
        client, "alice", "secret", "tls-exporter", __import__("xmppd.transport._tlsexport",
                                                               fromlist=["x"]).tls_exporter(client.sock))
    client.close()
