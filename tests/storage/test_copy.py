"""Copying a whole storage into another (:mod:`xmppd.storage.copy`): a populated SQLite
database to PostgreSQL and back, everything compared; what a target must not hold; a row
the target refuses."""

from __future__ import annotations

import asyncio

import pytest

from xmppd.c2s.sasl import derive_all, derive_credentials
from xmppd.storage import PostgreSQLStorage, SQLiteStorage, Storage
from xmppd.storage.copy import (
    Census,
    CopyError,
    census,
    copy_storage,
    differences,
    target_problem,
)
from xmppd.storage.credentials import HASH_NAMES

CREDS = derive_all("secret")
A, B, C = "alice@example.com", "bob@example.com", "carol@example.com"
ROOM = "room@conference.example.com"


async def populate(s: Storage) -> None:
    """Accounts (one disabled, one with a single hash) and data in the namespaces and
    layouts of the modules, a namespace no module opens, and store versions."""
    for user in ("alice", "bob", "carol"):
        await s.create_account(user, "example.com", CREDS)
    await s.create_account("dave", "other.example", {
        "SHA-256": derive_credentials("pw", "SHA-256", salt=b"0123456789abcdef")})
    await s.set_disabled("carol", "example.com", True)
    kv = s.open_store
    await kv("roster").set(A, "roster", {"version": 2, "items": {B: {
        "name": "Bob", "subscription": "both", "ask": False, "groups": ["Friends"],
        "approved": False, "request": None, "listed": True, "version": 2}}})
    await kv("blocking").set(A, "list", ["spam@example.net"])
    await kv("vcard").set(A, "vcard", "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>")
    await kv("pep").set(A + "/urn:xmpp:avatar:data", "config", {"access": "presence"})
    await kv("pubsub").set("pubsub.example.com/news", "config", {"max_items": 10})
    await kv("muc").set(ROOM, "room", {"name": "Room", "persistent": True,
                                       "affiliations": {A: "owner"}})
    await kv("mam").set(A, "prefs", {"default": "always"})
    await kv("retired").set("", "setting", [1, 2.5, "ü", None, {"x": True}])
    pep = s.open_store("pep", "archive")
    await pep.append(A + "/urn:xmpp:avatar:data", b"<data>AAA=</data>", stamp=5.0, id="hash1")
    await s.open_store("pubsub", "archive").append("pubsub.example.com/news", b"<entry/>",
                                                   stamp=6.0, id="item-1")
    muc = s.open_store("muc", "archive")
    mam = s.open_store("mam", "archive")
    for i in range(23):  # interleaved owners, so that no owner's seqs are contiguous
        owner = (A, B, A)[i % 3]
        await mam.append(owner, f"<message><body>{i}</body></message>".encode(),
                         stamp=1000.0 + i, with_jid=(B, A, C)[i % 3])
        if i % 5 == 0:
            await muc.append(ROOM, f"<message type='groupchat'>{i}</message>".encode(),
                             stamp=1000.5 + i, with_jid=A + "/phone")
    first = (await mam.query(A, limit=1))[0]
    await mam.append(A, b"<message>edited</message>", stamp=2000.0, id=first.id, replace=True)
    offline = s.open_store("offline", "archive")
    for i in range(3):
        await offline.append(B, f"<message>{i}</message>".encode(), stamp=3000.0 + i)
    for ns, version in (("roster", 1), ("mam", 2), ("muc", 3), ("gone", 4)):
        await s.open_store(ns).set_version(version)


async def dump(s: Storage) -> dict:
    """Everything a storage holds, through the older per-owner API (not the scans the
    copy uses); archive items without their seq (a backend's own numbering)."""
    accounts = {}
    for username, domain in await s.list_accounts():
        creds = {h: await s.get_scram(username, domain, h) for h in HASH_NAMES}
        accounts[f"{username}@{domain}"] = (creds, await s.account_disabled(username, domain))
    kv = {}
    for ns in await s.namespaces("keyvalue"):
        store = s.open_store(ns)
        kv[ns] = {owner: await store.items(owner) for owner in await store.owners()}
    archive = {}
    for ns in await s.namespaces("archive"):
        store = s.open_store(ns, "archive")
        archive[ns] = {owner: [(i.id, i.stamp, i.with_jid, i.data) for i in
                               await store.query(owner)] for owner in await store.owners()}
    return {"accounts": accounts, "kv": kv, "archive": archive,
            "versions": await s.store_versions()}


