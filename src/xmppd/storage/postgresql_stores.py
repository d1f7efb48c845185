"""The per-module stores of :class:`~xmppd.storage.postgresql.PostgreSQLStorage`.

The tables are the SQLite backend's (see :mod:`xmppd.storage.sqlite_stores`): ``kv``,
``archive`` (``seq`` an identity column), ``archive_counts`` (kept by every archive write,
so that an unfiltered ``count()`` and an append's ``limit`` read one row; a row may hold 0,
which counts as absent) and ``store_versions``.  Archive queries are index range scans:
``(ns, owner, seq)`` for pages, ``(ns, owner, with_jid, seq)`` for ``with``,
``(ns, owner, stamp)`` for time ranges and ``(ns, stamp)`` for retention.

Concurrency: every read is one statement; every write one transaction.  ``update`` locks
the row (``SELECT ... FOR UPDATE``), or, for a key not set yet, inserts with ``ON CONFLICT
DO NOTHING`` and starts again if another writer was first, so that no update is lost across
connections or servers.  Rows of ``archive_counts`` are locked in ``(ns, owner)`` order.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xmppd.storage.stores import (
    ITEM_COLUMNS,
    SCAN_PAGE,
    UNCHANGED,
    Append,
    ArchiveItem,
    ArchiveStore,
    ItemExists,
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
    from xmppd.storage.postgresql import PostgreSQLStorage

__all__ = [
    "PURGE_BATCH",
    "PostgreSQLArchiveStore",
    "PostgreSQLKeyValueStore",
    "append_batch",
    "delete_user_rows",
    "rowcount",
    "select_sql",
]

#: Items deleted per transaction by ``delete_before``.
PURGE_BATCH = 5000
#: A time range of at most this many items of an owner is read whole through the stamp
#: index and sorted by seq; a bigger one is left to the planner (see ``query``).
RANGE_READ_MAX = 10_000



def rowcount(status: str) -> int:
    """The row count of a command status (``"DELETE 3"``, ``"INSERT 0 1"``)."""
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


async def _namespaces(conn: Any, table: str) -> list[str]:
    """The distinct ``ns`` of a table, one index probe each (a loose index scan)."""
    rows = await conn.fetch(
        f"WITH RECURSIVE n(ns) AS (SELECT MIN(ns) FROM {table} UNION ALL"
        f" SELECT (SELECT MIN(ns) FROM {table} WHERE ns > n.ns) FROM n WHERE n.ns IS NOT NULL)"
        " SELECT ns FROM n WHERE ns IS NOT NULL"
    )
    return [r[0] for r in rows]


#: The namespaces of ``kv`` or ``archive`` (``Storage.namespaces``).
namespaces_of = _namespaces


async def delete_user_rows(conn: Any, owner: str) -> None:
    """Delete ``owner``'s and its sub-owners' rows in every namespace (in the caller's
    transaction)."""
    low, high = subowner_range(owner)
    for table in ("kv", "archive", "archive_counts"):
        namespaces = await _namespaces(conn, table)
        if namespaces:
            await conn.execute(
                f"DELETE FROM {table} WHERE ns = ANY($1::text[])"
                " AND (owner = $2 OR (owner >= $3 AND owner < $4))",
                namespaces, owner, low, high,
            )


def select_sql(
    ns: str,
    owner: str,
    *,
    with_jid: str | None = None,
    start: float | None = None,
    end: float | None = None,
    after_id: str | None = None,
    before_id: str | None = None,
    ids: list[str] | None = None,
    limit: int | None = None,
    reverse: bool = False,
    count: bool = False,
    by_stamp: bool = False,
) -> tuple[str, list[Any]]:
    """The SELECT for a query or its COUNT.

    An anchor (``after_id``/``before_id``) is a sub-select: one round trip; an anchor that
    does not exist matches nothing (:meth:`PostgreSQLArchiveStore._check_anchors` tells).
    """
    conds, args = ["ns = $1", "owner = $2"], [ns, owner]
    anchor = "(SELECT seq FROM archive WHERE ns = $1 AND owner = $2 AND id = $%d)"
    for cond, value in (
        ("with_jid = $%d", with_jid), ("stamp >= $%d", start), ("stamp <= $%d", end),
        ("seq > " + anchor, after_id), ("seq < " + anchor, before_id),
        ("id = ANY($%d::text[])", ids),
    ):
        if value is not None:
            args.append(value)
            conds.append(cond % len(args))
    where = " AND ".join(conds)
    if count:
        return f"SELECT COUNT(*) FROM archive WHERE {where}", args
    sql = f"SELECT {ITEM_COLUMNS} FROM archive WHERE {where} ORDER BY seq"
    if by_stamp:  # the matching items first (a range of the stamp index), then their order
        sql = (f"WITH r AS MATERIALIZED (SELECT {ITEM_COLUMNS} FROM archive WHERE {where})"
               f" SELECT {ITEM_COLUMNS} FROM r ORDER BY seq")
    if reverse:
        sql += " DESC"
    if limit is not None:
        args.append(limit)
        sql += f" LIMIT ${len(args)}"
    return sql, args


async def _adjust_count(conn: Any, ns: str, owner: str, delta: int) -> None:
    if delta > 0:
        await conn.execute(
            "INSERT INTO archive_counts (ns, owner, n) VALUES ($1, $2, $3)"
            " ON CONFLICT (ns, owner) DO UPDATE SET n = archive_counts.n + excluded.n",
            ns, owner, delta,
        )
    elif delta < 0:
        n = await conn.fetchval(
            "UPDATE archive_counts SET n = n + $3 WHERE ns = $1 AND owner = $2 RETURNING n",
            ns, owner, delta,
        )
        if n is not None and n <= 0:
            await conn.execute(
                "DELETE FROM archive_counts WHERE ns = $1 AND owner = $2", ns, owner)


async def _lock_counts(conn: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Lock the count rows of ``keys`` (creating missing ones at 0) and read them: a
    concurrent append with a limit, even on another server, waits for this transaction."""
    keys = sorted(set(keys))
    rows = await conn.fetch(
        "INSERT INTO archive_counts (ns, owner, n)"
        " SELECT ns, owner, 0 FROM unnest($1::text[], $2::text[]) AS k(ns, owner)"
        " ORDER BY ns, owner"
        " ON CONFLICT (ns, owner) DO UPDATE SET n = archive_counts.n RETURNING ns, owner, n",
        [k[0] for k in keys], [k[1] for k in keys],
    )
    return {(r[0], r[1]): r[2] for r in rows}


