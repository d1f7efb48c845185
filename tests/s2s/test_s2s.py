"""Federation between two xmppd instances on loopback, and a raw peer for negative cases.

Server A serves ``a.example``, server B ``b.example``; both find each other through a
shared static route map, filled in once their ephemeral s2s ports are known.
"""

from __future__ import annotations

import re
import socket
import time

import pytest
from support import RawClient

from xmppd.core.config import Listener
from xmppd.s2s.dialback import dialback_key

S2S_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
    "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
    "from='{frm}' to='{to}' version='1.0'>"
)
DB = "xmlns:db='jabber:server:dialback'"


class RawPeer(RawClient):
    """A raw server-to-server peer (an attacker, or a minimal remote server)."""

    def s2s_header(self, frm: str, to: str) -> str:
        self.send(S2S_HEADER.format(frm=frm, to=to))
        return self.read_until(r"</stream:features>|<stream:error>.*?</stream:error>")

    def open_secure(self, frm: str, to: str) -> str:
        """Header, STARTTLS, header again; returns the stream id of the secure stream."""
        self.s2s_header(frm, to)
        self.starttls()
        features = self.s2s_header(frm, to)
        return re.search(r"<stream:stream[^>]* id=['\"]([^'\"]+)", features).group(1)


def s2s_listener() -> tuple[Listener, ...]:
    return (Listener("127.0.0.1", 0),)


@pytest.fixture
def pair(make_server):
    """Servers A (alice) and B (bob, carol), federated with each other."""
    routes: dict[str, tuple[str, int]] = {}

    def make(domain, users, **kw):
        return make_server(users=users, domains=(domain,), allow_plain=True, s2s=s2s_listener(),
                           s2s_routes=routes, **kw)

    a = make("a.example", {"alice": "secret"})
    b = make("b.example", {"bob": "secret", "carol": "secret"})
    routes["a.example"] = a.server.addresses["s2s"][0]
    routes["b.example"] = b.server.addresses["s2s"][0]
    return a, b, routes


def login(srv, user: str, domain: str) -> RawClient:
    client = RawClient(srv.port)
    client.login(user, "secret", domain=domain)
    return client


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_messages_flow_both_ways_in_order(pair):
    a, b, _ = pair
    alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
    for i in range(3):
        alice.send(f"<message to='bob@b.example/raw' type='chat' id='m{i}'><body>hi {i}</body></message>")
    got = bob.read_until(r"id=.m2.*?</message>")
    assert [int(n) for n in re.findall(r"<body>hi (\d)</body>", got)] == [0, 1, 2]
    assert "from=\"alice@a.example/raw\"" in got
    assert "jabber:server" not in got  # delivered in the client namespace
    bob.send("<message to='alice@a.example/raw' type='chat'><body>hello back</body></message>")
    got = alice.read_until("hello back.*?</message>")
    assert "from=\"bob@b.example/raw\"" in got
    alice.close()
    bob.close()


def test_remote_presence_reaches_the_router_with_remote_from(pair):
    a, b, _ = pair
    seen = []

    async def hook():
        # observe only (priority above the presence module, never stops the event)
        b.server.hooks.hook("presence/bare", lambda st, origin: seen.append((st, origin)), 100)

    b.call(hook())
    alice = login(a, "alice", "a.example")
    alice.send("<presence to='bob@b.example' type='subscribe'/>")
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    stanza, origin = seen[0]
    assert stanza.get("type") == "subscribe"
    assert stanza.get("from").startswith("alice@a.example")
    assert stanza.ns == "jabber:client"
    assert origin.jid is None and origin.remote is True
    alice.close()


def test_unreachable_domain_bounces_remote_server_not_found(pair):
    a, _b, routes = pair
    routes["nowhere.example"] = ("127.0.0.1", closed_port())
    alice = login(a, "alice", "a.example")
    alice.send("<message to='x@nowhere.example' id='u1'><body>?</body></message>")
    got = alice.read_until(r"</message>")
    assert "type=\"error\"" in got and "remote-server-not-found" in got and "u1" in got
    alice.close()


def test_silent_peer_bounces_remote_server_timeout(make_server):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        a = make_server(users={"alice": "secret"}, domains=("a.example",), allow_plain=True,
                        s2s_routes={"slow.example": silent.getsockname()}, s2s_timeout_s=0.3)
        alice = login(a, "alice", "a.example")
        alice.send("<message to='x@slow.example' id='t1'><body>?</body></message>")
        got = alice.read_until(r"</message>")
        assert "remote-server-timeout" in got and "t1" in got
        alice.close()


def test_forged_dialback_key_is_refused_and_gives_no_authorization(pair):
    a, b, _ = pair
    peer = RawPeer(b.server.addresses["s2s"][0][1])
    peer.open_secure("a.example", "b.example")
    peer.send(f"<db:result {DB} from='a.example' to='b.example'>{'0' * 64}</db:result>")
    assert "type=\"invalid\"" in peer.read_until(r"<(db:)?result[^>]*>")
    # unsolicited answers never authorize anything
    peer.send(f"<db:verify {DB} from='a.example' to='b.example' id='x' type='valid'/>")
    peer.send(f"<db:result {DB} from='a.example' to='b.example' type='valid'/>")
    peer.send("<message from='alice@a.example/x' to='bob@b.example/raw'><body>forged</body></message>")
    assert "invalid-from" in peer.read_closed()


