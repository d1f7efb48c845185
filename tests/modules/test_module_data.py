"""The data of the roster, offline and blocking modules in their stores: the same tests
against every backend (what used to be the storage's roster/offline/block-list methods)."""

from __future__ import annotations

import asyncio

import pytest

from xmppd.c2s.sasl import derive_credentials
from xmppd.modules._rosterdata import RosterItem, RosterStore
from xmppd.modules.blocking import add_to_list, remove_from_list, stored_list
from xmppd.storage import SQLiteStorage, Storage

CREDS = {"SHA-256": derive_credentials("secret", "SHA-256", salt=b"0123456789abcdef")}
J = "juliet@example.com"


def run(make_storage, body) -> None:
    async def main() -> None:
        async with make_storage() as storage:
            await storage.create_account("juliet", "example.com", CREDS)
            await body(storage)

    asyncio.run(main())


def test_roster_update_and_versions(make_storage):
    async def body(s: Storage) -> None:
        rosters = RosterStore(s.open_store("roster"))
        assert (await rosters.get(J)).version == 0
        r1 = await rosters.update(J, "romeo@example.net", lambda old: RosterItem(
            "romeo@example.net", "Romeo", groups=("Friends", "a\nb")))
        assert r1.before is None and r1.pushed and r1.version == 1 == r1.after.version
        # a hidden row (pending inbound request only) does not bump the version
        r2 = await rosters.update(J, "nurse@example.com", lambda old: RosterItem(
            "nurse@example.com", listed=False, request=b"<presence/>"))
        assert not r2.pushed and r2.version == 1 and r2.after.pending_in
        # no change: nothing written
        r3 = await rosters.update(J, "romeo@example.net", lambda old: None)
        assert r3.before == r3.after and r3.version == 1 and not r3.pushed
        r4 = await rosters.update(J, "romeo@example.net",
                                  lambda old: old.replace(subscription="to"))
        assert r4.pushed and r4.version == 2 and r4.before.subscription == "none"
        await rosters.update(J, "mercutio@example.org",
                             lambda old: RosterItem("mercutio@example.org"))
        await rosters.update(J, "mercutio@example.org",
                             lambda old: RosterItem(old.jid, listed=False))  # removal
        roster = await rosters.get(J)
        assert roster.version == 4
        assert [i.jid for i in roster.items] == sorted(i.jid for i in roster.items)
        assert [i.jid for i in roster.listed()] == ["romeo@example.net"]
        assert roster.get("romeo@example.net").groups == ("Friends", "a\nb")
        assert roster.get("nurse@example.com").request == b"<presence/>"
        changes = await rosters.changes(J, 1)
        assert [(c.jid, c.listed, c.version) for c in changes] == [
            ("romeo@example.net", True, 2), ("mercutio@example.org", False, 4)]
        assert await rosters.changes(J, 4) == []
        with pytest.raises(ValueError):
            await rosters.update(J, "x@y", lambda old: RosterItem("x@y", subscription="bogus"))
        assert (await rosters.get(J)).version == 4  # the failed change wrote nothing

    run(make_storage, body)


def test_concurrent_roster_updates_are_atomic(make_storage):
    async def body(s: Storage) -> None:
        rosters = RosterStore(s.open_store("roster"))
        results = await asyncio.gather(*(
            rosters.update(J, f"c{i}@x", lambda old, i=i: RosterItem(f"c{i}@x")) for i in range(20)
        ))
        assert sorted(r.version for r in results) == list(range(1, 21))
        roster = await rosters.get(J)
        assert roster.version == 20 and len(roster.listed()) == 20

    run(make_storage, body)


def test_offline_archive(make_storage):
    async def body(s: Storage) -> None:
        offline = s.open_store("offline", "archive")
        stored = await asyncio.gather(*(
            offline.append(J, f"<m{i}/>".encode(), stamp=1000.0 + i, limit=3) for i in range(5)
        ))
        assert sorted(m is not None for m in stored) == [False, False, True, True, True]
        msgs = await offline.query(J)
        assert len(msgs) == 3 == await offline.count(J)
        assert [m.data for m in msgs] == [f"<m{int(m.stamp) - 1000}/>".encode() for m in msgs]
        assert await offline.delete(J, [msgs[0].id, "unknown"]) == 1
        assert await offline.count(J) == 2
        assert await offline.append(J, b"<late/>", stamp=2000.0, limit=3)
        assert (await offline.query(J))[-1].data == b"<late/>"
        assert await offline.query("nobody@example.com") == []

    run(make_storage, body)


def test_blocklist(make_storage):
    async def body(s: Storage) -> None:
        kv = s.open_store("blocking")
        assert await stored_list(kv, J) == []
        assert await add_to_list(kv, J, ["b@x", "a@x", "b@x"]) == ["b@x", "a@x"]
        assert await add_to_list(kv, J, ["a@x", "x"]) == ["x"]
        assert await add_to_list(kv, J, ["a@x"]) == []
        assert await stored_list(kv, J) == ["a@x", "b@x", "x"]
        assert await remove_from_list(kv, J, ["b@x", "zz"]) == ["b@x"]
        assert await remove_from_list(kv, J, None) == ["a@x", "x"]
        assert await stored_list(kv, J) == [] and await kv.keys(J) == []
        assert await remove_from_list(kv, J, None) == []

    run(make_storage, body)


def test_delete_account_removes_the_module_data(make_storage):
    async def body(s: Storage) -> None:
        rosters = RosterStore(s.open_store("roster"))
        await rosters.update(J, "r@x", lambda old: RosterItem("r@x"))
        await s.open_store("offline", "archive").append(J, b"<m/>", stamp=1.0)
        await add_to_list(s.open_store("blocking"), J, ["b@x"])
        await s.delete_account("juliet", "example.com")
        await s.create_account("juliet", "example.com", CREDS)
        assert (await rosters.get(J)).items == ()
        assert await s.open_store("offline", "archive").count(J) == 0
        assert await stored_list(s.open_store("blocking"), J) == []

    run(make_storage, body)


def test_sqlite_module_data_survives_reopen(tmp_path):
    path = tmp_path / "x.sqlite"

    async def write() -> None:
        async with SQLiteStorage(path) as s:
            await s.create_account("juliet", "example.com", CREDS)
            await RosterStore(s.open_store("roster")).update(
                J, "r@x", lambda old: RosterItem("r@x", "R", "both", groups=("G",)))
            await s.open_store("offline", "archive").append(J, b"<m/>", stamp=1.5)
            await add_to_list(s.open_store("blocking"), J, ["b@x"])

    async def read() -> None:
        async with SQLiteStorage(path) as s:
            roster = await RosterStore(s.open_store("roster")).get(J)
            assert roster.version == 1
            assert roster.items == (RosterItem("r@x", "R", "both", groups=("G",), version=1),)
            msgs = await s.open_store("offline", "archive").query(J)
            assert [(m.stamp, m.data) for m in msgs] == [(1.5, b"<m/>")]
            assert await stored_list(s.open_store("blocking"), J) == ["b@x"]
            assert await s.integrity_check() == []

    asyncio.run(write())
    asyncio.run(read())
