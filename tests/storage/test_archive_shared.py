"""Archive appends with a shared future (``start_append_shared``, the way ``mam`` writes)
and time-ordered item ids, against every backend; SQLite: one future and one job per
loop iteration, order kept with ``start_append``, durable once resolved."""

from __future__ import annotations

import asyncio
import math

import pytest
from support import run_storage

from xmppd.storage import MemoryStorage, SQLiteStorage, Storage, StorageError
from xmppd.storage.stores import ItemExists, new_item_id

J = "juliet@example.com"
R = "romeo@example.net"


@pytest.fixture(params=["memory", "sqlite"])
def make_storage(request, tmp_path):
    """Memory (the ABC's default, built on start_append) and SQLite (its own batched path)."""
    def make() -> Storage:
        if request.param == "memory":
            return MemoryStorage()
        return SQLiteStorage(tmp_path / "db" / "xmppd.sqlite")

    return make


def test_new_item_ids_are_unique_and_increase():
    ids = [new_item_id() for _ in range(20000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 16 and i.isascii() and i.replace("-", "").replace("_", "").isalnum()
               for i in ids)


def test_shared_appends_are_stored_in_order_with_their_ids(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        ids = [new_item_id() for _ in range(6)]
        writes = [arch.start_append_shared(owner, b"m%d" % i, stamp=float(i), with_jid=peer,
                                           id=ids[i])
                  for i, (owner, peer) in enumerate([(J, R), (R, J)] * 3)]
        assert await asyncio.gather(*writes) == [[]] * 6  # no failure
        mine = await arch.query(J)
        assert [i.id for i in mine] == ids[0::2] and [i.data for i in mine] == [
            b"m0", b"m2", b"m4"]
        assert [i.with_jid for i in mine] == [R] * 3 and [i.stamp for i in mine] == [0, 2, 4]
        assert await arch.get(R, ids[1]) == (await arch.query(R))[0]
        assert await arch.count(J) == 3 and await arch.count(R) == 3
        assert await arch.query(J, after_id=ids[0], limit=1) == [mine[1]]
        assert await arch.size() == (2, 6)

    run_storage(make_storage, body)


def test_memory_shared_append_failure_is_reported_not_raised():
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        await arch.append(J, b"first", stamp=1.0, id="dup")
        writes = [arch.start_append_shared(J, b"again", stamp=2.0, id="dup"),
                  arch.start_append_shared(J, b"fine", stamp=2.0, id="ok"),
                  arch.start_append_shared(R, b"other owner", stamp=2.0, id="dup")]
        await asyncio.gather(*writes)
        failures = [f for w in writes for f in w.result()]
        assert len(failures) == 1 and failures[0][:2] == (J, "dup")
        assert isinstance(failures[0][2], ItemExists)
        assert [i.data for i in await arch.query(J)] == [b"first", b"fine"]
        assert await arch.count(J) == 2 and await arch.count(R) == 1

    run_storage(MemoryStorage, body)


def test_sqlite_duplicate_shared_append_is_kept_out_by_the_merge(tmp_path, caplog):
    """Staged appends are checked when merged: a duplicate id (never one of new_item_id's)
    leaves the earlier item, is not counted, and is logged."""
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "d.sqlite") as s:
            arch = s.open_store("mam", "archive")
            await arch.append(J, b"first", stamp=1.0, id="dup")
            writes = [arch.start_append_shared(J, b"again", stamp=2.0, id="dup"),
                      arch.start_append_shared(J, b"fine", stamp=2.0, id="ok"),
                      arch.start_append_shared(R, b"other owner", stamp=2.0, id="dup")]
            assert await asyncio.gather(*writes) == [[]] * 3  # durable, checked later
            assert [i.data for i in await arch.query(J)] == [b"first", b"fine"]
            assert await arch.count(J) == 2 and await arch.count(R) == 1
            assert await s.integrity_check() == []

    asyncio.run(main())
    assert "item 'dup' of juliet@example.com was already stored" in caplog.text


@pytest.mark.parametrize("kwargs, exc", [
    ({"data": "text"}, TypeError),
    ({"stamp": math.nan}, TypeError),
    ({"stamp": "1"}, TypeError),
    ({"id": ""}, ValueError),
    ({"id": None}, TypeError),
    ({"with_jid": 3}, TypeError),
    ({"owner": "\ud800"}, ValueError),
])
def test_shared_append_checks_its_arguments_at_once(make_storage, kwargs, exc):
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        args = {"owner": J, "data": b"x", "stamp": 1.0, "with_jid": R, "id": "i", **kwargs}
        owner, data = args.pop("owner"), args.pop("data")
        with pytest.raises(exc):
            arch.start_append_shared(owner, data, **args)
        ok = {"owner": "é@example.com", "data": bytearray(b"y"), "stamp": 2, "id": "é"}
        assert await arch.start_append_shared(ok["owner"], ok["data"], stamp=ok["stamp"],
                                              id=ok["id"]) == []
        assert (await arch.get("é@example.com", "é")).data == b"y"
        assert await arch.count(J) == 0

    run_storage(make_storage, body)


def test_sqlite_shared_appends_share_one_future_and_one_job(tmp_path):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "s.sqlite") as s:
            arch, off = s.open_store("mam", "archive"), s.open_store("offline", "archive")
            jobs, commits = s.append_batches, s.commits
            writes = [arch.start_append_shared(o, b"%d" % i, stamp=1.0, id=new_item_id())
                      for i in range(400) for o in (J, R)]
            assert len({id(w) for w in writes}) == 1 and not writes[0].done()
            assert await writes[0] == []
            assert s.append_batches - jobs == 1 and s.commits - commits == 1
            # order kept when both kinds are started in one iteration
            first = arch.start_append_shared(J, b"shared 1", stamp=2.0, id=new_item_id())
            own = arch.start_append(J, b"own", stamp=2.0)
            second = arch.start_append_shared(J, b"shared 2", stamp=2.0, id=new_item_id())
            other = off.start_append_shared(R, b"offline", stamp=2.0, id=new_item_id())
            assert first is not second and second is other
            assert await first == [] and (await own).data == b"own" and await second == []
            assert [i.data for i in await arch.query(J)][-3:] == [b"shared 1", b"own",
                                                                   b"shared 2"]
            assert await arch.count(J) == 403 and await off.count(R) == 1
            assert await s.integrity_check() == []

    asyncio.run(main())


