"""The quiet ways across workers (``xmppd run --workers 2``, real processes over TCP): a
message to a session on the other worker skips ``message/outbound`` and ``message/full``
on the sender's worker when no module acts for it (the recipient's account marked quiet
there too: ``remote-bound``), and the receiving worker writes a stanza no
``stanza/inbound`` handler acts for to its recipient as the bytes that came.  What a module
must see still reaches it: carbons for a resource that enabled them after the account was
marked quiet, what CSI holds for an inactive client; and whatever way each stanza takes,
a sender's stanzas arrive once each and in order."""

from __future__ import annotations

import re

import pytest
from test_workers import online, running, subscribe

# the default-like set of the benchmark: with muc (its stanza/inbound hook on every worker)
MODULES = ["disco", "ping", "message", "roster", "presence", "offline", "carbons", "csi",
           "blocking", "muc", "sm", "keepalive", "private", "version"]


@pytest.fixture
def cluster(tmp_path):
    with running(tmp_path, MODULES) as c:
        yield c


def test_every_stanza_arrives_once_and_in_order_whatever_way_it_takes(cluster):
    alice = cluster.client("alice", 0, "a0")
    bob = cluster.client("bob", 1, "b1")
    forms = [
        "<body>plain {i}</body>",  # the quiet ways on both workers
        "<body>{i}</body><x xmlns='urn:example:x'/>",  # a payload no module asked for
        "<body>a=b &amp; {i}</body>",  # "=" and a reference: the element decides
        "<body>{i}</body><private xmlns='urn:xmpp:carbons:2'/>",  # carbons' payload
    ]
    count = 240
    batch = "".join(
        (f"<message to='bob@localhost/b1' type='chat' id='q{i}'"
         + (" xml:lang='en'" if i % 7 == 0 else "")  # not the plain form: parsed there
         + ">" + forms[i % len(forms)].format(i=i) + "</message>")
        for i in range(count))
    alice.send(batch)
    got = bob.read_until(rf"<message[^>]*id=.q{count - 1}.*?</message>", timeout=20)
    ids = re.findall(r"<message[^>]*\bid=.q(\d+)", got)
    assert [int(i) for i in ids] == list(range(count))
    assert "urn:example:x" in got and "a=b &amp; " in got
    assert "urn:xmpp:carbons:2" not in got  # <private/> taken out on the sender's worker
    assert "<message" not in bob.read_closed(0.3)  # nothing twice


def test_carbons_enabled_after_the_account_was_marked_quiet(cluster):
    alice = cluster.client("alice", 0, "a0")
    bob = cluster.client("bob", 1, "b1")
    alice.send("<message to='bob@localhost/b1' type='chat' id='m1'><body>first</body></message>")
    assert "first" in bob.read_until("</message>")
    # a second resource on worker 1 enables carbons: worker 0 hears it as a mirror, and
    # bob's account is no longer quiet there for carbons
    bob2 = cluster.client("bob", 1, "b2")
    bob2.send("<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    bob2.read_until(r"<iq[^>]*c1")
    for attempt in range(50):  # (the mirror crosses to worker 0 meanwhile)
        alice.send(f"<message to='bob@localhost/b1' type='chat' id='n{attempt}'>"
                   f"<body>second {attempt}</body></message>")
        assert f"second {attempt}" in bob.read_until("</message>")
        copy = bob2.read_closed(0.1)
        if "second" in copy:
            assert "urn:xmpp:carbons:2" in copy and "received" in copy
            break
    else:
        raise AssertionError("no carbon copy reached bob/b2")


def test_an_inactive_client_on_the_other_worker_still_gets_what_csi_holds_later(cluster):
    alice = cluster.client("alice", 0, "a0")
    bob = cluster.client("bob", 1, "b1")
    online(alice, bob)
    subscribe(cluster, alice, "alice", bob, "bob")
    bob.read_closed(0.3)
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>")
    bob.read_closed(0.2)
    alice.send("<message to='bob@localhost/b1' type='chat' id='s1'>"
               "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    alice.send("<presence><show>away</show></presence>")
    held = bob.read_closed(0.5)
    assert "composing" not in held and "away" not in held  # held on worker 1
    alice.send("<message to='bob@localhost/b1' type='chat' id='s2'><body>now</body></message>")
    got = bob.read_until(r"<message[^>]*id=.s2.*?</message>")
    assert got.index("composing") < got.index("away") < got.index(">now<"), got
