"""Per-module stores (key-value, archive): the same tests against every backend, plus
SQLite details (persistence, migration from schema 2, query plans)."""

from __future__ import annotations

import asyncio
import random
import sqlite3

import pytest
from support import run_storage

from xmppd.c2s.sasl import derive_credentials
from xmppd.storage import (
    SQLiteStorage,
    Storage,
    StorageError,
)
from xmppd.storage.sqlite import MIGRATIONS
from xmppd.storage.sqlite_stores import select_sql
from xmppd.storage.stores import (
    UNCHANGED,
    ArchiveItem,
    ArchiveStore,
    ItemExists,
    ItemNotFound,
    KeyValueStore,
    migrate_store,
)

CREDS = {h: derive_credentials("secret", h, salt=b"0123456789abcdef") for h in ("SHA-256",)}
J = "juliet@example.com"
R = "romeo@example.net"


# -- open_store -------------------------------------------------------------------------


def test_open_store_validates_and_caches(make_storage):
    async def body(s: Storage) -> None:
        kv = s.open_store("muc")
        assert isinstance(kv, KeyValueStore) and kv.namespace == "muc"
        assert s.open_store("muc") is kv and s.open_store("muc", "keyvalue") is kv
        arch = s.open_store("muc", "archive")
        assert isinstance(arch, ArchiveStore) and arch is s.open_store("muc", "archive")
        for bad in ("", "MUC", "a b", "a/b", "é", "x" * 65, None):
            with pytest.raises(ValueError):
                s.open_store(bad)
        assert s.open_store("a-z_0.9" + "x" * 57).namespace.startswith("a-z_0.9")
        with pytest.raises(ValueError):
            s.open_store("muc", "table")
        # the key-value store and the archive of one namespace are separate
        await kv.set(J, "k", 1)
        assert await arch.count(J) == 0 and await arch.owners() == []

    run_storage(make_storage, body)


def test_stores_refuse_use_while_closed(make_storage):
    async def main() -> None:
        s = make_storage()
        kv, arch = s.open_store("m"), s.open_store("m", "archive")
        with pytest.raises(StorageError):
            await kv.get(J, "k")
        with pytest.raises(StorageError):
            await arch.append(J, b"x", stamp=1.0)
        async with s:
            await kv.set(J, "k", 1)  # the objects opened before open() work
            assert await kv.get(J, "k") == 1
        with pytest.raises(StorageError):
            await kv.set(J, "k", 2)

    asyncio.run(main())


# -- key-value ------------------------------------------------------------------------------

VALUES = [
    {"name": "Cour de Vérone ✓ 🎭", "n": 3, "f": 1.5, "ok": True, "none": None, "l": [1, [2, {}]]},
    [],
    {},
    "",
    "a\x00b\n\"quotes\" \\ \ud7ff",
    0,
    -(2**62),
    2.5e-300,
    False,
    True,
]


def test_kv_roundtrip_and_basics(make_storage):
    async def body(s: Storage) -> None:
        kv = s.open_store("muc")
        assert await kv.get(J, "missing") is None
        assert await kv.get(J, "missing", "dflt") == "dflt"
        for i, v in enumerate(VALUES):
            await kv.set(J, f"k{i}", v)
        for i, v in enumerate(VALUES):
            got = await kv.get(J, f"k{i}")
            assert got == v and type(got) is type(v)
        assert await kv.keys(J) == sorted(f"k{i}" for i in range(len(VALUES)))
        assert await kv.items(J) == {f"k{i}": v for i, v in enumerate(VALUES)}
        # returned values are copies
        got = await kv.get(J, "k0")
        got["name"] = "changed"
        assert (await kv.get(J, "k0"))["name"] != "changed"
        # overwrite, delete, set None deletes
        await kv.set(J, "k1", {"x": 1})
        assert await kv.get(J, "k1") == {"x": 1}
        assert await kv.delete(J, "k1") and not await kv.delete(J, "k1")
        await kv.set(J, "k2", None)
        assert await kv.get(J, "k2", 7) == 7 and "k2" not in await kv.keys(J)
        await kv.set(J, "nothing", None)  # deleting what is not there is fine
        # keys and owners are any Unicode, sorted by code point
        for key in ("é", "z", "Z", "", "日本", "a/b"):
            await kv.set("", key, key)
        assert await kv.keys("") == sorted(["é", "z", "Z", "", "日本", "a/b"])
        assert await kv.get("", "日本") == "日本"
        await kv.set("room@conference.example.com", "config", {"public": True})
        assert await kv.owners() == ["", J, "room@conference.example.com"]
        assert await kv.keys("nobody@x") == [] and await kv.items("nobody@x") == {}

    run_storage(make_storage, body)


