"""Client connections misbehaving, over raw sockets: each test checks the exact stream or
stanza error, and that a session bound before the misbehaviour (the bystander) still works.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import ssl
import time

import pytest
from support import STREAM_HEADER, RawClient

from xmppd.core.config import Limits

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
PING = "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


def stream_error(text: str) -> str | None:
    """The defined condition of the stream error in ``text``, or None."""
    m = re.search(r"<stream:error>\s*<([a-z-]+) xmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams",
                  text)
    return m.group(1) if m else None


def stanza_error(text: str) -> str | None:
    m = re.search(r"<([a-z-]+) xmlns=['\"]urn:ietf:params:xml:ns:xmpp-stanzas['\"]", text)
    return m.group(1) if m else None


def ping(client: RawClient, id: str = "alive") -> str:
    client.send(PING.format(id=id))
    return client.read_until(rf"<iq[^>]*id=['\"]{id}['\"][^>]*(/>|>.*?</iq>)")


def assert_alive(client: RawClient) -> None:
    """The bystander session still answers a ping with a result."""
    assert "type='result'" in ping(client).replace('"', "'")


@pytest.fixture
def bystander(server):
    client = RawClient(server.port)
    client.login("carol", "secret", resource="bystander")
    yield client
    client.close()


def expect_stream_error(client: RawClient, condition: str) -> str:
    """Read to the end of the stream; the stream error is ``condition`` and the server closed."""
    text = client.read_closed()
    assert stream_error(text) == condition, text
    assert text.rstrip().endswith("</stream:stream>"), text
    return text


def plain_auth(client: RawClient, user: str, password: str) -> str:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    return client.read_until(r"<success[^>]*(/>|>.*?</success>)|</failure>")


def tls_client(server) -> RawClient:
    """Connected, STARTTLS done, new stream header sent: ready for SASL."""
    client = RawClient(server.port)
    client.header()
    client.starttls()
    client.header()
    return client


# -- authentication --------------------------------------------------------------------------


def test_wrong_password_is_not_authorized(server, bystander):
    client = tls_client(server)
    reply = plain_auth(client, "alice", "wrong")
    assert "<not-authorized/>" in reply
    # the stream stays open for another attempt, which can succeed
    assert "<success" in plain_auth(client, "alice", "secret")
    assert_alive(bystander)


def test_unknown_user_gets_the_same_answer(server, bystander):
    client = tls_client(server)
    reply = plain_auth(client, "mallory", "secret")
    assert re.search(rf"<failure xmlns=['\"]{SASL}['\"]><not-authorized/></failure>", reply)
    assert_alive(bystander)


def test_three_failures_close_the_stream(server, bystander):
    client = tls_client(server)
    for _ in range(2):
        assert "<not-authorized/>" in plain_auth(client, "alice", "nope")
    token = base64.b64encode(b"\0alice\0nope").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    text = expect_stream_error(client, "policy-violation")
    assert "<not-authorized/>" in text
    assert_alive(bystander)


def test_plain_over_plaintext_is_refused(server, bystander):
    client = RawClient(server.port)
    features = client.header()
    assert "<starttls" in features and "<required/>" in features
    assert "PLAIN" not in features and "<mechanisms" not in features
    token = base64.b64encode(b"\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert "<encryption-required/>" in client.read_until("</failure>")
    assert_alive(bystander)


def test_plain_not_offered_without_tls_even_when_encryption_optional(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True, require_encryption=False)
    client = RawClient(srv.port)
    features = client.header()
    assert "SCRAM-SHA-256" in features and "PLAIN" not in features
    assert "<required/>" not in features
    token = base64.b64encode(b"\0alice\0secret").decode()
    client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert "<encryption-required/>" in client.read_until("</failure>")


def test_plain_over_tls_is_on_by_default(make_server):
    """PLAIN-only clients (mcabber, sendxmpp) log in with the default configuration, over
    TLS only; the password is checked against the stored SCRAM keys."""
    srv = make_server(users={"alice": "secret"}, require_encryption=False)
    client = RawClient(srv.port)
    assert "PLAIN" not in client.header()
    client.starttls()
    features = client.header()
    assert "<mechanism>PLAIN</mechanism>" in features
    assert "<not-authorized/>" in plain_auth(client, "alice", "wrong")
    assert "<success" in plain_auth(client, "alice", "secret")
    off = make_server(users={"alice": "secret"}, allow_plain=False)
    client = RawClient(off.port)
    client.header()
    client.starttls()
    assert "PLAIN" not in client.header()


def test_stanza_before_auth_is_not_authorized(server, bystander):
    client = tls_client(server)
    client.send("<message to='carol@localhost/bystander'><body>hi</body></message>")
    expect_stream_error(client, "not-authorized")
    bystander.send(PING.format(id="p2"))
    assert "<body>hi</body>" not in bystander.read_until(r"id=['\"]p2['\"]")


def test_auth_timeout(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True,
                      limits=Limits(auth_timeout_s=0.5))
    client = RawClient(srv.port)
    client.header()
    expect_stream_error(client, "connection-timeout")
    # a bound session is not timed out
    ok = RawClient(srv.port)
    ok.login("alice", "secret")
    time.sleep(0.6)
    assert_alive(ok)


# -- XML ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("junk", ["<message><body>x</message>", "<a b='1' b='2'/>", "text"])
def test_malformed_xml_is_not_well_formed(server, bystander, junk):
    client = RawClient(server.port)
    client.header()
    client.send(junk)
    expect_stream_error(client, "not-well-formed")
    assert_alive(bystander)


def test_malformed_xml_after_bind(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send("<message to='carol@localhost/bystander'><body>x</bod></message>")
    expect_stream_error(client, "not-well-formed")
    assert_alive(bystander)


@pytest.mark.parametrize("junk", [
    "<!-- a comment -->",
    "<?pi data?>",
    "<message><body>&custom;</body></message>",
])
def test_restricted_xml(server, bystander, junk):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send(junk)
    expect_stream_error(client, "restricted-xml")
    assert_alive(bystander)


def test_dtd_in_header_is_restricted(server, bystander):
    client = RawClient(server.port)
    client.send("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]>"
                + STREAM_HEADER.format(to="localhost").replace("<?xml version='1.0'?>", ""))
    expect_stream_error(client, "restricted-xml")
    assert_alive(bystander)


def test_oversized_stanza_before_auth(server, bystander):
    client = RawClient(server.port)
    client.header()
    client.send("<message><body>" + "x" * 9000 + "</body></message>")
    expect_stream_error(client, "policy-violation")
    assert_alive(bystander)


def test_stanza_under_preauth_limit_is_fine_after_auth(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    body = "y" * 100_000  # over the pre-auth limit, under the 256 KiB one
    client.send(f"<message to='carol@localhost/bystander' type='chat'><body>{body}</body></message>")
    assert body in bystander.read_until("</message>")


def test_oversized_stanza_after_auth(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    chunk = "z" * 65536
    try:
        client.send("<message to='carol@localhost/bystander'><body>")
        for _ in range(5):
            client.send(chunk)
    except OSError:
        pass  # the server may cut us off before everything is written
    expect_stream_error(client, "policy-violation")
    assert_alive(bystander)


# -- addressing ----------------------------------------------------------------------------------


def test_spoofed_from_is_invalid_from(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send("<message from='bob@localhost/x' to='carol@localhost/bystander'>"
                "<body>spoof</body></message>")
    expect_stream_error(client, "invalid-from")
    bystander.send(PING.format(id="p2"))
    assert "spoof" not in bystander.read_until(r"id=['\"]p2['\"]")


def test_own_bare_or_full_from_is_accepted(server, bystander):
    client = RawClient(server.port)
    full = client.login("alice", "secret", resource="r1")
    client.send("<message from='alice@localhost' to='carol@localhost/bystander'><body>1</body></message>")
    client.send(f"<message from='{full}' to='carol@localhost/bystander'><body>2</body></message>")
    text = bystander.read_until("<body>2</body>")
    assert text.count(f"from=\"{full}\"") + text.count(f"from='{full}'") == 2


def test_wrong_to_domain_is_host_unknown(server, bystander):
    client = RawClient(server.port)
    client.send(STREAM_HEADER.format(to="example.org"))
    text = expect_stream_error(client, "host-unknown")
    assert "<stream:features" not in text
    assert_alive(bystander)


def test_missing_to_is_improper_addressing(server, bystander):
    client = RawClient(server.port)
    client.send(STREAM_HEADER.replace(" to='{to}'", ""))
    expect_stream_error(client, "improper-addressing")
    assert_alive(bystander)


@pytest.mark.parametrize("domain", ["example.org", "other.test"])
def test_restart_with_another_to_after_sasl(make_server, domain):
    srv = make_server(users={"alice": "secret", "carol": "secret"}, allow_plain=True,
                      domains=("localhost", "other.test"))
    bystander = RawClient(srv.port)
    bystander.login("carol", "secret")
    client = tls_client(srv)
    assert "<success" in plain_auth(client, "alice", "secret")
    client.send(STREAM_HEADER.format(to=domain))
    expect_stream_error(client, "host-unknown")
    assert_alive(bystander)


def test_pipelined_plaintext_after_starttls_is_discarded(server, bystander):
    client = RawClient(server.port)
    client.header()
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                "<message to='carol@localhost/bystander' type='chat'><body>injected</body></message>")
    client.read_until("<proceed[^>]*/>")
    client.buffer = b""
    client._wrap()
    client.header()
    assert "<success" in plain_auth(client, "alice", "secret")
    client.header()
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    client.read_until("</iq>")
    assert_alive(client)
    text = ping(bystander, "p2")
    assert "injected" not in text and "injected" not in bystander.buffer.decode()


# -- IQ rules ----------------------------------------------------------------------------------


def test_iq_without_id_is_bad_request(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert stanza_error(client.read_until("</iq>")) == "bad-request"
    assert_alive(client)
    assert_alive(bystander)


def test_iq_get_with_two_children_is_bad_request(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send("<iq type='get' id='two' to='localhost'><ping xmlns='urn:xmpp:ping'/>"
                "<query xmlns='jabber:iq:version'/></iq>")
    reply = client.read_until("</iq>")
    assert "id='two'" in reply.replace('"', "'") and stanza_error(reply) == "bad-request"
    assert_alive(client)
    assert_alive(bystander)


@pytest.mark.parametrize("to,payload", [
    ("nobody@localhost", "<query xmlns='jabber:iq:version'/>"),
    ("nobody@localhost/res", "<ping xmlns='urn:xmpp:ping'/>"),
    ("bob@localhost/offline", "<ping xmlns='urn:xmpp:ping'/>"),
    ("localhost", "<query xmlns='urn:example:unknown'/>"),
])
def test_iq_with_no_handler_is_service_unavailable(server, bystander, to, payload):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send(f"<iq type='get' id='q1' to='{to}'>{payload}</iq>")
    reply = client.read_until("</iq>")
    assert "type='error'" in reply.replace('"', "'"), reply
    assert stanza_error(reply) == "service-unavailable"
    assert_alive(bystander)


def test_message_to_unknown_local_user_is_service_unavailable(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send("<message to='nobody@localhost' id='m1' type='chat'><body>hello?</body></message>")
    reply = client.read_until("</message>")
    assert "type='error'" in reply.replace('"', "'"), reply
    assert stanza_error(reply) == "service-unavailable"
    assert_alive(bystander)


# -- sessions --------------------------------------------------------------------------------


def test_resource_conflict_replaces_the_old_session(server, bystander):
    old = RawClient(server.port)
    old.login("alice", "secret", resource="phone")
    new = RawClient(server.port)
    assert new.login("alice", "secret", resource="phone") == "alice@localhost/phone"
    expect_stream_error(old, "conflict")
    assert_alive(new)
    bystander.send("<message to='alice@localhost/phone' type='chat'><body>to new</body></message>")
    assert "to new" in new.read_until("</message>")
    assert_alive(bystander)


def test_closing_handshake(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send("</stream:stream>")
    text = client.read_closed()
    assert text.strip() == "</stream:stream>"
    assert_alive(bystander)
    # and the session is gone: a ping to it bounces
    bystander.send("<iq type='get' id='gone' to='alice@localhost/raw'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert stanza_error(bystander.read_until("</iq>")) == "service-unavailable"


def test_whitespace_keepalives(server, bystander):
    client = RawClient(server.port)
    client.send(STREAM_HEADER.format(to="localhost") + "\n \n")
    client.read_until("</stream:features>")
    client.send(" \n")
    client.starttls()
    client.header()
    client.send("\t ")
    assert "<success" in plain_auth(client, "alice", "secret")
    client.header()
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    client.read_until("</iq>")
    for _ in range(3):
        client.send(" ")
        assert_alive(client)
    assert_alive(bystander)


def test_system_shutdown_on_stop(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True)
    bound = RawClient(srv.port)
    bound.login("alice", "secret")
    fresh = RawClient(srv.port)
    fresh.header()
    srv.stop()
    expect_stream_error(bound, "system-shutdown")
    expect_stream_error(fresh, "system-shutdown")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


def test_direct_tls_refuses_starttls(server, bystander):
    client = RawClient(server.tls_port, tls=True)
    features = client.header()
    assert "<starttls" not in features and "PLAIN" in features
    assert isinstance(client.sock, ssl.SSLSocket)
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    expect_stream_error(client, "policy-violation")
    assert_alive(bystander)


# -- binding -----------------------------------------------------------------------------------


def bind(client: RawClient, resource: str) -> str:
    client.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                f"<resource>{resource}</resource></bind></iq>")
    return client.read_until("</iq>")


def authenticated(server, user: str = "alice") -> RawClient:
    client = tls_client(server)
    assert "<success" in plain_auth(client, user, "secret")
    client.header()
    return client


def test_invalid_resource_is_bad_request(server, bystander):
    client = authenticated(server)
    reply = bind(client, "r" * 1100)  # over the 1023-byte limit of RFC 7622
    assert stanza_error(reply) == "bad-request"
    assert "<jid>alice@localhost/raw</jid>" in bind(client, "raw")  # may try again
    assert_alive(client)
    assert_alive(bystander)


def test_too_many_resources_is_resource_constraint(make_server, caplog):
    srv = make_server(users={"alice": "secret"}, allow_plain=True,
                      limits=Limits(max_resources_per_account=1))
    first = RawClient(srv.port)
    first.login("alice", "secret", resource="one")
    second = authenticated(srv)
    with caplog.at_level(logging.INFO, logger="xmppd"):
        assert stanza_error(bind(second, "two")) == "resource-constraint"
    assert re.search(r"limit max_resources_per_account \(1\) reached for 127\.0\.0\.1:\d+: "
                     r"bind refused account=alice@localhost", caplog.text)
    # rebinding the same resource is a replacement, not one more
    assert "<jid>alice@localhost/one</jid>" in bind(second, "one")
    expect_stream_error(first, "conflict")
    assert_alive(second)


def test_stanza_after_auth_before_bind_is_not_authorized(server, bystander):
    client = authenticated(server)
    client.send("<message to='carol@localhost/bystander'><body>early</body></message>")
    expect_stream_error(client, "not-authorized")
    assert "early" not in ping(bystander, "p3")


# -- more stream errors -------------------------------------------------------------------------


def test_wrong_stream_namespace(server, bystander):
    client = RawClient(server.port)
    client.send(STREAM_HEADER.format(to="localhost").replace("jabber:client", "jabber:server"))
    expect_stream_error(client, "invalid-namespace")
    assert_alive(bystander)


def test_unsupported_version(server, bystander):
    client = RawClient(server.port)
    client.send(STREAM_HEADER.format(to="localhost").replace("version='1.0'", "version='2.0'"))
    expect_stream_error(client, "unsupported-version")
    assert_alive(bystander)


def test_iq_error_without_id_is_not_answered(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret")
    client.send("<iq type='error' to='localhost'><error type='cancel'>"
                "<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    assert "type='error'" not in ping(client, "after").replace('"', "'")


def test_abrupt_disconnect_unbinds_the_session(server, bystander):
    client = RawClient(server.port)
    client.login("alice", "secret", resource="flaky")
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    # A ping sent before the server noticed is delivered into the dead stream and never
    # answered; once it has noticed, the ping bounces.
    deadline = time.monotonic() + 5
    for attempt in range(1000):
        bystander.send(f"<iq type='get' id='gone{attempt}' to='alice@localhost/flaky'>"
                       "<ping xmlns='urn:xmpp:ping'/></iq>")
        try:
            reply = bystander.read_until(rf"id=['\"]gone{attempt}['\"].*?</iq>", timeout=0.3)
        except TimeoutError:
            assert time.monotonic() < deadline, "the closed session stayed bound"
            continue
        assert stanza_error(reply) == "service-unavailable"
        break
