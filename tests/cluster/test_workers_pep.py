"""PEP across ``xmppd run --workers 2``: each account's nodes belong to one worker
(crc32 of its bare JID: alice's to worker 1, bob's to worker 0); alice on worker 0 and bob
on worker 1 publish (their IQs, and alice's vCard with its avatar, are handed to the owner
worker), every +notify resource hears it wherever it is, and a late login on the other
worker gets the last item."""

from __future__ import annotations

import base64
import hashlib
import re
import zlib

import pytest
from test_workers import MODULES, Cluster, subscribe

CAPS = "http://jabber.org/protocol/caps"
DISCO = "http://jabber.org/protocol/disco#info"
TUNE = "http://jabber.org/protocol/tune"
AVATAR = "urn:xmpp:avatar:metadata"
NOTIFY = [TUNE + "+notify", AVATAR + "+notify"]


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, MODULES + ["pep", "vcard"])
    try:
        yield c
    finally:
        assert c.stop() == 0, c.logged()


def caps_presence(client, answer: bool) -> None:
    """Available presence showing caps with ``NOTIFY``; ``answer`` the server's disco#info
    query (a worker that has not learnt this ver yet asks)."""
    s = "client/pc//<" + "".join(f + "<" for f in sorted(NOTIFY))
    ver = base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()
    client.send(f"<presence><c xmlns='{CAPS}' hash='sha-1' node='http://t' ver='{ver}'/>"
                "</presence>")
    if answer:
        got = client.read_until(rf"<iq[^>]*>\s*<query xmlns=.{re.escape(DISCO)}.[^>]*/>\s*</iq>")
        head = got[got.rindex("<iq"):]
        ident, frm = (re.search(rf"{a}=.([^'\"]*)", head).group(1) for a in ("id", "from"))
        features = "".join(f"<feature var='{f}'/>" for f in NOTIFY)
        client.send(f"<iq type='result' id='{ident}' to='{frm}'><query xmlns='{DISCO}' "
                    f"node='http://t#{ver}'><identity category='client' type='pc'/>{features}"
                    "</query></iq>")


def tune(client, artist: str, ident: str) -> None:
    client.send(f"<iq type='set' id='{ident}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                f"<publish node='{TUNE}'><item><tune xmlns='{TUNE}'><artist>{artist}</artist>"
                "</tune></item></publish></pubsub></iq>")
    assert "result" in client.read_until(rf"<iq[^>]*id=.{ident}.[^>]*>")


def test_pep_owned_per_account_across_workers(cluster):
    assert [zlib.crc32(f"{u}@localhost".encode()) % 2 for u in ("alice", "bob")] == [1, 0]
    alice = cluster.client("alice", 0, "a0")
    bob = cluster.client("bob", 1, "b1")
    for c in (alice, bob):
        c.send("<presence/>")
    subscribe(cluster, alice, "alice", bob, "bob")
    caps_presence(alice, answer=True)  # worker 0 learns the ver, and tells worker 1
    caps_presence(bob, answer=True)  # worker 1 had not asked: it learns it itself

    # alice publishes from worker 0 on her nodes (worker 1's): bob there, her a0 here hear it
    tune(alice, "Alpha", "t1")
    for c in (alice, bob):
        assert 'from="alice@localhost"' in c.read_until("<message[^>]*>.*?Alpha.*?</message>")
    # and the other way round: bob's nodes are on worker 0
    tune(bob, "Beta", "t2")
    for c in (alice, bob):
        assert 'from="bob@localhost"' in c.read_until("<message[^>]*>.*?Beta.*?</message>")

    # a vCard photo set on worker 0 is published as alice's avatar by worker 1
    photo = base64.b64encode(b"\x89PNG not really").decode()
    alice.send(f"<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>"
               f"<BINVAL>{photo}</BINVAL></PHOTO></vCard></iq>")
    assert "result" in alice.read_until(r"<iq[^>]*id=.v1.[^>]*>")
    sha1 = hashlib.sha1(b"\x89PNG not really").hexdigest()
    assert sha1 in bob.read_until(f"<message[^>]*>.*?{AVATAR}.*?</message>")

    # bob logs in on worker 0 (the ver is known there): worker 1 sends alice's last items
    late = cluster.client("bob", 0, "b0")
    caps_presence(late, answer=False)
    for what in ("Alpha", "Beta", sha1):  # in any order: both workers send some
        if what not in late.seen:
            late.read_until(what)

    # carol subscribes to an open node of alice's; her account deleted (worker 0 runs
    # it): worker 1, which holds alice's nodes, forgets the subscription first
    pubsub = "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
    alice.send(f"<iq type='set' id='o1'>{pubsub}<publish node='urn:x:open'><item><x xmlns='urn:x'/>"
               "</item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field "
               "var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value>"
               "</field><field var='pubsub#access_model'><value>open</value></field></x>"
               "</publish-options></pubsub></iq>")
    assert "result" in alice.read_until(r"<iq[^>]*id=.o1.[^>]*>")
    carol = cluster.client("carol", 0, "c0")
    carol.send(f"<iq type='set' id='s1' to='alice@localhost'>{pubsub}<subscribe node='urn:x:open' "
               "jid='carol@localhost/c0'/></pubsub></iq>")
    assert "subscribed" in carol.read_until(r"<iq[^>]*id=.s1.*?</iq>")
    owner = "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>"
    query = f"<iq type='get' id='{{}}'>{owner}<subscriptions node='urn:x:open'/></pubsub></iq>"
    alice.send(query.format("q1"))
    assert "carol@localhost" in alice.read_until(r"<iq[^>]*id=.q1.*?</iq>")
    cluster.control("deluser", jid="carol@localhost")
    alice.send(query.format("q2"))
    assert "carol@localhost" not in alice.read_until(r"<iq[^>]*id=.q2.*?</iq>")