def test_unverifiable_domain_gets_no_authorization(pair):
    _a, b, routes = pair
    routes["evil.example"] = ("127.0.0.1", closed_port())
    peer = RawPeer(b.server.addresses["s2s"][0][1])
    peer.open_secure("evil.example", "b.example")
    peer.send(f"<db:result {DB} from='evil.example' to='b.example'>{'1' * 64}</db:result>")
    assert "type=\"invalid\"" in peer.read_until(r"<(db:)?result[^>]*>")
    peer.send("<message from='x@evil.example' to='bob@b.example'><body>no</body></message>")
    assert "invalid-from" in peer.read_closed()


def test_authenticated_peer_spoofing_another_domain_is_cut_off(pair):
    a, b, _ = pair
    bob = login(b, "bob", "b.example")
    peer = RawPeer(b.server.addresses["s2s"][0][1])
    stream_id = peer.open_secure("a.example", "b.example")
    # The right key (as A would compute it), checked by B with A itself over dialback.
    key = dialback_key(a.server.secret, "b.example", "a.example", stream_id)
    peer.send(f"<db:result {DB} from='a.example' to='b.example'>{key}</db:result>")
    assert "type=\"valid\"" in peer.read_until(r"<(db:)?result[^>]*>")
    peer.send("<message from='alice@a.example/x' to='bob@b.example/raw'><body>ok</body></message>")
    assert "ok" in bob.read_until("</message>")
    peer.send("<message from='mallory@c.example' to='bob@b.example/raw'><body>spoof</body></message>")
    assert "invalid-from" in peer.read_closed()
    bob.close()


def test_dialback_verify_is_answered_from_the_secret(pair):
    a, _b, _ = pair
    peer = RawPeer(a.server.addresses["s2s"][0][1])
    peer.open_secure("b.example", "a.example")
    good = dialback_key(a.server.secret, "b.example", "a.example", "sid1")
    peer.send(f"<db:verify {DB} from='b.example' to='a.example' id='sid1'>{good}</db:verify>")
    peer.send(f"<db:verify {DB} from='b.example' to='a.example' id='sid2'>{good}</db:verify>")
    got = peer.read_until(r"id=.sid2[^>]*>")
    assert re.search(r"id=.sid1.[^>]*type=.valid", got) or re.search(r"type=.valid.[^>]*id=.sid1", got)
    assert "invalid" in got.split("sid1", 1)[1]


def test_plaintext_dialback_is_refused_when_tls_is_required(pair):
    _a, b, _ = pair
    peer = RawPeer(b.server.addresses["s2s"][0][1])
    features = peer.s2s_header("a.example", "b.example").split("<stream:features>")[1]
    assert "<required" in features and "dialback" not in features
    peer.send(f"<db:result {DB} from='a.example' to='b.example'>abc</db:result>")
    assert "policy-violation" in peer.read_closed()


def test_required_valid_certificate_refuses_self_signed_peer(make_server):
    routes: dict[str, tuple[str, int]] = {}
    a = make_server(users={"alice": "secret"}, domains=("a.example",), allow_plain=True,
                    s2s=s2s_listener(), s2s_routes=routes,
                    s2s_require_valid_certificates=("b.example",))
    b = make_server(domains=("b.example",), s2s=s2s_listener(), s2s_routes=routes)
    routes["a.example"] = a.server.addresses["s2s"][0]
    routes["b.example"] = b.server.addresses["s2s"][0]
    alice = login(a, "alice", "a.example")
    alice.send("<message to='bob@b.example' id='c1'><body>?</body></message>")
    got = alice.read_until("</message>")
    assert "remote-server-not-found" in got
    alice.close()


def test_idle_links_close_and_reopen(make_server):
    routes: dict[str, tuple[str, int]] = {}
    a = make_server(users={"alice": "secret"}, domains=("a.example",), allow_plain=True,
                    s2s=s2s_listener(), s2s_routes=routes, s2s_idle_timeout_s=0.2)
    b = make_server(users={"bob": "secret"}, domains=("b.example",), allow_plain=True,
                    s2s=s2s_listener(), s2s_routes=routes)
    routes["a.example"] = a.server.addresses["s2s"][0]
    routes["b.example"] = b.server.addresses["s2s"][0]
    from xmppd.modules.s2s import manager_for

    manager = manager_for(a.server)
    alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
    alice.send("<message to='bob@b.example/raw'><body>one</body></message>")
    bob.read_until("one")
    deadline = time.monotonic() + 5
    while manager.links and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not manager.links
    alice.send("<message to='bob@b.example/raw'><body>two</body></message>")
    bob.read_until("two")
    alice.close()
    bob.close()


