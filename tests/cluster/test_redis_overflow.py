"""Redis away while stanzas pile up for another node: past the link's 8 MiB of pending
records the next ones are answered ``remote-server-timeout`` (RFC 6120 §8.3.3.17), and
``/metrics`` counts them and shows the pending bytes (real Redis and PostgreSQL; the
fixtures of ``test_redis_cluster.py``)."""

from __future__ import annotations

import time

from test_redis_cluster import (  # noqa: F401 - fixtures
    n1_workers,
    nodes,
    redis_server,
)
from test_workers_metrics import at, scraped

from xmppd.cluster.redisnode import MAX_PENDING_BYTES

BODY = "x" * (200 * 1024)  # under the 256 KiB stanza limit


def test_a_full_link_answers_remote_server_timeout(nodes, redis_server):  # noqa: F811
    n1, n2 = nodes
    bob = n2.client("bob", "b2")
    n1.knows("bob@localhost/b2", "n2")
    # several connections: each client's input is rate-limited (1 MiB/s by default)
    senders = [n1.client("alice", f"a{i}") for i in range(5)]
    redis_server.stop()
    count = MAX_PENDING_BYTES // len(BODY) + 5
    for i in range(count):
        senders[i % len(senders)].send(f"<message to='bob@localhost/b2' type='chat' "
                                       f"id='big{i}'><body>{BODY}</body></message>")
    deadline = time.monotonic() + 60
    table = scraped(n1)
    while at(table, "xmppd_cluster_overflow_bounces_total") < 1:
        assert time.monotonic() < deadline, n1.logged()
        time.sleep(0.2)
        table = scraped(n1)
    assert at(table, "xmppd_cluster_link_pending_bytes", peer="n2") > MAX_PENDING_BYTES
    assert at(table, "xmppd_cluster_redis_connected") == 0
    bounced = ""
    while "remote-server-timeout" not in bounced:  # the sender of an overflowing one
        assert time.monotonic() < deadline, bounced[-2000:]
        for sender in senders:
            try:
                bounced += sender.read_until("remote-server-timeout", timeout=0.2)
            except TimeoutError:
                pass
    assert "type='error'" in bounced or 'type="error"' in bounced
    redis_server.start()  # for the fixtures' clean stop
    for client in (*senders, bob):
        client.close()
