"""Metrics: the counters live on the objects that count (router, connection accounting,
storage); this package reads them at scrape time and renders Prometheus/OpenMetrics text.

Nothing here is called per stanza: the hot path only adds to plain ints and dicts
(:mod:`xmppd.metrics.histogram` for the few latencies measured), and
:class:`~xmppd.metrics.collector.ServerMetrics` turns them into metric families when a
scraper asks, on a registry of its own per server (no global state: two servers in one
process never share a metric).
"""
