"""The archive's write path in :class:`~xmppd.storage.sqlite.SQLiteStorage` for appends
that each carry a future (``start_append``), run on the connection thread inside the
group-committed transaction: one batch of appends at a time, in multi-row INSERTs, with the
``archive_counts`` rows kept in step.  The appends that share their batch's future are
staged instead (:mod:`xmppd.storage.sqlite_staging`).  The tables are described in
:mod:`xmppd.storage.sqlite_stores`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from xmppd.storage.stores import (
    Append,
    ArchiveItem,
    ItemExists,
    new_item_id,
)

__all__ = ["add_counts", "adjust_count", "append_batch", "stored_count"]


def adjust_count(conn: sqlite3.Connection, ns: str, owner: str, delta: int) -> None:
    if delta > 0:
        conn.execute(
            "INSERT INTO archive_counts (ns, owner, n) VALUES (?, ?, ?)"
            " ON CONFLICT (ns, owner) DO UPDATE SET n = n + excluded.n",
            (ns, owner, delta),
        )
    elif delta < 0:
        conn.execute(
            "UPDATE archive_counts SET n = n + ? WHERE ns = ? AND owner = ?", (delta, ns, owner)
        )
        conn.execute(
            "DELETE FROM archive_counts WHERE ns = ? AND owner = ? AND n <= 0", (ns, owner)
        )


_INSERT = "INSERT INTO archive (ns, owner, id, stamp, with_jid, data) VALUES (?, ?, ?, ?, ?, ?)"

#: Rows per multi-row INSERT (6 parameters each: under SQLite's historic 999 bound).
_ROWS_PER_INSERT = 150
#: The multi-row INSERT of n rows (n >= 1), made once (the statement cache keys on the text).
_INSERTS = [""] + [
    _INSERT.replace("(?, ?, ?, ?, ?, ?)", ", ".join(["(?, ?, ?, ?, ?, ?)"] * n))
    for n in range(1, _ROWS_PER_INSERT + 1)
]

# What append_batch gives each append: the new seq (the item is the append's arguments),
# an ArchiveItem (the slow path), None (over its limit) or the error.  The loop thread
# makes the items: the writer thread holds the GIL as little as it can.


def append_batch(conn: sqlite3.Connection, batch: Sequence[Append]) -> list[Any]:
    """Run a batch of appends in the caller's transaction; one outcome per append.

    The fast path (no ``replace``): limits checked against one ``archive_counts`` read per
    owner plus the batch's earlier appends, the rows inserted by multi-row ``INSERT`` statements
    (one statement step per 150 rows: each step releases and retakes the GIL, which the
    event loop then waits for), one count upsert for all owners.  ``seq`` is AUTOINCREMENT
    and this connection the only writer, so the rows get consecutive seqs ending at
    ``last_insert_rowid()``.  A constraint failure (a duplicate id) rolls the fast path back
    and runs the appends one by one, each in its own savepoint, so that only the offending
    one fails.
    """
    if not any(a.replace for a in batch):
        conn.execute("SAVEPOINT appends")
        try:
            outcomes = _append_fast(conn, batch)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO appends")
            conn.execute("RELEASE appends")
        else:
            conn.execute("RELEASE appends")
            return outcomes
    outcomes = []
    for a in batch:
        conn.execute("SAVEPOINT append")
        try:
            item = _append_one(conn, a)
        except Exception as exc:  # noqa: BLE001 - this append's outcome
            conn.execute("ROLLBACK TO append")
            conn.execute("RELEASE append")
            outcomes.append(exc)
        else:
            conn.execute("RELEASE append")
            outcomes.append(item)
    return outcomes


def add_counts(conn: sqlite3.Connection, added: Mapping[tuple[str, str], int]) -> None:
    """Add to ``archive_counts``: one multi-row upsert per 150 owners."""
    counts = list(added.items())
    for at in range(0, len(counts), _ROWS_PER_INSERT):
        chunk = counts[at:at + _ROWS_PER_INSERT]
        conn.execute(
            "INSERT INTO archive_counts (ns, owner, n) VALUES "
            + ", ".join(["(?, ?, ?)"] * len(chunk))
            + " ON CONFLICT (ns, owner) DO UPDATE SET n = n + excluded.n",
            [x for (ns, owner), n in chunk for x in (ns, owner, n)],
        )


def _append_fast(conn: sqlite3.Connection, batch: Sequence[Append]) -> list[Any]:
    outcomes: list[Any] = [None] * len(batch)
    added: dict[tuple[str, str], int] = {}
    kept: list[int] = []
    if not any(a.limit for a in batch):
        kept = list(range(len(batch)))
        for a in batch:
            key = (a.ns, a.owner)
            added[key] = added.get(key, 0) + 1
    else:
        stored: dict[tuple[str, str], int] = {}
        for i, a in enumerate(batch):
            key = (a.ns, a.owner)
            if a.limit:
                n = stored.get(key)
                if n is None:
                    n = stored[key] = stored_count(conn, a.ns, a.owner)
                if n + added.get(key, 0) + 1 > a.limit:
                    continue  # over the limit: None
            added[key] = added.get(key, 0) + 1
            kept.append(i)
    if not kept:
        return outcomes
    for at in range(0, len(kept), _ROWS_PER_INSERT):
        chunk = kept[at:at + _ROWS_PER_INSERT]
        conn.execute(_INSERTS[len(chunk)], [x for i in chunk for x in batch[i][:6]])
    seq = conn.execute("SELECT last_insert_rowid()").fetchone()[0] - len(kept)
    for i in kept:
        seq += 1
        outcomes[i] = seq
    add_counts(conn, added)
    return outcomes


def _append_one(conn: sqlite3.Connection, a: Append) -> ArchiveItem | None:
    ns, owner, id = a.ns, a.owner, a.id
    old = None
    if not a.generated:
        old = conn.execute(
            "SELECT seq FROM archive WHERE ns = ? AND owner = ? AND id = ?", (ns, owner, id),
        ).fetchone()
        if old is not None and not a.replace:
            raise ItemExists(f"{owner!r} already has an item {id!r}")
    if a.limit and stored_count(conn, ns, owner) + (old is None) > a.limit:
        return None
    if old is not None:
        conn.execute("DELETE FROM archive WHERE seq = ?", (old[0],))
    for attempt in range(5):
        try:
            cur = conn.execute(_INSERT, (ns, owner, id, a.stamp, a.with_jid, a.data))
            break
        except sqlite3.IntegrityError:  # pragma: no cover - a random id collided
            if not a.generated or attempt == 4:
                raise
            id = new_item_id()
    if old is None:
        adjust_count(conn, ns, owner, 1)
    return ArchiveItem(id, cur.lastrowid, a.stamp, a.with_jid, a.data)


def stored_count(conn: sqlite3.Connection, ns: str, owner: str) -> int:
    row = conn.execute(
        "SELECT n FROM archive_counts WHERE ns = ? AND owner = ?", (ns, owner)
    ).fetchone()
    return 0 if row is None else row[0]
