"""The message archive across ``xmppd run --workers 2``: both workers append to one
archive, and a user's preferences, set on one worker, decide on the other (the recipient's
copy is archived by the sender's worker) from the moment the client has the result."""

from __future__ import annotations

import re

import pytest
from test_workers import MODULES, Cluster, available

MAM = "urn:xmpp:mam:2"


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, MODULES + ["mam"])
    try:
        yield c
    finally:
        assert c.stop() == 0, c.logged()


def archived(client, ident: str) -> list[str]:
    """The bodies in ``client``'s own archive, oldest first."""
    client.send(f"<iq type='set' id='{ident}'><query xmlns='{MAM}' queryid='{ident}'/></iq>")
    text = client.read_until(rf"<iq[^>]*id=.{ident}.*?</iq>|<iq[^>]*id=.{ident}.[^>]*/>")
    assert "<fin" in text, text
    return re.findall(r"<body>(.*?)</body>", text)


def test_archive_and_preferences_across_workers(cluster):
    alice = cluster.client("alice", 0, "a0")
    bob = cluster.client("bob", 1, "b1")
    available(alice)
    available(bob)
    alice.send("<message to='bob@localhost/b1' type='chat' id='m1'><body>one</body></message>")
    assert "one" in bob.read_until("</message>")  # worker 0 now caches bob's preferences

    bob.send(f"<iq type='set' id='p1'><prefs xmlns='{MAM}' default='never'/></iq>")
    assert "default='never'" in bob.read_until(r"<iq[^>]*id=.p1.*?</iq>").replace('"', "'")
    alice.send("<message to='bob@localhost/b1' type='chat' id='m2'><body>two</body></message>")
    assert "two" in bob.read_until("</message>")

    assert archived(bob, "q1") == ["one"]  # worker 0 obeyed bob's new preference at once
    assert archived(alice, "q2") == ["one", "two"]  # hers still say always
