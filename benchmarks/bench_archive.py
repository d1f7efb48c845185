"""Archive paging on a big archive: one owner with N items (default 1,000,000).

    PYTHONPATH=src python benchmarks/bench_archive.py [N] [--keep PATH]

Bulk-inserts with ``executemany`` straight into the tables (not ``append`` one by one),
then times pages of 50 through the public API (the loop-thread reader) and prints the
query plans.  Takes ~30 s for 1M items; not part of the test suite.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from xmppd.storage import SQLiteStorage
from xmppd.storage.sqlite_stores import select_sql

NS, OWNER = "mam", "juliet@example.com"


def fill(path: Path, n: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    rows = (
        (NS, OWNER, f"id{i:08d}", 1_600_000_000.0 + i, f"peer{i % 100}@example.net",
         b"<message><body>%d</body></message>" % i)
        for i in range(n)
    )
    conn.executemany(
        "INSERT INTO archive (ns, owner, id, stamp, with_jid, data) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    # other owners and namespaces, so that the indexes must skip them
    conn.executemany(
        "INSERT INTO archive (ns, owner, id, stamp, with_jid, data) VALUES (?, ?, ?, ?, ?, ?)",
        ((NS, f"u{i % 1000}@example.com", f"o{i}", 1_600_000_000.0 + i, "x@y", b"<m/>")
         for i in range(n // 10)),
    )
    # archive_counts must match the rows (the stores keep it; a bulk insert must too)
    conn.execute("DELETE FROM archive_counts")
    conn.execute("INSERT INTO archive_counts SELECT ns, owner, COUNT(*) FROM archive"
                 " GROUP BY ns, owner")
    conn.execute("COMMIT")
    conn.close()


async def timed(label: str, coro_fn, repeat: int = 50) -> None:
    await coro_fn()  # warm the page cache
    t0 = time.perf_counter()
    for _ in range(repeat):
        result = await coro_fn()
    ms = (time.perf_counter() - t0) / repeat * 1000
    size = len(result) if isinstance(result, list) else result
    print(f"{label:58s} {ms:8.3f} ms  ({size})")


async def main(n: int, keep: Path | None) -> None:
    tmp = Path(tempfile.mkdtemp())
    path = keep or tmp / "bench.sqlite"
    async with SQLiteStorage(path):
        pass  # create the schema
    t0 = time.perf_counter()
    fill(path, n)
    print(f"bulk insert of {n + n // 10} items: {time.perf_counter() - t0:.1f} s,"
          f" file {path.stat().st_size / 1e6:.0f} MB")
    async with SQLiteStorage(path) as s:
        a = s.open_store(NS, "archive")
        mid = f"id{n // 2:08d}"
        await timed("query(limit=50) first page", lambda: a.query(OWNER, limit=50))
        await timed("query(limit=50, reverse) last page",
                    lambda: a.query(OWNER, limit=50, reverse=True))
        await timed("query(limit=50, before_id=mid, reverse)",
                    lambda: a.query(OWNER, limit=50, before_id=mid, reverse=True))
        await timed("query(limit=50, after_id=mid)",
                    lambda: a.query(OWNER, limit=50, after_id=mid))
        await timed("query(with_jid, limit=50, before_id=mid, reverse)",
                    lambda: a.query(OWNER, with_jid="peer7@example.net", limit=50,
                                    before_id=mid, reverse=True))
        t = 1_600_000_000.0 + n - 3600
        await timed("query(start=last hour, limit=50)",
                    lambda: a.query(OWNER, start=t, limit=50))
        await timed("query(start=last hour, limit=50, reverse)",
                    lambda: a.query(OWNER, start=t, limit=50, reverse=True))
        await timed("query(end=first hour, limit=50, reverse)",
                    lambda: a.query(OWNER, end=1_600_000_000.0 + 3600, limit=50, reverse=True))
        await timed("query(start=before all items, limit=50)  [worst case]",
                    lambda: a.query(OWNER, start=0.0, limit=50), repeat=3)
        await timed("count() unfiltered", lambda: a.count(OWNER))
        await timed("count(with_jid)", lambda: a.count(OWNER, with_jid="peer7@example.net"),
                    repeat=5)
        await timed("count(start=last hour)", lambda: a.count(OWNER, start=t), repeat=5)
        await timed("get(mid)", lambda: a.get(OWNER, mid))

        def plans(conn: sqlite3.Connection) -> list[str]:
            out = []
            for kw in ({"before_seq": n // 2, "limit": 50, "reverse": True},
                       {"with_jid": "peer7@example.net", "before_seq": n // 2, "limit": 50},
                       {"start": t, "limit": 50}):
                sql, args = select_sql(NS, OWNER, **kw)
                plan = conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
                out.append(f"{kw}: " + "; ".join(r[-1] for r in plan))
            return out

        for line in await s._call(plans, write=False):
            print("  plan", line)
        t0 = time.perf_counter()
        deleted = await a.delete_before(1_600_000_000.0 + 20_000)
        print(f"delete_before (retention) of {deleted} items: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    keep = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else None
    if keep is not None:
        args.remove(str(keep))
    asyncio.run(main(int(args[0]) if args else 1_000_000, keep))
