"""SQLite migration 6: the archive's ``(ns, stamp)`` index is dropped; retention walks the
owners on ``(ns, owner, stamp)`` instead, in bounded transactions."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from xmppd.storage import SQLiteStorage, sqlite_stores
from xmppd.storage.sqlite import MIGRATIONS


def _indexes(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'archive'")}
    finally:
        conn.close()


def test_a_version_5_database_upgrades_with_its_archive(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
    for number, migration in enumerate(MIGRATIONS[:5], 1):
        for statement in migration:
            statement(conn) if callable(statement) else conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (number,))
    rows = [("mam", f"u{i % 3}@x", f"id{i}", float(i), "p@y", b"<m/>") for i in range(30)]
    conn.executemany("INSERT INTO archive (ns, owner, id, stamp, with_jid, data)"
                     " VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO archive_counts VALUES ('mam', ?, 10)",
                     [(f"u{i}@x",) for i in range(3)])
    conn.commit()
    conn.close()
    assert "archive_by_stamp" in _indexes(path)

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            assert await s.schema_version() == len(MIGRATIONS) >= 6
            arch = s.open_store("mam", "archive")
            assert [i.id for i in await arch.query("u1@x", start=10.0, end=20.0)] == [
                "id10", "id13", "id16", "id19"]
            assert await arch.delete_before(15.0) == 15
            assert [await arch.count(f"u{i}@x") for i in range(3)] == [5, 5, 5]
            assert await s.integrity_check() == []

    asyncio.run(main())
    assert "archive_by_stamp" not in _indexes(path)
    assert {"archive_by_id", "archive_by_owner", "archive_by_with",
            "archive_by_owner_stamp"} <= _indexes(path)


@pytest.mark.parametrize("batch, owners", [(3, 2), (7, 1000), (2000, 1)])
def test_retention_resumes_across_owners_and_batches(tmp_path, monkeypatch, batch, owners):
    monkeypatch.setattr(sqlite_stores, "PURGE_BATCH", batch)
    monkeypatch.setattr(sqlite_stores, "PURGE_OWNERS", owners)

    async def main() -> None:
        async with SQLiteStorage(tmp_path / f"r{batch}.sqlite") as s:
            arch, other = s.open_store("mam", "archive"), s.open_store("offline", "archive")
            for i in range(40):
                await arch.append(f"u{i % 7}@x", b"m", stamp=float(i % 10))
            await other.append("u0@x", b"kept: another namespace", stamp=0.0)
            commits = s.commits
            assert await arch.delete_before(5.0) == 20
            assert s.commits - commits >= min(20 // batch, 7 // owners)  # bounded chunks
            for i in range(7):
                items = await arch.query(f"u{i}@x")
                assert all(item.stamp >= 5.0 for item in items)
                assert await arch.count(f"u{i}@x") == len(items)
            assert await arch.size() == (7, 20) and await other.count("u0@x") == 1
            assert await arch.delete_before(5.0) == 0

    asyncio.run(main())
