"""PostgreSQL specifics: the URL, failures (no server, a server lost and back), batched
appends, atomicity across connections, query plans.  The behaviour every backend shares is
tested in test_storage.py and test_storage_stores.py (PostgreSQL among them)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from pgserver import PostgreSQLServer, find_bindir, free_port

from xmppd.c2s.sasl import derive_credentials
from xmppd.storage import PostgreSQLStorage, StorageError, storage_from_spec
from xmppd.storage.postgresql import MIGRATIONS, parse_url, redact_url
from xmppd.storage.postgresql_stores import select_sql

CREDS = {"SHA-256": derive_credentials("secret", "SHA-256", salt=b"0123456789abcdef")}
J = "juliet@example.com"


# -- the URL (no server needed) ---------------------------------------------------------------


@pytest.mark.parametrize("url,dsn,pool_max", [
    ("postgresql://u:pw@db.example:5433/xmppd", "postgresql://u:pw@db.example:5433/xmppd", 10),
    ("postgres://db/x?pool_max=3&sslmode=require", "postgres://db/x?sslmode=require", 3),
    ("postgresql:///x?host=/run/postgresql&pool_min=0", "postgresql:///x?host=/run/postgresql",
     10),
])
def test_url_parsed(url, dsn, pool_max):
    got, options = parse_url(url)
    assert got == dsn and options.pool_max == pool_max
    assert isinstance(storage_from_spec(url), PostgreSQLStorage)
    assert isinstance(storage_from_spec({"backend": "postgresql", "url": url}), PostgreSQLStorage)


@pytest.mark.parametrize("url,message", [
    ("postgresql:db", "a PostgreSQL URL is"),
    ("postgresql://u:hunter2@h:port/db", "bad port"),
    ("postgresql://u:hunter2@h/", "needs a database name"),
    ("postgresql://h/a/b", "needs a database name"),
    ("postgresql://h/db?pool_max=x", "not a number"),
    ("postgresql://h/db?pool_max=0", "out of range"),
    ("postgresql://h/db?connect_timeout=-1", "out of range"),
    ("postgresql://h/db?pool_min=4&pool_max=2", "more than"),
])
def test_bad_urls_refused_without_the_password(url, message):
    with pytest.raises(ValueError, match=message) as info:
        storage_from_spec(url)
    assert "hunter2" not in str(info.value)


def test_redact_url():
    assert redact_url("postgresql://u:pw@h:1/db?x=1") == "postgresql://u:***@h:1/db?x=1"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("postgresql://h/db") == "postgresql://h/db"


def test_asyncpg_is_imported_only_when_a_postgresql_storage_opens():
    code = ("import sys; from xmppd.storage import storage_from_spec;"
            " storage_from_spec('postgresql://h/db'); storage_from_spec('memory:');"
            " import xmppd.server, xmppd.cli; print('asyncpg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=os.environ)
    assert out.stdout.strip() == "False"


# -- failures ---------------------------------------------------------------------------------


def test_no_server_at_open_is_a_clear_storage_error():
    url = f"postgresql://xmppd:hunter2@127.0.0.1:{free_port()}/xmppd?connect_timeout=5"

    async def main() -> None:
        s = PostgreSQLStorage(url)
        with pytest.raises(StorageError) as info:
            await s.open()
        text = str(info.value)
        assert text.startswith("cannot connect to PostgreSQL postgresql://xmppd:***@127.0.0.1:")
        assert "hunter2" not in text and "\n" not in text
        with pytest.raises(StorageError, match="not open"):
            await s.list_accounts()
        await s.close()

    asyncio.run(main())


def test_unknown_database_at_open(postgresql_server):
    async def main() -> None:
        with pytest.raises(StorageError, match='database "nosuchdb" does not exist'):
            await PostgreSQLStorage(postgresql_server.url("nosuchdb")).open()

    asyncio.run(main())


@pytest.fixture
def own_server():
    """A PostgreSQL cluster of this test's own, to stop and start again."""
    bindir = find_bindir()
    if bindir is None:  # the session fixture decides whether that is a skip or a failure
        pytest.skip("PostgreSQL is not installed")
    server = PostgreSQLServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_lost_then_back(own_server, postgresql_server, mode):
    """Operations while PostgreSQL is down raise StorageError (pending appends too); what
    was acknowledged before is there after; the pool connects again by itself."""
    url = own_server.create_database()

    async def main() -> None:
        async with PostgreSQLStorage(url + "?connect_timeout=3") as s:
            kv, arch = s.open_store("roster"), s.open_store("offline", "archive")
            await s.create_account("juliet", "example.com", CREDS)
            await kv.set(J, "roster", {"version": 1})
            acked = await arch.append(J, b"<message/>", stamp=1.0)

            own_server.stop(mode)
            pending = arch.start_append(J, b"during the outage", stamp=2.0)
            for call in (lambda: kv.get(J, "roster"), lambda: kv.set(J, "x", 1),
                         lambda: s.account_exists("juliet", "example.com"),
                         lambda: kv.update(J, "n", lambda old: 1), lambda: arch.query(J),
                         lambda: pending):
                with pytest.raises(StorageError, match="PostgreSQL .*127.0.0.1"):
                    await call()

            own_server.start()
            assert await kv.get(J, "roster") == {"version": 1}
            assert await arch.query(J) == [acked]  # the failed append was not written
            assert await s.account_exists("juliet", "example.com")
            assert (await arch.append(J, b"after", stamp=3.0)).seq > acked.seq
            assert await kv.update(J, "n", lambda old: 1) == (None, 1)

    asyncio.run(main())


