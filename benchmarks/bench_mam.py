"""The message archive module's own figures (a few seconds; not part of the test suite).

    PYTHONPATH=src python benchmarks/bench_mam.py [N]

* archive writes/s through the SQLite store the way ``mam`` issues them
  (``start_append_shared``: no task, no future of its own; the appends of one loop
  iteration are one writer job, one transaction, one future), with ``start_append`` (a
  future and an item each), with ``append`` coroutines gathered (a task each; still
  batched), and one-at-a-time; the process CPU per append beside the first two (the writer
  thread's included: what counts with the server on one core);
* a MAM page of 50 (the last page and one in the middle) from an archive of N items
  (default 200,000): the store query plus decoding and wrapping each result, as the
  module sends it.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench_archive import NS, OWNER, fill

from xmppd.core.config import Limits
from xmppd.modules.mam import Archive
from xmppd.storage import SQLiteStorage
from xmppd.storage.stores import new_item_id
from xmppd.xml.stanza import encode_stanza, message


async def writes(path: Path, n: int = 5000) -> None:
    async with SQLiteStorage(path) as storage:
        store = storage.open_store(NS, "archive")
        data = encode_stanza(message("bob@example.com", "hello " * 8, **{"from": "a@x/r"}))
        before = storage.commits
        shared_rate, shared_cpu = await _shared(storage, store, data, n, owners=1)
        shared_commits = storage.commits - before
        before = storage.commits
        t0, c0 = time.perf_counter(), time.process_time()
        for _round in range(n // 500):
            last = [store.start_append("w@example.com", data, stamp=time.time(),
                                       with_jid="bob@example.com") for _ in range(500)]
            await asyncio.sleep(0)
        await last[-1]
        started = n // 500 * 500 / (time.perf_counter() - t0)
        started_cpu = (time.process_time() - c0) / (n // 500 * 500) * 1e6
        commits = storage.commits - before
        t0 = time.perf_counter()
        await asyncio.gather(*(store.append("w@example.com", data, stamp=time.time(),
                                            with_jid="bob@example.com") for _ in range(n)))
        grouped = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(n // 10):
            await store.append("w@example.com", data, stamp=time.time(), with_jid="b@x")
        serial = n // 10 / (time.perf_counter() - t0)
        spread = await _shared(storage, store, data, 40_000, owners=200)
        print(f"archive writes/s, start_append_shared (mam): {shared_rate:10.0f}"
              f"  ({shared_commits} commits for {n // 500 * 500}; {shared_cpu:.1f} us CPU each)")
        print(f"  the same over 200 owners, merges included:  {spread[0]:10.0f}"
              f"  ({spread[1]:.1f} us CPU each)")
        print(f"archive writes/s, start_append:              {started:10.0f}"
              f"  ({commits} commits for {n // 500 * 500}; {started_cpu:.1f} us CPU each)")
        print(f"archive writes/s, concurrent (group commit): {grouped:10.0f}")
        print(f"archive writes/s, one commit each:           {serial:10.0f}")


async def _shared(storage: SQLiteStorage, store, data: bytes, n: int,
                  owners: int) -> tuple[float, float]:
    """``n`` shared appends (as ``mam`` makes them), 500 per loop iteration as routing does,
    round robin over ``owners`` (each routed message is archived for two), the staged items'
    merges included (~16 000 items each, and the rest at the end): writes/s and CPU µs per
    item."""
    t0, c0 = time.perf_counter(), time.process_time()
    for round_ in range(n // 500):
        for i in range(500):
            shared = store.start_append_shared(f"u{(round_ * 500 + i) % owners}@example.com",
                                               data, stamp=time.time(),
                                               with_jid="bob@example.com", id=new_item_id())
        await asyncio.sleep(0)
    await shared
    await storage.merge_staged()
    done = n // 500 * 500
    return done / (time.perf_counter() - t0), (time.process_time() - c0) / done * 1e6


async def pages(path: Path, n: int) -> None:
    async with SQLiteStorage(path) as storage:
        store = storage.open_store(NS, "archive")
        mod = Archive()
        mod.api = SimpleNamespace(limits=Limits(), log=None)
        middle = f"id{n // 2:08d}"

        async def page(**anchor) -> int:
            items, _complete = await mod._page(OWNER, {}, anchor.get("after"),
                                               anchor.get("before"), "before" in anchor, 50,
                                               None)
            return len(b"".join(mod._result(i, OWNER, "juliet@example.com/r", "q").to_bytes()
                                for i in items))

        mod.archive = store
        for label, kw in (("last page", {"before": None}), ("page after the middle",
                                                            {"after": middle})):
            await page(**kw)
            t0 = time.perf_counter()
            for _ in range(50):
                size = await page(**kw)
            ms = (time.perf_counter() - t0) / 50 * 1000
            print(f"MAM page of 50, {label:22s} of {n} items: {ms:7.2f} ms ({size} bytes)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(writes(Path(tmp) / "w.sqlite3"))
        path = Path(tmp) / "p.sqlite3"
        asyncio.run(_create(path))
        fill(path, n)
        asyncio.run(pages(path, n))


async def _create(path: Path) -> None:
    async with SQLiteStorage(path):
        pass


if __name__ == "__main__":
    main()