# One statement: the rows in batch order (so their seqs are increasing in it), duplicates
# skipped, and the count of each owner raised by what was really inserted.
_INSERT_BATCH = """
WITH ins AS (
    INSERT INTO archive (ns, owner, id, stamp, with_jid, data)
    SELECT ns, owner, id, stamp, with_jid, data
    FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::bytea[])
        WITH ORDINALITY AS t(ns, owner, id, stamp, with_jid, data, ord)
    ORDER BY ord
    ON CONFLICT (ns, owner, id) DO NOTHING
    RETURNING ns, owner, id, seq
), counted AS (
    INSERT INTO archive_counts (ns, owner, n)
    SELECT ns, owner, COUNT(*) FROM ins GROUP BY ns, owner ORDER BY ns, owner
    ON CONFLICT (ns, owner) DO UPDATE SET n = archive_counts.n + excluded.n
)
SELECT ns, owner, id, seq FROM ins
"""


class _Redo(Exception):
    """The fast path cannot give every append its outcome: roll back, go one by one."""


async def append_batch(conn: Any, batch: Sequence[Append]) -> list[Any]:
    """Write a batch of appends, committed when this returns; one outcome per append
    (a seq, an :class:`ArchiveItem`, None over its limit, or the exception).

    The fast path (no ``replace``) is one statement (:data:`_INSERT_BATCH`), its own
    transaction; with limits, a transaction that first locks the owners' counts.  An
    explicit id already stored fails that append only (``ItemExists``).  When that cannot
    be told apart cheaply (a limit in the batch, or a generated id that collided), the
    batch is rolled back and written again one append at a time, each in its own
    savepoint, in one transaction.
    """
    import asyncpg  # loaded already: the storage is open

    if not any(a.replace for a in batch):
        try:
            if any(a.limit for a in batch):
                async with conn.transaction():
                    return await _append_fast(conn, batch, limited=True)
            return await _append_fast(conn, batch, limited=False)
        except (_Redo, asyncpg.DataError):  # DataError: text PostgreSQL cannot hold
            pass
    outcomes: list[Any] = []
    async with conn.transaction():
        for a in batch:
            try:
                async with conn.transaction():
                    outcomes.append(await _append_one(conn, a))
            except ItemExists as exc:
                outcomes.append(exc)
            except asyncpg.DataError as exc:
                outcomes.append(ValueError(f"PostgreSQL cannot store this item: {exc}"))
    return outcomes