def test_refuses_a_newer_schema(postgresql_url, postgresql_server):
    async def main() -> None:
        async with PostgreSQLStorage(postgresql_url) as s:
            assert await s.schema_version() == len(MIGRATIONS)
            async with s.transaction() as conn:
                await conn.execute("INSERT INTO schema_version VALUES (99, 0)")
        with pytest.raises(StorageError, match="schema version 99"):
            await PostgreSQLStorage(postgresql_url).open()

    asyncio.run(main())


# -- durability, batching, atomicity ----------------------------------------------------------------


def test_data_survives_reopen_and_close_writes_pending_appends(postgresql_url):
    saved = []

    async def write() -> None:
        s = PostgreSQLStorage(postgresql_url)
        await s.open()
        await s.create_account("juliet", "example.com", CREDS)
        await s.open_store("roster").set(J, "roster", {"items": {"romeo@x": {}}})
        arch = s.open_store("mam", "archive")
        saved.append(await arch.start_append(J, b"committed", stamp=1.0))
        late = arch.start_append(J, b"started before close", stamp=2.0)
        await s.close()
        saved.append(await late)

    async def read() -> None:
        async with PostgreSQLStorage(postgresql_url) as s:
            assert await s.get_scram("juliet", "example.com", "SHA-256") == CREDS["SHA-256"]
            assert await s.open_store("roster").get(J, "roster") == {"items": {"romeo@x": {}}}
            assert await s.open_store("mam", "archive").query(J) == saved
        with pytest.raises(StorageError):
            await s.open_store("mam", "archive").start_append(J, b"x", stamp=1.0)

    asyncio.run(write())
    asyncio.run(read())