def im_login(srv, user: str, domain: str) -> RawClient:
    """Log in, fetch the roster and send initial presence, as an IM client does."""
    client = login(srv, user, domain)
    client.send("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>")
    client.read_until(r"id=.roster1.*?</iq>|id=.roster1[^>]*/>")
    client.send("<presence/>")
    return client


def test_subscription_and_presence_across_servers(pair):
    a, b, _ = pair
    alice, bob = im_login(a, "alice", "a.example"), im_login(b, "bob", "b.example")
    alice.send("<presence to='bob@b.example' type='subscribe'/>")
    got = bob.read_until(r"<presence[^>]*type=.subscribe[^>]*>")
    assert "alice@a.example" in got
    bob.send("<presence to='alice@a.example' type='subscribed'/>")
    alice.read_until(r"<presence[^>]*type=.subscribed[^>]*>")
    # after 'subscribed', bob's current presence reaches alice
    got = alice.read_until(r"<presence(?![^>]*type=)[^>]*from=.bob@b.example/raw[^>]*>")
    assert "bob@b.example/raw" in got
    bob.send("<presence><show>away</show></presence>")
    assert "<show>away</show>" in alice.read_until("<show>away</show>")
    alice.close()
    bob.close()


def test_remote_iq_to_a_local_account_does_not_break_the_stream(pair):
    a, b, _ = pair
    alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
    alice.send("<iq type='get' id='d1' to='bob@b.example'>"
               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    alice.read_until(r"id=.d1.*?</iq>|id=.d1[^>]*/>")
    alice.send("<message to='bob@b.example/raw'><body>still there</body></message>")
    bob.read_until("still there")
    alice.close()
    bob.close()


def test_sasl_external_with_certificates_from_a_common_ca(make_server, tmp_path):
    from prosody import CertAuthority

    from xmppd.core.config import Certificate
    from xmppd.s2s.inbound import S2SInStream

    ca = CertAuthority(tmp_path / "ca")
    routes: dict[str, tuple[str, int]] = {}

    def make(domain, other, users):
        cert, key = ca.issue(domain)
        # dialback is refused for the other domain: only SASL EXTERNAL can succeed
        return make_server(users=users, domains=(domain,), allow_plain=True, s2s=s2s_listener(),
                           s2s_routes=routes, certificates={domain: Certificate(cert, key)},
                           s2s_ca_file=ca.path, s2s_require_valid_certificates=(other,))

    a = make("a.example", "b.example", {"alice": "secret"})
    b = make("b.example", "a.example", {"bob": "secret"})
    routes["a.example"] = a.server.addresses["s2s"][0]
    routes["b.example"] = b.server.addresses["s2s"][0]
    alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
    alice.send("<message to='bob@b.example/raw'><body>signed</body></message>")
    bob.read_until("signed")
    bob.send("<message to='alice@a.example/raw'><body>sealed</body></message>")
    alice.read_until("sealed")
    inbound = [s for s in b.server.streams if isinstance(s, S2SInStream)]
    assert inbound and all(s.sasl_done for s in inbound)
    alice.close()
    bob.close()


def test_direct_tls_found_through_srv(make_server):
    from prosody import DNSServer

    from xmppd.modules.s2s import manager_for
    from xmppd.s2s.resolver import Resolver

    routes: dict[str, tuple[str, int]] = {}
    a = make_server(users={"alice": "secret"}, domains=("a.example",), allow_plain=True,
                    s2s=s2s_listener(), s2s_routes=routes)
    b = make_server(users={"bob": "secret"}, domains=("b.example",), allow_plain=True,
                    s2s=(Listener("127.0.0.1", 0, direct_tls=True),), s2s_routes=routes)
    routes["a.example"] = a.server.addresses["s2s"][0]
    port = b.server.addresses["s2s-tls"][0][1]
    with DNSServer({("_xmpps-server._tcp.b.example", "SRV"): [f"0 0 {port} b.example."],
                    ("b.example", "A"): ["127.0.0.1"]}) as dns:
        manager_for(a.server).resolver = Resolver({}, nameservers=[dns.address], timeout=2)
        alice, bob = login(a, "alice", "a.example"), login(b, "bob", "b.example")
        alice.send("<message to='bob@b.example/raw'><body>direct</body></message>")
        bob.read_until("direct")
    from xmppd.s2s.inbound import S2SInStream

    inbound = [s for s in b.server.streams if isinstance(s, S2SInStream)]
    assert inbound and all(s.direct_tls and s.secure for s in inbound)
    alice.close()
    bob.close()


def test_inbound_stream_gets_a_new_id_after_starttls(pair):
    _a, b, _ = pair
    peer = RawPeer(b.server.addresses["s2s"][0][1])
    first = peer.s2s_header("a.example", "b.example")
    peer.starttls()
    second = peer.s2s_header("a.example", "b.example")
    ids = [re.search(r"<stream:stream[^>]* id=['\"]([^'\"]+)", t).group(1) for t in (first, second)]
    assert ids[0] != ids[1]
    peer.close()
