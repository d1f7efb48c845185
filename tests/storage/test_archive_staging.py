"""SQLite's staged archive appends (``xmppd.storage.sqlite_staging``): shared appends are
committed to ``archive_staged`` and merged into ``archive`` in bulk; every read or change
of the archive sees them, whichever process staged them, and a crash loses none."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xmppd.storage import SQLiteStorage
from xmppd.storage import sqlite as sqlite_module
from xmppd.storage.stores import new_item_id

J = "juliet@example.com"
R = "romeo@example.net"
SRC = str(Path(__file__).resolve().parents[2] / "src")


def staged(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COALESCE(SUM(n), 0) FROM archive_staged").fetchone()[0]


def stage(arch, owner: str, n: int, start: int = 0) -> list[asyncio.Future]:
    return [arch.start_append_shared(owner, b"%d" % i, stamp=float(i), with_jid=R,
                                     id=new_item_id()) for i in range(start, start + n)]


def test_shared_appends_are_staged_until_a_read_merges_them(tmp_path):
    path = tmp_path / "s.sqlite"

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            arch = s.open_store("mam", "archive")
            assert await stage(arch, J, 3)[0] == []
            assert staged(path) == 3 and s.merges == 0
            assert await arch.count(J) == 3 and await arch.size() == (1, 3)  # counts: no merge
            assert staged(path) == 3
            items = await arch.query(J)  # merges first
            assert staged(path) == 0 and s.merges == 1
            assert [i.data for i in items] == [b"0", b"1", b"2"]
            assert [i.seq for i in items] == sorted(i.seq for i in items)
            assert await arch.get(J, items[1].id) == items[1]

    asyncio.run(main())


def test_staged_and_direct_appends_keep_their_order_and_seqs_are_never_reused(tmp_path):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "o.sqlite") as s:
            arch = s.open_store("mam", "archive")
            await stage(arch, J, 2)[0]
            direct = await arch.append(J, b"direct", stamp=5.0)
            await stage(arch, J, 2, start=2)[0]
            items = await arch.query(J)
            assert [i.data for i in items] == [b"0", b"1", b"direct", b"2", b"3"]
            assert [i.seq for i in items] == sorted(i.seq for i in items)
            assert direct.seq == items[2].seq
            await arch.delete(J, [items[-1].id])
            await stage(arch, J, 1, start=9)[0]
            last = (await arch.query(J))[-1]
            assert last.data == b"9" and last.seq > items[-1].seq  # the deleted seq not reused

    asyncio.run(main())


def test_enough_staged_items_are_merged_by_the_writer(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_module, "MERGE_ROWS", 100)
    path = tmp_path / "m.sqlite"

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            arch = s.open_store("mam", "archive")
            assert await stage(arch, J, 60)[0] == []
            assert staged(path) == 60 and s.merges == 0
            assert await stage(arch, R, 60)[0] == []
            for _ in range(100):  # the merge runs after the batch's future is settled
                if staged(path) == 0:
                    break
                await asyncio.sleep(0.01)
            assert s.merges == 1 and staged(path) == 0
            assert await arch.count(J) == 60 and await arch.count(R) == 60
            assert [i.data for i in await arch.query(R)] == [b"%d" % i for i in range(60)]
            assert await s.integrity_check() == []

    asyncio.run(main())


def test_writes_and_account_deletion_see_staged_items(tmp_path):
    path = tmp_path / "w.sqlite"

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            arch = s.open_store("mam", "archive")
            await stage(arch, J, 4)[0]
            assert await arch.delete_before(2.0) == 2  # retention
            assert [i.data for i in await arch.query(J)] == [b"2", b"3"]
            await stage(arch, J, 2, start=4)[0]
            assert await arch.trim(J, 1) == 3
            await stage(arch, R, 2)[0]
            await s.delete_user_data(R)
            assert staged(path) == 0
            assert await arch.count(R) == 0 and await arch.query(R) == []
            assert await s.namespaces("archive") == ["mam"]
            assert [i.data for i in await arch.query(J)] == [b"5"]

    asyncio.run(main())


def test_close_merges_and_a_crash_loses_nothing_staged(tmp_path):
    """A process that dies with items staged (acknowledged, not merged): another process
    opening the file reads them, once."""
    path = tmp_path / "c.sqlite"
    script = textwrap.dedent(f"""
        import asyncio, os
        from xmppd.storage import SQLiteStorage
        from xmppd.storage.stores import new_item_id

        async def main():
            s = SQLiteStorage({str(path)!r})
            await s.open()
            arch = s.open_store("mam", "archive")
            writes = [arch.start_append_shared({J!r}, b"%d" % i, stamp=1.0, id=new_item_id())
                      for i in range(500)]
            assert await writes[0] == []
            os._exit(0)  # no close: as kill -9 after the acknowledgement

        asyncio.run(main())
    """)
    env = {**os.environ, "PYTHONPATH": SRC}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    assert staged(path) == 500

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            arch = s.open_store("mam", "archive")
            assert await arch.count(J) == 500
            await stage(arch, J, 1, start=500)[0]
        async with SQLiteStorage(path) as s:  # the first close merged
            assert staged(path) == 0
            items = await s.open_store("mam", "archive").query(J)
            assert [i.data for i in items] == [b"%d" % i for i in range(501)]

    asyncio.run(main())


@pytest.mark.parametrize("owners", [1, 50])
def test_merge_keeps_each_owners_order(tmp_path, owners):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "k.sqlite") as s:
            arch = s.open_store("mam", "archive")
            writes = [arch.start_append_shared(f"u{i % owners}@example.com", b"%d" % i,
                                               stamp=float(i), id=new_item_id())
                      for i in range(3000)]
            assert await writes[0] == []
            for o in range(owners):
                items = await arch.query(f"u{o}@example.com")
                assert [i.data for i in items] == [b"%d" % i for i in range(o, 3000, owners)]
            first = (await arch.query("u0@example.com", limit=1))[0]
            page = await arch.query("u0@example.com", after_id=first.id, limit=2)
            assert [i.data for i in page] == [b"%d" % owners, b"%d" % (2 * owners)]

    asyncio.run(main())


def test_a_namespace_is_merged_only_when_its_own_items_are_read(tmp_path):
    path = tmp_path / "n.sqlite"

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            mam, pep = s.open_store("mam", "archive"), s.open_store("pep", "archive")
            writes = [mam.start_append_shared(J, b"m", stamp=1.0, id=new_item_id()),
                      pep.start_append_shared(J, b"p1", stamp=1.0, id=new_item_id()),
                      mam.start_append_shared(R, b"m", stamp=1.0, id=new_item_id()),
                      pep.start_append_shared(J, b"p2", stamp=2.0, id=new_item_id())]
            assert writes[0] is writes[3] and await writes[0] == []
            assert staged(path) == 4
            assert [i.data for i in await pep.query(J)] == [b"p1", b"p2"]
            assert staged(path) == 2  # mam's stay staged
            await pep.append(J, b"p3", stamp=3.0, id="own")  # its own id: pep's merged only
            assert staged(path) == 2
            assert [i.data for i in await pep.query(J)] == [b"p1", b"p2", b"p3"]
            assert await mam.count(J) == 1 and staged(path) == 2
            assert [i.data for i in await mam.query(R)] == [b"m"] and staged(path) == 0

    asyncio.run(main())
