"""The metrics of one server, read from the objects that count at scrape time.

:class:`ServerMetrics` owns a :class:`~prometheus_client.CollectorRegistry` of its own (never
the global one) with :class:`ServerCollector`, prometheus_client's process collector (memory,
CPU, open files) and the gauges modules report (:meth:`ServerMetrics.add_gauge`).
:meth:`ServerMetrics.render` produces the exposition text (Prometheus text format, or
OpenMetrics when the scraper's ``Accept`` asks for it).

What is read (duck-typed, so this package imports nothing above it):
``router`` (``delivered``, ``handled``, ``remote``, ``bounced``, ``stanza_errors``,
``sessions``), ``connections`` (``traffic`` by stream kind, ``logins``, ``limit_hits``),
``auth_throttle.limit_hits``, ``storage.latency``, ``draining``, and the cluster layer's
``node`` (:mod:`xmppd.metrics.cluster`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from xmppd.metrics.cluster import cluster_families
from xmppd.metrics.histogram import Histogram
from xmppd.metrics.lag import LoopLag
from xmppd.metrics.workers import MergedRegistry, Snapshot, snapshot

log = logging.getLogger(__name__)

PREFIX = "xmppd_"
#: A module's gauge that takes longer than this to read is left out of that scrape.
GAUGE_TIMEOUT_S = 5.0

Value = float | int
#: A gauge reading: one value, or values by label values (a tuple, or a string for one
#: label).
Reading = Value | Mapping[Any, Value]


@dataclass(frozen=True)
class Gauge:
    """A value a module reports (``read()`` may return an awaitable: storage sizes)."""

    name: str
    doc: str
    read: Callable[[], Any]
    labels: tuple[str, ...] = ()
    counter: bool = False  # a count that only grows (exposed as ``xmppd_<name>_total``)


class ServerMetrics:
    """The metrics of one server: its registry, the module gauges and the loop-lag timer."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.gauges: dict[str, Gauge] = {}
        self.lag = LoopLag()
        self._readings: dict[str, Reading] = {}
        #: with several workers: this one's label, and how the others' snapshots are
        #: gathered (:mod:`xmppd.metrics.workers`); None: one process
        self.worker: str | None = None
        self.gather: Callable[[], Awaitable[dict[str, Snapshot]]] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(self))
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU, fds
        PlatformCollector(registry=self.registry)  # python_info

    def add_gauge(self, name: str, doc: str, read: Callable[[], Any],
                  labels: Iterable[str] = (), counter: bool = False) -> Callable[[], None]:
        """Report ``xmppd_<name>`` from ``read()`` at each scrape (``counter``: a count
        that only grows, ``xmppd_<name>_total``); returns its removal."""
        if name in self.gauges:
            raise KeyError(f"metric {PREFIX}{name} is reported already")
        gauge = self.gauges[name] = Gauge(name, doc, read, tuple(labels), counter)

        def remove() -> None:
            if self.gauges.get(name) is gauge:
                del self.gauges[name]
                self._readings.pop(name, None)

        return remove

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lag.start(loop)

    def stop(self) -> None:
        self.lag.stop()

    async def refresh(self) -> None:
        """Read the module gauges (some read storage, so this is a coroutine)."""
        readings: dict[str, Reading] = {}
        for gauge in list(self.gauges.values()):
            try:
                value = gauge.read()
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, GAUGE_TIMEOUT_S)
            except TimeoutError:
                log.warning("limit GAUGE_TIMEOUT_S (%gs) reached for metric %s%s: left out "
                            "of this scrape", GAUGE_TIMEOUT_S, PREFIX, gauge.name)
                continue
            except Exception as exc:  # one broken reading must not cost the whole scrape
                log.warning("metric %s%s not read: %s", PREFIX, gauge.name, exc)
                continue
            readings[gauge.name] = value
        self._readings = readings

    def readings(self) -> Mapping[str, Reading]:
        return self._readings

    async def snapshot(self) -> Snapshot:
        """This process's families in a JSON-able form (what another worker asks for)."""
        await self.refresh()
        return snapshot(self.registry.collect())

    async def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(exposition text, its content type) for a scraper sending ``accept``; with
        several workers, every worker's samples, labelled ``worker``."""
        await self.refresh()
        encoder, content_type = choose_encoder(accept or "")
        if self.gather is None or self.worker is None:
            return encoder(self.registry), content_type
        others = await self.gather()
        merged = MergedRegistry(self.worker, self.registry.collect(), others)
        return encoder(merged), content_type  # type: ignore[arg-type]


