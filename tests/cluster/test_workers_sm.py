"""XEP-0198 resumption on another worker (``xmppd run --workers 2``, raw sockets over TCP).

A client enables stream management on one worker, receives messages it does not
acknowledge, loses its connection (or keeps it open), and resumes on a new connection.
The kernel picks the worker of each connection: a resumption that lands on the holder
is a local one (the session stays there), so the tests resume again until the session
has moved (the control socket says where it lives); a failed resumption is followed by a
bind on the same stream, which says where that stream landed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from typing import Any

import pytest
from support import sm_authenticate, sm_enable
from test_workers import MODULES, Client, Cluster, available, online, subscribe

SM = "urn:xmpp:sm:3"
ATTEMPTS = 40


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, MODULES,
                extra="[modules.sm]\nhandover_timeout_s = 1.0\nrequest_every = 0\n"
                      "request_after_s = 0\nmax_queue = 100000\n")
    try:
        yield c
    finally:
        assert c.stop() == 0, c.logged()


def bodies(text: str) -> list[str]:
    return re.findall(r"<body>(.*?)</body>", text)


def drop(client: Client) -> None:
    """Lose the connection without a closing handshake (the session detaches)."""
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()


def try_resume(server: Cluster | Any, user: str, previd: str, h: int,
               timeout: float = 5.0) -> tuple[Client, str]:
    """A new connection of ``user`` to ``server`` (a worker cluster or a node) that
    resumes ``previd``; the answer."""
    client = Client(server.port)
    client.timeout = timeout
    sm_authenticate(client, user)
    client.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
    return client, client.read_until("<resumed[^>]*/>|</failed>")


def resume_elsewhere(cluster: Cluster, user: str, previd: str, h: int, full: str,
                     holder: int, old: Client | None = None) -> tuple[Client, str]:
    """Resume until the session lands on the worker that is not ``holder`` (a local
    resumption on the holder takes the session over on that worker first); the new
    client and what it read after ``<resumed/>`` up to its re-sent stanzas."""
    for _attempt in range(ATTEMPTS):
        client, answer = try_resume(cluster, user, previd, h)
        assert "<resumed" in answer, answer
        if old is not None:  # the previous connection is told, and closed
            assert "<conflict" in old.read_closed()
        # the unacknowledged stanzas come again right after <resumed/>; <r/> follows them
        answer += client.read_until(f"<r xmlns='{SM}'/>")
        if cluster.where(full) != holder:
            return client, answer
        old = client
    raise AssertionError(f"no resumption of {ATTEMPTS} landed on the other worker")


def landed_on(cluster: Cluster, client: Client, resource: str) -> int:
    """After a failed resumption: bind on the same stream; the worker it is on."""
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                f"<resource>{resource}</resource></bind></iq>")
    full = re.search(r"<jid>(.*?)</jid>", client.read_until("</iq>")).group(1)
    return cluster.where(full)


def sm_alice(cluster: Cluster, worker: int, bob: Client) -> tuple[Client, str]:
    """alice/a on ``worker``: roster, presence, subscribed to bob both ways, SM enabled."""
    alice = cluster.client("alice", worker, "a")
    online(alice)
    subscribe(cluster, alice, "alice", bob, "bob")
    bob.read_until("<presence[^>]*from=.alice@localhost/a.")
    return alice, sm_enable(alice)


def detached_alice(cluster: Cluster, alice_on: int, bob_on: int, word: str) -> tuple[Client, str]:
    """bob (available) on ``bob_on``; alice with SM on ``alice_on`` gets ``word`` from him
    (unacknowledged), then loses her connection: her session is detached there.  Returns
    bob and alice's SM id."""
    bob = cluster.client("bob", bob_on, "b")
    available(bob)
    alice, previd = sm_alice(cluster, alice_on, bob)
    say(bob, "alice@localhost/a", word)
    alice.read_until(f"{word}</body></message>")
    drop(alice)
    time.sleep(0.3)
    return bob, previd


def say(sender: Client, to: str, *texts: str) -> None:
    sender.send("".join(f"<message to='{to}' type='chat'><body>{t}</body></message>"
                        for t in texts))


