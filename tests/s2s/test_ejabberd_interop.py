"""Federation with ejabberd 23.01 (Debian's ``ejabberd``), driven by slixmpp clients.

One ejabberd node serves the module: ``ejabberd.example`` is reached by dialback (xmppd has
no CA for it) and ``pki.ejabberd.example`` by SASL EXTERNAL (xmppd and ejabberd trust the
same test CA).  xmppd routes each to ejabberd's s2s port with a static route; ejabberd finds
xmppd through ``_xmpp-server._tcp.xmppd.example`` in our :class:`~prosody.DNSServer` (see
:class:`~prosody.Ejabberd` for how).  ejabberd ignores unprefixed dialback elements, so the
dialback test is what proves the ``<db:result>`` / ``<db:verify>`` prefix.  Skipped when
ejabberd is not installed.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from prosody import EJABBERDCTL, CertAuthority, DNSServer, Ejabberd
from test_prosody_interop import TIMEOUT, XMPPD, Client, _converse

from xmppd.core.config import Certificate, Listener

pytestmark = pytest.mark.skipif(
    EJABBERDCTL is None, reason="ejabberd is not installed (apt-get install ejabberd)")

DIALBACK_DOMAIN, EXTERNAL_DOMAIN = "ejabberd.example", "pki.ejabberd.example"


@pytest.fixture(scope="module")
def ejabberd(tmp_path_factory):
    """(ejabberd, DNS server, CA), shared by the module: ejabberd takes seconds to start."""
    ca = CertAuthority(tmp_path_factory.mktemp("ejabberd-ca"))
    with DNSServer({}) as dns:
        node = Ejabberd([DIALBACK_DOMAIN, EXTERNAL_DOMAIN], dns.address,
                        [ca.issue(DIALBACK_DOMAIN), ca.issue(EXTERNAL_DOMAIN)], ca_file=ca.path)
        try:
            node.start()
            for domain in node.domains:
                node.register("romeo", "secret", domain)
            yield node, dns, ca
        finally:
            node.stop()


def _xmppd(make_server, ejabberd, peer: str, pki: bool):
    node, dns, ca = ejabberd
    overrides = {}
    if pki:
        cert, key = ca.issue(XMPPD)
        overrides = {"certificates": {XMPPD: Certificate(cert, key)}, "s2s_ca_file": ca.path,
                     "s2s_require_valid_certificates": (peer,)}
    srv = make_server(users={"juliet": "secret"}, domains=(XMPPD,), allow_plain=True,
                      s2s=(Listener("127.0.0.1", 0),),
                      s2s_routes={peer: ("127.0.0.1", node.s2s_port)}, **overrides)
    port = srv.server.addresses["s2s"][0][1]
    dns.add(f"_xmpp-server._tcp.{XMPPD}", "SRV", f"0 0 {port} {node.srv_target}")
    return srv


async def _pings(srv, node: Ejabberd, peer: str) -> None:
    """XEP-0199 pings both ways: each client pings the other server and the other client."""
    juliet = Client(f"juliet@{XMPPD}/ping", "secret")
    romeo = Client(f"romeo@{peer}/ping", "secret")
    for client in (juliet, romeo):
        client.xmpp.register_plugin("xep_0199", {"keepalive": False})
    await juliet.start(srv.port)
    await romeo.start(node.c2s_port)
    try:
        for client, targets in ((juliet, (peer, f"romeo@{peer}/ping")),
                                (romeo, (XMPPD, f"juliet@{XMPPD}/ping"))):
            for target in targets:
                reply = await client.xmpp.plugin["xep_0199"].send_ping(target, timeout=TIMEOUT)
                assert reply["type"] == "result" and reply["from"] == target, reply
    finally:
        await juliet.close()
        await romeo.close()


def _run(srv, node: Ejabberd, peer: str) -> str:
    """Converse and ping; ejabberd's log of this conversation."""
    mark = node.log_size()

    async def both():
        await _converse(srv, node, peer)
        await _pings(srv, node, peer)

    try:
        asyncio.run(asyncio.wait_for(both(), 60))
    except BaseException:
        print(node.log(mark)[-12000:])
        raise
    return node.log(mark)


def _s2s_auth(log: str) -> tuple[set[str], set[str]]:
    """ejabberd's record of how each direction authenticated: (inbound, outbound) methods."""
    inbound = set(re.findall(r"Accepted inbound s2s (\S+) authentication", log))
    outbound = set(re.findall(r"Accepted outbound s2s (\S+) authentication", log))
    return inbound, outbound


def test_messages_subscriptions_probes_and_iqs_with_ejabberd_over_dialback(make_server, ejabberd):
    srv = _xmppd(make_server, ejabberd, DIALBACK_DOMAIN, pki=False)
    log = _run(srv, ejabberd[0], DIALBACK_DOMAIN)
    assert _s2s_auth(log) == ({"dialback"}, {"dialback"}), _s2s_auth(log)


def test_messages_subscriptions_probes_and_iqs_with_ejabberd_over_sasl_external(
        make_server, ejabberd):
    srv = _xmppd(make_server, ejabberd, EXTERNAL_DOMAIN, pki=True)
    log = _run(srv, ejabberd[0], EXTERNAL_DOMAIN)
    assert _s2s_auth(log) == ({"EXTERNAL"}, {"EXTERNAL"}), _s2s_auth(log)