async def _append_fast(conn: Any, batch: Sequence[Append], *, limited: bool) -> list[Any]:
    outcomes: list[Any] = [None] * len(batch)
    kept = list(range(len(batch)))
    if limited:
        stored = await _lock_counts(conn, [(a.ns, a.owner) for a in batch if a.limit])
        added: dict[tuple[str, str], int] = {}
        kept = []
        for i, a in enumerate(batch):
            key = (a.ns, a.owner)
            if a.limit and stored[key] + added.get(key, 0) + 1 > a.limit:
                continue  # over the limit: None
            added[key] = added.get(key, 0) + 1
            kept.append(i)
        if not kept:
            return outcomes
    rows = [batch[i] for i in kept]
    inserted = await conn.fetch(
        _INSERT_BATCH, [a.ns for a in rows], [a.owner for a in rows], [a.id for a in rows],
        [a.stamp for a in rows], [a.with_jid for a in rows], [a.data for a in rows],
    )
    seqs = {(r[0], r[1], r[2]): r[3] for r in inserted}
    collided = []
    for i in kept:
        a = batch[i]
        seq = seqs.pop((a.ns, a.owner, a.id), None)
        if seq is not None:
            outcomes[i] = seq
        elif limited:
            raise _Redo  # the limits counted it: roll the transaction back
        elif a.generated:  # pragma: no cover - 96 random bits collided
            collided.append(i)
        else:
            outcomes[i] = ItemExists(f"{a.owner!r} already has an item {a.id!r}")
    for i in collided:  # pragma: no cover - the others are committed: only these again
        outcomes[i] = await _append_one(conn, batch[i])
    return outcomes


async def _append_one(conn: Any, a: Append) -> ArchiveItem | None:
    ns, owner, id = a.ns, a.owner, a.id
    old = None
    if not a.generated:
        old = await conn.fetchval(
            "SELECT seq FROM archive WHERE ns = $1 AND owner = $2 AND id = $3 FOR UPDATE",
            ns, owner, id,
        )
        if old is not None and not a.replace:
            raise ItemExists(f"{owner!r} already has an item {id!r}")
    if a.limit:
        stored = (await _lock_counts(conn, [(ns, owner)]))[(ns, owner)]
        if stored + (old is None) > a.limit:
            return None
    if old is not None:
        await conn.execute(
            "DELETE FROM archive WHERE ns = $1 AND owner = $2 AND seq = $3", ns, owner, old)
    for _ in range(5):
        seq = await conn.fetchval(
            "INSERT INTO archive (ns, owner, id, stamp, with_jid, data)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ns, owner, id) DO NOTHING"
            " RETURNING seq",
            ns, owner, id, a.stamp, a.with_jid, a.data,
        )
        if seq is not None:
            break
        if not a.generated:  # inserted by another writer since our look
            raise ItemExists(f"{owner!r} already has an item {id!r}")
        id = new_item_id()  # pragma: no cover - 96 random bits collided
    else:  # pragma: no cover
        raise ItemExists(f"{owner!r}: no free id")
    if old is None:
        await _adjust_count(conn, ns, owner, 1)
    return ArchiveItem(id, seq, a.stamp, a.with_jid, a.data)


