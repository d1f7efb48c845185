"""JID preparation speed: compiled vs pure vs a plain precis-i18n + idna baseline.

    python -m pytest benchmarks/bench_jid.py --benchmark-only

Each benchmark prepares a whole list of JIDs per round; the summary printed at the end
gives normalizations per second.  "cached" runs warm the cache first (every lookup
hits); "uncached" runs cycle through twice as many distinct JIDs as the cache holds,
so its oldest-first eviction makes every lookup miss.  The compiled ASCII path never
consults the cache, so both figures measure the same code there.  The "non-ascii"
set has ten domains (they hit the small domainpart cache, as on a real server); the
"non-ascii-distinct-domains" set misses that cache too.
"""

from __future__ import annotations

import importlib

import idna
import pytest
from precis_i18n import get_profile

import xmppd.jid._pure as pure

_USERNAME = get_profile("UsernameCaseMapped")
_OPAQUE = get_profile("OpaqueString")


def baseline_prepare(text: str) -> str:
    """What one would write without xmppd.jid: PRECIS and IDNA on every part, every time."""
    slash = text.find("/")
    head = text if slash < 0 else text[:slash]
    at = head.find("@")
    domain = idna.decode(idna.encode(head[at + 1 :].rstrip("."), uts46=True))
    out = domain if at < 0 else _USERNAME.enforce(head[:at]) + "@" + domain
    return out if slash < 0 else out + "/" + _OPAQUE.enforce(text[slash + 1 :])


def _impl(name: str):
    if name == "pure":
        return pure
    try:
        return importlib.import_module("xmppd._speedups.jid")
    except ImportError:
        pytest.skip("xmppd._speedups.jid is not built")


def _dataset(kind: str, count: int) -> list[str]:
    if kind == "ascii":
        return [f"user{i}@example{i % 10}.com/resource{i}" for i in range(count)]
    if kind == "ascii-mixed-case":
        return [f"User{i}@Example{i % 10}.COM/Resource{i}" for i in range(count)]
    if kind == "non-ascii":
        return [f"j\u00fcrgen{i}@m\u00fcnchen{i % 10}.example/H\u00e4nde{i}" for i in range(count)]
    # Every domain distinct too: misses the domainpart cache as well (the cold case).
    return [f"j\u00fcrgen{i}@m\u00fcnchen{i}.example/H\u00e4nde{i}" for i in range(count)]


KINDS = ["ascii", "ascii-mixed-case", "non-ascii", "non-ascii-distinct-domains"]
CACHED_COUNT = 1000
UNCACHED_COUNT = 2 * pure.CACHE_SIZE
BASELINE_COUNT = 500

_results: list[tuple[str, float]] = []


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None or not _results:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("JID normalizations per second (mean round time):")
        for name, rate in _results:
            reporter.write_line(f"  {name:<50} {rate:>14,.0f}/s")


def _record(benchmark, name: str, count: int) -> None:
    stats = benchmark.stats
    if stats is None:  # --benchmark-disable: the function ran once, unmeasured
        return
    rate = count / stats.stats.mean
    benchmark.extra_info["normalizations_per_s"] = rate
    _results.append((name, rate))


def _run_all(fn, data):
    for text in data:
        fn(text)


@pytest.mark.parametrize("kind", KINDS[:3])
@pytest.mark.parametrize("impl", ["compiled", "pure"])
def test_jid_cached(benchmark, impl, kind):
    mod = _impl(impl)
    data = _dataset(kind, CACHED_COUNT)
    mod.cache_clear()
    _run_all(mod.JID, data)
    benchmark(_run_all, mod.JID, data)
    _record(benchmark, f"{impl} JID() {kind} cached", len(data))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", ["compiled", "pure"])
def test_jid_uncached(benchmark, impl, kind):
    mod = _impl(impl)
    data = _dataset(kind, UNCACHED_COUNT)
    mod.cache_clear()
    benchmark.pedantic(_run_all, (mod.JID, data), rounds=3, iterations=1)
    _record(benchmark, f"{impl} JID() {kind} uncached", len(data))


@pytest.mark.parametrize("kind", ["ascii", "non-ascii"])
@pytest.mark.parametrize("impl", ["compiled", "pure"])
def test_normalize_cached(benchmark, impl, kind):
    mod = _impl(impl)
    data = _dataset(kind, CACHED_COUNT)
    _run_all(mod.normalize, data)
    benchmark(_run_all, mod.normalize, data)
    _record(benchmark, f"{impl} normalize() {kind} cached", len(data))


@pytest.mark.parametrize("kind", KINDS[:3])
def test_baseline_precis(benchmark, kind):
    data = _dataset(kind, BASELINE_COUNT)
    assert [baseline_prepare(t) for t in data[:3]] == [pure.normalize(t) for t in data[:3]]
    benchmark.pedantic(_run_all, (baseline_prepare, data), rounds=3, iterations=1)
    _record(benchmark, f"precis-i18n+idna baseline {kind}", len(data))
