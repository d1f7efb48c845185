"""Latency histograms as plain lists: cheap to fill on a hot-ish path (a bisect and two
additions), read at scrape time by :mod:`xmppd.metrics.collector`."""

from __future__ import annotations

from bisect import bisect_left

#: Upper bounds in seconds (Prometheus ``le``; the last bucket, +Inf, is implicit).
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
)


class Histogram:
    """One histogram: ``counts[i]`` observations fell in bucket ``i`` (not cumulative; the
    last slot is +Inf), and their ``total`` in seconds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, cumulative count), ..., ("+Inf", count)]`` as Prometheus wants them."""
        out, running = [], 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


class Histograms:
    """Histograms by one label value (e.g. a storage operation: ``read``, ``write``)."""

    __slots__ = ("bounds", "by")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.by: dict[str, Histogram] = {}

    def observe(self, label: str, value: float) -> None:
        self.histogram(label).observe(value)

    def histogram(self, label: str) -> Histogram:
        """The histogram of ``label`` (created on first use): a hot caller keeps it, and
        pays one call per observation instead of two."""
        hist = self.by.get(label)
        if hist is None:
            hist = self.by[label] = Histogram(self.bounds)
        return hist