@pytest.mark.parametrize(
    "bad,exc",
    [
        ((1, 2), TypeError),
        ({1: "int key"}, TypeError),
        ({"s": {1, 2}}, TypeError),
        (b"bytes", TypeError),
        (float("nan"), ValueError),
        ({"x": [float("inf")]}, ValueError),
        ("\ud800", ValueError),
        (object(), TypeError),
    ],
)
def test_kv_refuses_non_json(make_storage, bad, exc):
    async def body(s: Storage) -> None:
        kv = s.open_store("m")
        with pytest.raises(exc):
            await kv.set(J, "k", bad)
        with pytest.raises(exc):
            await kv.update(J, "k", lambda old: bad)
        assert await kv.get(J, "k") is None

    run_storage(make_storage, body)


def test_kv_refuses_bad_owner_and_key(make_storage):
    async def body(s: Storage) -> None:
        kv = s.open_store("m")
        with pytest.raises(TypeError):
            await kv.set(None, "k", 1)
        with pytest.raises(TypeError):
            await kv.get(J, 3)
        with pytest.raises(ValueError):
            await kv.set(J, "\udc80", 1)

    run_storage(make_storage, body)


def test_kv_update(make_storage):
    async def body(s: Storage) -> None:
        kv = s.open_store("roster2")
        seen = []

        def add(old):
            seen.append(repr(old))
            value = old or {"items": []}
            value["items"].append(len(value["items"]))  # mutating the copy is fine
            return value

        assert await kv.update(J, "r", add) == (None, {"items": [0]})
        assert await kv.update(J, "r", add) == ({"items": [0]}, {"items": [0, 1]})
        assert seen == ["None", repr({"items": [0]})]
        assert await kv.update(J, "r", lambda old: UNCHANGED) == ({"items": [0, 1]},) * 2
        assert await kv.update(J, "missing", lambda old: UNCHANGED) == (None, None)
        assert await kv.keys(J) == ["r"]
        assert await kv.update(J, "r", lambda old: None) == ({"items": [0, 1]}, None)
        assert await kv.get(J, "r") is None

        def boom(old):
            raise RuntimeError("no")

        await kv.set(J, "x", 1)
        with pytest.raises(RuntimeError):
            await kv.update(J, "x", boom)
        assert await kv.get(J, "x") == 1

    run_storage(make_storage, body)


def test_kv_concurrent_updates_are_atomic(make_storage):
    async def body(s: Storage) -> None:
        kv = s.open_store("counter")

        def incr(old):
            return (old or 0) + 1

        def add_member(i):
            return lambda old: sorted({*(old or []), f"m{i}"})

        results = await asyncio.gather(
            *(kv.update(J, "n", incr) for _ in range(50)),
            *(kv.update(J, "members", add_member(i)) for i in range(20)),
            kv.set(J, "other", "x"),
        )
        assert await kv.get(J, "n") == 50
        assert sorted(new for _, new in results[:50]) == list(range(1, 51))
        assert all(new == old + 1 for old, new in results[1:50] if old is not None)
        assert await kv.get(J, "members") == sorted(f"m{i}" for i in range(20))

    run_storage(make_storage, body)


def test_kv_delete_owner_and_namespaces(make_storage):
    async def body(s: Storage) -> None:
        a, b = s.open_store("a"), s.open_store("b")
        for k in ("x", "y", "z"):
            await a.set(J, k, k)
            await a.set(R, k, k)
        await b.set(J, "x", 1)
        assert await a.delete_owner(J) == 3
        assert await a.delete_owner(J) == 0
        assert await a.keys(J) == [] and await a.keys(R) == ["x", "y", "z"]
        assert await b.get(J, "x") == 1
        assert await a.owners() == [R]

    run_storage(make_storage, body)


# -- versions and migrations -------------------------------------------------------------


