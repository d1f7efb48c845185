"""Memory held by idle tokenizers: many connections sit between stanzas most of the time.

    python -m benchmarks.tokenizer_memory [count]      (from the repository root)

Creates ``count`` tokenizers (default 10 000) per implementation, feeds each a stream header
and a few stanzas (whose events are dropped), then measures with ``tracemalloc`` what the
tokenizers still hold: bytes per idle tokenizer.  Target: under 1 KiB.
"""

from __future__ import annotations

import gc
import importlib
import sys
import tracemalloc

from benchmarks.corpus import HEADER, corpus

IMPLS = {"compiled": "xmppd._speedups.tokenizer", "pure": "xmppd.xml._tokenizer_pure"}


def idle_bytes(modname: str, count: int = 10_000) -> float:
    """Average bytes allocated and still held per tokenizer after a header and 5 stanzas."""
    module = importlib.import_module(modname)
    stanzas = corpus(5, seed=1)
    chunks = [HEADER, *stanzas, b" "]  # a trailing keepalive space stays buffered
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    toks = []
    for _ in range(count):
        tok = module.Tokenizer()
        for chunk in chunks:
            tok.feed(chunk)
        toks.append(tok)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    held -= sys.getsizeof(toks)  # the list holding them is the benchmark's, not theirs
    return held / count


def main(argv: list[str]) -> None:
    count = int(argv[1]) if len(argv) > 1 else 10_000
    for name, modname in IMPLS.items():
        try:
            per = idle_bytes(modname, count)
        except ImportError:
            print(f"{name:9s} not built")
            continue
        print(f"{name:9s} {per:8.0f} bytes per idle tokenizer ({count} tokenizers)")


if __name__ == "__main__":
    main(sys.argv)
