"""Storage: the same tests against every backend, plus SQLite durability details."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from support import run_storage

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

    run_storage(make_storage, body)


def test_set_credentials(make_storage):
    async def body(s: Storage) -> None:
        assert not await s.set_credentials("romeo", "montague.example", OTHER)
        assert not await s.account_exists("romeo", "montague.example")
        await s.create_account("romeo", "montague.example", CREDS)
        only256 = {"SHA-256": OTHER["SHA-256"]}
        assert await s.set_credentials("romeo", "montague.example", only256)
        assert await s.get_scram("romeo", "montague.example", "SHA-256") == OTHER["SHA-256"]
        assert await s.get_scram("romeo", "montague.example", "SHA-1") is None

    run_storage(make_storage, body)


def test_invalid_credentials_refused(make_storage):
    async def body(s: Storage) -> None:
        with pytest.raises(ValueError):
            await s.create_account("x", "d.example", {})
        with pytest.raises(ValueError):
            await s.create_account("x", "d.example", {"SHA-512": CREDS["SHA-1"]})
        assert not await s.account_exists("x", "d.example")

    run_storage(make_storage, body)


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

    run_storage(make_storage, body)


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

    run_storage(make_storage, body)


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

    run_storage(make_storage, body)


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
            gate, inside = threading.Event(), threading.Event()

            def block(conn) -> None:
                inside.set()
                gate.wait(10)

            blocker = asyncio.ensure_future(s._call(block, write=False))
            # The writer thread must be inside the blocker before the writes are queued:
            # else it may take some of them into the blocker's batch.
            await asyncio.get_running_loop().run_in_executor(None, inside.wait, 10)
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
    "spec", ["sqlite://host/x.db", "sqlite:", "postgres://x", "postgresql:db", {"backend": "nope"}, {}]
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


# -- what Storage is (every backend) -----------------------------------------------------


@pytest.mark.parametrize("name", [
    "roster", "roster_changes", "roster_update", "offline_store", "offline_messages",
    "offline_delete", "offline_count", "blocklist", "block", "unblock",
])
def test_no_feature_method_groups(make_storage, name):
    """Feature data lives in per-module stores, not in methods of the storage."""
    assert not hasattr(make_storage(), name)


# -- SQLite migrations (migration 4, the module data, in tests/storage/test_migration_4.py) --


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
            assert await s.open_store("offline", "archive").append(
                "juliet@example.com", b"<m/>", stamp=0.0, limit=1)
            await s.open_store("roster").set("juliet@example.com", "roster", {"version": 1})
            assert await s.delete_account("juliet", "example.com")
            assert await s.open_store("roster").owners() == []
            assert await s.integrity_check() == []

    asyncio.run(main())


def test_accounts_can_be_disabled_and_reenabled(make_storage):
    async def body(s: Storage) -> None:
        assert not await s.set_disabled("juliet", "capulet.example", True)  # no account
        await s.create_account("juliet", "capulet.example", CREDS)
        await s.create_account("romeo", "montague.example", CREDS)
        assert not await s.account_disabled("juliet", "capulet.example")
        assert await s.set_disabled("juliet", "capulet.example", True)
        assert await s.account_disabled("juliet", "capulet.example")
        assert not await s.account_disabled("romeo", "montague.example")
        # the credentials and the data stay: only the login is refused (by c2s)
        assert await s.get_scram("juliet", "capulet.example", "SHA-1") == CREDS["SHA-1"]
        assert await s.set_disabled("juliet", "capulet.example", False)
        assert not await s.account_disabled("juliet", "capulet.example")
        await s.set_disabled("juliet", "capulet.example", True)
        await s.delete_account("juliet", "capulet.example")
        await s.create_account("juliet", "capulet.example", CREDS)  # a new account: enabled
        assert not await s.account_disabled("juliet", "capulet.example")

    run_storage(make_storage, body)
