"""Federation with Prosody (Debian's ``prosody`` package), driven by slixmpp clients.

xmppd serves ``xmppd.example`` and routes ``prosody.example`` to Prosody's s2s port with a
static route.  Prosody finds xmppd through DNS: its libunbound resolver forwards to our
:class:`~prosody.DNSServer`, which publishes ``_xmpp-server._tcp.xmppd.example`` pointing at
xmppd's ephemeral s2s port.  Skipped when ``prosody`` is not installed.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from prosody import PROSODY, PROSODYCTL, CertAuthority, DNSServer, Prosody
from slixmpp import ClientXMPP

from xmppd.core.config import Certificate, Listener
from xmppd.transport.tls import generate_self_signed

pytestmark = pytest.mark.skipif(
    PROSODY is None or PROSODYCTL is None,
    reason="prosody is not installed (apt-get install prosody lua-unbound)",
)

XMPPD, PROSODY_DOMAIN = "xmppd.example", "prosody.example"
TIMEOUT = 10


class Client:
    """A slixmpp client that auto-accepts subscriptions, with queues of what it receives."""

    def __init__(self, jid: str, password: str) -> None:
        self.xmpp = xmpp = ClientXMPP(jid, password)
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        xmpp.enable_direct_tls = False
        xmpp.auto_authorize = True
        xmpp.auto_subscribe = True
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        xmpp.add_event_handler("message", self.messages.put_nowait)
        xmpp.add_event_handler("presence", self.presences.put_nowait)

    async def start(self, port: int) -> None:
        started = asyncio.get_running_loop().create_future()

        async def on_start(_event):
            await self.xmpp.get_roster()
            self.xmpp.send_presence()
            if not started.done():
                started.set_result(True)

        def fail(reason):
            if not started.done():
                started.set_exception(AssertionError(f"{self.xmpp.boundjid}: {reason}"))

        self.xmpp.add_event_handler("session_start", on_start)
        self.xmpp.add_event_handler("failed_all_auth", lambda _: fail("auth failed"))
        self.xmpp.connect("127.0.0.1", port)
        await asyncio.wait_for(started, TIMEOUT)

    async def message(self, predicate=lambda m: True):
        while True:
            msg = await asyncio.wait_for(self.messages.get(), TIMEOUT)
            if predicate(msg):
                return msg

    async def presence(self, sender: str, ptype: str):
        """The next presence from ``sender`` (bare JID) of ``ptype`` ("available", ...)."""
        while True:
            pres = await asyncio.wait_for(self.presences.get(), TIMEOUT)
            if pres["from"].bare == sender and pres["type"] == ptype:
                return pres

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.xmpp.disconnect(), TIMEOUT)
        except TimeoutError:
            self.xmpp.abort()


def _federation(make_server, tmp_path: Path, ca: CertAuthority | None, bidi: bool = False):
    """xmppd and Prosody, each able to reach the other; yields (xmppd thread, prosody)."""
    if ca is not None:
        xcert, xkey = ca.issue(XMPPD)
        pcert, pkey = ca.issue(PROSODY_DOMAIN)
    else:
        pcert, pkey = tmp_path / "p.crt", tmp_path / "p.key"
        generate_self_signed(PROSODY_DOMAIN, pcert, pkey)
    dns = DNSServer({(XMPPD, "A"): ["127.0.0.1"]})
    dns.__enter__()
    prosody = Prosody(PROSODY_DOMAIN, dns.address, pcert, pkey,
                      ca_file=ca.path if ca else None, secure_auth=ca is not None, bidi=bidi)
    try:
        prosody.register("romeo", "secret")
        prosody.start()
        overrides = {}
        if ca is not None:
            overrides = {"certificates": {XMPPD: Certificate(xcert, xkey)}, "s2s_ca_file": ca.path,
                         "s2s_require_valid_certificates": (PROSODY_DOMAIN,)}
        srv = make_server(users={"juliet": "secret"}, domains=(XMPPD,), allow_plain=True,
                          s2s=(Listener("127.0.0.1", 0),),
                          s2s_routes={PROSODY_DOMAIN: ("127.0.0.1", prosody.s2s_port)},
                          **overrides)
        port = srv.server.addresses["s2s"][0][1]
        dns.add(f"_xmpp-server._tcp.{XMPPD}", "SRV", f"0 0 {port} {XMPPD}.")
        return srv, prosody, dns
    except BaseException:
        prosody.stop()
        dns.__exit__()
        raise


@pytest.fixture
def federation(make_server, tmp_path):
    srv, prosody, dns = _federation(make_server, tmp_path, None)
    yield srv, prosody
    prosody.stop()
    dns.__exit__()


@pytest.fixture
def pki_federation(make_server, tmp_path):
    srv, prosody, dns = _federation(make_server, tmp_path, CertAuthority(tmp_path / "ca"))
    yield srv, prosody
    prosody.stop()
    dns.__exit__()


async def _converse(srv, peer, peer_domain: str = PROSODY_DOMAIN) -> None:
    """Messages, a subscription both ways, presence, probes and IQs both ways between
    juliet (xmppd) and romeo (``peer``, which serves ``peer_domain``)."""
    juliet = Client(f"juliet@{XMPPD}/balcony", "secret")
    romeo = Client(f"romeo@{peer_domain}/garden", "secret")
    await juliet.start(srv.port)
    await romeo.start(peer.c2s_port)
    try:
        # messages both ways (the first one waits for the s2s streams to come up)
        juliet.xmpp.send_message(mto=f"romeo@{peer_domain}/garden", mbody="wherefore", mtype="chat")
        msg = await romeo.message(lambda m: m["body"] == "wherefore")
        assert msg["from"] == f"juliet@{XMPPD}/balcony"
        romeo.xmpp.send_message(mto=f"juliet@{XMPPD}/balcony", mbody="here", mtype="chat")
        msg = await juliet.message(lambda m: m["body"] == "here")
        assert msg["from"] == f"romeo@{peer_domain}/garden"
        # juliet subscribes; romeo auto-approves and subscribes back; presence both ways
        juliet.xmpp.send_presence(pto=f"romeo@{peer_domain}", ptype="subscribe")
        await juliet.presence(f"romeo@{peer_domain}", "subscribed")
        await juliet.presence(f"romeo@{peer_domain}", "available")
        await romeo.presence(f"juliet@{XMPPD}", "available")
        romeo.xmpp.send_presence(pshow="away")
        pres = await juliet.presence(f"romeo@{peer_domain}", "away")
        assert pres["from"] == f"romeo@{peer_domain}/garden"
        # IQs both ways: disco#info of the other server
        for client, server in ((juliet, peer_domain), (romeo, XMPPD)):
            iq = client.xmpp.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info",
                                         ito=server)
            reply = await iq.send(timeout=TIMEOUT)
            assert reply["type"] == "result" and reply["from"] == server
        # probes: a new resource on each side learns the contact's presence from the other server
        for jid, port, contact in ((f"juliet@{XMPPD}/nurse", srv.port, f"romeo@{peer_domain}"),
                                   (f"romeo@{peer_domain}/orchard", peer.c2s_port, f"juliet@{XMPPD}")):
            extra = Client(jid, "secret")
            await extra.start(port)
            try:
                await extra.presence(contact, "available" if contact.startswith("juliet") else "away")
            finally:
                await extra.close()
    finally:
        await juliet.close()
        await romeo.close()


def test_messages_and_subscriptions_with_prosody_over_dialback(federation):
    srv, prosody = federation
    try:
        asyncio.run(asyncio.wait_for(_converse(srv, prosody), 40))
    except BaseException:
        print(prosody.log()[-6000:])
        raise
    log = prosody.log()
    assert "sent dialback key on outgoing s2s stream" in log  # Prosody -> xmppd
    assert "<db:result" in log and "Accepting SASL EXTERNAL" not in log  # xmppd -> Prosody


def test_messages_and_subscriptions_with_prosody_over_sasl_external(pki_federation):
    srv, prosody = pki_federation
    try:
        asyncio.run(asyncio.wait_for(_converse(srv, prosody), 40))
    except BaseException:
        print(prosody.log()[-6000:])
        raise
    log = prosody.log()
    assert f"Accepting SASL EXTERNAL identity from {XMPPD}" in log  # xmppd -> Prosody
    assert "mechanism='EXTERNAL'" in log  # Prosody -> xmppd
    assert "sent dialback key" not in log


@pytest.fixture
def bidi_federation(make_server, tmp_path):
    srv, prosody, dns = _federation(make_server, tmp_path, CertAuthority(tmp_path / "ca"), bidi=True)
    yield srv, prosody
    prosody.stop()
    dns.__exit__()


def test_bidirectional_stream_with_prosody(bidi_federation):
    """Prosody 0.12's mod_s2s_bidi (XEP-0288) against ours: whoever connects first, one
    connection carries both directions."""
    from xmppd.modules.s2s import manager_for
    from xmppd.s2s.inbound import S2SInStream

    srv, prosody = bidi_federation
    try:
        asyncio.run(asyncio.wait_for(_converse(srv, prosody), 40))
    except BaseException:
        print(prosody.log()[-6000:])
        raise
    manager = manager_for(srv.server)
    inbound = [s for s in srv.server.streams if isinstance(s, S2SInStream)]
    outbound = [link.stream for link in manager.links.values() if link.ready]
    # xmppd spoke first (juliet's message): our outbound stream is bidirectional, and
    # Prosody answered over it instead of connecting to us
    assert outbound and all(s.bidi for s in outbound)
    assert not inbound
    assert "Requesting bidirectional stream" not in prosody.log()  # Prosody never initiated