async def pages(s: Storage) -> tuple[list[str], int]:
    """What a MAM client paging by id sees: a page after an id, the page before its last."""
    mam = s.open_store("mam", "archive")
    anchor = (await mam.query(A, limit=3))[-1].id
    forward = await mam.query(A, after_id=anchor, limit=4)
    back = await mam.query(A, before_id=forward[-1].id, limit=2, reverse=True)
    return [i.id for i in forward + back], await mam.count(A, with_jid=C)


def test_sqlite_to_postgresql_and_back(tmp_path, postgresql_url):
    reports = []

    async def main() -> None:
        first = SQLiteStorage(tmp_path / "first.sqlite3")
        middle = PostgreSQLStorage(postgresql_url)
        last = SQLiteStorage(tmp_path / "last.sqlite3")
        async with first, middle, last:
            await populate(first)
            expected = await dump(first)
            assert len(expected["kv"]) == 8 and set(expected["archive"]) == {
                "mam", "muc", "offline", "pep", "pubsub"}
            assert expected["accounts"]["carol@example.com"][1] is True
            for source, target in ((first, middle), (middle, last)):
                assert target_problem(await census(target)) is None
                copied = await copy_storage(source, target, batch=4, progress=reports.append)
                assert copied.accounts == 4 and copied.disabled == 1
                assert copied.archive == {"mam": 23, "muc": 5, "offline": 3, "pep": 1,
                                          "pubsub": 1}
                assert differences(copied, await census(target), "copied", "in TO") == []
                assert await dump(target) == expected
            # a client paging the archive by id sees the same pages
            assert await pages(first) == await pages(middle) == await pages(last)

    asyncio.run(main())
    done = [r for r in reports if r.finished]
    assert [(r.kind, r.namespace) for r in done[:3]] == [
        ("accounts", ""), ("keyvalue", "blocking"), ("keyvalue", "mam")]
    assert ("archive", "mam", 23, 23) in [(r.kind, r.namespace, r.done, r.total) for r in done]
    assert any(r.kind == "archive" and r.done == 4 and not r.finished for r in reports)


def test_versions_a_new_server_set_are_replaced(tmp_path):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "a.sqlite3") as source, \
                SQLiteStorage(tmp_path / "b.sqlite3") as target:
            await source.open_store("roster").set_version(1)
            await source.open_store("roster").set(A, "roster", {"items": {}})
            # a server started once on the target: its modules set their versions
            await target.open_store("roster").set_version(3)
            await target.open_store("muc").set_version(2)
            assert target_problem(await census(target)) is None
            copied = await copy_storage(source, target)
            assert copied.versions == {"roster": 1}
            assert await target.store_versions() == {"muc": 0, "roster": 1}
            assert differences(copied, await census(target), "copied", "in TO") == []

    asyncio.run(main())


def test_a_row_the_target_refuses_stops_the_copy(tmp_path, postgresql_url):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "a.sqlite3") as source, \
                PostgreSQLStorage(postgresql_url) as target:
            await source.open_store("roster").set(A, "roster", {"items": {}})
            await source.open_store("offline", "archive").append(B, b"<m/>", stamp=1.0,
                                                                 with_jid="nul\0here", id="x1")
            with pytest.raises(CopyError, match=r"archive 'offline': the target refused item"
                                                r" 'x1' of 'bob@example.com': .*1 row"):
                await copy_storage(source, target)

    asyncio.run(main())


def test_what_a_target_must_not_hold():
    assert target_problem(Census(versions={"muc": 2}, keyvalue={"muc": 0})) is None
    assert target_problem(Census(accounts=2)) == (
        "it is not empty (2 account(s)): copy only into a new, empty database")
    problem = target_problem(Census(keyvalue={f"ns{i}": 1 for i in range(5)}, archive={"mam": 7}))
    assert problem.startswith("it is not empty (1 key-value row(s) in 'ns0'")
    assert ", ...)" in problem


def test_differences_name_each_count():
    a = Census(accounts=3, keyvalue={"roster": 3}, archive={"mam": 10}, versions={"mam": 2})
    b = Census(accounts=3, keyvalue={"roster": 3, "x": 1}, archive={"mam": 9})
    assert differences(a, a, "copied", "in TO") == []
    assert differences(a, b, "copied", "in TO") == [
        "key-value 'x': 0 copied, 1 in TO", "archive 'mam': 10 copied, 9 in TO",
        "version of 'mam': 2 copied, 0 in TO"]
