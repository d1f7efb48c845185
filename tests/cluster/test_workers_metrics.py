"""``GET /metrics`` with ``xmppd run --workers 2``: whichever worker the kernel hands a
scrape to answers for both (every sample labelled ``worker``), with the cluster layer's
series: peers, stanzas and bytes per link, pending bytes, remote sessions, forwarded
stanzas."""

from __future__ import annotations

import os
import signal
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from test_workers import MODULES, Cluster


def scraped(cluster: Cluster) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value of one scrape."""
    url = f"http://127.0.0.1:{cluster.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def at(table: dict, name: str, **labels: str) -> float:
    return table.get((name, frozenset(labels.items())), -1.0)


def test_a_scrape_of_either_worker_answers_for_both(tmp_path):
    cluster = Cluster(tmp_path, MODULES + ["metrics"], http=True)
    try:
        alice = cluster.client("alice", 0, "a0")
        bob = cluster.client("bob", 1, "b1")
        alice.send("<message to='bob@localhost/b1' type='chat'><body>to 1</body></message>")
        bob.read_until("to 1.*?</message>")
        bob.send("<message to='alice@localhost/a0' type='chat'><body>to 0</body></message>")
        alice.read_until("to 0.*?</message>")
        scraped_by = set()
        for _ in range(8):  # each on a new connection: either worker may take it
            table = scraped(cluster)
            scraped_by |= {dict(labels)["worker"] for name, labels in table
                           if name == "xmppd_connections" and dict(labels)["kind"] == "http"
                           and table[(name, labels)] > 0}
            for me, peer in (("0", "1"), ("1", "0")):
                assert at(table, "process_resident_memory_bytes", worker=me) > 0
                assert at(table, "xmppd_cluster_peers", state="up", worker=me) == 1
                assert at(table, "xmppd_cluster_peers", state="down", worker=me) == 0
                assert at(table, "xmppd_cluster_link_sent_stanzas_total", peer=peer,
                          worker=me) >= 1
                assert at(table, "xmppd_cluster_link_received_stanzas_total", peer=peer,
                          worker=me) >= 1
                assert at(table, "xmppd_cluster_link_sent_bytes_total", peer=peer,
                          worker=me) > 0
                assert at(table, "xmppd_cluster_link_received_bytes_total", peer=peer,
                          worker=me) > 0
                assert at(table, "xmppd_cluster_link_pending_bytes", peer=peer,
                          worker=me) == 0
                assert at(table, "xmppd_cluster_remote_sessions", peer=peer, worker=me) == 1
                assert at(table, "xmppd_stanzas_routed_total", kind="message",
                          outcome="forwarded", worker=me) >= 1
        assert scraped_by and scraped_by <= {"0", "1"}

        # a worker that is gone is left out; the scrape still answers
        killed = cluster.wait_up()["1"]["pid"]
        os.kill(killed, signal.SIGKILL)
        for _attempt in range(20):  # (a connection the dying worker accepted is reset)
            try:
                table = scraped(cluster)
                break
            except OSError:
                time.sleep(0.1)
        assert at(table, "process_resident_memory_bytes", worker="0") > 0
        cluster.wait_up(pids={killed})  # restarted by the supervisor
        alice.close()
        bob.close()
    finally:
        assert cluster.stop() == 0, cluster.logged()
