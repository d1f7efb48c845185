"""The cluster layer's metric families, read at scrape time from a server's ``node`` (the
worker :class:`~xmppd.cluster.node.Node` or a :class:`~xmppd.cluster.redisnode.RedisNode`;
duck-typed, so this package imports nothing above it).

A peer is a worker number (``xmppd run --workers N``) or a node name (``cluster.redis``).
Its counters are plain ints on the objects that count: a link's ``stanzas`` (buffered
for it), ``frames`` and ``records_bytes`` (written or published), an incoming side's
``bytes_in`` and ``stanzas_in``; the node's ``rerouted``, ``forwarded_on`` and, for a
cluster node, ``overflow_bounces``, ``reconnects``, ``purges`` and ``republished``.
A peer's counters start again at 0 when it comes back as a new life.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

PREFIX = "xmppd_cluster_"


def _peer(obj: Any) -> str:
    """A peer's label: its node name, else its worker number."""
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) else str(obj.worker)


def _family(kind: type, name: str, doc: str, labels: list[str],
            rows: list[tuple[list[str], float]]) -> Metric:
    family = kind(PREFIX + name, doc, labels=labels)
    for values, n in rows:
        family.add_metric(values, n)
    return family


def _value(kind: type, name: str, doc: str, value: float | None) -> Metric:
    """A family of one sample, or none (``value`` None: this server has no such thing)."""
    family = kind(PREFIX + name, doc, labels=[])
    if value is not None:
        family.add_metric([], value)
    return family


def cluster_families(node: Any) -> Iterator[Metric]:
    """The families of ``node``; without one (a single process) they are declared with
    no samples, so that dashboards name the same metrics everywhere."""
    links = [] if node is None else list(node.links.values())
    inbound = [] if node is None else [p for p in node.inbound.values()
                                       if getattr(p, "worker", None) is not None]
    redis = hasattr(node, "reconnects")
    if node is None:
        states = []
    elif redis:
        states = [(["up"], len(node.names))]
    else:
        up = sum(1 for w in node.links if w in node.inbound)
        states = [(["up"], up), (["down"], len(node.links) - up)]
    yield _family(GaugeMetricFamily, "peers", "other workers or nodes by state (a node "
                  "declared dead is forgotten, so a cluster node has only up ones)",
                  ["state"], states)
    yield _family(CounterMetricFamily, "link_sent_stanzas", "stanzas sent to each peer "
                  "(deliveries to its sessions, and stanzas handed to it as owner)",
                  ["peer"], [([_peer(link)], link.stanzas) for link in links])
    yield _family(CounterMetricFamily, "link_sent_frames", "frames written (workers) or "
                  "messages published (nodes) to each peer", ["peer"],
                  [([_peer(link)], link.frames) for link in links])
    yield _family(CounterMetricFamily, "link_sent_bytes", "record bytes sent to each peer",
                  ["peer"], [([_peer(link)], link.records_bytes) for link in links])
    yield _family(GaugeMetricFamily, "link_pending_bytes", "record bytes waiting for each "
                  "peer (its connection, or Redis, is down)", ["peer"],
                  [([_peer(link)], len(link.buffer)) for link in links])
    yield _family(CounterMetricFamily, "link_received_stanzas", "stanzas received from each "
                  "peer", ["peer"], [([_peer(p)], p.stanzas_in) for p in inbound])
    yield _family(CounterMetricFamily, "link_received_bytes", "bytes received from each "
                  "peer", ["peer"], [([_peer(p)], p.bytes_in) for p in inbound])
    yield _family(GaugeMetricFamily, "remote_sessions", "sessions of each peer in this "
                  "process's replica of the registry", ["peer"],
                  [([_peer(link)], node.registry.count(link.worker)) for link in links])
    yield _value(CounterMetricFamily, "rerouted_stanzas", "stanzas a peer sent for a "
                 "session that had left meanwhile, routed again here",
                 None if node is None else node.rerouted)
    yield _value(CounterMetricFamily, "handed_stanzas", "stanzas handed as they are to "
                 "their owner (room, service, PEP account) on a peer",
                 None if node is None else node.forwarded_on)
    yield _value(GaugeMetricFamily, "redis_connected", "1 while this node is registered in "
                 "Redis", (1 if node.up else 0) if redis else None)
    yield _value(CounterMetricFamily, "redis_reconnects", "reconnections to Redis after "
                 "losing it", node.reconnects if redis else None)
    yield _value(CounterMetricFamily, "overflow_bounces", "stanzas for a peer answered "
                 "remote-server-timeout: its pending buffer was full (Redis away too long)",
                 node.overflow_bounces if redis else None)
    yield _value(CounterMetricFamily, "republished_frames", "published messages that "
                 "reached no subscriber, kept and tried again",
                 node.republished if redis else None)
    yield _family(CounterMetricFamily, "purges", "peer lives declared dead here (announced: "
                  "this node took the dead mark, announced their sessions' end and deleted "
                  "their rows)", ["announced"],
                  [(["true" if k else "false"], n) for k, n in node.purges.items()]
                  if redis else [])
