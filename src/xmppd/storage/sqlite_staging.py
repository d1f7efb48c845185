"""Staged archive appends in :class:`~xmppd.storage.sqlite.SQLiteStorage`: the shared
appends (``start_append_shared``, the archive of every routed message) are committed as
one row per batch in ``archive_staged`` and moved into ``archive`` later, many batches at
a time, by :func:`merge_staged`.

Why: an item is five B-tree entries (the ``archive`` row and its four indexes), four of
them under its owner's key.  A commit writes every page it dirtied to the WAL, so a batch
of appends for many owners writes a page per owner per index however few rows it holds:
measured, 128-row commits over 200 owners cost ~60 µs of CPU per row (~9 µs with 2
owners).  A staged batch is one row (the batch's values, ``marshal``-ed) appended to one
B-tree; the merge then inserts ~16 000 rows in one transaction, each index page taking
many rows per write: ~11 µs per row in all, whatever the number of owners.

The rules that keep the archive exact:

* ``seq`` is taken when a batch is staged (``seq`` .. ``seq + n - 1``, from the archive's
  AUTOINCREMENT counter, which is moved past them), so items keep the order in which they
  were appended whether staged or not, and no ``seq`` is ever reused;
* ``archive_counts`` counts staged items (an owner's ``count()`` and an append's
  ``limit`` need no merge);
* everything else that reads or changes ``archive`` merges first: the writer thread's
  jobs call :func:`merge_staged` in their transaction, the loop-thread reads ask
  :func:`has_staged` first (``archive_staged`` is shared by every process writing the
  file, so a worker sees its siblings' staged rows too); batches are staged per
  namespace, so that reading PEP items or a room's history does not merge ``mam``'s;
* uniqueness of ``(ns, owner, id)`` is checked by the merge: shared appends take their
  ids from :func:`~xmppd.storage.stores.new_item_id` (time-ordered and random, unique by
  construction); a duplicate all the same is kept out of the archive and logged, the
  earlier item staying (it is counted until that merge).
"""

from __future__ import annotations

import functools
import logging
import marshal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from itertools import chain
from operator import itemgetter
from typing import Any

from xmppd.storage.sqlite_append import add_counts, adjust_count

__all__ = ["MERGE_ROWS", "has_staged", "merge_staged", "stage_shared_batch", "staged_rows"]

log = logging.getLogger("xmppd.storage")

#: Staged items that make the writer merge (~0.2 s of its time): fewer merge less per
#: row (5 000: ~16 µs per item), more hold acknowledgements longer behind one merge.
MERGE_ROWS = 16_384

#: Rows per INSERT of a merge: 7 bound values each, under SQLite's 32 766 since 3.32
#: (older ones: see _rows_per_insert).
_MERGE_CHUNK = 1024


def staged_rows(conn: sqlite3.Connection) -> int:
    """How many items are staged (by every process writing the file)."""
    return conn.execute("SELECT COALESCE(SUM(n), 0) FROM archive_staged").fetchone()[0]


def has_staged(conn: sqlite3.Connection, ns: str | None = None) -> bool:
    """Whether a merge is due before ``archive`` (``ns``'s items, or any) is read."""
    if ns is None:
        return conn.execute("SELECT 1 FROM archive_staged LIMIT 1").fetchone() is not None
    return conn.execute("SELECT 1 FROM archive_staged WHERE ns = ? LIMIT 1",
                        (ns,)).fetchone() is not None


def stage_shared_batch(conn: sqlite3.Connection, flat: list[Any]) -> int:
    """Stage the shared appends ``flat`` (six values per append, the ``archive`` columns
    after ``seq``) in the caller's transaction, a row per namespace; returns how many.

    No Python per row when the batch is of one namespace (as ``mam``'s are): ``marshal``
    and a C-level ``Counter`` over slices do the work (this thread holds the GIL for
    Python).
    """
    n = len(flat) // 6
    if not n:
        return 0
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'archive'").fetchone()
    last = row[0] if row is not None else 0
    namespaces = flat[0::6]
    if namespaces.count(namespaces[0]) == n:
        groups = [(namespaces[0], flat)]
    else:  # by namespace, each in its order: a read of one merges only its own
        by_ns: dict[str, list[Any]] = {}
        for at in range(0, len(flat), 6):
            by_ns.setdefault(flat[at], []).extend(flat[at:at + 6])
        groups = list(by_ns.items())
    for ns, values in groups:
        conn.execute("INSERT INTO archive_staged (seq, ns, n, rows) VALUES (?, ?, ?, ?)",
                     (last + 1, ns, len(values) // 6, marshal.dumps(values)))
        last += len(values) // 6
    # Later items, staged or not, come after these: AUTOINCREMENT counts from here.
    if row is None:
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('archive', ?)", (last,))
    else:
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'archive'", (last,))
    add_counts(conn, Counter(zip(namespaces, flat[1::6], strict=True)))
    return n


def merge_staged(conn: sqlite3.Connection, ns: str | None = None) -> int:
    """Move the staged items (``ns``'s, or all) into ``archive``, in the caller's
    transaction; returns how many were staged.

    Rows go in owner by owner (seq order within each): the four owner-keyed indexes then
    take them in key order, and a page many at a time.
    """
    if ns is None:
        batches = conn.execute("SELECT seq, n, rows FROM archive_staged ORDER BY seq").fetchall()
    else:
        batches = conn.execute("SELECT seq, n, rows FROM archive_staged WHERE ns = ?"
                               " ORDER BY seq", (ns,)).fetchall()
    if not batches:
        return 0
    rows = [row for first, n, blob in batches for row in _rows(first, n, blob)]
    rows.sort(key=itemgetter(1, 2))  # (ns, owner); stable: seq order kept within each
    most = _rows_per_insert(conn)
    done = 0
    try:
        for done in range(0, len(rows), most):
            chunk = rows[done:done + most]
            conn.execute(_insert_sql(len(chunk)), list(chain.from_iterable(chunk)))
    except sqlite3.IntegrityError:  # a duplicate id: this chunk undone (statements are atomic)
        _merge_one_by_one(conn, rows[done:])
    if ns is None:
        conn.execute("DELETE FROM archive_staged")
    else:
        conn.execute("DELETE FROM archive_staged WHERE ns = ?", (ns,))
    return len(rows)


def _rows(first: int, n: int, blob: bytes) -> Iterator[tuple[Any, ...]]:
    """A staged batch's rows as ``archive`` rows, ``seq`` first."""
    values = iter(marshal.loads(blob))
    return zip(range(first, first + n), values, values, values, values, values, values,
               strict=True)


def _merge_one_by_one(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    dropped: Counter[tuple[str, str]] = Counter()
    for row in rows:
        try:
            conn.execute(_insert_sql(1), row)
        except sqlite3.IntegrityError:  # one row: nothing to roll back
            dropped[row[1], row[2]] += 1
            log.error("archive %s: item %r of %s was already stored; the later one is"
                      " dropped", row[1], row[3], row[2])
    for (ns, owner), n in dropped.items():
        adjust_count(conn, ns, owner, -n)


def _rows_per_insert(conn: sqlite3.Connection) -> int:
    return min(_MERGE_CHUNK, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 7)


@functools.lru_cache(maxsize=64)  # a merge's last chunk has any size
def _insert_sql(n: int) -> str:
    return ("INSERT INTO archive (seq, ns, owner, id, stamp, with_jid, data) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n))
