"""XEP-0054 vCards (+ XEP-0153, XEP-0398) and XEP-0049 private storage (+ the XEP-0048 ↔
XEP-0402 bookmarks bridge), over raw sockets."""

from __future__ import annotations

import base64
import hashlib
import time

from pubsub_support import PUBSUB, connect, iq, ping, publish, subscribe_both

VC = "vcard-temp"
PNG = base64.b64encode(b"\x89PNG fake image").decode()
SHA = hashlib.sha1(b"\x89PNG fake image").hexdigest()


def test_vcard_get_set_rules_photo_hash_and_avatar_conversion(server):
    alice = connect(server, "alice", "a")
    bob = connect(server, "bob", "b")
    subscribe_both(alice, bob, "alice", "bob")
    assert f'<vCard xmlns="{VC}"/>' in iq(alice, f"<vCard xmlns='{VC}'/>", "g0", "get")
    card = (f"<vCard xmlns='{VC}'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE>"
            f"<BINVAL>{PNG}</BINVAL></PHOTO></vCard>")
    assert 'type="result"' in iq(alice, card, "s1")
    assert "<FN>Alice</FN>" in iq(bob, f"<vCard xmlns='{VC}'/>", "g1", "get", to="alice@localhost")
    assert f'<vCard xmlns="{VC}"/>' in iq(alice, f"<vCard xmlns='{VC}'/>", "g2", "get",
                                           to="carol@localhost")
    assert "service-unavailable" in iq(alice, f"<vCard xmlns='{VC}'/>", "g3", "get",
                                       to="nobody@localhost")
    # a set for another account is refused, and nothing is stored for the sender
    assert "forbidden" in iq(bob, f"<vCard xmlns='{VC}'><FN>Evil</FN></vCard>", "s2",
                             to="alice@localhost")
    assert "Evil" not in iq(bob, f"<vCard xmlns='{VC}'/>", "g4", "get")
    assert "Evil" not in iq(bob, f"<vCard xmlns='{VC}'/>", "g5", "get", to="alice@localhost")
    # XEP-0153: the photo hash rides on alice's presence
    bob.send("<presence/>")
    ping(bob, "p0")
    alice.send("<presence/>")
    got = bob.read_until("from=.alice@localhost/a.*?</presence>")
    assert f"<photo>{SHA}</photo>" in got
    # XEP-0398: the vCard photo became an XEP-0084 avatar
    meta = iq(bob, f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:avatar:metadata'/></pubsub>",
              "m", "get", to="alice@localhost")
    assert f'id="{SHA}"' in meta
    data = iq(bob, f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:avatar:data'/></pubsub>",
              "d", "get", to="alice@localhost")
    assert PNG in data
    # ...and an avatar published on PEP becomes the vCard photo
    other = base64.b64encode(b"another").decode()
    sha2 = hashlib.sha1(b"another").hexdigest()
    publish(bob, "urn:xmpp:avatar:data", f"<data xmlns='urn:xmpp:avatar:data'>{other}</data>", sha2)
    publish(bob, "urn:xmpp:avatar:metadata", "<metadata xmlns='urn:xmpp:avatar:metadata'><info "
            f"id='{sha2}' bytes='7' type='image/png'/></metadata>", sha2, "m2")
    ping(bob)
    for attempt in range(50):  # the conversion runs after the publish is answered
        if other in iq(alice, f"<vCard xmlns='{VC}'/>", f"g6{attempt}", "get", to="bob@localhost"):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the XEP-0084 avatar did not reach the vCard")


def test_vcard_size_limit(make_server):
    srv = make_server(users={"alice": "secret"}, allow_plain=True,
                      modules_options={"vcard": {"max_size": 300}})
    alice = connect(srv, "alice")
    assert "not-acceptable" in iq(alice, f"<vCard xmlns='{VC}'><FN>{'x' * 400}</FN></vCard>", "s")


def test_private_storage_rules_and_bookmarks_bridge(server):
    alice = connect(server, "alice")
    prefs = "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'>dark</prefs></query>"
    assert 'type="result"' in iq(alice, prefs, "s1")
    got = iq(alice, "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query>",
             "g1", "get")
    assert ">dark</prefs>" in got
    empty = iq(alice, "<query xmlns='jabber:iq:private'><x xmlns='urn:none'/></query>", "g2", "get")
    assert '<x xmlns="urn:none"/>' in empty
    bob = connect(server, "bob")
    assert "forbidden" in iq(bob, "<query xmlns='jabber:iq:private'><prefs "
                                  "xmlns='urn:example:prefs'/></query>", "g3", "get",
                             to="alice@localhost")
    for bad in ("<x xmlns='jabber:client'/>", "<x xmlns='vcard-temp'/>", "",
                "<x xmlns='jabber:iq:private'/>"):
        assert "not-acceptable" in iq(alice, f"<query xmlns='jabber:iq:private'>{bad}</query>",
                                      "b", "set")
    # XEP-0048 bookmarks in private storage are the XEP-0402 PEP bookmarks
    legacy = ("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
              "<conference jid='room@muc.localhost' name='Room' autojoin='true'><nick>al</nick>"
              "</conference></storage></query>")
    assert 'type="result"' in iq(alice, legacy, "bm1")
    pep = iq(alice, f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:bookmarks:1'/></pubsub>",
             "bm2", "get")
    assert 'id="room@muc.localhost"' in pep and "<nick>al</nick>" in pep
    conf = "<conference xmlns='urn:xmpp:bookmarks:1' name='Other'/>"
    publish(alice, "urn:xmpp:bookmarks:1", conf, "other@muc.localhost", "bm3")
    got = iq(alice, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>",
             "bm4", "get")
    assert 'jid="room@muc.localhost"' in got and 'jid="other@muc.localhost"' in got
    iq(alice, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>", "bm5")
    pep = iq(alice, f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:bookmarks:1'/></pubsub>",
             "bm6", "get")
    assert "<item " not in pep