class _PostgreSQLStore:
    namespace: str

    def __init__(self, storage: PostgreSQLStorage, namespace: str) -> None:
        super().__init__(namespace)  # type: ignore[call-arg]
        self._storage = storage

    async def get_version(self) -> int:
        version = await self._storage.fetchval(
            "SELECT version FROM store_versions WHERE ns = $1", self.namespace)
        return version or 0

    async def set_version(self, version: int) -> None:
        check_version(version)
        await self._storage.execute(
            "INSERT INTO store_versions (ns, version) VALUES ($1, $2)"
            " ON CONFLICT (ns) DO UPDATE SET version = excluded.version",
            self.namespace, version,
        )


class PostgreSQLKeyValueStore(_PostgreSQLStore, KeyValueStore):
    async def get(self, owner: str, key: str, default: Any = None) -> Any:
        check_owner(owner)
        check_key(key)
        text = await self._storage.fetchval(
            "SELECT value FROM kv WHERE ns = $1 AND owner = $2 AND key = $3",
            self.namespace, owner, key,
        )
        return default if text is None else decode_value(text)

    async def set(self, owner: str, key: str, value: Any) -> None:
        check_owner(owner)
        check_key(key)
        if value is None:
            await self.delete(owner, key)
            return
        await self._storage.execute(
            "INSERT INTO kv (ns, owner, key, value) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (ns, owner, key) DO UPDATE SET value = excluded.value",
            self.namespace, owner, key, encode_value(value),
        )

    async def delete(self, owner: str, key: str) -> bool:
        check_owner(owner)
        check_key(key)
        return await self._storage.execute(
            "DELETE FROM kv WHERE ns = $1 AND owner = $2 AND key = $3",
            self.namespace, owner, key,
        ) > 0

    async def keys(self, owner: str) -> list[str]:
        check_owner(owner)
        rows = await self._storage.fetch(
            "SELECT key FROM kv WHERE ns = $1 AND owner = $2 ORDER BY key",
            self.namespace, owner,
        )
        return [r[0] for r in rows]

    async def items(self, owner: str) -> dict[str, Any]:
        check_owner(owner)
        rows = await self._storage.fetch(
            "SELECT key, value FROM kv WHERE ns = $1 AND owner = $2 ORDER BY key",
            self.namespace, owner,
        )
        return {r[0]: decode_value(r[1]) for r in rows}

    async def update(self, owner: str, key: str, fn: UpdateFn) -> tuple[Any, Any]:
        check_owner(owner)
        check_key(key)
        ns = self.namespace
        while True:
            async with self._storage.transaction() as conn:
                old_text = await conn.fetchval(
                    "SELECT value FROM kv WHERE ns = $1 AND owner = $2 AND key = $3"
                    " FOR UPDATE",
                    ns, owner, key,
                )
                new = fn(decode_value(old_text))
                old = decode_value(old_text)
                if new is UNCHANGED:
                    return old, old
                text = None if new is None else encode_value(new)
                if text is None:
                    if old_text is not None:
                        await conn.execute(
                            "DELETE FROM kv WHERE ns = $1 AND owner = $2 AND key = $3",
                            ns, owner, key,
                        )
                    return old, None
                if old_text is not None:
                    await conn.execute(
                        "UPDATE kv SET value = $4 WHERE ns = $1 AND owner = $2 AND key = $3",
                        ns, owner, key, text,
                    )
                    return old, decode_value(text)
                inserted = await conn.fetchval(
                    "INSERT INTO kv (ns, owner, key, value) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT DO NOTHING RETURNING TRUE",
                    ns, owner, key, text,
                )
                if inserted:
                    return old, decode_value(text)
            # Another writer set the key since our look: read it again (it is locked now).

    async def owners(self) -> list[str]:
        rows = await self._storage.fetch(
            "SELECT DISTINCT owner FROM kv WHERE ns = $1 ORDER BY owner", self.namespace)
        return [r[0] for r in rows]

    async def delete_owner(self, owner: str) -> int:
        check_owner(owner)
        return await self._storage.execute(
            "DELETE FROM kv WHERE ns = $1 AND owner = $2", self.namespace, owner)

    async def scan(
        self, after: tuple[str, str] | None = None, limit: int = SCAN_PAGE
    ) -> list[tuple[str, str, Any]]:
        check_scan_limit(limit)
        if after is None:
            rows = await self._storage.fetch(
                "SELECT owner, key, value FROM kv WHERE ns = $1 ORDER BY owner, key LIMIT $2",
                self.namespace, limit)
        else:
            rows = await self._storage.fetch(  # a range of the primary key
                "SELECT owner, key, value FROM kv WHERE ns = $1 AND (owner, key) > ($2, $3)"
                " ORDER BY owner, key LIMIT $4", self.namespace, after[0], after[1], limit)
        return [(r[0], r[1], decode_value(r[2])) for r in rows]

    async def size(self) -> tuple[int, int]:
        rows = await self._storage.fetch(
            "SELECT COUNT(DISTINCT owner), COUNT(*) FROM kv WHERE ns = $1", self.namespace)
        return rows[0][0], rows[0][1]


