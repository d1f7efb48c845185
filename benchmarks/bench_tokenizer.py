"""Stream tokenizer throughput: compiled vs pure twin vs pyexpat and lxml baselines.

    python -m pytest benchmarks/bench_tokenizer.py --benchmark-only

Every benchmark reads the same realistic client stream (``benchmarks/corpus.py``: chats,
chat states, receipts, presence with caps, rosters, MAM pages; some non-ASCII) cut into
4 KiB socket-sized chunks.  ``extra_info`` holds MB/s and stanzas/s (from the mean time):

* ``compiled-full``: the compiled tokenizer with every element of every stanza materialized
  (the tree walked through ``children``);
* ``compiled-children``: each stanza's child list built (what a module reading the payload
  does: nested elements with a long enough content stay lazy);
* ``compiled-envelope``: the compiled tokenizer, children not touched (routing only);
* ``pure``: the pyexpat twin (children are always built; walked as for compiled-full);
* ``pyexpat-no-handlers`` / ``pyexpat-noop-handlers``: raw pyexpat, nothing built;
* ``lxml-pull``: lxml's ``XMLPullParser`` with start/end events.
"""

from __future__ import annotations

import importlib
import pyexpat

import pytest
from lxml import etree

from benchmarks.corpus import chunks, stream_bytes
from xmppd.xml.element import Element

DATA, STANZAS = stream_bytes(3000)
CHUNKS = chunks(DATA, 4096)
LIMIT = 1 << 20
_RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _summary(pytestconfig):
    """Print MB/s, stanzas/s and the ratios to the pyexpat baselines after the run."""
    yield
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not _RESULTS:
        return
    lines = ["", f"tokenizer throughput ({len(DATA)} bytes, {STANZAS} stanzas):"]
    noop = _RESULTS.get("pyexpat-noop-handlers")
    for name, mean in sorted(_RESULTS.items(), key=lambda kv: kv[1]):
        ratio = f"  {noop / mean:5.2f}x pyexpat+noop" if noop else ""
        lines.append(
            f"  {name:24s} {len(DATA) / mean / 1e6:8.1f} MB/s {STANZAS / mean:12,.0f} stanzas/s{ratio}"
        )
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


def _record(benchmark) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["MB/s"] = round(len(DATA) / mean / 1e6, 1)
    benchmark.extra_info["stanzas/s"] = round(STANZAS / mean)
    name = benchmark.name.removeprefix("test_").replace("_", "-")
    _RESULTS[name] = mean


def _materialize(children: list) -> None:
    """Touch every element below: nested elements may be built lazily too."""
    for kid in children:
        if type(kid) is not str:
            _materialize(kid.children)


def _tokenize(module, materialize: str) -> int:
    """Feed the corpus; ``materialize``: "" (envelopes only), "children" (each stanza's
    child list) or "all" (every element below each stanza)."""
    tok = module.Tokenizer(max_stanza_size=LIMIT)
    count = 0
    for chunk in CHUNKS:
        for event in tok.feed(chunk):
            count += 1
            if materialize and type(event) is Element:
                if materialize == "all":
                    _materialize(event.children)
                else:
                    event.children  # noqa: B018
    return count


def _compiled():
    try:
        return importlib.import_module("xmppd._speedups.tokenizer")
    except ImportError:
        pytest.skip("compiled tokenizer not built")


def test_compiled_full(benchmark):
    mod = _compiled()
    assert benchmark(_tokenize, mod, "all") == STANZAS + 1
    _record(benchmark)


def test_compiled_children(benchmark):
    mod = _compiled()
    assert benchmark(_tokenize, mod, "children") == STANZAS + 1
    _record(benchmark)


def test_compiled_envelope(benchmark):
    mod = _compiled()
    assert benchmark(_tokenize, mod, "") == STANZAS + 1
    _record(benchmark)


def test_pure(benchmark):
    mod = importlib.import_module("xmppd.xml._tokenizer_pure")
    assert benchmark(_tokenize, mod, "all") == STANZAS + 1
    _record(benchmark)


def _pyexpat(noop: bool) -> None:
    parser = pyexpat.ParserCreate("UTF-8", "\x01")
    if noop:
        def nothing(*args):
            return None

        parser.StartElementHandler = nothing
        parser.EndElementHandler = nothing
        parser.CharacterDataHandler = nothing
    for chunk in CHUNKS:
        parser.Parse(chunk, False)


def test_pyexpat_no_handlers(benchmark):
    benchmark(_pyexpat, False)
    _record(benchmark)


def test_pyexpat_noop_handlers(benchmark):
    benchmark(_pyexpat, True)
    _record(benchmark)


def _lxml_pull() -> int:
    parser = etree.XMLPullParser(events=("start", "end"))
    count = 0
    for chunk in CHUNKS:
        parser.feed(chunk)
        for _event, _el in parser.read_events():
            count += 1
    return count


def test_lxml_pull(benchmark):
    assert benchmark(_lxml_pull) > STANZAS
    _record(benchmark)
