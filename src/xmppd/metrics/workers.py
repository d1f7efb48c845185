"""One scrape for the whole server with ``xmppd run --workers N``: the scraped worker adds
the other workers' samples (asked over the worker links, :mod:`xmppd.cluster.scrape`) to
its own, every sample labelled ``worker="<i>"``, families merged by name.

This is what a Prometheus operator gets from any multi-process exporter (one target,
per-process series): ``sum without (worker) (rate(xmppd_stanzas_routed_total[5m]))`` for
the server, the label for "which worker is hot".  Counters are never summed here: a
worker's restart resets only its own series, which ``rate()`` handles.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric

#: One family as it travels between workers (JSON): name, type, help, unit, and the
#: samples as [name, labels, value].
Snapshot = list[list[Any]]


def snapshot(families: Iterable[Metric]) -> Snapshot:
    """``families`` (a registry's ``collect()``) in a JSON-able form."""
    return [[f.name, f.type, f.documentation, f.unit,
             [[s.name, s.labels, s.value] for s in f.samples]] for f in families]


def _labelled(family: Metric, worker: str, into: dict[str, Metric]) -> None:
    merged = into.get(family.name)
    if merged is None:
        merged = into[family.name] = Metric(family.name, family.documentation, family.type,
                                            family.unit)
    for sample in family.samples:
        merged.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)


def _restore(entry: list[Any]) -> Metric:
    name, kind, doc, unit, samples = entry
    family = Metric(name, doc, kind, unit)
    for sample_name, labels, value in samples:
        family.add_sample(sample_name, labels, value)
    return family


class MergedRegistry:
    """What the exposition encoders read (``collect()``): this worker's families and the
    other workers' snapshots, each sample labelled with its worker."""

    def __init__(self, me: str, local: Iterable[Metric], others: dict[str, Snapshot]) -> None:
        self.me = me
        self.local = list(local)
        self.others = others

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for family in self.local:
            _labelled(family, self.me, families)
        for worker, entries in sorted(self.others.items()):
            for entry in entries:
                try:
                    _labelled(_restore(entry), worker, families)
                except (TypeError, ValueError):
                    continue  # a malformed entry costs only itself
        yield from families.values()
