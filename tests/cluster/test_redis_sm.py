"""XEP-0198 resumption on another cluster node: two ``xmppd run`` nodes on one Redis and
one PostgreSQL (the fixtures of ``test_redis_cluster``), raw sockets over TCP."""

from __future__ import annotations

import re
import signal
import time

from support import sm_enable
from test_redis_cluster import n1_workers, nodes, pair, redis_server  # noqa: F401 - fixtures
from test_workers import Client
from test_workers_sm import SM, bodies, drop, say, try_resume


def resume_on(node, previd: str, h: int) -> tuple[Client, str]:
    client, answer = try_resume(node, "alice", previd, h)
    assert "<resumed" in answer, answer
    return client, answer + client.read_until(f"<r xmlns='{SM}'/>")


def test_resume_on_the_other_node_and_back(nodes):  # noqa: F811 - the fixture
    n1, n2 = nodes
    alice, bob = pair(n1, n2)
    previd = sm_enable(alice)
    full = "alice@localhost/a1"
    say(bob, full, "r1", "r2")
    assert bodies(alice.read_until("r2</body></message>")) == ["r1", "r2"]
    drop(alice)
    time.sleep(0.3)  # detached on n1
    say(bob, full, "r3")
    time.sleep(0.2)

    # another account cannot take it, and an unknown id is unknown, on either node
    _, answer = try_resume(n2, "bob", previd, 0)
    assert "<item-not-found" in answer and "<resumed" not in answer

    on_n2, answer = resume_on(n2, previd, 0)
    assert bodies(answer) == ["r1", "r2", "r3"], answer
    n1.knows(full, "n2")
    say(bob, full, "r4")
    say(bob, "alice@localhost", "r5")  # §8.5 on n2 from the presence that moved with it
    assert bodies(on_n2.read_until("r5</body></message>")) == ["r4", "r5"]

    # back to n1 while the n2 connection is still open: that one is closed with conflict,
    # and nothing acknowledged means everything again, in order, once
    on_n1, answer = resume_on(n1, previd, 0)
    assert "<conflict" in on_n2.read_closed()
    assert bodies(answer) == ["r1", "r2", "r3", "r4", "r5"], answer
    n2.knows(full, "n1")
    say(bob, full, "r6")
    assert bodies(on_n1.read_until("r6</body></message>")) == ["r6"]
    assert not re.search(r"<presence[^>]*from=.alice@localhost/a1.[^>]*type=.unavailable.",
                         bob.seen), bob.seen
    assert "handed over" in n1.logged() and "taken over from" in n2.logged()


def test_holder_node_killed_resumption_fails_cleanly(nodes):  # noqa: F811 - the fixture
    n1, n2 = nodes
    alice = n1.client("alice", "a1")
    previd = sm_enable(alice)
    n2.knows("alice@localhost/a1", "n1")
    n1.proc.send_signal(signal.SIGKILL)
    n1.proc.wait(10)
    # asked before the purge (its channel has no subscriber: no answer in time) or after
    # (the id is gone with the node): item-not-found either way, and the client may bind
    client, answer = try_resume(n2, "alice", previd, 0, timeout=15)
    assert "<item-not-found" in answer and "<resumed" not in answer, answer
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>a1</resource></bind></iq>")
    assert "<jid>alice@localhost/a1</jid>" in client.read_until("</iq>")
