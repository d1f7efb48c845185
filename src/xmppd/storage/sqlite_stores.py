"""The per-module stores of :class:`~xmppd.storage.sqlite.SQLiteStorage`.

Tables (migration 3 of :data:`xmppd.storage.sqlite_schema.MIGRATIONS`), shared by all namespaces:

* ``kv (ns, owner, key, value)``: ``value`` is JSON text; primary key ``(ns, owner, key)``.
* ``archive (seq, ns, owner, id, stamp, with_jid, data)``: ``seq`` is the AUTOINCREMENT
  rowid (increasing, never reused); ``(ns, owner, id)`` unique; indexes ``(ns, owner, seq)``
  for paging, ``(ns, owner, with_jid, seq)`` for ``with``, ``(ns, owner, stamp)`` for time
  ranges and retention (owner by owner: the ``(ns, stamp)`` index, one more B-tree written
  per item, was dropped by migration 6).
* ``archive_counts (ns, owner, n)``: the number of items of each owner, kept by every
  write below (never write ``archive`` without it): unfiltered ``count()`` and the
  ``limit`` of ``append()`` read one row instead of counting an owner's archive.
* ``store_versions (ns, version)``: each namespace's own schema version.
* ``archive_staged (seq, ns, n, rows)``: batches of shared appends not yet in ``archive``
  (migration 7; :mod:`xmppd.storage.sqlite_staging`), merged before their namespace's
  items are read.

Writes run on the connection thread in the group-committed transaction (each in its own
savepoint); point reads and pages of at most :data:`PAGE_READ_MAX` items run on the
loop-thread reader; larger or filtered scans (``owners()``, filtered ``count()``, big
queries) go through the connection thread so they never block the event loop for long.

Only portable SQL: ``INSERT ... ON CONFLICT (...) DO UPDATE``, ``LIMIT/OFFSET``, plain
indexes and a recursive CTE (the loose index scan listing namespaces), so a PostgreSQL
backend can run the same statements (``seq`` an identity column, ``data`` ``bytea``, text
columns ``COLLATE "C"`` so that key order is code-point order as here).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from xmppd.storage.sqlite_append import adjust_count, stored_count
from xmppd.storage.stores import (
    ITEM_COLUMNS,
    SCAN_PAGE,
    UNCHANGED,
    Append,
    AppendFailure,
    ArchiveItem,
    ArchiveStore,
    ItemNotFound,
    KeyValueStore,
    UpdateFn,
    archive_item,
    check_filters,
    check_item_args,
    check_item_id,
    check_key,
    check_owner,
    check_scan_limit,
    check_version,
    decode_value,
    encode_value,
    new_item_id,
    subowner_range,
)

if TYPE_CHECKING:
    from xmppd.storage.sqlite import SQLiteStorage

__all__ = [
    "PAGE_READ_MAX",
    "SQLiteArchiveStore",
    "SQLiteKeyValueStore",
    "delete_user_rows",
    "select_sql",
]

T = TypeVar("T")

#: Queries with a limit up to this many items run on the loop-thread reader.
PAGE_READ_MAX = 1000
#: Items deleted, and owners looked at, per transaction by ``delete_before``.
PURGE_BATCH = 2000
PURGE_OWNERS = 1000
#: Ids per ``IN (...)`` list (well under SQLite's bound-parameter limit).
_CHUNK = 500



def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)] or [[]]


def _namespaces(conn: sqlite3.Connection, table: str) -> list[str]:
    """The distinct ``ns`` of a table, one index probe each (a loose index scan)."""
    rows = conn.execute(
        f"WITH RECURSIVE n(ns) AS (SELECT MIN(ns) FROM {table} UNION ALL"
        f" SELECT (SELECT MIN(ns) FROM {table} WHERE ns > n.ns) FROM n WHERE n.ns IS NOT NULL)"
        " SELECT ns FROM n WHERE ns IS NOT NULL"
    )
    return [r[0] for r in rows]


#: The namespaces of ``kv`` or ``archive`` (``Storage.namespaces``).
namespaces_of = _namespaces


def delete_user_rows(conn: sqlite3.Connection, owner: str) -> int:
    """Delete ``owner``'s and its sub-owners' rows in every namespace (in the caller's
    transaction); returns how many key-value and archive rows were deleted."""
    low, high = subowner_range(owner)
    deleted = 0
    for table in ("kv", "archive", "archive_counts"):
        for ns in _namespaces(conn, table):
            n = conn.execute(
                f"DELETE FROM {table} WHERE ns = ? AND owner = ?", (ns, owner)
            ).rowcount
            n += conn.execute(
                f"DELETE FROM {table} WHERE ns = ? AND owner >= ? AND owner < ?", (ns, low, high)
            ).rowcount
            if table != "archive_counts":
                deleted += n
    return deleted


def select_sql(
    ns: str,
    owner: str,
    *,
    with_jid: str | None = None,
    start: float | None = None,
    end: float | None = None,
    after_seq: int | None = None,
    before_seq: int | None = None,
    ids: list[str] | None = None,
    limit: int | None = None,
    reverse: bool = False,
    count: bool = False,
) -> tuple[str, list[Any]]:
    """The SELECT for a query (anchors already resolved to seqs) or its COUNT."""
    conds, args = ["ns = ?", "owner = ?"], [ns, owner]
    for cond, value in (
        ("with_jid = ?", with_jid), ("stamp >= ?", start), ("stamp <= ?", end),
        ("seq > ?", after_seq), ("seq < ?", before_seq),
    ):
        if value is not None:
            conds.append(cond)
            args.append(value)
    if ids is not None:
        conds.append(f"id IN ({', '.join('?' * len(ids))})")
        args += ids
    where = " AND ".join(conds)
    if count:
        return f"SELECT COUNT(*) FROM archive WHERE {where}", args
    sql = f"SELECT {ITEM_COLUMNS} FROM archive WHERE {where} ORDER BY seq"
    if reverse:
        sql += " DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return sql, args


class _SQLiteStore:
    namespace: str

    def __init__(self, storage: SQLiteStorage, namespace: str) -> None:
        super().__init__(namespace)  # type: ignore[call-arg]
        self._storage = storage

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._storage._call(fn, write=True)

    async def _scan(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._storage._call(fn, write=False)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._storage._read(fn)

    async def get_version(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT version FROM store_versions WHERE ns = ?", (self.namespace,)
            ).fetchone()
            return 0 if row is None else row[0]

        return await self._read(read)

    async def set_version(self, version: int) -> None:
        check_version(version)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO store_versions (ns, version) VALUES (?, ?)"
                " ON CONFLICT (ns) DO UPDATE SET version = excluded.version",
                (self.namespace, version),
            )

        await self._write(write)


class SQLiteKeyValueStore(_SQLiteStore, KeyValueStore):
    def _put(self, conn: sqlite3.Connection, owner: str, key: str, text: str | None) -> bool:
        if text is None:
            return conn.execute(
                "DELETE FROM kv WHERE ns = ? AND owner = ? AND key = ?",
                (self.namespace, owner, key),
            ).rowcount > 0
        conn.execute(
            "INSERT INTO kv (ns, owner, key, value) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (ns, owner, key) DO UPDATE SET value = excluded.value",
            (self.namespace, owner, key, text),
        )
        return True

    def _get(self, conn: sqlite3.Connection, owner: str, key: str) -> str | None:
        row = conn.execute(
            "SELECT value FROM kv WHERE ns = ? AND owner = ? AND key = ?",
            (self.namespace, owner, key),
        ).fetchone()
        return None if row is None else row[0]

    async def get(self, owner: str, key: str, default: Any = None) -> Any:
        check_owner(owner)
        check_key(key)
        text = await self._read(lambda conn: self._get(conn, owner, key))
        return default if text is None else decode_value(text)

    async def set(self, owner: str, key: str, value: Any) -> None:
        check_owner(owner)
        check_key(key)
        text = None if value is None else encode_value(value)
        await self._write(lambda conn: self._put(conn, owner, key, text))

    async def delete(self, owner: str, key: str) -> bool:
        check_owner(owner)
        check_key(key)
        return await self._write(lambda conn: self._put(conn, owner, key, None))

    async def keys(self, owner: str) -> list[str]:
        check_owner(owner)

        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT key FROM kv WHERE ns = ? AND owner = ? ORDER BY key",
                (self.namespace, owner),
            )
            return [r[0] for r in rows]

        return await self._read(read)

    async def items(self, owner: str) -> dict[str, Any]:
        check_owner(owner)

        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return conn.execute(
                "SELECT key, value FROM kv WHERE ns = ? AND owner = ? ORDER BY key",
                (self.namespace, owner),
            ).fetchall()

        return {k: decode_value(v) for k, v in await self._read(read)}

    async def update(self, owner: str, key: str, fn: UpdateFn) -> tuple[Any, Any]:
        check_owner(owner)
        check_key(key)

        def write(conn: sqlite3.Connection) -> tuple[Any, Any]:
            old_text = self._get(conn, owner, key)
            new = fn(decode_value(old_text))
            old = decode_value(old_text)
            if new is UNCHANGED:
                return old, old
            text = None if new is None else encode_value(new)
            self._put(conn, owner, key, text)
            return old, decode_value(text)

        return await self._write(write)

    async def owners(self) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT DISTINCT owner FROM kv WHERE ns = ? ORDER BY owner", (self.namespace,)
            )
            return [r[0] for r in rows]

        return await self._scan(read)

    async def delete_owner(self, owner: str) -> int:
        check_owner(owner)
        return await self._write(
            lambda conn: conn.execute(
                "DELETE FROM kv WHERE ns = ? AND owner = ?", (self.namespace, owner)
            ).rowcount
        )

    async def scan(
        self, after: tuple[str, str] | None = None, limit: int = SCAN_PAGE
    ) -> list[tuple[str, str, Any]]:
        check_scan_limit(limit)

        def read(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            if after is None:
                return conn.execute(
                    "SELECT owner, key, value FROM kv WHERE ns = ? ORDER BY owner, key LIMIT ?",
                    (self.namespace, limit)).fetchall()
            return conn.execute(  # a range of the primary key
                "SELECT owner, key, value FROM kv WHERE ns = ? AND (owner, key) > (?, ?)"
                " ORDER BY owner, key LIMIT ?", (self.namespace, *after, limit)).fetchall()

        return [(o, k, decode_value(v)) for o, k, v in await self._scan(read)]

    async def size(self) -> tuple[int, int]:
        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            owners, keys = conn.execute(
                "SELECT COUNT(DISTINCT owner), COUNT(*) FROM kv WHERE ns = ?", (self.namespace,)
            ).fetchone()
            return owners, keys

        return await self._scan(read)


class SQLiteArchiveStore(_SQLiteStore, ArchiveStore):
    # Every read or change of ``archive`` sees the staged items: merged first (see
    # xmppd.storage.sqlite_staging).  What reads only ``archive_counts`` goes without.

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        merge, ns = self._storage.merge, self.namespace

        def merged_first(conn: sqlite3.Connection) -> T:
            merge(conn, ns)
            return fn(conn)

        return await self._storage._call(merged_first, write=True)

    async def _scan(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        await self._storage.merge_staged(self.namespace)
        return await self._storage._call(fn, write=False)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        await self._storage.merge_staged(self.namespace)
        return await self._storage._read(fn)

    def _anchor(self, conn: sqlite3.Connection, owner: str, id: str | None) -> int | None:
        if id is None:
            return None
        row = conn.execute(
            "SELECT seq FROM archive WHERE ns = ? AND owner = ? AND id = ?",
            (self.namespace, owner, id),
        ).fetchone()
        if row is None:
            raise ItemNotFound(f"no item {id!r}")
        return row[0]

    async def append(
        self,
        owner: str,
        data: bytes,
        *,
        stamp: float,
        with_jid: str = "",
        id: str | None = None,
        limit: int = 0,
        replace: bool = False,
    ) -> ArchiveItem | None:
        return await self.start_append(owner, data, stamp=stamp, with_jid=with_jid, id=id,
                                       limit=limit, replace=replace)

    def start_append(
        self,
        owner: str,
        data: bytes,
        *,
        stamp: float,
        with_jid: str = "",
        id: str | None = None,
        limit: int = 0,
        replace: bool = False,
    ) -> asyncio.Future[ArchiveItem | None]:
        data = check_item_args(data, stamp, with_jid, id, limit)
        check_owner(owner)
        generated = id is None
        return self._storage._append(Append(
            self.namespace, owner, new_item_id() if generated else id, float(stamp), with_jid,
            data, limit, replace, generated, asyncio.get_running_loop().create_future(),
        ))

    def start_append_shared(
        self, owner: str, data: bytes, *, stamp: float, with_jid: str = "", id: str,
    ) -> asyncio.Future[list[AppendFailure]]:
        if not (type(data) is bytes and type(stamp) is float and stamp == stamp  # not NaN
                and type(id) is str and id and id.isascii() and type(with_jid) is str
                and with_jid.isascii() and type(owner) is str and owner.isascii()):
            if id is None:
                raise TypeError("start_append_shared needs the item's id")
            data = check_item_args(data, stamp, with_jid, id, 0)  # the slow path says why
            check_owner(owner)
        return self._storage._append_shared(
            (self.namespace, owner, id, float(stamp), with_jid, data))

    async def get(self, owner: str, id: str) -> ArchiveItem | None:
        check_owner(owner)
        check_item_id(id)

        def read(conn: sqlite3.Connection) -> ArchiveItem | None:
            row = conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM archive WHERE ns = ? AND owner = ? AND id = ?",
                (self.namespace, owner, id),
            ).fetchone()
            return None if row is None else archive_item(row)

        return await self._read(read)

    async def query(
        self,
        owner: str,
        *,
        with_jid: str | None = None,
        start: float | None = None,
        end: float | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[ArchiveItem]:
        check_owner(owner)
        wanted = check_filters(with_jid, after_id, before_id, ids, limit)
        filters = {"with_jid": with_jid, "start": start, "end": end}

        def read(conn: sqlite3.Connection) -> list[ArchiveItem]:
            low = self._anchor(conn, owner, after_id)
            high = self._anchor(conn, owner, before_id)
            if wanted is None:
                sql, args = select_sql(
                    self.namespace, owner, **filters, after_seq=low, before_seq=high,
                    limit=limit, reverse=reverse,
                )
                return [archive_item(r) for r in conn.execute(sql, args)]
            rows: list[tuple] = []
            for chunk in _chunks(wanted):
                sql, args = select_sql(
                    self.namespace, owner, **filters, after_seq=low, before_seq=high, ids=chunk
                )
                rows += conn.execute(sql, args).fetchall()
            rows.sort(key=lambda r: r[1], reverse=reverse)
            return [archive_item(r) for r in rows[:limit]]

        small = limit is not None and limit <= PAGE_READ_MAX and start is None and end is None
        return await (self._read(read) if small else self._scan(read))

    async def count(
        self,
        owner: str,
        *,
        with_jid: str | None = None,
        start: float | None = None,
        end: float | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> int:
        check_owner(owner)
        wanted = check_filters(with_jid, after_id, before_id, ids)
        if (with_jid, start, end, after_id, before_id, wanted) == (None,) * 6:
            return await self._storage._read(
                lambda conn: stored_count(conn, self.namespace, owner))

        def read(conn: sqlite3.Connection) -> int:
            low = self._anchor(conn, owner, after_id)
            high = self._anchor(conn, owner, before_id)
            total = 0
            for chunk in [None] if wanted is None else _chunks(wanted):
                sql, args = select_sql(
                    self.namespace, owner, with_jid=with_jid, start=start, end=end,
                    after_seq=low, before_seq=high, ids=chunk, count=True,
                )
                total += conn.execute(sql, args).fetchone()[0]
            return total

        return await self._scan(read)

    async def delete(self, owner: str, ids: Sequence[str]) -> int:
        check_owner(owner)
        wanted = check_filters(None, None, None, ids) or []
        ns = self.namespace

        def write(conn: sqlite3.Connection) -> int:
            deleted = 0
            for chunk in _chunks(wanted):
                if chunk:
                    deleted += conn.execute(
                        f"DELETE FROM archive WHERE ns = ? AND owner = ?"
                        f" AND id IN ({', '.join('?' * len(chunk))})",
                        [ns, owner, *chunk],
                    ).rowcount
            adjust_count(conn, ns, owner, -deleted)
            return deleted

        return await self._write(write)

    async def delete_before(self, stamp: float) -> int:
        ns, cutoff = self.namespace, float(stamp)

        def purge(conn: sqlite3.Connection, start: str, inclusive: bool) -> tuple[int, Any]:
            """Up to PURGE_BATCH items, owner by owner (archive_by_owner_stamp: no index on
            the stamp alone), from ``start``; returns (deleted, where to go on or None)."""
            after = "owner >= ?" if inclusive else "owner > ?"
            owners = conn.execute(
                f"SELECT owner FROM archive_counts WHERE ns = ? AND {after} ORDER BY owner"
                " LIMIT ?", (ns, start, PURGE_OWNERS),
            ).fetchall()
            deleted = 0
            for (owner,) in owners:
                rows = conn.execute(
                    "SELECT seq FROM archive WHERE ns = ? AND owner = ? AND stamp < ? LIMIT ?",
                    (ns, owner, cutoff, PURGE_BATCH - deleted),
                ).fetchall()
                conn.executemany("DELETE FROM archive WHERE seq = ?", rows)
                adjust_count(conn, ns, owner, -len(rows))
                deleted += len(rows)
                if deleted == PURGE_BATCH:
                    return deleted, (owner, True)  # it may hold more
            return deleted, None if len(owners) < PURGE_OWNERS else (owners[-1][0], False)

        total, resume = 0, ("", True)
        while resume is not None:
            n, resume = await self._write(functools.partial(purge, start=resume[0],
                                                            inclusive=resume[1]))
            total += n
        return total

    async def trim(self, owner: str, keep: int) -> int:
        check_owner(owner)
        if not isinstance(keep, int) or keep < 0:
            raise ValueError(f"bad keep {keep!r}")
        ns = self.namespace

        def write(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT seq FROM archive WHERE ns = ? AND owner = ?"
                " ORDER BY seq DESC LIMIT 1 OFFSET ?",
                (ns, owner, keep),
            ).fetchone()
            if row is None:
                return 0
            deleted = conn.execute(
                "DELETE FROM archive WHERE ns = ? AND owner = ? AND seq <= ?", (ns, owner, row[0])
            ).rowcount
            adjust_count(conn, ns, owner, -deleted)
            return deleted

        return await self._write(write)

    async def owners(self) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT owner FROM archive_counts WHERE ns = ? ORDER BY owner", (self.namespace,)
            )
            return [r[0] for r in rows]

        return await self._storage._call(read, write=False)  # archive_counts only

    async def size(self) -> tuple[int, int]:
        def read(conn: sqlite3.Connection) -> tuple[int, int]:
            owners, items = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM archive_counts WHERE ns = ?",
                (self.namespace,),
            ).fetchone()
            return owners, items

        return await self._storage._call(read, write=False)  # archive_counts only

    async def delete_owner(self, owner: str) -> int:
        check_owner(owner)
        ns = self.namespace

        def write(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM archive_counts WHERE ns = ? AND owner = ?", (ns, owner))
            return conn.execute(
                "DELETE FROM archive WHERE ns = ? AND owner = ?", (ns, owner)
            ).rowcount

        return await self._write(write)

    async def scan(
        self, after: tuple[str, int] | None = None, limit: int = SCAN_PAGE
    ) -> list[tuple[str, ArchiveItem]]:
        check_scan_limit(limit)
        ns = self.namespace
        columns = f"owner, {ITEM_COLUMNS}"

        def read(conn: sqlite3.Connection) -> list[tuple]:
            # Two ranges of (ns, owner, seq): the rest of the current owner's items, then
            # the next owners'.  One row-value range would make SQLite walk the current
            # owner's items from its first one on every page.
            if after is None:
                return conn.execute(
                    f"SELECT {columns} FROM archive WHERE ns = ? ORDER BY owner, seq LIMIT ?",
                    (ns, limit)).fetchall()
            rows = conn.execute(
                f"SELECT {columns} FROM archive WHERE ns = ? AND owner = ? AND seq > ?"
                " ORDER BY seq LIMIT ?", (ns, *after, limit)).fetchall()
            if len(rows) < limit:
                rows += conn.execute(
                    f"SELECT {columns} FROM archive WHERE ns = ? AND owner > ?"
                    " ORDER BY owner, seq LIMIT ?", (ns, after[0], limit - len(rows))).fetchall()
            return rows

        return [(row[0], archive_item(row[1:])) for row in await self._scan(read)]
