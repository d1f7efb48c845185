"""Cached stored data across ``xmppd run --workers 2``: a change written by one worker is
in force on the other when the writer answers (``ModuleAPI.changed``): block lists (their
pushes and their filters on every resource), vCard photo hashes, the message of the day."""

from __future__ import annotations

import base64
import hashlib

import pytest
from test_workers import MODULES, Cluster, available

ADMIN = "http://jabber.org/protocol/admin#"
PHOTO = b"\x89PNG not really an image"


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, MODULES + ["blocking", "vcard", "adhoc", "admin_commands"],
                extra='admins = ["alice@localhost"]\n')
    try:
        yield c
    finally:
        assert c.stop() == 0, c.logged()


def test_block_lists_vcards_and_motd_across_workers(cluster):
    a0 = cluster.client("alice", 0, "a0")
    a1 = cluster.client("alice", 1, "a1")
    bob = cluster.client("bob", 1, "b1")
    dave = cluster.client("dave", 1, "d1")
    available(dave)  # worker 1 caches "no message of the day"
    for c in (a0, a1):
        c.send("<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        c.read_until("<iq[^>]*bl")
    available(a1)  # worker 1 caches alice's photo hash: none yet

    # alice blocks bob on worker 0: the push reaches a1 on worker 1, and bob (worker 1)
    # is refused at both resources once the block's result came back
    a0.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>"
            "<item jid='bob@localhost'/></block></iq>")
    a0.read_until(r"<iq[^>]*id=.b1.")
    assert "bob@localhost" in a1.read_until("</block>")
    for to, ident in (("alice@localhost/a1", "m1"), ("alice@localhost/a0", "m2")):
        bob.send(f"<message to='{to}' type='chat' id='{ident}'><body>hi</body></message>")
        assert "service-unavailable" in bob.read_until(f"<message[^>]*{ident}.*?</message>")
    bob.send("<iq to='alice@localhost/a1' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert "service-unavailable" in bob.read_until(r"<iq[^>]*p1.*?</iq>")
    # unblocked from worker 1: worker 0 lets bob through again
    a1.send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>")
    a1.read_until(r"<iq[^>]*id=.u1.")
    a0.read_until("<unblock")
    bob.send("<message to='alice@localhost/a0' type='chat' id='m3'><body>back</body></message>")
    assert "back" in a0.read_until("</message>")
    assert "hi" not in a0.seen + a1.seen

    # a vCard with a photo set on worker 0: worker 1 stamps the new hash
    photo = base64.b64encode(PHOTO).decode()
    a0.send(f"<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>"
            f"<BINVAL>{photo}</BINVAL></PHOTO></vCard></iq>")
    a0.read_until(r"<iq[^>]*id=.v1.")
    a1.send("<presence><status>again</status></presence>")
    echo = a1.read_until(r"<presence[^>]*from=.alice@localhost/a1.*?</presence>")
    assert hashlib.sha1(PHOTO).hexdigest() in echo

    # the message of the day set on worker 0 greets a login on worker 1
    a0.send(f"<iq type='set' to='localhost' id='c1'><command xmlns='http://jabber.org/protocol/"
            f"commands' node='{ADMIN}set-motd' action='execute'><x xmlns='jabber:x:data' "
            "type='submit'><field var='motd'><value>Welcome</value></field></x></command></iq>")
    assert "completed" in a0.read_until(r"<iq[^>]*id=.c1.*?</iq>")
    carol = cluster.client("carol", 1, "c1")
    available(carol)
    assert "Welcome" in carol.read_until("</message>")