class ServerCollector(Collector):
    """Turns the counters of one server into metric families (at scrape time only)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        source = self.metrics.source
        yield from _connections(source.connections)
        yield from _sessions(source.router)
        yield from _stanzas(source.router)
        yield _counter("limit_hits", "times a limit fired, by its config key", ["limit"],
                       _merged(source.connections.limit_hits,
                               source.auth_throttle.limit_hits).items())
        yield _histograms("storage_operation_seconds",
                          "latency of storage operations (read: on the loop thread; "
                          "read_thread, write: through the storage thread; append_batch: "
                          "a batch of archive appends)", "operation",
                          source.storage.latency.by.items())
        lag = self.metrics.lag
        yield _histograms("event_loop_lag_seconds", "how late a periodic timer ran", None,
                          [("", lag.histogram)])
        yield GaugeMetricFamily(PREFIX + "event_loop_lag_last_seconds",
                                "how late the last timer ran", value=lag.last)
        yield GaugeMetricFamily(PREFIX + "draining", "1 once a drain (xmppd drain, "
                                "SIGUSR1) began", value=0 if source.draining is None else 1)
        yield from cluster_families(source.node)
        for gauge in self.metrics.gauges.values():
            reading = self.metrics.readings().get(gauge.name)
            if reading is not None:
                yield _gauge_family(gauge, reading)


def _connections(connections: Any) -> Iterator[Metric]:
    traffic = list(connections.traffic.values())
    yield _gauge("connections", "open connections by stream kind", ["kind"],
                 ((t.kind, t.opened - t.closed) for t in traffic))
    yield _counter("connections_opened", "connections accepted (or made) by stream kind",
                   ["kind"], ((t.kind, t.opened) for t in traffic))
    yield _counter("received_bytes", "bytes received by stream kind", ["kind"],
                   ((t.kind, t.bytes_in) for t in traffic))
    yield _counter("sent_bytes", "bytes sent by stream kind", ["kind"],
                   ((t.kind, t.bytes_out) for t in traffic))
    yield _counter("stream_errors", "stream errors sent, by stream kind and condition",
                   ["kind", "condition"],
                   (((t.kind, c), n) for t in traffic for c, n in t.stream_errors.items()))
    yield _counter("logins", "authentications by stream kind, mechanism and outcome "
                   "(success, failure: bad credentials, error: a negotiation error, refused: "
                   "password spraying from the address)", ["kind", "mechanism", "outcome"],
                   connections.logins.items())


def _sessions(router: Any) -> Iterator[Metric]:
    yield _gauge("sessions", "bound client sessions (stream management's detached ones "
                 "included)", ["kind"], [("c2s", len(router.sessions))])


def _stanzas(router: Any) -> Iterator[Metric]:
    outcomes = [((k, outcome), n)
                for outcome, table in (("delivered", router.deliveries()),
                                       ("handled", router.handled),
                                       ("remote", router.remote),
                                       ("forwarded", router.forwards()),
                                       ("bounced", router.bounced))
                for k, n in list(table.items())]
    yield _counter("stanzas_routed", "stanzas routed by kind and outcome (delivered: to a "
                   "local session, each recipient counted; handled: taken by a module, such "
                   "as presence, a message to a bare JID or to the server, offline storage, "
                   "an IQ the server answers (what the module then delivers is counted as "
                   "delivered too); remote: to another server or a component; forwarded: to a "
                   "session on another worker or node, delivered there; bounced: "
                   "answered with a stanza error)", ["kind", "outcome"], outcomes)
    yield _counter("stanza_errors", "stanza errors the server generated, by condition",
                   ["condition"], router.stanza_errors.items())


def _merged(*tables: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for table in tables:
        for key, n in table.items():
            out[key] = out.get(key, 0) + n
    return out


def _labels(key: Any) -> list[str]:
    return [key] if isinstance(key, str) else [str(k) for k in key]


def _counter(name: str, doc: str, labels: list[str], rows: Iterable[tuple[Any, int]]
             ) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for key, n in list(rows):  # list(): a dict the loop may grow (only off-loop readers)
        family.add_metric(_labels(key), n)
    return family


def _gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[Any, Value]]
           ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
    for key, n in list(rows):
        family.add_metric(_labels(key), n)
    return family


def _histograms(name: str, doc: str, label: str | None,
                rows: Iterable[tuple[str, Histogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, doc, labels=[label] if label else None)
    for key, hist in list(rows):
        family.add_metric([key] if label else [], hist.cumulative(), hist.total)
    return family


def _gauge_family(gauge: Gauge, reading: Reading) -> Metric:
    if gauge.counter:
        if not gauge.labels:
            return CounterMetricFamily(PREFIX + gauge.name, gauge.doc, value=float(reading))
        return _counter(gauge.name, gauge.doc, list(gauge.labels), dict(reading).items())
    if not gauge.labels:
        return GaugeMetricFamily(PREFIX + gauge.name, gauge.doc, value=float(reading))
    return _gauge(gauge.name, gauge.doc, list(gauge.labels), dict(reading).items())