class PostgreSQLArchiveStore(_PostgreSQLStore, ArchiveStore):
    async def _check_anchors(self, owner: str, *anchors: str | None) -> None:
        """Raise :class:`ItemNotFound` for an anchor that does not exist (asked only when
        a query found nothing: then it may be why)."""
        wanted = [id for id in anchors if id is not None]
        if not wanted:
            return
        rows = await self._storage.fetch(
            "SELECT id FROM archive WHERE ns = $1 AND owner = $2 AND id = ANY($3::text[])",
            self.namespace, owner, wanted,
        )
        for id in sorted(set(wanted) - {r[0] for r in rows}):
            raise ItemNotFound(f"no item {id!r}")

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
        return self._storage.append(Append(
            self.namespace, owner, new_item_id() if generated else id, float(stamp), with_jid,
            data, limit, replace, generated, asyncio.get_running_loop().create_future(),
        ))

    async def get(self, owner: str, id: str) -> ArchiveItem | None:
        check_owner(owner)
        check_item_id(id)
        rows = await self._storage.fetch(
            f"SELECT {ITEM_COLUMNS} FROM archive WHERE ns = $1 AND owner = $2 AND id = $3",
            self.namespace, owner, id,
        )
        return archive_item(rows[0]) if rows else None

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
        by_stamp = False
        if (start is not None or end is not None) and wanted is None and limit is not None:
            # "ORDER BY seq LIMIT n" tempts the planner to walk the seq index and filter,
            # expecting the range's items spread evenly, when they are together (a time
            # range): for a small range, read it whole through the stamp index instead.
            in_range = await self._storage.fetchval(
                "SELECT COUNT(*) FROM (SELECT 1 FROM archive WHERE ns = $1 AND owner = $2"
                " AND stamp >= $3 AND stamp <= $4 LIMIT $5) AS r",
                self.namespace, owner, -math.inf if start is None else float(start),
                math.inf if end is None else float(end), RANGE_READ_MAX + 1,
            )
            by_stamp = in_range <= RANGE_READ_MAX
        sql, args = select_sql(
            self.namespace, owner, with_jid=with_jid, start=start, end=end, after_id=after_id,
            before_id=before_id, ids=wanted, limit=limit, reverse=reverse, by_stamp=by_stamp,
        )
        rows = await self._storage.fetch(sql, *args)
        if not rows:
            await self._check_anchors(owner, after_id, before_id)
        return [archive_item(r) for r in rows]

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
            n = await self._storage.fetchval(
                "SELECT n FROM archive_counts WHERE ns = $1 AND owner = $2",
                self.namespace, owner,
            )
            return n or 0
        sql, args = select_sql(
            self.namespace, owner, with_jid=with_jid, start=start, end=end,
            after_id=after_id, before_id=before_id, ids=wanted, count=True,
        )
        n = await self._storage.fetchval(sql, *args)
        if not n:
            await self._check_anchors(owner, after_id, before_id)
        return n

    async def delete(self, owner: str, ids: Sequence[str]) -> int:
        check_owner(owner)
        wanted = check_filters(None, None, None, ids) or []
        if not wanted:
            return 0
        ns = self.namespace
        async with self._storage.transaction() as conn:
            deleted = rowcount(await conn.execute(
                "DELETE FROM archive WHERE ns = $1 AND owner = $2 AND id = ANY($3::text[])",
                ns, owner, wanted,
            ))
            await _adjust_count(conn, ns, owner, -deleted)
        return deleted

    async def delete_before(self, stamp: float) -> int:
        ns, cutoff = self.namespace, float(stamp)
        total = 0
        while True:
            async with self._storage.transaction() as conn:
                rows = await conn.fetch(
                    "WITH gone AS (DELETE FROM archive WHERE (ns, owner, seq) IN"
                    " (SELECT ns, owner, seq FROM archive WHERE ns = $1 AND stamp < $2 LIMIT $3)"
                    " RETURNING owner)"
                    " SELECT owner, COUNT(*) FROM gone GROUP BY owner ORDER BY owner",
                    ns, cutoff, PURGE_BATCH,
                )
                for owner, n in rows:
                    await _adjust_count(conn, ns, owner, -n)
            deleted = sum(r[1] for r in rows)
            total += deleted
            if deleted < PURGE_BATCH:
                return total

    async def trim(self, owner: str, keep: int) -> int:
        check_owner(owner)
        if not isinstance(keep, int) or keep < 0:
            raise ValueError(f"bad keep {keep!r}")
        ns = self.namespace
        async with self._storage.transaction() as conn:
            last = await conn.fetchval(
                "SELECT seq FROM archive WHERE ns = $1 AND owner = $2"
                " ORDER BY seq DESC LIMIT 1 OFFSET $3",
                ns, owner, keep,
            )
            if last is None:
                return 0
            deleted = rowcount(await conn.execute(
                "DELETE FROM archive WHERE ns = $1 AND owner = $2 AND seq <= $3",
                ns, owner, last,
            ))
            await _adjust_count(conn, ns, owner, -deleted)
        return deleted

    async def owners(self) -> list[str]:
        rows = await self._storage.fetch(
            "SELECT owner FROM archive_counts WHERE ns = $1 AND n > 0 ORDER BY owner",
            self.namespace,
        )
        return [r[0] for r in rows]

    async def size(self) -> tuple[int, int]:
        rows = await self._storage.fetch(
            "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM archive_counts WHERE ns = $1 AND n > 0",
            self.namespace,
        )
        return rows[0][0], int(rows[0][1])

    async def delete_owner(self, owner: str) -> int:
        check_owner(owner)
        ns = self.namespace
        async with self._storage.transaction() as conn:
            await conn.execute(
                "DELETE FROM archive_counts WHERE ns = $1 AND owner = $2", ns, owner)
            return rowcount(await conn.execute(
                "DELETE FROM archive WHERE ns = $1 AND owner = $2", ns, owner))

    async def scan(
        self, after: tuple[str, int] | None = None, limit: int = SCAN_PAGE
    ) -> list[tuple[str, ArchiveItem]]:
        check_scan_limit(limit)
        ns, fetch = self.namespace, self._storage.fetch
        columns = f"owner, {ITEM_COLUMNS}"
        # Ranges of the primary key (ns, owner, seq): the rest of the current owner's
        # items, then the next owners'.
        if after is None:
            rows = await fetch(f"SELECT {columns} FROM archive WHERE ns = $1"
                               " ORDER BY owner, seq LIMIT $2", ns, limit)
        else:
            rows = await fetch(f"SELECT {columns} FROM archive WHERE ns = $1 AND owner = $2"
                               " AND seq > $3 ORDER BY seq LIMIT $4", ns, after[0], after[1], limit)
            if len(rows) < limit:
                rows += await fetch(f"SELECT {columns} FROM archive WHERE ns = $1 AND owner > $2"
                                    " ORDER BY owner, seq LIMIT $3", ns, after[0], limit - len(rows))
        return [(r[0], archive_item(r[1:])) for r in rows]