def test_appends_of_one_iteration_are_one_batch_in_order(postgresql_url):
    async def main() -> None:
        async with PostgreSQLStorage(postgresql_url) as s:
            a, b = s.open_store("mam", "archive"), s.open_store("muc_mam", "archive")
            before = s.append_batches
            futures = [(a if i % 3 else b).start_append(f"u{i % 4}@x", b"%d" % i, stamp=1.0)
                       for i in range(200)]
            items = await asyncio.gather(*futures)
            assert s.append_batches == before + 1
            assert [i.seq for i in items] == sorted(i.seq for i in items)
            assert len({i.seq for i in items}) == 200
            assert await a.count("u1@x") == len(await a.query("u1@x")) == 34
            # appends started while a batch is being written are the next batch, after it
            first = [a.start_append(J, b"1-%d" % i, stamp=1.0) for i in range(50)]
            await asyncio.sleep(0)
            second = [a.start_append(J, b"2-%d" % i, stamp=1.0) for i in range(50)]
            items = await asyncio.gather(*first, *second)
            assert [i.seq for i in items] == sorted(i.seq for i in items)
            assert [i.data for i in await a.query(J)] == [i.data for i in items]

    asyncio.run(main())


def test_atomic_across_servers(postgresql_url):
    """Two storages (two pools: as two servers of a cluster) update one key and append
    with one limit concurrently: no update is lost, the limit holds."""

    async def main() -> None:
        one, two = PostgreSQLStorage(postgresql_url), PostgreSQLStorage(postgresql_url)
        async with one, two:
            counters = [one.open_store("c"), two.open_store("c")]
            await asyncio.gather(*(counters[i % 2].update(J, "n", lambda old: (old or 0) + 1)
                                   for i in range(60)))
            assert await counters[0].get(J, "n") == 60
            archives = [one.open_store("offline", "archive"), two.open_store("offline", "archive")]
            stored = await asyncio.gather(*(archives[i % 2].append(J, b"m", stamp=1.0, limit=7)
                                            for i in range(30)))
            assert sum(x is not None for x in stored) == 7 == await archives[1].count(J)

    asyncio.run(main())


def test_archive_queries_use_indexes(postgresql_url):
    """Every query shape reads an index, never the whole table (30,000 items of 30
    owners, statistics up to date)."""

    async def main() -> None:
        async with PostgreSQLStorage(postgresql_url) as s:
            async with s.transaction() as conn:
                await conn.execute(
                    "INSERT INTO archive (ns, owner, id, stamp, with_jid, data)"
                    " SELECT 'mam', 'u' || (i % 30) || '@x', 'id' || i, i, 'w' || (i % 50)"
                    " || '@x', '\\x00' FROM generate_series(1, 30000) AS i")
                await conn.execute("ANALYZE archive")
            shapes = [
                {"limit": 50}, {"limit": 50, "reverse": True},
                {"after_id": "id1000", "limit": 50}, {"before_id": "id20000", "limit": 50,
                                                      "reverse": True},
                {"with_jid": "w7@x", "limit": 50}, {"start": 100.0, "end": 300.0},
                {"ids": ["id1", "id31"]}, {"with_jid": "w7@x", "count": True},
            ]
            async with s.pool.acquire() as conn:
                for kw in shapes:
                    sql, args = select_sql("mam", "u1@x", **kw)
                    plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
                    assert "Seq Scan" not in plan and "Index" in plan, (kw, plan)
                plan = "\n".join(r[0] for r in await conn.fetch(
                    "EXPLAIN SELECT seq FROM archive WHERE ns = 'mam' AND stamp < 10 LIMIT 100"))
                assert "Seq Scan" not in plan, plan

    asyncio.run(main())


def test_text_postgresql_cannot_hold_is_a_value_error(postgresql_url):
    async def main() -> None:
        async with PostgreSQLStorage(postgresql_url) as s:
            kv, arch = s.open_store("m"), s.open_store("m", "archive")
            with pytest.raises(ValueError, match="PostgreSQL cannot store"):
                await kv.set("a\x00b", "k", 1)
            ok = arch.start_append(J, b"fine", stamp=1.0)
            bad = arch.start_append("a\x00b", b"x", stamp=1.0)
            assert (await ok).data == b"fine"  # the batch's other appends are written
            with pytest.raises(ValueError, match="PostgreSQL cannot store"):
                await bad
            assert [i.data for i in await arch.query(J)] == [b"fine"]

    asyncio.run(main())
