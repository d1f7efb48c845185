"""MUC and PubSub across ``xmppd run --workers 2``: one worker owns each service, the
other hands it the stanzas; occupants and subscribers on both workers; the MUC owner worker
killed: the occupants elsewhere hear that their room is gone (status 332) and join again
once it is back."""

from __future__ import annotations

import os
import signal
import zlib

import pytest
from test_workers import MODULES, Cluster, available

ROOM = "lobby@conference.localhost"
PUBSUB = "pubsub.localhost"


def owner(module: str) -> int:
    """The worker that owns ``module``'s services (ModuleAPI.owner_worker)."""
    return zlib.crc32(module.encode()) % 2


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, MODULES + ["muc", "pubsub"])
    try:
        yield c
    finally:
        assert c.stop() == 0, c.logged()


def join(client, nick: str) -> str:
    client.send(f"<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/>"
                "</presence>")
    return client.read_until(f"<presence[^>]*from=.{ROOM}/{nick}.*?</presence>")


def test_muc_and_pubsub_owned_by_one_worker(cluster):
    muc_owner = owner("muc")
    there = cluster.client("bob", muc_owner, "b")  # on the worker that owns the rooms
    here = cluster.client("alice", 1 - muc_owner, "a")  # on the other one
    for c in (here, there):
        available(c)
    assert 'code="110"' in join(there, "bob")  # creates the room (an instant room: no form)
    there.send(f"<iq type='set' to='{ROOM}' id='cfg'><query xmlns='http://jabber.org/"
               "protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>")
    there.read_until(r"<iq[^>]*cfg")
    assert 'code="110"' in join(here, "alice")
    there.read_until(f"<presence[^>]*from=.{ROOM}/alice")
    here.send(f"<message to='{ROOM}' type='groupchat' id='g1'><body>hello room</body></message>")
    for c in (here, there):
        c.read_until("hello room")
    there.send(f"<message to='{ROOM}' type='groupchat' id='g2'><body>hi alice</body></message>")
    here.read_until("hi alice")

    # PubSub: a node created and published to from one worker, subscribed to from the other
    sub, pub = (here, there) if owner("pubsub") == muc_owner else (there, here)
    sub_jid = "alice@localhost/a" if sub is here else "bob@localhost/b"
    pubsub = "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
    pub.send(f"<iq type='set' to='{PUBSUB}' id='n1'>{pubsub}<create node='news'/></pubsub></iq>")
    assert "result" in pub.read_until(r"<iq[^>]*n1[^>]*>")
    sub.send(f"<iq type='set' to='{PUBSUB}' id='s1'>{pubsub}<subscribe node='news' "
             f"jid='{sub_jid}'/></pubsub></iq>")
    assert "subscribed" in sub.read_until(r"<iq[^>]*s1.*?</iq>")
    pub.send(f"<iq type='set' to='{PUBSUB}' id='p1'>{pubsub}<publish node='news'><item id='i1'>"
             "<entry xmlns='urn:x'>headline</entry></item></publish></pubsub></iq>")
    assert "result" in pub.read_until(r"<iq[^>]*p1[^>]*>")
    assert "headline" in sub.read_until("</message>")

    # the rooms' worker killed: the occupant on the other worker is told, joins again later
    victim = cluster.control("status")["workers"][str(muc_owner)]["pid"]
    os.kill(victim, signal.SIGKILL)
    gone = here.read_until(f"<presence[^>]*from=.{ROOM}/alice.*?</presence>", timeout=10)
    assert "unavailable" in gone and 'code="332"' in gone
    cluster.wait_up(pids={victim})
    assert 'code="110"' in join(here, "alice")  # a new (temporary) room, on the restarted owner