def test_resume_on_the_other_worker_after_a_lost_connection(cluster):
    bob = cluster.client("bob", 1, "b")
    available(bob)
    alice, previd = sm_alice(cluster, 0, bob)
    full = "alice@localhost/a"
    say(bob, full, "m1", "m2", "m3")
    assert bodies(alice.read_until("m3</body></message>")) == ["m1", "m2", "m3"]
    drop(alice)
    time.sleep(0.3)  # detached on worker 0
    say(bob, full, "m4")  # queued while detached
    time.sleep(0.2)

    new, answer = resume_elsewhere(cluster, "alice", previd, 0, full, holder=0)
    assert bodies(answer) == ["m1", "m2", "m3", "m4"], answer  # in order, once

    # new messages reach the new place, to the full and to the bare JID (its presence moved)
    say(bob, full, "m5")
    say(bob, "alice@localhost", "m6")
    text = new.read_until("m6</body></message>")
    assert bodies(text) == ["m5", "m6"], text
    # ...and the acknowledgement counts them on top of the re-sent ones
    new.send(f"<a xmlns='{SM}' h='6'/>")

    # the roster interest moved too: a roster change by another resource is pushed here
    other = cluster.client("alice", 0, "o")
    other.send("<iq type='set' id='rs'><query xmlns='jabber:iq:roster'>"
               "<item jid='carol@localhost' name='Carol'/></query></iq>")
    assert "carol@localhost" in new.read_until("<iq[^>]*type=.set.*?</iq>")

    # presence from the new place reaches the contact; the contact never saw alice leave
    new.send("<presence><show>away</show></presence>")
    bob.read_until("<show>away</show>")
    assert not re.search(r"<presence[^>]*from=.alice@localhost/a.[^>]*type=.unavailable.",
                         bob.seen), bob.seen
    assert "handed over" in cluster.logged() and "taken over from" in cluster.logged()


def test_resume_elsewhere_while_the_old_connection_is_open(cluster):
    bob = cluster.client("bob", 0, "b")
    available(bob)
    alice, previd = sm_alice(cluster, 1, bob)
    full = "alice@localhost/a"
    say(bob, full, "x1", "x2")
    alice.read_until("x2</body></message>")
    new, answer = resume_elsewhere(cluster, "alice", previd, 0, full, holder=1, old=alice)
    assert bodies(answer) == ["x1", "x2"], answer
    say(bob, full, "x3")
    assert bodies(new.read_until("x3</body></message>")) == ["x3"]
    assert "type='unavailable'" not in bob.seen and 'type="unavailable"' not in bob.seen


def test_stanzas_sent_during_the_hand_over_arrive_once(cluster):
    """A contact sends all along: what reaches the old worker while the session moves is
    forwarded, so the client gets every message exactly once (the contact is on the old
    worker: what it sends there until the new bind is known takes the tombstone)."""
    bob = cluster.client("bob", 0, "b")
    available(bob)
    alice, previd = sm_alice(cluster, 0, bob)
    full = "alice@localhost/a"
    drop(alice)
    time.sleep(0.3)
    stop, sent = threading.Event(), []

    def burst() -> None:  # until the session has moved, and a little after
        extra = 3
        while extra:
            batch = [f"b{i}" for i in range(len(sent), len(sent) + 5)]
            say(bob, full, *batch)
            sent.extend(batch)
            time.sleep(0.001)
            extra -= stop.is_set()

    sender = threading.Thread(target=burst)
    sender.start()
    try:
        time.sleep(0.05)
        # there and back and there again: each move from worker 0 races the contact
        new, _ = resume_elsewhere(cluster, "alice", previd, 0, full, holder=0)
        new, _ = resume_elsewhere(cluster, "alice", previd, 0, full, holder=1, old=new)
        new, answer = resume_elsewhere(cluster, "alice", previd, 0, full, holder=0, old=new)
    finally:
        stop.set()
        sender.join()
    got = bodies(answer)
    deadline = time.monotonic() + 10
    while len(set(got)) < len(sent) and time.monotonic() < deadline:
        got += bodies(new.read_until("</message>"))
    time.sleep(0.5)
    got += bodies(ping_self(new))
    assert sorted(got, key=lambda b: int(b[1:])) == sent, (len(got), len(sent))
    assert got == sent  # in order too: forwarded ones come before newer ones


