"""Three cluster nodes (``xmppd run`` processes) on one Redis and one PostgreSQL database,
one user on each: messages (full and bare JID), presence, subscriptions, a MUC room and PEP
events between all of them; then one node is killed -9: the survivors purge it, its user's
contacts get unavailable presence and the room's occupants see it leave within the 12 s
bound, and a message for it goes to offline storage (delivered when it is back, younger:
the room stays where it is).

One cluster for the module (starting three nodes is the slow part): the tests run in
order, the second one kills n3.
"""

from __future__ import annotations

import logging
import time

import pytest
from test_redis_cluster import MODULES, redis_server, run_nodes, unavailable  # noqa: F401
from test_redis_owners import (
    BOUND_S,
    OWNED,
    groupchat,
    join,
    kill,
    make_persistent,
    seen_or_read,
)
from test_workers import online, subscribe
from test_workers_pep import caps_presence, tune

ROOM = "three@conference.localhost"
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def three(tmp_path_factory, redis_server, postgresql_server):  # noqa: F811
    """n1, n2, n3 (n1 the oldest) and a client on each: alice/a1, bob/b2, carol/c3."""
    tmp = tmp_path_factory.mktemp("three")
    for nodes in run_nodes(tmp, redis_server, postgresql_server, ("n1", "n2", "n3"),
                           MODULES + OWNED):
        users = zip(nodes, ("alice", "bob", "carol"), strict=True)
        clients = [node.client(user, f"{user[0]}{i}") for i, (node, user) in enumerate(users, 1)]
        try:
            yield nodes, clients
        finally:
            for client in clients:
                client.close()


def test_three_nodes_exchange_everything(three):
    (n1, n2, n3), (alice, bob, carol) = three
    for node in (n1, n2, n3):
        for jid, where in (("alice@localhost/a1", "n1"), ("bob@localhost/b2", "n2"),
                           ("carol@localhost/c3", "n3")):
            if where != node.name:
                node.knows(jid, where)
    online(alice, bob, carol)
    subscribe(n1, alice, "alice", bob, "bob")
    subscribe(n2, bob, "bob", carol, "carol")
    subscribe(n3, carol, "carol", alice, "alice")

    # messages: full JID n1 -> n3, bare JID n3 -> n2, n2 -> n1
    alice.send("<message to='carol@localhost/c3' type='chat'><body>a to c</body></message>")
    assert "a to c" in carol.read_until("<message.*?</message>")
    carol.send("<message to='bob@localhost' type='chat'><body>c to b</body></message>")
    assert "c to b" in bob.read_until("<message.*?</message>")
    bob.send("<message to='alice@localhost/a1' type='chat'><body>b to a</body></message>")
    assert "b to a" in alice.read_until("<message.*?</message>")

    # presence from n3 reaches its contacts on n1 and n2
    carol.send("<presence><show>dnd</show></presence>")
    for c in (alice, bob):
        c.read_until("<presence[^>]*from=.carol@localhost/c3.[^>]*>.*?<show>dnd</show>")

    # a room on n1 (the oldest), created from n2, joined from all three
    assert 'code="201"' in join(bob, "bob", ROOM)
    make_persistent(bob, ROOM)
    assert 'code="110"' in join(alice, "alice", ROOM)
    bob.read_until(f"<presence[^>]*from=.{ROOM}/alice")
    assert 'code="110"' in join(carol, "carol", ROOM)
    for c in (alice, bob):
        c.read_until(f"<presence[^>]*from=.{ROOM}/carol")
    groupchat(carol, "from n3", alice, bob, room=ROOM)
    groupchat(alice, "from n1", bob, carol, room=ROOM)

    # PEP: every node learns its client's caps; carol's tune reaches n1 and n2
    for c in (alice, bob, carol):
        caps_presence(c, answer=True)
    tune(carol, "Delta", "t1")
    for c in (alice, bob, carol):
        assert 'from="carol@localhost"' in c.read_until("<message[^>]*>.*?Delta.*?</message>")
    tune(alice, "Epsilon", "t2")
    for c in (bob, carol):
        assert 'from="alice@localhost"' in c.read_until("<message[^>]*>.*?Epsilon.*?</message>")


def test_a_killed_node_is_purged_within_the_bound(three):
    (n1, n2, n3), (alice, bob, _carol) = three
    died = kill(n3)
    for c in (alice, bob):  # carol's contacts, and the room's occupants (in any order)
        seen_or_read(c, unavailable("carol@localhost/c3"))
        seen_or_read(c, unavailable(f"{ROOM}/carol"))
    detected = time.monotonic() - died
    # (one survivor announces; each purges n3 from its replica on its own check)
    while any("n3" in node.control("cluster")["nodes"] for node in (n1, n2)):
        assert time.monotonic() - died <= BOUND_S, "n3 is not purged everywhere"
        time.sleep(0.1)
    purged = time.monotonic() - died
    log.warning("3 nodes: kill -9 to the survivors' unavailable presence %.1f s, purged on "
                "both survivors %.1f s", detected, purged)
    print(f"\n3 nodes: unavailable after {detected:.1f} s, purged by both after {purged:.1f} s")
    assert detected <= BOUND_S
    alice.send("<message to='carol@localhost' type='chat' id='off1'>"
               "<body>while you were down</body></message>")
    groupchat(alice, "after n3", bob, room=ROOM)  # the room lives on: its owner is n1
    assert "type='error'" not in alice.seen and 'type="error"' not in alice.seen

    n3.start()
    carol = n3.client("carol", "c3")
    carol.send("<presence/>")
    assert "while you were down" in carol.read_until("while you were down.*?</message>")
    # the room did not move to the newcomer (younger than n1): its occupants are there
    carol.send(f"<presence to='{ROOM}/carol'><x xmlns='http://jabber.org/protocol/muc'/>"
               "</presence>")
    carol.read_until(f"<presence[^>]*from=.{ROOM}/carol.")
    for nick in ("alice", "bob"):
        assert f'from="{ROOM}/{nick}"' in carol.seen
    carol.close()
