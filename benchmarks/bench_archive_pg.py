"""The PostgreSQL archive: appends per second and pages of 50 from a big archive.

    PYTHONPATH=src:tests python benchmarks/bench_archive_pg.py [URL] [--items N] [--seconds S]

Without a URL it starts a throwaway cluster of its own (Debian's binaries, as the tests do:
``tests/pgserver.py``; fsync on).  It fills one owner with N items (default 1,000,000; one
server-side ``INSERT ... SELECT generate_series``, not ``append``), times pages of 50
through the public API and prints their plans, then appends for S seconds (default 2):
batched (``start_append``, 200 per event-loop iteration across 50 owners, as a busy server
archives) and one at a time (each awaited: one commit per item).  Not part of the test suite.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from xmppd.storage import PostgreSQLStorage
from xmppd.storage.postgresql_stores import select_sql

NS, OWNER = "mam", "juliet@example.com"
T0 = 1_600_000_000.0


async def fill(s: PostgreSQLStorage, n: int) -> None:
    async with s.transaction() as conn:
        await conn.execute(
            "INSERT INTO archive (ns, owner, id, stamp, with_jid, data)"
            " SELECT $1, $2, 'id' || lpad(i::text, 8, '0'), $3 + i, 'peer' || (i % 100)"
            " || '@example.net', convert_to('<message><body>' || i || '</body></message>',"
            " 'UTF8') FROM generate_series(0, $4 - 1) AS i", NS, OWNER, T0, n)
        # other owners, so that the indexes must skip them
        await conn.execute(
            "INSERT INTO archive (ns, owner, id, stamp, with_jid, data)"
            " SELECT $1, 'u' || (i % 1000) || '@example.com', 'o' || i, $2 + i, 'x@y', '\\x00'"
            " FROM generate_series(0, $3 - 1) AS i", NS, T0, n // 10)
        await conn.execute("DELETE FROM archive_counts")
        await conn.execute("INSERT INTO archive_counts SELECT ns, owner, COUNT(*) FROM archive"
                           " GROUP BY ns, owner")
    async with s.pool.acquire() as conn:
        await conn.execute("VACUUM ANALYZE archive")


async def timed(label: str, fn, repeat: int = 50) -> None:
    await fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        result = await fn()
    ms = (time.perf_counter() - t0) / repeat * 1000
    print(f"{label:50s} {ms:8.3f} ms  ({len(result) if isinstance(result, list) else result})")


async def appends(s: PostgreSQLStorage, seconds: float) -> None:
    a = s.open_store("bench", "archive")
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await asyncio.gather(*(a.start_append(f"u{i % 50}@example.com", b"<message/>" * 20,
                                              stamp=time.time(), with_jid="peer@example.net")
                               for i in range(200)))
        done += 200
    elapsed = time.perf_counter() - t0
    print(f"batched appends (200 per iteration): {done / elapsed:,.0f}/s"
          f" ({s.append_batches} statements)")
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await a.append(OWNER, b"<message/>" * 20, stamp=time.time())
        done += 1
    elapsed = time.perf_counter() - t0
    print(f"appends one at a time: {done / elapsed:,.0f}/s ({elapsed / done * 1000:.2f} ms each)")


async def main(url: str, n: int, seconds: float) -> None:
    async with PostgreSQLStorage(url) as s:
        t0 = time.perf_counter()
        await fill(s, n)
        print(f"bulk insert of {n + n // 10} items: {time.perf_counter() - t0:.1f} s")
        a = s.open_store(NS, "archive")
        mid = f"id{n // 2:08d}"
        t = T0 + n - 3600
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
        await timed("query(start=last hour, limit=50)", lambda: a.query(OWNER, start=t, limit=50))
        await timed("query(start=last day, limit=50)  [worst: read by seq]",
                    lambda: a.query(OWNER, start=T0 + n - 86400, limit=50), repeat=3)
        await timed("query(start=before all items, limit=50)",
                    lambda: a.query(OWNER, start=0.0, limit=50))
        await timed("count() unfiltered", lambda: a.count(OWNER))
        await timed("count(with_jid)", lambda: a.count(OWNER, with_jid="peer7@example.net"),
                    repeat=5)
        await timed("get(mid)", lambda: a.get(OWNER, mid))
        async with s.pool.acquire() as conn:
            for kw in ({"before_id": mid, "limit": 50, "reverse": True},
                       {"with_jid": "peer7@example.net", "before_id": mid, "limit": 50},
                       {"start": t, "limit": 50}):
                sql, args = select_sql(NS, OWNER, **kw)
                plan = await conn.fetch("EXPLAIN " + sql, *args)
                print(f"  plan {kw}: " + "; ".join(
                    r[0].strip() for r in plan if "Scan" in r[0] or "Sort" in r[0]))
        await appends(s, seconds)


if __name__ == "__main__":
    argv = sys.argv[1:]

    def option(name: str, default: str) -> str:
        if name not in argv:
            return default
        at = argv.index(name)
        value = argv[at + 1]
        del argv[at:at + 2]
        return value

    items, seconds = int(option("--items", "1000000")), float(option("--seconds", "2"))
    if argv:
        asyncio.run(main(argv[0], items, seconds))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from pgserver import PostgreSQLServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            sys.exit("no PostgreSQL in /usr/lib/postgresql/*/bin: give a URL")
        server = PostgreSQLServer(bindir)
        try:
            server.start()
            asyncio.run(main(server.create_database(), items, seconds))
        finally:
            server.destroy()
