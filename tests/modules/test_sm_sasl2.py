"""XEP-0198 §10 over a real socket: stream management inside XEP-0388 SASL2 and XEP-0386
Bind2 — resumption in the ``<authenticate/>`` itself (``<resumed/>`` in the ``<success/>``,
no features after it), a refused resumption that still binds (``<failed/>`` beside
``<bound/>``), and the features that follow a SASL2 success without a stream restart."""

from __future__ import annotations

import base64
import re

from support import RawClient
from test_sm import SM, bodies, detached, ping, say, sm_server, wait_for

SASL2 = "urn:xmpp:sasl:2"
BIND2 = "urn:xmpp:bind:0"
AGENT = "<user-agent id='9c5d1d4e-2f3b-4c5e-8a0a-2d1f0e6b7a11'><software>t</software></user-agent>"


def sasl2_login(server, user: str, inline: str, bind: str | None = "<tag>phone</tag>",
                ) -> tuple[RawClient, str]:
    """STARTTLS, then SASL2 PLAIN with ``inline`` and an optional Bind2 ``<bind/>``; the
    client and everything up to and including the ``<success/>`` or ``<failure/>``."""
    client = RawClient(server.port)
    client.header()
    client.starttls()
    features = client.header()
    assert re.search("<sm xmlns=.urn:xmpp:sm:3./>", features)  # inline resumption offered
    initial = base64.b64encode(f"\0{user}\0secret".encode()).decode()
    bind_xml = "" if bind is None else f"<bind xmlns='{BIND2}'>{bind}</bind>"
    client.send(f"<authenticate xmlns='{SASL2}' mechanism='PLAIN'>"
                f"<initial-response>{initial}</initial-response>{AGENT}{inline}{bind_xml}"
                f"</authenticate>")
    return client, client.read_until("</success>|</failure>")


def bind2_with_sm(server, user: str = "bob") -> tuple[RawClient, str, str]:
    """A Bind2 login enabling resumable stream management: (client, full JID, previd)."""
    client, out = sasl2_login(
        server, user, "", f"<tag>phone</tag><enable xmlns='{SM}' resume='true'/>")
    jid = re.search(r"<authorization-identifier>([^<]+)<", out).group(1)
    previd = re.search(r"<enabled xmlns='urn:xmpp:sm:3' id='([^']+)'", out).group(1)
    features = client.read_until("</stream:features>|<stream:features/>")
    # the features of a bound stream with SM on: neither bind nor sm offered again (a
    # client seeing sm would try to resume or enable on this stream, and be refused)
    assert "xmpp-bind" not in features and SM not in features
    return client, jid, previd


def test_resume_inline_in_sasl2_resends_the_unacknowledged(make_server):
    server = sm_server(make_server)
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    bob, jid, previd = bind2_with_sm(server)
    say(alice, jid, "m1", "m2")
    bob.read_until("m2</body></message>")
    bob.close()
    wait_for(lambda: len(detached(server)) == 1)
    say(alice, jid, "m3")
    ping(alice)
    # one round trip: authenticate + resume; the <bind/> beside it is ignored
    bob, out = sasl2_login(server, "bob", f"<resume xmlns='{SM}' previd='{previd}' h='1'/>",
                           "<tag>other</tag>")
    assert f"<resumed xmlns='{SM}' previd='{previd}' h='0'/>" in out
    assert f"<authorization-identifier>{jid}</authorization-identifier>" in out
    assert "<bound" not in out
    got = ping(bob, "after")
    assert bodies(got) == ["m2", "m3"]  # m1 was acknowledged by h='1'
    assert "<stream:features" not in got  # resumed: the stream carries on, no features
    assert detached(server) == []
    say(alice, jid, "m4")
    assert bodies(bob.read_until("m4</body></message>")) == ["m4"]


def test_refused_inline_resume_still_binds_with_failed_in_success(make_server):
    server = sm_server(make_server)
    client, out = sasl2_login(server, "bob",
                              f"<resume xmlns='{SM}' previd='no-such-session' h='0'/>")
    assert "<success" in out
    assert re.search(f"<failed xmlns='{SM}'><item-not-found [^>]*/></failed>", out), out
    jid = re.search(r"<authorization-identifier>([^<]+)<", out).group(1)
    assert jid.startswith("bob@localhost/phone.") and f"<bound xmlns='{BIND2}'" in out
    client.read_until("</stream:features>|<stream:features/>")
    assert 'type="result"' in ping(client)


def test_inline_resume_of_another_accounts_session_is_refused(make_server):
    server = sm_server(make_server)
    bob, _jid, previd = bind2_with_sm(server)
    bob.close()
    wait_for(lambda: len(detached(server)) == 1)
    alice, out = sasl2_login(server, "alice", f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    assert "<item-not-found" in out and "<resumed" not in out and "bob" not in out
    assert "alice@localhost/phone." in out  # alice got a session of her own
    assert len(detached(server)) == 1  # bob's is untouched


def test_sasl2_without_bind_then_legacy_bind_on_the_same_stream(make_server):
    server = sm_server(make_server)
    client, out = sasl2_login(server, "bob", "", bind=None)
    assert "<authorization-identifier>bob@localhost</authorization-identifier>" in out
    features = client.read_until("</stream:features>")
    assert "urn:ietf:params:xml:ns:xmpp-bind" in features and SM in features
    # no stream restart: bind at once
    client.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>legacy</resource></bind></iq>")
    assert "bob@localhost/legacy" in client.read_until("</iq>")
    assert 'type="result"' in ping(client)


def test_carbons_enabled_inline_in_bind2_copy_to_that_session(make_server):
    server = sm_server(make_server)
    phone, out = sasl2_login(server, "bob", "",
                             "<tag>phone</tag><enable xmlns='urn:xmpp:carbons:2'/>")
    phone.read_until("</stream:features>|<stream:features/>")
    desktop = RawClient(server.port)
    desktop.login("bob", "secret", resource="desktop")
    alice = RawClient(server.port)
    alice.login("alice", "secret", resource="r")
    say(alice, "bob@localhost/desktop", "to the desktop")
    assert "to the desktop" in desktop.read_until("</message>")
    copy = phone.read_until("</message></forwarded></received></message>")
    assert "<received xmlns=\"urn:xmpp:carbons:2\"" in copy and "to the desktop" in copy
