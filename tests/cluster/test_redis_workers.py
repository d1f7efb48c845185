"""A cluster node running two workers (``server.workers = 2`` with ``cluster.redis``): each
worker is a member of its own, ``n1/0`` and ``n1/1``, beside node ``n2`` (real Redis and
PostgreSQL; the fixtures of ``test_redis_cluster.py``).  Routing between the two workers
and to the other node, ``xmppd workers``/``status``, one scrape for both workers, a killed
worker restarted by the supervisor as a new member, and a drain of the whole node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_drain import SHUTDOWN
from test_redis_cluster import (  # noqa: F401 - fixtures
    PASSWORD,
    Client,
    XmppNode,
    nodes,
    redis_server,
)
from test_redis_drain import UNAVAILABLE, statuses
from test_workers import online, subscribe
from test_workers_metrics import at, scraped


@pytest.fixture
def n1_workers() -> int:
    return 2


def client_on(node: XmppNode, user: str, worker: str, resource: str) -> Client:
    """A client of ``user`` bound on ``worker`` of ``node`` (the kernel picks a worker per
    connection: log in until it is that one)."""
    for attempt in range(40):
        client = Client(node.port)
        jid = client.login(user, PASSWORD, resource=f"{resource}{attempt}")
        deadline = time.monotonic() + 5
        while True:
            where = [w for w, jids in node.control("workers").items() if jid in jids]
            if where or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if where == [worker]:
            return client
        client.close()
    raise AssertionError(f"no connection of 40 landed on worker {worker}")


def knows(node: XmppNode, jid: str, member: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while jid not in node.control("cluster")["nodes"].get(member, ()):
        assert time.monotonic() < deadline, f"{member} has no {jid}: {node.logged()}"
        time.sleep(0.05)


def test_two_workers_of_a_node_are_two_members(nodes):  # noqa: F811 - the fixture
    n1, n2 = nodes
    deadline = time.monotonic() + 20
    while {"n1/0", "n1/1", "n2"} - set(statuses(n2)):
        assert time.monotonic() < deadline, statuses(n2)
        time.sleep(0.1)
    assert [row[1] for row in statuses(n2).values()] == ["yes"] * 3

    alice = client_on(n1, "alice", "0", "a")
    carol = client_on(n1, "carol", "1", "c")
    bob = n2.client("bob", "b2")
    alice_jid = n1.control("workers")["0"][0]
    carol_jid = n1.control("workers")["1"][0]
    knows(n2, alice_jid, "n1/0")
    knows(n2, carol_jid, "n1/1")
    knows(n1, "bob@localhost/b2", "n2")
    online(alice, bob, carol)
    subscribe(n1, alice, "alice", carol, "carol")
    subscribe(n1, alice, "alice", bob, "bob")

    # worker to worker of one host (through Redis), and to the other node, both ways
    alice.send(f"<message to='{carol_jid}' type='chat'><body>same host</body></message>")
    assert "same host" in carol.read_until("same host.*?</message>")
    carol.send("<message to='bob@localhost' type='chat'><body>to n2</body></message>")
    assert "to n2" in bob.read_until("to n2.*?</message>")
    bob.send(f"<message to='{alice_jid}' type='chat'><body>from n2</body></message>")
    assert "from n2" in alice.read_until("from n2.*?</message>")
    status = n1.control("status")
    assert {"n1/0", "n1/1", "n2"} <= set(status["cluster"]), status

    # `xmppd reload` reloads both workers of n1 (not n2: each host reads its own file)
    def reloads() -> int:
        n1.log.flush()
        return (n1.tmp / "xmppd.log").read_text().count("configuration reloaded")

    reloaded = reloads()
    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "reload", "--config",
                           str(n1.config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while reloads() < reloaded + 2:
        assert time.monotonic() < deadline, n1.logged()
        time.sleep(0.05)
    assert "configuration reloaded" not in n2.logged()

    # one scrape answers for both workers; their peers are the other members
    table = scraped(n1)
    for me, sibling in (("0", "n1/1"), ("1", "n1/0")):
        assert at(table, "xmppd_cluster_peers", state="up", worker=me) == 2
        assert at(table, "xmppd_cluster_remote_sessions", peer="n2", worker=me) == 1
        assert at(table, "xmppd_cluster_link_sent_stanzas_total", peer=sibling,
                  worker=me) >= 1

    # worker 1 killed: its member is purged (alice gets carol's unavailable presence), and
    # the supervisor's restart joins as a new life of n1/1
    old = statuses(n2)["n1/1"][0]
    assert str(n1.control("status")["cluster"]["n1/1"]["epoch"]) == old
    os.kill(worker_pid(n1, 1), signal.SIGKILL)
    alice.read_until(UNAVAILABLE.format(carol_jid), timeout=20)
    deadline = time.monotonic() + 20
    while statuses(n2).get("n1/1", [old])[0] == old:
        assert time.monotonic() < deadline, n1.logged()
        time.sleep(0.2)

    # the whole node drains: both workers' clients are told, the supervisor exits 0, and
    # n2 forgets both members at once
    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "drain", "--timeout", "5",
                           "--spread", "0.2", "--config", str(n1.config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert SHUTDOWN in alice.read_closed(timeout=10)
    assert n1.proc.wait(30) == 0, n1.logged()
    assert not {"n1/0", "n1/1"} & set(statuses(n2))
    bob.read_until(UNAVAILABLE.format(alice_jid))
    for client in (alice, bob, carol):
        client.close()


def worker_pid(node: XmppNode, index: int) -> int:
    """The pid of worker ``index`` of ``node``'s supervisor (from /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
        except OSError:
            continue
        if parent == node.proc.pid and b"--worker" in args and \
                args[args.index(b"--worker") + 1] == str(index).encode():
            return int(entry)
    raise AssertionError(f"no worker {index} under pid {node.proc.pid}")