def test_store_versions_and_migrate(make_storage):
    async def body(s: Storage) -> None:
        kv, arch = s.open_store("pubsub"), s.open_store("pubsub", "archive")
        other = s.open_store("muc")
        assert await kv.get_version() == 0
        await arch.set_version(2)
        assert await kv.get_version() == 2 and await other.get_version() == 0
        with pytest.raises(ValueError):
            await kv.set_version(-1)
        ran = []

        def step(n):
            async def migrate():
                ran.append(n)
                await kv.set("", f"step{n}", n)

            return migrate

        assert await migrate_store(kv, [step(1), step(2), step(3), step(4)]) == 4
        assert ran == [3, 4] and await kv.get_version() == 4
        assert await migrate_store(kv, [step(1), step(2), step(3), step(4)]) == 4
        assert ran == [3, 4]
        with pytest.raises(StorageError, match="version 4"):
            await migrate_store(kv, [step(1)])

    run_storage(make_storage, body)


# -- archive --------------------------------------------------------------------------------


async def fill(arch: ArchiveStore, owner: str = J, n: int = 10) -> list[ArchiveItem]:
    """n items: stamps 100, 101, ...; with_jid alternating a@x / b@x; data b"m<i>"."""
    items = []
    for i in range(n):
        item = await arch.append(owner, f"m{i}".encode(), stamp=100.0 + i,
                                 with_jid="a@x" if i % 2 == 0 else "b@x")
        items.append(item)
    return items


