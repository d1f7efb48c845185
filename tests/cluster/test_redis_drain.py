"""``xmppd drain`` of one of two cluster nodes (real Redis and PostgreSQL; the fixtures of
``test_redis_cluster.py``): its clients get ``<system-shutdown/>``, ``xmppd cluster status``
shows it draining while a resumable session waits there, then it leaves like a clean stop
(gone from the status at once, no TTL purge), its users' contacts get unavailable presence,
messages to them go offline, and they log in again on the other node."""

from __future__ import annotations

import subprocess
import sys
import time

from test_drain import SHUTDOWN, enable_resumption
from test_redis_cluster import (  # noqa: F401 - fixtures
    XmppNode,
    cluster_status,
    n1_workers,
    nodes,
    pair,
    redis_server,
)

UNAVAILABLE = (r"<presence[^>]*type=.unavailable.[^>]*from=.{0}.|"
               r"<presence[^>]*from=.{0}.[^>]*type=.unavailable.")


def statuses(node: XmppNode) -> dict[str, list[str]]:
    """``xmppd cluster status`` as {node: [epoch, alive, sessions]}."""
    return {line.split()[0]: line.split()[1:] for line in cluster_status(node).splitlines()[1:]}


def test_drained_node_leaves_cleanly(nodes):  # noqa: F811 - the fixture
    n1, n2 = nodes
    alice, bob = pair(n1, n2)
    carol = n1.client("carol", "phone")
    enable_resumption(carol)
    n2.knows("carol@localhost/phone", "n1")

    done = subprocess.run([sys.executable, "-m", "xmppd.cli", "drain", "--timeout", "10",
                           "--spread", "0.5", "--config", str(n1.config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "draining: 2 session(s)" in done.stdout, done.stderr
    for client in (alice, carol):
        assert SHUTDOWN in client.read_closed(timeout=10)
    bob.read_until(UNAVAILABLE.format("alice@localhost/a1"))  # alice's session ended
    # carol's resumable session waits on n1 (detached): n1 shows as draining meanwhile
    assert statuses(n2)["n1"][1] == "draining"
    bob.send("<message to='carol@localhost/phone' type='chat'><body>queued</body></message>")
    bob.send("<message to='alice@localhost' type='chat'><body>offline</body></message>")

    assert n1.proc.wait(30) == 0, n1.logged()
    assert "n1" not in statuses(n2)  # it left and purged its own rows: no TTL to wait for
    assert "n1" not in n2.control("cluster")["nodes"]
    assert "Traceback" not in n1.logged()
    bob.send("<message to='carol@localhost' type='chat'><body>after</body></message>")
    time.sleep(0.3)
    assert "type='error'" not in bob.seen and 'type="error"' not in bob.seen

    # both log in again on n2: offline messages are there, and routing works
    alice, carol = n2.client("alice", "a2"), n2.client("carol", "c2")
    for client in (alice, carol):
        client.send("<presence/>")
    assert "offline" in alice.read_until("offline.*?</message>")
    text = carol.read_until("after.*?</message>")
    assert "queued" in text  # unacknowledged on n1, stored when its session ended there
    alice.send("<message to='bob@localhost/b2' type='chat'><body>back</body></message>")
    assert "back" in bob.read_until("back.*?</message>")
    for client in (alice, bob, carol):
        client.close()
