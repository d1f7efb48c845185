"""SQLite storage on one dedicated thread, with group commit.

Why a thread of our own rather than ``aiosqlite``: aiosqlite is also one thread per
connection, but hops to it once per statement.  Here each operation is one Python
function run on the connection's thread, and *every write queued while the thread was
busy runs in the same transaction*: one ``COMMIT`` (one fsync of the WAL) for the whole
batch.  Each write runs inside its own ``SAVEPOINT``, so one failing write (say
:class:`AccountExists`) is rolled back alone; the others still commit.  A write's
coroutine returns only after the batch's ``COMMIT``, so a returned write is durable
(WAL + ``synchronous=FULL``).  Reads in a batch run first, outside the transaction:
they are concurrent with those writes, so either order is correct, and they never see
uncommitted data.  No new dependency is needed.

Point reads (credentials at login, a key-value get such as a roster or a block list, an
archive count or small page) skip the thread: they run at once on a second, read-only connection owned by the event-loop thread.
In WAL mode a reader never waits for the writer (it reads the last committed snapshot), and
these reads are index lookups served from the page cache, a few microseconds, where a hop
to the thread and back costs tens (two thread switches and a loop wake-up) and, for the
caller, a task.  A read that finds the database busy (WAL recovery) falls back to the thread.

Per-module stores (:meth:`Storage.open_store`) live in generic tables, see
:mod:`xmppd.storage.sqlite_stores`.

Schema changes are forward migrations: append a tuple of SQL statements (or functions of
the connection, for data moves) to :data:`~xmppd.storage.sqlite_schema.MIGRATIONS`;
``open()`` applies the missing ones, each in its own transaction, and records them in
``schema_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from xmppd.storage.base import AccountExists, Storage, StorageError, check_credentials
from xmppd.storage.credentials import ScramCredentials
from xmppd.storage.sqlite_append import append_batch
from xmppd.storage.sqlite_schema import MIGRATIONS
from xmppd.storage.sqlite_staging import (
    MERGE_ROWS,
    has_staged,
    merge_staged,
    stage_shared_batch,
    staged_rows,
)
from xmppd.storage.sqlite_stores import (
    SQLiteArchiveStore,
    SQLiteKeyValueStore,
    delete_user_rows,
    namespaces_of,
)
from xmppd.storage.stores import (
    Append,
    AppendFailure,
    ArchiveStore,
    KeyValueStore,
    check_kind,
    check_user_owner,
    settle_appends,
)

__all__ = ["MIGRATIONS", "SQLiteStorage"]

T = TypeVar("T")

#: The writer connection's page cache (KiB) and WAL size between checkpoints (pages):
#: see ``_connect``.
_CACHE_KIB = 64 * 1024
_CHECKPOINT_PAGES = 10_000

log = logging.getLogger("xmppd.storage")


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    write: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_appends(batch: list[Append], done: asyncio.Future[list[Any]]) -> None:
    """Give each append of a batch its own outcome (the batch's error if it failed whole);
    the items are made here, on the loop thread."""
    if done.cancelled():
        outcomes: list[Any] = [StorageError("storage closed")] * len(batch)
    elif done.exception() is not None:
        outcomes = [done.exception()] * len(batch)
    else:
        outcomes = done.result()
    settle_appends(batch, outcomes)


def _settle_shared(shared: asyncio.Future[list[AppendFailure]], done: asyncio.Future[Any]) -> None:
    """The shared appends' future: their failures, or the batch's error."""
    if shared.cancelled():
        return
    if done.cancelled():
        shared.set_exception(StorageError("storage closed"))
    elif (error := done.exception()) is not None:
        shared.set_exception(error)
    else:
        shared.set_result(done.result())


class SQLiteStorage(Storage):
    """:class:`Storage` in one SQLite file (WAL, ``synchronous=FULL``, foreign keys on).

    The file (and its WAL, which SQLite creates with the same mode) is owner-only.
    ``max_batch`` bounds how many queued operations share one transaction.
    """

    SCHEMA_VERSION = len(MIGRATIONS)

    def __init__(self, path: Path | str, *, max_batch: int = 128) -> None:
        super().__init__()
        self._read_latency = self.latency.histogram("read")  # every login reads twice
        self.path = Path(path)
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = False
        #: transactions committed by the write path (a measure of group commit)
        self.commits = 0
        self._reader: sqlite3.Connection | None = None
        self._reader_thread = 0
        #: archive appends started in this event-loop iteration (one writer job at its end)
        self._appends: list[Append] = []
        #: or the shared appends (``start_append_shared``) started in it, six values each,
        #: and the one future they resolve
        self._flat: list[Any] = []
        self._shared: asyncio.Future[list[AppendFailure]] | None = None
        self._disabled: set[tuple[str, str]] = set()  # (username, domain); see open()
        #: Other processes (the workers of ``xmppd run --workers N``) write this file too:
        #: the disabled flag is read from it, not from this process's memory.
        self.multi_process = False
        #: writer jobs of archive appends (each a batch of them)
        self.append_batches = 0
        #: items staged since the last merge (the writer thread's count; a merge is due
        #: at MERGE_ROWS), and merges run
        self._staged = 0
        self.merges = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            # Created owner-only from the start (no window where it is world-readable).
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._closing = False
        self._queue = queue.SimpleQueue()
        thread = threading.Thread(
            target=self._run, args=(loop, ready), name=f"xmppd-sqlite:{self.path.name}", daemon=True
        )
        thread.start()
        try:
            await ready
        except BaseException:
            await asyncio.to_thread(thread.join)
            raise
        self._thread = thread
        # After the thread's migrations: the reader sees the whole schema.  No busy wait
        # (timeout 0): a busy reader falls back to the thread instead of blocking the loop.
        reader = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        reader.execute("PRAGMA query_only=ON")
        self._reader = reader
        self._reader_thread = threading.get_ident()
        # Every login asks whether its account is disabled: the few disabled accounts are
        # kept in memory (this process is the only writer of the flag) instead of one more
        # query per login.
        self._disabled = {(u, d) for u, d in reader.execute(
            "SELECT username, domain FROM accounts WHERE disabled = 1")}

    async def close(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._flush_appends()  # appends started before close() are written
        with contextlib.suppress(StorageError):  # else they stay staged, as after a crash
            await self._call(self.merge, write=True)
        self._closing = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._queue.put(None)  # after every job already queued
        await asyncio.to_thread(thread.join)
        self._thread = None

    # -- the connection thread ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)  # we issue BEGIN/COMMIT
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StorageError(f"{self.path}: cannot enable WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            # The writer's transactions are big (a loop iteration's archive appends, and
            # more while it was busy): these keep their cost per row, not durability —
            # synchronous stays FULL, and SQLite's docs on WAL
            # (https://www.sqlite.org/wal.html, "Durability") promise that a transaction
            # committed with synchronous=FULL survives power loss; NORMAL would not
            # (https://www.sqlite.org/pragma.html#pragma_synchronous).
            # * statement and savepoint journals in memory: each multi-row INSERT (a
            #   statement journal) inside the savepoints of a job otherwise copies every
            #   page it touches to a temporary file first;
            conn.execute("PRAGMA temp_store=MEMORY")
            # * a page cache that holds a batch's pages (the default 2 MiB spills them to
            #   the WAL mid-transaction, and rereads them); memory is taken only as used;
            conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            # * a checkpoint every ~40 MiB of WAL instead of ~4 MiB: a page rewritten by
            #   many commits (an archive's last page) is copied to the database once.
            conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        current = _version(conn)
        if current > len(MIGRATIONS):
            raise StorageError(
                f"{self.path} has schema version {current}; this xmppd knows {len(MIGRATIONS)}"
            )
        for number in range(current + 1, len(MIGRATIONS) + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for step in MIGRATIONS[number - 1]:
                    if callable(step):
                        step(conn)
                    else:
                        conn.execute(step)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (number, int(time.time())),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to open(), which re-raises it
            error = exc if isinstance(exc, StorageError) else StorageError(f"{self.path}: {exc}")
            loop.call_soon_threadsafe(_settle, ready, None, error)
            return
        self._staged = staged_rows(conn)
        loop.call_soon_threadsafe(_settle, ready, None, None)
        try:
            stop = False
            while not stop:
                job = self._queue.get()
                if job is None:
                    break
                batch = [job]
                while len(batch) < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self._execute(conn, batch)
        finally:
            conn.close()

    def _execute(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        for job in batch:
            if not job.write:
                try:
                    outcomes.append((job, job.fn(conn), None))
                except Exception as exc:
                    outcomes.append((job, None, exc))
        writes = [job for job in batch if job.write]
        if writes:
            done: list[tuple[_Job, Any, BaseException | None]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for job in writes:
                    conn.execute("SAVEPOINT job")
                    try:
                        result = job.fn(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        done.append((job, None, exc))
                    else:
                        conn.execute("RELEASE job")
                        done.append((job, result, None))
                conn.execute("COMMIT")
                self.commits += 1
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                failure = StorageError(f"transaction failed: {exc}")
                done = [(job, None, failure) for job in writes]
            outcomes += done
        for job, result, error in outcomes:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                job.loop.call_soon_threadsafe(_settle, job.future, result, error)
        if self._staged >= MERGE_ROWS:  # after the batch's outcomes: they need not wait
            self._merge_in_own_transaction(conn)

    def merge(self, conn: sqlite3.Connection, ns: str | None = None) -> None:
        """Merge the staged archive items (``ns``'s, or all) on this thread, in the
        caller's transaction: what every job that reads or changes ``archive`` does
        first."""
        merged = merge_staged(conn, ns)
        if merged:
            self.merges += 1
        self._staged = 0 if ns is None else max(0, self._staged - merged)

    def _merge_in_own_transaction(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.merge(conn)
            conn.execute("COMMIT")
            self.commits += 1
        except Exception:  # staged items stay staged: the next read's merge tries again
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.exception("%s: merging the staged archive items failed", self.path)

    async def _call(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        if self._thread is None or self._closing:
            raise StorageError("storage is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        started = time.perf_counter()
        self._queue.put(_Job(fn, write, future, loop))
        try:
            return await future
        finally:  # queueing, the batch it shared and the hop back included
            self.latency.observe("write" if write else "read_thread",
                                 time.perf_counter() - started)

    def _append(self, append: Append) -> asyncio.Future[Any]:
        """Queue an archive append for this iteration's batch; returns its future."""
        if self._thread is None or self._closing:
            append.future.set_exception(StorageError("storage is not open"))
            return append.future
        if self._shared is not None:  # shared ones first: appends keep their order
            self._flush_appends()
        appends = self._appends
        if not appends:
            append.future.get_loop().call_soon(self._flush_appends)
        appends.append(append)
        return append.future

    def _append_shared(self, row: tuple[Any, ...]) -> asyncio.Future[list[AppendFailure]]:
        """Queue a shared append (the six values of its row); returns the batch's future."""
        shared = self._shared
        if shared is None:
            loop = asyncio.get_running_loop()
            shared = loop.create_future()
            if self._thread is None or self._closing:
                shared.set_exception(StorageError("storage is not open"))
                return shared
            if self._appends:  # appends keep their order
                self._flush_appends()
            else:
                loop.call_soon(self._flush_appends)
            self._shared = shared
        self._flat.extend(row)
        return shared

    def _flush_appends(self) -> None:
        """Hand the appends started so far to the writer thread (a job for the shared ones,
        one for the others)."""
        shared = self._shared
        if shared is not None:
            flat = self._flat
            self._flat, self._shared = [], None
            self._submit_appends(shared.get_loop(), lambda conn: self._stage(conn, flat),
                                 lambda done: _settle_shared(shared, done))
        batch = self._appends
        if batch:
            self._appends = []
            self._submit_appends(batch[0].future.get_loop(),
                                 lambda conn: self._append_batch(conn, batch),
                                 lambda done: _settle_appends(batch, done))

    def _stage(self, conn: sqlite3.Connection, flat: list[Any]) -> list[AppendFailure]:
        self._staged += stage_shared_batch(conn, flat)
        return []  # a duplicate id is found by the merge (see sqlite_staging)

    def _append_batch(self, conn: sqlite3.Connection, batch: list[Append]) -> list[Any]:
        for ns in {a.ns for a in batch if not a.generated or a.replace}:
            self.merge(conn, ns)  # their ids are checked against every stored item
        return append_batch(conn, batch)

    def _submit_appends(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[[sqlite3.Connection], Any],
        settle: Callable[[asyncio.Future[Any]], None],
    ) -> None:
        done: asyncio.Future[Any] = loop.create_future()
        started = time.perf_counter()

        def settled(f: asyncio.Future[Any]) -> None:
            self.latency.observe("append_batch", time.perf_counter() - started)
            settle(f)

        done.add_done_callback(settled)
        self.append_batches += 1
        self._queue.put(_Job(fn, True, done, loop))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A point read: on the reader connection now, else (busy, or called from
        another thread) through the connection thread."""
        reader = self._reader
        if reader is not None and not self._closing and (
            threading.get_ident() == self._reader_thread
        ):
            started = time.perf_counter()
            try:
                result = fn(reader)
            except sqlite3.OperationalError:  # busy or locked: the thread may wait for it
                pass
            else:
                self._read_latency.observe(time.perf_counter() - started)
                return result
        return await self._call(fn, write=False)

    # -- maintenance --------------------------------------------------------------------

    async def schema_version(self) -> int:
        return await self._call(_version, write=False)

    async def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check`` and ``foreign_key_check``: an empty list when sound."""

        def check(conn: sqlite3.Connection) -> list[str]:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            problems = [] if rows == ["ok"] else rows
            for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
                problems.append(f"{table} row {rowid}: missing {parent}")
            return problems

        return await self._call(check, write=False)

    # -- accounts -------------------------------------------------------------------------

    async def create_account(
        self, username: str, domain: str, creds: Mapping[str, ScramCredentials]
    ) -> None:
        check_credentials(creds)
        rows = list(creds.values())

        def create(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO accounts (domain, username, created_at) VALUES (?, ?, ?)",
                    (domain, username, int(time.time())),
                )
            except sqlite3.IntegrityError:
                raise AccountExists(f"{username}@{domain}") from None
            _insert_creds(conn, username, domain, rows)

        await self._call(create, write=True)

    async def delete_account(self, username: str, domain: str) -> bool:
        owner = check_user_owner(f"{username}@{domain}")

        def delete(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(  # credentials: ON DELETE CASCADE
                "DELETE FROM accounts WHERE domain = ? AND username = ?", (domain, username)
            )
            self.merge(conn)
            delete_user_rows(conn, owner)  # per-module stores, in the same transaction
            return cur.rowcount > 0

        deleted = await self._call(delete, write=True)
        self._disabled.discard((username, domain))
        return deleted

    # -- per-module stores --------------------------------------------------------------

    def _new_store(self, namespace: str, kind: str) -> KeyValueStore | ArchiveStore:
        if kind == "archive":
            return SQLiteArchiveStore(self, namespace)
        return SQLiteKeyValueStore(self, namespace)

    async def delete_user_data(self, owner: str) -> None:
        check_user_owner(owner)

        def delete(conn: sqlite3.Connection) -> None:
            self.merge(conn)
            delete_user_rows(conn, owner)

        await self._call(delete, write=True)

    async def set_credentials(
        self, username: str, domain: str, creds: Mapping[str, ScramCredentials]
    ) -> bool:
        check_credentials(creds)
        rows = list(creds.values())

        def replace(conn: sqlite3.Connection) -> bool:
            if not _exists(conn, username, domain):
                return False
            conn.execute(
                "DELETE FROM scram_credentials WHERE domain = ? AND username = ?",
                (domain, username),
            )
            _insert_creds(conn, username, domain, rows)
            return True

        return await self._call(replace, write=True)

    async def get_scram(
        self, username: str, domain: str, hash_name: str
    ) -> ScramCredentials | None:
        def get(conn: sqlite3.Connection) -> ScramCredentials | None:
            row = conn.execute(
                "SELECT salt, iterations, stored_key, server_key FROM scram_credentials"
                " WHERE domain = ? AND username = ? AND hash_name = ?",
                (domain, username, hash_name),
            ).fetchone()
            return None if row is None else ScramCredentials(hash_name, *row)

        return await self._read(get)

    async def account_exists(self, username: str, domain: str) -> bool:
        return await self._read(lambda conn: _exists(conn, username, domain))

    async def set_disabled(self, username: str, domain: str, disabled: bool) -> bool:
        def update(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE accounts SET disabled = ? WHERE domain = ? AND username = ?",
                (int(disabled), domain, username),
            )
            return cur.rowcount > 0

        changed = await self._call(update, write=True)
        if changed and disabled:
            self._disabled.add((username, domain))
        else:
            self._disabled.discard((username, domain))
        return changed

    async def account_disabled(self, username: str, domain: str) -> bool:
        if self.multi_process:
            return await self._read(lambda conn: conn.execute(
                "SELECT 1 FROM accounts WHERE domain = ? AND username = ? AND disabled = 1",
                (domain, username)).fetchone() is not None)
        return (username, domain) in self._disabled

    async def list_accounts(self, domain: str | None = None) -> list[tuple[str, str]]:
        def listing(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            sql = "SELECT username, domain FROM accounts"
            args: tuple[str, ...] = ()
            if domain is not None:
                sql, args = sql + " WHERE domain = ?", (domain,)
            return [tuple(r) for r in conn.execute(sql + " ORDER BY domain, username", args)]

        return await self._call(listing, write=False)

    async def namespaces(self, kind: str) -> list[str]:
        table = "archive" if check_kind(kind) == "archive" else "kv"
        if table == "archive":
            await self.merge_staged()
        return await self._call(lambda conn: namespaces_of(conn, table), write=False)

    async def merge_staged(self, ns: str | None = None) -> None:
        """Merge the staged archive items (``ns``'s, or all), if any: before a read of
        ``archive``."""
        if await self._read(lambda conn: has_staged(conn, ns)):
            await self._call(lambda conn: self.merge(conn, ns), write=True)

    async def store_versions(self) -> dict[str, int]:
        return dict(await self._call(lambda conn: conn.execute(
            "SELECT ns, version FROM store_versions ORDER BY ns").fetchall(), write=False))


def _version(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]


def _exists(conn: sqlite3.Connection, username: str, domain: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM accounts WHERE domain = ? AND username = ?", (domain, username)
    ).fetchone()
    return row is not None


def _insert_creds(
    conn: sqlite3.Connection, username: str, domain: str, creds: list[ScramCredentials]
) -> None:
    conn.executemany(
        "INSERT INTO scram_credentials (domain, username, hash_name, salt, iterations,"
        " stored_key, server_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (domain, username, c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key)
            for c in creds
        ],
    )
