"""MUC, PubSub and PEP across two cluster nodes (real ``xmppd run`` processes, Redis,
PostgreSQL): the oldest node (n1) owns the rooms, the PubSub service and every account's
PEP nodes; n2 hands it the stanzas.  Users on both nodes join a room, exchange groupchat
messages and presence, publish and get PubSub and PEP events; then n1 is killed -9: n2's
occupants get unavailable presence with status 332, n2 takes over (the persistent room and
the PubSub node come back from PostgreSQL), and a stanza sent to the services while the
owner was dead is answered once n2 owns them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest
from test_redis_cluster import MODULES, XmppNode, redis_server, run_nodes  # noqa: F401
from test_workers import Client, available, subscribe
from test_workers_pep import caps_presence, tune

from xmppd.storage import open_storage

OWNED = ["muc", "pubsub", "pep"]
ROOM = "lobby@conference.localhost"
PUBSUB = "pubsub.localhost"
PS = "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
#: kill -9 to what survivors see: ttl_s + purge_check_s (8 s by default) within the bound
BOUND_S = 12


@pytest.fixture
def nodes(tmp_path, redis_server, postgresql_server):  # noqa: F811
    yield from run_nodes(tmp_path, redis_server, postgresql_server, ("n1", "n2"),
                         MODULES + OWNED)


def join(client: Client, nick: str, room: str = ROOM) -> str:
    """Join ``room`` as ``nick``: the self-presence (status 110)."""
    client.send(f"<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/>"
                "</presence>")
    return client.read_until(f"<presence[^>]*from=.{room}/{nick}.*?</presence>")


def make_persistent(client: Client, room: str = ROOM) -> None:
    client.send(f"<iq type='set' to='{room}' id='cfg'><query xmlns='http://jabber.org/"
                "protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field "
                "var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value>"
                "</field><field var='muc#roomconfig_persistentroom'><value>1</value></field>"
                "</x></query></iq>")
    assert "result" in client.read_until(r"<iq[^>]*id=.cfg.[^>]*>")


def wait_stored(node: XmppNode, room: str = ROOM, timeout: float = 10) -> None:
    """Until ``room``'s configuration is in the nodes' database (the owner writes it
    after answering)."""

    async def stored() -> bool:
        storage = await open_storage(node.storage)
        try:
            return await storage.open_store("muc", "keyvalue").get(room, "room") is not None
        finally:
            await storage.close()

    deadline = time.monotonic() + timeout
    while not asyncio.run(stored()):
        assert time.monotonic() < deadline, f"{room} was never stored"
        time.sleep(0.05)


def groupchat(sender: Client, body: str, *readers: Client, room: str = ROOM) -> None:
    sender.send(f"<message to='{room}' type='groupchat'><body>{body}</body></message>")
    for reader in (sender, *readers):
        reader.read_until(f"<message[^>]*from=.{room}/.*?{body}")


def seen_or_read(client: Client, pattern: str, timeout: float = BOUND_S) -> str:
    """What matches ``pattern``, read already (stanzas that may come in either order) or
    read now."""
    found = re.search(pattern, client.seen, re.S)
    return found.group(0) if found else client.read_until(pattern, timeout)


def kill(node: XmppNode) -> float:
    """kill -9 ``node``; the time it died."""
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)
    return time.monotonic()


def test_owned_services_across_nodes_and_the_owner_killed(nodes):
    n1, n2 = nodes  # n1 started first: the oldest, the owner
    bob, alice = n1.client("bob", "b1"), n2.client("alice", "a2")
    n1.knows("alice@localhost/a2", "n2")
    n2.knows("bob@localhost/b1", "n1")
    for c in (alice, bob):
        available(c)
    subscribe(n1, alice, "alice", bob, "bob")

    # MUC: created from n2 (handed to n1), joined from both; messages and presence
    assert 'code="201"' in join(alice, "alice")  # a new room
    make_persistent(alice)
    wait_stored(n1)
    assert 'code="110"' in join(bob, "bob")
    alice.read_until(f"<presence[^>]*from=.{ROOM}/bob")
    groupchat(alice, "hello from n2", bob)
    groupchat(bob, "hello from n1", alice)
    alice.send(f"<presence to='{ROOM}/alice'><show>away</show></presence>")
    assert "away" in bob.read_until(f"<presence[^>]*from=.{ROOM}/alice.*?</presence>")

    # PubSub: a node created and published to from n2, subscribed to from n1
    alice.send(f"<iq type='set' to='{PUBSUB}' id='n1'>{PS}<create node='news'/></pubsub></iq>")
    assert "result" in alice.read_until(r"<iq[^>]*id=.n1.[^>]*>")
    bob.send(f"<iq type='set' to='{PUBSUB}' id='s1'>{PS}<subscribe node='news' "
             "jid='bob@localhost/b1'/></pubsub></iq>")
    assert "subscribed" in bob.read_until(r"<iq[^>]*id=.s1.*?</iq>")
    alice.send(f"<iq type='set' to='{PUBSUB}' id='p1'>{PS}<publish node='news'><item id='i1'>"
               "<entry xmlns='urn:x'>headline</entry></item></publish></pubsub></iq>")
    assert "result" in alice.read_until(r"<iq[^>]*id=.p1.[^>]*>")
    assert "headline" in bob.read_until("<message[^>]*>.*?headline.*?</message>")

    # PEP: each node learns the caps of its own client (and shares the +notify interests)
    caps_presence(alice, answer=True)
    caps_presence(bob, answer=True)
    tune(alice, "Alpha", "t1")  # alice's nodes are n1's: her IQ is handed there
    for c in (alice, bob):
        assert 'from="alice@localhost"' in c.read_until("<message[^>]*>.*?Alpha.*?</message>")
    tune(bob, "Beta", "t2")  # reaches alice's +notify resource on n2
    assert 'from="bob@localhost"' in alice.read_until("<message[^>]*>.*?Beta.*?</message>")

    # the owner killed: alice (n2) hears that her room is gone once n1 is purged
    died = kill(n1)
    # sent while the owner is dead: it waits, and n2 answers it once it owns the service
    alice.send(f"<iq type='set' to='{PUBSUB}' id='p2'>{PS}<publish node='news'><item id='i2'>"
               "<entry xmlns='urn:x'>after</entry></item></publish></pubsub></iq>")
    gone = alice.read_until(f"<presence[^>]*from=.{ROOM}/alice.*?</presence>", timeout=BOUND_S)
    assert "unavailable" in gone and 'code="332"' in gone
    detected = time.monotonic() - died
    print(f"\nowner killed: 332 after {detected:.1f} s")
    assert detected <= BOUND_S
    assert "result" in seen_or_read(alice, r"<iq[^>]*id=.p2.[^>]*>")

    # n2 owns the rooms now: the persistent room came back from storage (no 201)
    back = join(alice, "alice")
    assert 'code="110"' in back and 'code="201"' not in back
    groupchat(alice, "still here")
    alice.send(f"<iq type='get' to='{PUBSUB}' id='g1'>{PS}<items node='news'/></pubsub></iq>")
    items = alice.read_until(r"<iq[^>]*id=.g1.*?</iq>")
    assert "headline" in items and "after" in items
    tune(alice, "Gamma", "t3")  # PEP on the new owner, from storage
    alice.read_until("<message[^>]*>.*?Gamma.*?</message>")
    alice.close()


def test_an_owner_declared_dead_while_frozen_gives_up_its_rooms(nodes):
    """n1 frozen (SIGSTOP) longer than the TTL: n2 purges it and takes the rooms over; n1,
    thawed, finds itself declared dead, rejoins younger (a new epoch) and tells its own
    occupants that its rooms are gone: no two owners."""
    n1, n2 = nodes
    bob, alice = n1.client("bob", "b1"), n2.client("alice", "a2")
    n1.knows("alice@localhost/a2", "n2")
    n2.knows("bob@localhost/b1", "n1")
    assert 'code="201"' in join(bob, "bob")
    make_persistent(bob)
    wait_stored(n1)
    assert 'code="110"' in join(alice, "alice")
    os.kill(n1.proc.pid, signal.SIGSTOP)
    try:
        gone = alice.read_until(f"<presence[^>]*from=.{ROOM}/alice.*?</presence>",
                                timeout=BOUND_S)
        assert 'code="332"' in gone
        assert 'code="201"' not in join(alice, "alice")  # on n2 now, from storage
    finally:
        os.kill(n1.proc.pid, signal.SIGCONT)
    gone = bob.read_until(f"<presence[^>]*from=.{ROOM}/bob.*?</presence>", timeout=BOUND_S)
    assert "unavailable" in gone and 'code="332"' in gone
    assert n1.control("cluster")["epoch"] != n1.epoch  # it rejoined as a new life
    n2.knows("bob@localhost/b1", "n1")
    join(bob, "bob")  # handed to n2, where alice is
    assert f'from="{ROOM}/alice"' in bob.seen
    alice.read_until(f"<presence[^>]*from=.{ROOM}/bob")
    groupchat(bob, "one owner", alice)