def ping_self(client: Client) -> str:
    """Everything the client was sent before the answer to a ping."""
    client.send("<iq type='get' id='last' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    return client.read_until("<iq[^>]*id=.last.[^>]*/>")


def test_resumption_failures_across_workers(cluster):
    bob, previd = detached_alice(cluster, 0, 1, "f1")
    full = "alice@localhost/a"

    # another account's id, on the other worker: item-not-found, as for an unknown id
    for attempt in range(ATTEMPTS):
        client, answer = try_resume(cluster, "bob", previd, 0)
        assert "<item-not-found" in answer and "<resumed" not in answer, answer
        if landed_on(cluster, client, f"w{attempt}") == 1:
            break
        client.close()
    else:
        raise AssertionError("no attempt landed on worker 1")
    client.close()
    _, answer = try_resume(cluster, "alice", "no-such-id", 0)
    assert "<item-not-found" in answer

    # two resumptions at once: exactly one holds the session after (the other failed, or
    # was resumed first and then replaced: closed with conflict), and it is there once
    pairs = [Client(cluster.port), Client(cluster.port)]
    for c in pairs:
        sm_authenticate(c, "alice")
    for c in pairs:
        c.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    answers = [c.read_until("<resumed[^>]*/>|</failed>") for c in pairs]
    assert any("<resumed" in a for a in answers), answers
    time.sleep(0.5)
    say(bob, full, "f2")
    after = [c.read_closed(timeout=1.5) if "<resumed" in a else "" for c, a in zip(
        pairs, answers, strict=True)]
    holders = [text for text in after if "f2</body>" in text]
    assert len(holders) == 1, (answers, after)
    assert bodies(holders[0]).count("f2") == 1
    for text, answer in zip(after, answers, strict=True):
        assert text in holders or "<conflict" in text or "<item-not-found" in answer


def test_holder_that_does_not_answer_keeps_the_session(cluster):
    bob, previd = detached_alice(cluster, 1, 0, "s1")
    full = "alice@localhost/a"
    holder = cluster.control("status")["workers"]["1"]["pid"]
    os.kill(holder, signal.SIGSTOP)
    try:
        for _attempt in range(ATTEMPTS):
            client = Client(cluster.port)
            client.timeout = 0.5  # a connection that landed on the stopped worker waits
            try:
                sm_authenticate(client, "alice")
            except TimeoutError:
                client.close()
                continue
            client.timeout = 5
            client.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
            answer = client.read_until("<resumed[^>]*/>|</failed>")
            assert "<item-not-found" in answer, answer  # after handover_timeout_s
            break
        else:
            raise AssertionError("no connection landed on the running worker")
    finally:
        os.kill(holder, signal.SIGCONT)
    # the holder read the question too late and refused it: the session is still there
    time.sleep(0.5)
    new, answer = resume_elsewhere(cluster, "alice", previd, 0, full, holder=1)
    assert bodies(answer) == ["s1"], answer
    assert "came too late: refused" in cluster.logged()


def test_holder_killed_resumption_fails_cleanly(cluster):
    alice = cluster.client("alice", 0, "a")
    previd = sm_enable(alice)
    say(alice, "alice@localhost/a", "k1")  # unacknowledged: re-sent at each resumption
    alice.read_until("k1</body></message>")
    alice, _ = resume_elsewhere(cluster, "alice", previd, 0, "alice@localhost/a", holder=0,
                                old=alice)  # now held by worker 1
    victim = cluster.control("status")["workers"]["1"]["pid"]
    os.kill(victim, signal.SIGKILL)
    cluster.wait_up(pids={victim})
    _, answer = try_resume(cluster, "alice", previd, 0)
    assert "<item-not-found" in answer and "<resumed" not in answer, answer