def test_sqlite_shared_appends_are_durable_and_flushed_by_close(tmp_path):
    path = tmp_path / "d.sqlite"
    ids = [new_item_id() for _ in range(2)]

    async def write() -> None:
        s = SQLiteStorage(path)
        await s.open()
        arch = s.open_store("mam", "archive")
        assert await arch.start_append_shared(J, b"committed", stamp=1.0, id=ids[0]) == []
        late = arch.start_append_shared(J, b"started before close", stamp=2.0, id=ids[1])
        await s.close()
        assert await late == []

    async def read() -> None:
        async with SQLiteStorage(path) as s:
            items = await s.open_store("mam", "archive").query(J)
            assert [i.id for i in items] == ids
        with pytest.raises(StorageError):  # closed: the future fails at once
            await s.open_store("mam", "archive").start_append_shared(
                J, b"x", stamp=1.0, id="late")

    asyncio.run(write())
    asyncio.run(read())


def test_memory_shared_append_uses_the_default(tmp_path):
    async def main() -> None:
        async with MemoryStorage() as s:
            arch = s.open_store("mam", "archive")
            a = arch.start_append_shared(J, b"a", stamp=1.0, id="a")
            b = arch.start_append_shared(J, b"b", stamp=1.0, id="b")
            assert a is not b and await a == [] and await b == []
            assert [i.id for i in await arch.query(J)] == ["a", "b"]

    asyncio.run(main())


def test_sqlite_duplicate_in_a_later_merge_insert_keeps_the_other_rows(tmp_path):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "f.sqlite") as s:
            arch = s.open_store("mam", "archive")
            await arch.append(J, b"old", stamp=1.0, id="taken")
            ids = [new_item_id() for _ in range(2500)]
            ids[1500] = "taken"  # in the merge's second INSERT (1024 rows each)
            writes = [arch.start_append_shared(J, b"%d" % i, stamp=2.0, id=item_id)
                      for i, item_id in enumerate(ids)]
            assert await writes[0] == []
            mine = await arch.query(J)  # merges: the duplicate is uncounted from then on
            assert [i.data for i in mine] == [b"old"] + [b"%d" % i for i in range(2500)
                                                         if i != 1500]
            assert await arch.count(J) == 2500
            assert await s.integrity_check() == []

    asyncio.run(main())