def test_archive_append_get(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        item = await arch.append(J, b"<message/>", stamp=1.5, with_jid=R)
        assert isinstance(item, ArchiveItem)
        assert (item.data, item.stamp, item.with_jid) == (b"<message/>", 1.5, R)
        assert len(item.id) >= 16 and item.id.isascii()
        assert await arch.get(J, item.id) == item
        assert await arch.get(R, item.id) is None and await arch.get(J, "nope") is None
        other = await arch.append(J, bytearray(b"\x00\xff"), stamp=2)
        assert other.seq > item.seq and other.id != item.id and other.data == b"\x00\xff"
        assert other.with_jid == "" and isinstance(other.stamp, float)
        explicit = await arch.append(J, b"x", stamp=3.0, id="my-id")
        assert explicit.id == "my-id" and await arch.get(J, "my-id") == explicit
        with pytest.raises(ItemExists):
            await arch.append(J, b"y", stamp=4.0, id="my-id")
        assert (await arch.get(J, "my-id")).data == b"x"
        # the same id under another owner is another item
        assert (await arch.append(R, b"z", stamp=1.0, id="my-id")).id == "my-id"
        with pytest.raises(TypeError):
            await arch.append(J, "str", stamp=1.0)
        with pytest.raises(TypeError):
            await arch.append(J, b"x", stamp=None)
        with pytest.raises(ValueError):
            await arch.append(J, b"x", stamp=1.0, id="")
        with pytest.raises(ValueError):
            await arch.append(J, b"x", stamp=1.0, limit=-1)
        assert await arch.count(J) == 3

    run_storage(make_storage, body)


def test_archive_replace_moves_to_end(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("pubsub", "archive")
        node = "pubsub.example.com/princely_musings"
        for item_id in ("a", "b", "c"):
            await arch.append(node, item_id.encode(), stamp=1.0, id=item_id)
        old = await arch.get(node, "a")
        new = await arch.append(node, b"a2", stamp=2.0, id="a", replace=True)
        assert new.seq > old.seq and new.id == "a"
        assert [i.id for i in await arch.query(node)] == ["b", "c", "a"]
        assert (await arch.get(node, "a")).data == b"a2"
        assert await arch.count(node) == 3
        # replace=True with a new id is a plain append
        await arch.append(node, b"d", stamp=3.0, id="d", replace=True)
        assert [i.id for i in await arch.query(node, limit=2, reverse=True)] == ["d", "a"]
        # max_items: keep the newest 2
        assert await arch.trim(node, 2) == 2
        assert [i.id for i in await arch.query(node)] == ["a", "d"]
        assert await arch.trim(node, 5) == 0 and await arch.count(node) == 2
        assert await arch.trim(node, 0) == 2 and await arch.count(node) == 0
        with pytest.raises(ValueError):
            await arch.trim(node, -1)

    run_storage(make_storage, body)


def test_archive_limit(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("offline", "archive")
        stored = await asyncio.gather(
            *(arch.append(J, f"<m{i}/>".encode(), stamp=float(i), limit=3) for i in range(6))
        )
        assert sum(x is not None for x in stored) == 3 and stored.count(None) == 3
        assert await arch.count(J) == 3
        kept = await arch.query(J)
        assert [i.id for i in kept] == [x.id for x in stored if x is not None]
        assert await arch.append(J, b"x", stamp=9.0, limit=3) is None
        # replacing does not grow the archive: allowed at the limit
        assert await arch.append(J, b"r", stamp=9.0, id=kept[0].id, replace=True, limit=3)
        assert await arch.delete(J, [kept[1].id]) == 1
        assert await arch.append(J, b"y", stamp=10.0, limit=3) is not None
        assert await arch.append(J, b"z", stamp=11.0, limit=0) is not None  # 0: no limit
        assert await arch.count(J) == 4
        assert await arch.append(R, b"other owner", stamp=1.0, limit=1) is not None

    run_storage(make_storage, body)


def test_archive_query_filters_and_paging(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        items = await fill(arch, n=10)
        await fill(arch, owner=R, n=3)
        ids = [i.id for i in items]

        async def q(**kw):
            return [i.id for i in await arch.query(J, **kw)]

        assert await q() == ids
        assert await q(reverse=True) == ids[::-1]
        assert await q(limit=3) == ids[:3]
        assert await q(limit=0) == []
        assert await q(limit=3, reverse=True) == ids[:-4:-1]
        assert await q(after_id=ids[2], limit=3) == ids[3:6]
        assert await q(before_id=ids[7], limit=3, reverse=True) == [ids[6], ids[5], ids[4]]
        assert await q(after_id=ids[2], before_id=ids[5]) == ids[3:5]
        assert await q(after_id=ids[5], before_id=ids[2]) == []
        assert await q(after_id=ids[9]) == []
        assert await q(with_jid="a@x") == ids[0::2]
        assert await q(with_jid="b@x", after_id=ids[2], limit=2) == [ids[3], ids[5]]
        assert await q(with_jid="nobody@x") == []
        assert await q(start=103.0) == ids[3:]
        assert await q(end=103.0) == ids[:4]  # both bounds inclusive
        assert await q(start=102.5, end=105.5) == ids[3:6]
        assert await q(start=102.0, end=107.0, with_jid="a@x", limit=2, reverse=True) == [
            ids[6], ids[4]]
        assert await q(ids=[ids[5], ids[1], "unknown", ids[5]]) == [ids[1], ids[5]]
        assert await q(ids=[ids[5], ids[1], ids[8]], reverse=True, limit=2) == [ids[8], ids[5]]
        assert await q(ids=[]) == []
        assert await q(ids=ids, with_jid="b@x", after_id=ids[4]) == [ids[5], ids[7], ids[9]]
        # counts take the same filters
        assert await arch.count(J) == 10 and await arch.count(R) == 3
        assert await arch.count(J, with_jid="a@x") == 5
        assert await arch.count(J, start=102.0, end=107.0, with_jid="a@x") == 3
        assert await arch.count(J, after_id=ids[2]) == 7
        assert await arch.count(J, before_id=ids[2]) == 2
        assert await arch.count(J, ids=[ids[0], "x"]) == 1
        assert await arch.count("nobody@x") == 0
        # unknown anchors: item-not-found (also an anchor of another owner)
        rid = (await arch.query(R, limit=1))[0].id
        for kw in ({"after_id": "nope"}, {"before_id": "nope"}, {"after_id": rid}):
            with pytest.raises(ItemNotFound):
                await arch.query(J, **kw)
            with pytest.raises(ItemNotFound):
                await arch.count(J, **kw)
        assert issubclass(ItemNotFound, StorageError)
        with pytest.raises(TypeError):
            await arch.query(J, ids="abc")
        with pytest.raises(ValueError):
            await arch.query(J, limit=-1)

    run_storage(make_storage, body)


def test_archive_rsm_walk_both_ways(make_storage):
    """Walk 23 items in pages of 5 forwards (after) and backwards (before), as MAM does."""

    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        ids = [i.id for i in await fill(arch, n=23)]
        forward, after = [], None
        while True:
            page = await arch.query(J, after_id=after, limit=5)
            if not page:
                break
            forward += [i.id for i in page]
            after = page[-1].id
        assert forward == ids
        backward, before = [], None
        while True:
            page = await arch.query(J, before_id=before, limit=5, reverse=True)
            if not page:
                break
            backward = [i.id for i in reversed(page)] + backward
            before = page[-1].id
        assert backward == ids

    run_storage(make_storage, body)


def test_archive_many_ids(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        items = await fill(arch, n=30)
        wanted = [i.id for i in items[::2]] + [f"missing{i}" for i in range(1200)]
        assert [i.id for i in await arch.query(J, ids=wanted)] == [i.id for i in items[::2]]
        assert await arch.count(J, ids=wanted) == 15
        assert await arch.delete(J, wanted) == 15 and await arch.count(J) == 15

    run_storage(make_storage, body)


def test_archive_delete_retention_owner(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        items = await fill(arch, n=10)
        await fill(arch, owner=R, n=4)
        other = s.open_store("muc_mam", "archive")
        await fill(other, owner="room@conf.example.com", n=3)
        # size(): (owners, items) of the namespace, for the metrics
        assert await arch.size() == (2, 14) and await other.size() == (1, 3)
        assert await arch.delete(J, [items[0].id, items[0].id, "nope", items[9].id]) == 2
        assert await arch.delete(J, []) == 0 and await arch.delete(R, [items[1].id]) == 0
        assert await arch.count(J) == 8
        # retention: strictly older than the cutoff, every owner of this namespace only
        assert await arch.delete_before(103.0) == 2 + 3
        assert [i.stamp for i in await arch.query(J)] == [103.0 + i for i in range(6)]
        assert [i.stamp for i in await arch.query(R)] == [103.0]
        assert await arch.count(J) == 6 and await arch.count(R) == 1
        assert await arch.size() == (2, 7)
        assert await other.count("room@conf.example.com") == 3
        assert await arch.owners() == sorted([J, R])
        assert await arch.delete_before(1000.0) == 7
        assert await arch.owners() == [] and await arch.count(J) == 0
        assert await arch.size() == (0, 0)
        await fill(arch, n=3)
        assert await arch.delete_owner(J) == 3 and await arch.delete_owner(J) == 0
        assert await arch.query(J) == [] and await arch.count(J) == 0
        # appends after all that still count right
        await fill(arch, n=2)
        assert await arch.count(J) == 2 == len(await arch.query(J))

    run_storage(make_storage, body)


def test_delete_user_data_every_namespace_and_kind(make_storage):
    async def body(s: Storage) -> None:
        kv1, kv2 = s.open_store("private"), s.open_store("vcard")
        a1, a2 = s.open_store("mam", "archive"), s.open_store("pep", "archive")
        for owner in (J, f"{J}/urn:xmpp:avatar:data", f"{J}/a/b", "juliet@example.com.evil",
                      "juliet@example.co", "juliet@example.com0", R, ""):
            await kv1.set(owner, "k", owner)
            await kv2.set(owner, "k", owner)
            await a1.append(owner, b"x", stamp=1.0)
            await a2.append(owner, b"x", stamp=1.0, id="current")
        await s.delete_user_data(J)
        left = ["", "juliet@example.co", "juliet@example.com.evil", "juliet@example.com0", R]
        for store in (kv1, kv2, a1, a2):
            assert await store.owners() == left
        assert await a1.count(J) == 0 and await a2.get(f"{J}/urn:xmpp:avatar:data", "current") is None
        assert await a2.count(R) == 1
        for bad in ("", "a@b/c"):
            with pytest.raises(ValueError):
                await s.delete_user_data(bad)

    run_storage(make_storage, body)


def test_delete_account_removes_module_data(make_storage):
    async def body(s: Storage) -> None:
        await s.create_account("juliet", "example.com", CREDS)
        roster, offline = s.open_store("roster"), s.open_store("offline", "archive")
        await roster.set(J, "roster", {"version": 1, "items": {R: {"version": 1}}})
        await offline.append(J, b"<message/>", stamp=1.0)
        kv, arch = s.open_store("private"), s.open_store("mam", "archive")
        await kv.set(J, "storage:bookmarks", {"x": 1})
        await kv.set(f"{J}/node", "config", {})
        await arch.append(J, b"m", stamp=1.0)
        await kv.set(R, "k", 1)
        assert await s.delete_account("juliet", "example.com")
        assert await kv.owners() == [R] and await arch.owners() == []
        assert await roster.owners() == [] and await offline.count(J) == 0
        # data left without an account is removed too
        await kv.set(J, "k", 1)
        assert not await s.delete_account("juliet", "example.com")
        assert await kv.get(J, "k") is None

    run_storage(make_storage, body)


def test_archive_random_queries_match_a_model(make_storage):
    """Random combinations of filters against a plain-Python model of the semantics."""

    async def body(s: Storage) -> None:
        rnd = random.Random(1234)
        arch = s.open_store("mam", "archive")
        model: list[ArchiveItem] = []
        for i in range(60):  # stamps not monotonic, a few ties
            item = await arch.append(J, b"%d" % i, stamp=float(rnd.randrange(20)),
                                     with_jid=rnd.choice(["a@x", "b@x", "c@x/r"]))
            model.append(item)
        for victim in rnd.sample(model, 10):
            await arch.delete(J, [victim.id])
            model.remove(victim)
        for _ in range(300):
            kw = {}
            if rnd.random() < 0.4:
                kw["with_jid"] = rnd.choice(["a@x", "b@x", "c@x/r", "d@x"])
            if rnd.random() < 0.4:
                kw["start"] = float(rnd.randrange(22)) - 0.5 * rnd.randrange(2)
            if rnd.random() < 0.4:
                kw["end"] = float(rnd.randrange(22))
            if rnd.random() < 0.4:
                kw["after_id"] = rnd.choice(model).id
            if rnd.random() < 0.4:
                kw["before_id"] = rnd.choice(model).id
            if rnd.random() < 0.2:
                kw["ids"] = [i.id for i in rnd.sample(model, 8)] + ["zz"]
            expect = [
                i for i in model
                if kw.get("with_jid", i.with_jid) == i.with_jid
                and i.stamp >= kw.get("start", -1) and i.stamp <= kw.get("end", 99)
                and ("after_id" not in kw or i.seq > (await arch.get(J, kw["after_id"])).seq)
                and ("before_id" not in kw or i.seq < (await arch.get(J, kw["before_id"])).seq)
                and ("ids" not in kw or i.id in kw["ids"])
            ]
            assert await arch.count(J, **kw) == len(expect), kw
            reverse = rnd.random() < 0.5
            limit = rnd.choice([None, 0, 1, 5, 100])
            ordered = expect[::-1] if reverse else expect
            assert await arch.query(J, **kw, limit=limit, reverse=reverse) == (
                ordered if limit is None else ordered[:limit]), kw

    run_storage(make_storage, body)


# -- SQLite specifics ------------------------------------------------------------------------


def test_sqlite_stores_survive_reopen(tmp_path):
    path = tmp_path / "x.sqlite"
    saved = {}

    async def write() -> None:
        async with SQLiteStorage(path) as s:
            await s.open_store("muc").set("room@c", "config", VALUES[0])
            arch = s.open_store("mam", "archive")
            saved["items"] = await fill(arch, n=5)
            await s.open_store("muc").set_version(3)

    async def read() -> None:
        async with SQLiteStorage(path) as s:
            assert await s.open_store("muc").get("room@c", "config") == VALUES[0]
            arch = s.open_store("mam", "archive")
            assert await arch.query(J) == saved["items"]
            assert await arch.count(J) == 5
            assert await s.open_store("muc", "archive").get_version() == 3
            new = await arch.append(J, b"after", stamp=1.0)
            assert new.seq > saved["items"][-1].seq
            assert await s.integrity_check() == []

    asyncio.run(write())
    asyncio.run(read())


def test_sqlite_group_commit_of_store_writes(tmp_path):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "g.sqlite") as s:
            kv, arch = s.open_store("m"), s.open_store("m", "archive")
            before = s.commits
            await asyncio.gather(
                *(kv.update(J, "n", lambda old: (old or 0) + 1) for _ in range(20)),
                *(arch.append(J, b"x", stamp=1.0) for _ in range(20)),
            )
            assert s.commits - before < 10  # batched, not one commit per write
            assert await kv.get(J, "n") == 20 and await arch.count(J) == 20

    asyncio.run(main())


def test_sqlite_migrates_a_version_2_store(tmp_path):
    """A database made by schema version 2 keeps its accounts, gains the store tables
    (migration 3) and its rosters and block lists move into them (migration 4)."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    for number, migration in enumerate(MIGRATIONS[:2], 1):
        for statement in migration:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (number,))
    conn.execute("INSERT INTO accounts VALUES ('example.com', 'juliet', 0)")
    c = CREDS["SHA-256"]
    conn.execute("INSERT INTO scram_credentials VALUES ('example.com', 'juliet', ?, ?, ?, ?, ?)",
                 (c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key))
    conn.execute("INSERT INTO roster_versions VALUES ('example.com', 'juliet', 1)")
    conn.execute("INSERT INTO roster_items VALUES ('example.com', 'juliet', ?, 'Romeo', 'none',"
                 " 0, '[]', 0, NULL, 1, 1)", (R,))
    conn.execute("INSERT INTO blocklist VALUES ('example.com', 'juliet', 'b@x')")
    conn.commit()
    conn.close()

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            assert await s.schema_version() == len(MIGRATIONS) >= 4
            assert await s.get_scram("juliet", "example.com", "SHA-256") == CREDS["SHA-256"]
            roster = await s.open_store("roster").get(J, "roster")
            assert roster["version"] == 1 and roster["items"][R]["name"] == "Romeo"
            assert await s.open_store("blocking").get(J, "list") == ["b@x"]
            await s.open_store("m").set(J, "k", 1)
            await s.open_store("m", "archive").append(J, b"x", stamp=1.0)
            assert await s.delete_account("juliet", "example.com")
            assert await s.open_store("m").owners() == []
            assert await s.open_store("roster").owners() == []
            assert await s.integrity_check() == []

    asyncio.run(main())


def test_sqlite_archive_queries_use_indexes(tmp_path):
    """Pages are index range scans in seq order: no table scan, no sort."""

    async def main() -> None:
        async with SQLiteStorage(tmp_path / "p.sqlite") as s:
            arch = s.open_store("mam", "archive")
            items = await fill(arch, n=20)
            await fill(arch, owner=R, n=20)
            await s._call(lambda c: c.execute("ANALYZE"), write=True)

            def plan(**kw) -> str:
                sql, args = select_sql("mam", J, **kw)

                def explain(conn):
                    return " ; ".join(
                        r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args)
                    )

                return explain

            for kw, index in [
                ({"before_seq": items[10].seq, "limit": 50, "reverse": True}, "archive_by_owner"),
                ({"before_seq": items[10].seq, "limit": 50}, "archive_by_owner"),
                ({"after_seq": items[3].seq, "limit": 50}, "archive_by_owner"),
                ({"limit": 50, "reverse": True}, "archive_by_owner"),
                ({"with_jid": "a@x", "before_seq": items[10].seq, "limit": 50, "reverse": True},
                 "archive_by_with"),
            ]:
                text = await s._call(plan(**kw), write=False)
                assert f"USING INDEX {index} " in text + " ", (kw, text)
                assert "SCAN" not in text and "TEMP B-TREE" not in text, (kw, text)
            text = await s._call(plan(start=105.0, end=107.0, limit=50), write=False)
            assert "SCAN archive" not in text, text
            # the id anchors and retention use indexes as well
            for sql, args in [
                ("SELECT seq FROM archive WHERE ns = ? AND owner = ? AND id = ?", ["mam", J, "x"]),
                ("SELECT seq, owner FROM archive WHERE ns = ? AND stamp < ? LIMIT ?",
                 ["mam", 5.0, 10]),
            ]:
                text = await s._call(
                    lambda c, sql=sql, args=args: str(
                        c.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()),
                    write=False,
                )
                assert "USING" in text and "SCAN" not in text, text
            # and the real call returns that page
            page = await arch.query(J, before_id=items[10].id, limit=50, reverse=True)
            assert [i.id for i in page] == [i.id for i in items[9::-1]]

    asyncio.run(main())


def test_sqlite_store_point_reads_use_the_reader(tmp_path):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "r.sqlite") as s:
            kv, arch = s.open_store("m"), s.open_store("m", "archive")
            await kv.set(J, "k", 1)
            item = await arch.append(J, b"x", stamp=1.0)
            calls = []
            real = s._call

            async def spy(fn, *, write):
                calls.append(write)
                return await real(fn, write=write)

            s._call = spy
            assert await kv.get(J, "k") == 1 and await kv.keys(J) == ["k"]
            assert await arch.get(J, item.id) == item
            assert await arch.query(J, limit=50) == [item] and await arch.count(J) == 1
            assert calls == []  # all on the loop-thread reader
            assert await arch.query(J) == [item]  # unbounded: on the connection thread
            assert calls == [False]

    asyncio.run(main())


# -- batched appends (start_append) -----------------------------------------------------


def test_start_append_batch_across_owners_is_one_job_and_one_commit(tmp_path):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "b.sqlite") as s:
            mam, off = s.open_store("mam", "archive"), s.open_store("offline", "archive")
            commits, jobs = s.commits, s.append_batches
            futures = [
                store.start_append(owner, b"m%d" % i, stamp=float(i), with_jid=R)
                for i in range(30)
                for store, owner in ((mam, J), (mam, R), (off, J))
            ]
            assert not any(f.done() for f in futures)  # resolved by the batch's commit
            items = await asyncio.gather(*futures)
            assert s.append_batches - jobs == 1 and s.commits - commits == 1
            assert len({i.id for i in items}) == 90 and all(i.seq for i in items)
            for store, owner, step in ((mam, J, 0), (mam, R, 1), (off, J, 2)):
                mine = items[step::3]
                assert await store.query(owner) == mine  # order kept within an owner
                assert [i.data for i in mine] == [b"m%d" % i for i in range(30)]
                assert await store.count(owner) == 30
            assert [i.seq for i in items] == sorted(i.seq for i in items)
            assert await s.integrity_check() == []

    asyncio.run(main())


def test_start_append_limit_counts_earlier_items_of_the_batch(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("offline", "archive")
        await arch.append(J, b"old", stamp=1.0)
        futures = [arch.start_append(J, b"%d" % i, stamp=2.0, limit=3) for i in range(4)]
        futures.append(arch.start_append(R, b"r", stamp=2.0, limit=1))
        results = await asyncio.gather(*futures)
        assert [r is not None for r in results] == [True, True, False, False, True]
        assert [i.data for i in await arch.query(J)] == [b"old", b"0", b"1"]
        assert await arch.count(J) == 3 and await arch.count(R) == 1

    run_storage(make_storage, body)


def test_start_append_failure_fails_only_that_append(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        await arch.append(J, b"first", stamp=1.0, id="dup")
        futures = [
            arch.start_append(J, b"a", stamp=2.0),
            arch.start_append(J, b"again", stamp=2.0, id="dup"),  # already stored
            arch.start_append(J, b"b", stamp=2.0, id="x"),
            arch.start_append(J, b"twice", stamp=2.0, id="x"),  # earlier in this batch
            arch.start_append(R, b"c", stamp=2.0, id="dup"),  # another owner: fine
            arch.start_append(J, b"new", stamp=3.0, id="dup", replace=True),
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert isinstance(results[1], ItemExists) and isinstance(results[3], ItemExists)
        assert [r.data for r in results if isinstance(r, ArchiveItem)] == [
            b"a", b"b", b"c", b"new"]
        assert [i.data for i in await arch.query(J)] == [b"a", b"b", b"new"]
        assert await arch.count(J) == 3 and await arch.count(R) == 1

    run_storage(make_storage, body)


def test_start_append_is_durable_and_close_writes_pending_appends(tmp_path):
    path = tmp_path / "d.sqlite"
    saved: list[ArchiveItem] = []

    async def write() -> None:
        s = SQLiteStorage(path)
        await s.open()
        arch = s.open_store("mam", "archive")
        saved.append(await arch.start_append(J, b"committed", stamp=1.0))
        late = arch.start_append(J, b"started before close", stamp=2.0)
        await s.close()  # flushes the batch still being collected
        saved.append(await late)

    async def read() -> None:
        async with SQLiteStorage(path) as s:
            assert await s.open_store("mam", "archive").query(J) == saved
        with pytest.raises(StorageError):  # closed: the future fails, nothing is queued
            await s.open_store("mam", "archive").start_append(J, b"x", stamp=1.0)

    asyncio.run(write())
    asyncio.run(read())
