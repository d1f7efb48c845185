"""Storage: the same tests against every backend, plus SQLite durability details."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from xmppd.c2s.sasl import SASLServer, ScramCredentials, derive_credentials
from xmppd.storage import (
    AccountExists,
    MemoryStorage,
    SQLiteStorage,
    Storage,
    StorageError,
    open_storage,
    storage_from_spec,
)
from xmppd.storage.sqlite import MIGRATIONS


def creds(password: str = "secret", salt: bytes = b"0123456789abcdef") -> dict:
    # Fixed salt and only two hashes: fast, and enough to see what is stored.
    return {h: derive_credentials(password, h, salt=salt) for h in ("SHA-1", "SHA-256")}


CREDS = creds()
OTHER = creds("other", b"fedcba9876543210")


@pytest.fixture(params=["memory", "sqlite"])
def make_storage(request, tmp_path):
    """A factory for an unopened backend; sqlite ones share one file per test."""

    def make() -> Storage:
        if request.param == "memory":
            return MemoryStorage()
        return SQLiteStorage(tmp_path / "db" / "xmppd.sqlite")

    return make


def run(make_storage, body) -> None:
    async def main() -> None:
        async with make_storage() as storage:
            await body(storage)

    asyncio.run(main())


# -- every backend --------------------------------------------------------------------


def test_account_lifecycle(make_storage):
    async def body(s: Storage) -> None:
        assert not await s.account_exists("juliet", "capulet.example")
        await s.create_account("juliet", "capulet.example", CREDS)
        assert await s.account_exists("juliet", "capulet.example")
        assert not await s.account_exists("juliet", "montague.example")
        got = await s.get_scram("juliet", "capulet.example", "SHA-256")
        assert got == CREDS["SHA-256"] and isinstance(got, ScramCredentials)
        assert await s.get_scram("juliet", "capulet.example", "SHA-512") is None
        assert await s.get_scram("romeo", "capulet.example", "SHA-256") is None
        with pytest.raises(AccountExists):
            await s.create_account("juliet", "capulet.example", OTHER)
        assert await s.get_scram("juliet", "capulet.example", "SHA-1") == CREDS["SHA-1"]
        assert await s.delete_account("juliet", "capulet.example")
        assert not await s.delete_account("juliet", "capulet.example")
        assert await s.get_scram("juliet", "capulet.example", "SHA-256") is None
        await s.create_account("juliet", "capulet.example", OTHER)  # name is free again
        assert await s.get_scram("juliet", "capulet.example", "SHA-1") == OTHER["SHA-1"]

    run(make_storage, body)


def test_set_credentials(make_storage):
    async def body(s: Storage) -> None:
        assert not await s.set_credentials("romeo", "montague.example", OTHER)
        assert not await s.account_exists("romeo", "montague.example")
        await s.create_account("romeo", "montague.example", CREDS)
        only256 = {"SHA-256": OTHER["SHA-256"]}
        assert await s.set_credentials("romeo", "montague.example", only256)
        assert await s.get_scram("romeo", "montague.example", "SHA-256") == OTHER["SHA-256"]
        assert await s.get_scram("romeo", "montague.example", "SHA-1") is None

    run(make_storage, body)


def test_invalid_credentials_refused(make_storage):
    async def body(s: Storage) -> None:
        with pytest.raises(ValueError):
            await s.create_account("x", "d.example", {})
        with pytest.raises(ValueError):
            await s.create_account("x", "d.example", {"SHA-512": CREDS["SHA-1"]})
        assert not await s.account_exists("x", "d.example")

    run(make_storage, body)


def test_list_accounts(make_storage):
    async def body(s: Storage) -> None:
        for user, domain in [("b", "y.example"), ("a", "y.example"), ("z", "x.example")]:
            await s.create_account(user, domain, CREDS)
        assert await s.list_accounts() == [
            ("z", "x.example"),
            ("a", "y.example"),
            ("b", "y.example"),
        ]
        assert await s.list_accounts("y.example") == [("a", "y.example"), ("b", "y.example")]
        assert await s.list_accounts("none.example") == []

    run(make_storage, body)


def test_concurrent_writes_and_one_duplicate(make_storage):
    async def body(s: Storage) -> None:
        await s.create_account("u0", "d.example", CREDS)
        results = await asyncio.gather(
            *(s.create_account(f"u{i}", "d.example", CREDS) for i in range(30)),
            s.account_exists("u0", "d.example"),
            return_exceptions=True,
        )
        assert isinstance(results[0], AccountExists)
        assert results[1:30] == [None] * 29 and results[30] is True
        assert len(await s.list_accounts("d.example")) == 30

    run(make_storage, body)


def test_schema_version_and_closed_use(make_storage):
    async def main() -> None:
        s = make_storage()
        with pytest.raises(StorageError):
            await s.account_exists("a", "b")
        async with s:
            assert await s.schema_version() == s.SCHEMA_VERSION >= 1
        with pytest.raises(StorageError):
            await s.list_accounts()
        await s.close()  # idempotent

    asyncio.run(main())


def test_sasl_over_storage(make_storage):
    async def body(s: Storage) -> None:
        await s.create_account("juliet", "capulet.example", CREDS)
        sasl = SASLServer(s, secure=True, server_secret=b"k", domain="capulet.example")
        step = await sasl.start("PLAIN", b"\0juliet\0secret")
        assert step.success and step.username == "juliet"

    run(make_storage, body)


# -- SQLite specifics -----------------------------------------------------------------


def test_sqlite_survives_reopen_and_is_private(tmp_path):
    path = tmp_path / "data" / "xmppd.sqlite"

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            await s.create_account("juliet", "capulet.example", CREDS)
            wal = Path(f"{path}-wal")
            assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
        async with SQLiteStorage(path) as s:
            assert await s.get_scram("juliet", "capulet.example", "SHA-256") == CREDS["SHA-256"]
            assert await s.integrity_check() == []
            assert await s.schema_version() == len(MIGRATIONS)

    asyncio.run(main())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        # Only keys are stored: no column anywhere holds the password.
        dump = "\n".join(conn.iterdump())
        assert "secret" not in dump
    finally:
        conn.close()


def test_sqlite_pragmas_and_cascade(tmp_path):
    async def main() -> None:
        async with SQLiteStorage(tmp_path / "x.sqlite") as s:
            await s.create_account("juliet", "capulet.example", CREDS)
            pragmas = await s._call(
                lambda c: (
                    c.execute("PRAGMA synchronous").fetchone()[0],
                    c.execute("PRAGMA foreign_keys").fetchone()[0],
                ),
                write=False,
            )
            assert pragmas == (2, 1)  # FULL, on
            await s.delete_account("juliet", "capulet.example")
            left = await s._call(
                lambda c: c.execute("SELECT COUNT(*) FROM scram_credentials").fetchone()[0],
                write=False,
            )
            assert left == 0

    asyncio.run(main())


def test_sqlite_group_commit(tmp_path):
    """Writes queued while the thread is busy share one COMMIT; a failing one is alone."""

    async def main() -> None:
        async with SQLiteStorage(tmp_path / "g.sqlite") as s:
            gate = threading.Event()
            blocker = asyncio.ensure_future(s._call(lambda c: gate.wait(10), write=False))
            before = s.commits
            writes = [
                asyncio.ensure_future(s.create_account(f"u{i}", "d.example", CREDS))
                for i in range(20)
            ]
            dup = asyncio.ensure_future(s.create_account("u3", "d.example", OTHER))
            await asyncio.sleep(0)  # all jobs are queued now
            gate.set()
            await blocker
            await asyncio.gather(*writes)
            with pytest.raises(AccountExists):
                await dup
            assert s.commits - before == 1
            assert len(await s.list_accounts()) == 20
            assert await s.get_scram("u3", "d.example", "SHA-1") == CREDS["SHA-1"]

    asyncio.run(main())


def test_sqlite_refuses_newer_schema(tmp_path):
    path = tmp_path / "new.sqlite"

    async def create() -> None:
        async with SQLiteStorage(path):
            pass

    asyncio.run(create())
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    conn.commit()
    conn.close()

    async def main() -> None:
        with pytest.raises(StorageError, match="schema version"):
            await SQLiteStorage(path).open()

    asyncio.run(main())


@pytest.mark.parametrize(
    "spec,kind,path",
    [
        ("memory:", MemoryStorage, None),
        ({"backend": "memory"}, MemoryStorage, None),
        ("sqlite:///var/lib/x.db", SQLiteStorage, "/var/lib/x.db"),
        ("sqlite:rel/x.db", SQLiteStorage, "rel/x.db"),
        ("/srv/x.db", SQLiteStorage, "/srv/x.db"),
        (Path("y.db"), SQLiteStorage, "y.db"),
        ({"backend": "sqlite", "path": "/z.db"}, SQLiteStorage, "/z.db"),
    ],
)
def test_storage_from_spec(spec, kind, path):
    storage = storage_from_spec(spec)
    assert type(storage) is kind
    if path is not None:
        assert storage.path == Path(path)


@pytest.mark.parametrize(
    "spec", ["sqlite://host/x.db", "sqlite:", "postgres://x", {"backend": "nope"}, {}]
)
def test_storage_from_bad_spec(spec):
    with pytest.raises(ValueError):
        storage_from_spec(spec)


def test_open_storage(tmp_path):
    async def main() -> None:
        s = await open_storage(f"sqlite:///{tmp_path}/o.sqlite")
        try:
            assert await s.list_accounts() == []
        finally:
            await s.close()

    asyncio.run(main())


# -- rosters, offline messages, block lists (every backend) ------------------------------

from xmppd.storage.base import RosterItem  # noqa: E402


def test_roster_update_and_versions(make_storage):
    async def body(s: Storage) -> None:
        await s.create_account("juliet", "example.com", CREDS)
        assert (await s.roster("juliet", "example.com")).version == 0
        r1 = await s.roster_update("juliet", "example.com", "romeo@example.net",
                                   lambda old: RosterItem("romeo@example.net", "Romeo",
                                                          groups=("Friends", "a\nb")))
        assert r1.before is None and r1.pushed and r1.version == 1 == r1.after.version
        # a hidden row (pending inbound request only) does not bump the version
        r2 = await s.roster_update("juliet", "example.com", "nurse@example.com",
                                   lambda old: RosterItem("nurse@example.com", listed=False,
                                                          request=b"<presence/>"))
        assert not r2.pushed and r2.version == 1 and r2.after.pending_in
        # no change: nothing written
        r3 = await s.roster_update("juliet", "example.com", "romeo@example.net", lambda old: None)
        assert r3.before == r3.after and r3.version == 1 and not r3.pushed
        r4 = await s.roster_update("juliet", "example.com", "romeo@example.net",
                                   lambda old: old.replace(subscription="to"))
        assert r4.pushed and r4.version == 2 and r4.before.subscription == "none"
        await s.roster_update("juliet", "example.com", "mercutio@example.org",
                              lambda old: RosterItem("mercutio@example.org"))
        await s.roster_update("juliet", "example.com", "mercutio@example.org",
                              lambda old: RosterItem(old.jid, listed=False))  # removal
        roster = await s.roster("juliet", "example.com")
        assert roster.version == 4
        assert [i.jid for i in roster.listed()] == ["romeo@example.net"]
        assert roster.get("romeo@example.net").groups == ("Friends", "a\nb")
        assert roster.get("nurse@example.com").request == b"<presence/>"
        changes = await s.roster_changes("juliet", "example.com", 1)
        assert [(c.jid, c.listed, c.version) for c in changes] == [
            ("romeo@example.net", True, 2), ("mercutio@example.org", False, 4)]
        assert await s.roster_changes("juliet", "example.com", 4) == []
        with pytest.raises(StorageError):
            await s.roster_update("nobody", "example.com", "x@y", lambda old: RosterItem("x@y"))
        with pytest.raises(ValueError):
            await s.roster_update("juliet", "example.com", "x@y",
                                  lambda old: RosterItem("x@y", subscription="bogus"))

    run(make_storage, body)


def test_offline_messages(make_storage):
    async def body(s: Storage) -> None:
        await s.create_account("juliet", "example.com", CREDS)
        stored = await asyncio.gather(*(
            s.offline_store("juliet", "example.com", f"<m{i}/>".encode(), 1000.0 + i, 3)
            for i in range(5)))
        assert sorted(stored) == [False, False, True, True, True]
        msgs = await s.offline_messages("juliet", "example.com")
        assert len(msgs) == 3 == await s.offline_count("juliet", "example.com")
        assert [m.id for m in msgs] == sorted(m.id for m in msgs)
        assert [m.data for m in msgs] == [f"<m{int(m.stamp) - 1000}/>".encode() for m in msgs]
        assert await s.offline_delete("juliet", "example.com", [msgs[0].id, 999999]) == 1
        assert await s.offline_count("juliet", "example.com") == 2
        assert await s.offline_store("juliet", "example.com", b"<late/>", 2000.0, 3)
        assert (await s.offline_messages("juliet", "example.com"))[-1].data == b"<late/>"
        with pytest.raises(StorageError):
            await s.offline_store("nobody", "example.com", b"<m/>", 0.0, 3)
        assert await s.offline_messages("nobody", "example.com") == []

    run(make_storage, body)


def test_blocklist(make_storage):
    async def body(s: Storage) -> None:
        await s.create_account("juliet", "example.com", CREDS)
        assert await s.blocklist("juliet", "example.com") == []
        assert await s.block("juliet", "example.com", ["b@x", "a@x", "b@x"]) == ["b@x", "a@x"]
        assert await s.block("juliet", "example.com", ["a@x", "x"]) == ["x"]
        assert await s.blocklist("juliet", "example.com") == ["a@x", "b@x", "x"]
        assert await s.unblock("juliet", "example.com", ["b@x", "zz"]) == ["b@x"]
        assert await s.unblock("juliet", "example.com", None) == ["a@x", "x"]
        assert await s.blocklist("juliet", "example.com") == []

    run(make_storage, body)


def test_delete_account_removes_im_data(make_storage):
    async def body(s: Storage) -> None:
        await s.create_account("juliet", "example.com", CREDS)
        await s.roster_update("juliet", "example.com", "r@x", lambda old: RosterItem("r@x"))
        await s.offline_store("juliet", "example.com", b"<m/>", 1.0, 10)
        await s.block("juliet", "example.com", ["b@x"])
        await s.delete_account("juliet", "example.com")
        await s.create_account("juliet", "example.com", CREDS)
        assert (await s.roster("juliet", "example.com")).items == ()
        assert await s.offline_count("juliet", "example.com") == 0
        assert await s.blocklist("juliet", "example.com") == []

    run(make_storage, body)


def test_sqlite_im_data_survives_reopen(tmp_path):
    path = tmp_path / "x.sqlite"

    async def write() -> None:
        async with SQLiteStorage(path) as s:
            await s.create_account("juliet", "example.com", CREDS)
            await s.roster_update("juliet", "example.com", "r@x",
                                  lambda old: RosterItem("r@x", "R", "both", groups=("G",)))
            await s.offline_store("juliet", "example.com", b"<m/>", 1.5, 10)
            await s.block("juliet", "example.com", ["b@x"])

    async def read() -> None:
        async with SQLiteStorage(path) as s:
            roster = await s.roster("juliet", "example.com")
            assert roster.version == 1
            assert roster.items == (RosterItem("r@x", "R", "both", groups=("G",), version=1),)
            msgs = await s.offline_messages("juliet", "example.com")
            assert [(m.stamp, m.data) for m in msgs] == [(1.5, b"<m/>")]
            assert await s.blocklist("juliet", "example.com") == ["b@x"]
            assert await s.integrity_check() == []

    asyncio.run(write())
    asyncio.run(read())


def test_sqlite_migrates_a_version_1_store(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute("INSERT INTO accounts (domain, username, created_at) VALUES ('example.com', 'juliet', 0)")
    conn.commit()
    conn.close()

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            assert await s.schema_version() == len(MIGRATIONS) >= 2
            assert await s.account_exists("juliet", "example.com")  # kept by the migration
            assert await s.offline_store("juliet", "example.com", b"<m/>", 0.0, 1)
            await s.roster_update("juliet", "example.com", "r@x", lambda old: RosterItem("r@x"))
            assert (await s.roster("juliet", "example.com")).version == 1

    asyncio.run(main())
