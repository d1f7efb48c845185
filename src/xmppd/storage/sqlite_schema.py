"""The SQLite schema of :class:`~xmppd.storage.sqlite.SQLiteStorage` as forward
migrations: :data:`MIGRATIONS` ``[n - 1]`` brings the schema to version ``n``.  Append a
tuple of SQL statements (or functions of the connection, for data moves) for a change;
never edit one that has shipped.  The per-module tables are described in
:mod:`xmppd.storage.sqlite_stores`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from xmppd.storage.stores import new_item_id

__all__ = ["MIGRATIONS", "MigrationStep"]

#: One step of a migration: an SQL statement, or a function for what SQL cannot say.
MigrationStep = str | Callable[[sqlite3.Connection], None]


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _text(blob: bytes | str | None) -> str | None:
    if blob is None or isinstance(blob, str):
        return blob
    return bytes(blob).decode("utf-8", "replace")


def _move_im_data_to_module_stores(conn: sqlite3.Connection) -> None:
    """Migration 4: rosters, offline messages and block lists move from their tables
    (migration 2) into the per-module stores, in the layouts their modules read (namespace
    = the module's name, owner = the account's bare JID); the old tables are dropped.

    The layouts, as of this migration (``xmppd.modules._rosterdata``, ``offline``,
    ``blocking``): kv ``roster``/``roster`` = ``{"version": n, "items": {jid: {name,
    subscription, ask, groups, approved, request (stanza text or null), listed,
    version}}}``; archive ``offline`` = one item per message in arrival order (``stamp``
    the arrival, ``with_jid`` empty, ``data`` the stanza); kv ``blocking``/``list`` = the
    blocked JIDs, sorted.
    """
    rosters: dict[str, dict[str, Any]] = {}
    for domain, username, version in conn.execute(
        "SELECT domain, username, version FROM roster_versions"
    ):
        rosters[f"{username}@{domain}"] = {"version": version, "items": {}}
    for row in conn.execute(
        "SELECT domain, username, jid, name, subscription, ask, groups, approved, request,"
        " listed, version FROM roster_items ORDER BY domain, username, jid"
    ):
        domain, username, jid, name, subscription, ask, groups, approved, request, listed, \
            version = row
        roster = rosters.setdefault(f"{username}@{domain}", {"version": 0, "items": {}})
        roster["items"][jid] = {
            "name": name, "subscription": subscription, "ask": bool(ask),
            "groups": json.loads(groups), "approved": bool(approved),
            "request": _text(request), "listed": bool(listed), "version": version,
        }
    conn.executemany(
        "INSERT INTO kv (ns, owner, key, value) VALUES ('roster', ?, 'roster', ?)"
        " ON CONFLICT (ns, owner, key) DO UPDATE SET value = excluded.value",
        [(owner, _dump(value)) for owner, value in rosters.items()],
    )

    counts: dict[str, int] = {}
    for domain, username, stamp, data in conn.execute(
        "SELECT domain, username, stamp, data FROM offline_messages ORDER BY id"
    ).fetchall():
        owner = f"{username}@{domain}"
        conn.execute(  # in id order: the archive's seq keeps the arrival order
            "INSERT INTO archive (ns, owner, id, stamp, with_jid, data)"
            " VALUES ('offline', ?, ?, ?, '', ?)",
            (owner, new_item_id(), stamp, bytes(data)),
        )
        counts[owner] = counts.get(owner, 0) + 1
    conn.executemany(
        "INSERT INTO archive_counts (ns, owner, n) VALUES ('offline', ?, ?)"
        " ON CONFLICT (ns, owner) DO UPDATE SET n = n + excluded.n",
        list(counts.items()),
    )

    blocked: dict[str, list[str]] = {}
    for domain, username, jid in conn.execute(
        "SELECT domain, username, jid FROM blocklist ORDER BY domain, username, jid"
    ):
        blocked.setdefault(f"{username}@{domain}", []).append(jid)
    conn.executemany(
        "INSERT INTO kv (ns, owner, key, value) VALUES ('blocking', ?, 'list', ?)"
        " ON CONFLICT (ns, owner, key) DO UPDATE SET value = excluded.value",
        [(owner, _dump(sorted(jids))) for owner, jids in blocked.items()],
    )
    for table in ("roster_items", "roster_versions", "offline_messages", "blocklist"):
        conn.execute(f"DROP TABLE {table}")


#: Forward migrations; migration ``n`` (1-based) brings the schema to version ``n``.
#: Never edit one that has shipped: append a new one.
MIGRATIONS: tuple[tuple[MigrationStep, ...], ...] = (
    # 1: accounts and their SCRAM credentials (never passwords)
    (
        """CREATE TABLE accounts (
            domain TEXT NOT NULL,
            username TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (domain, username)
        ) WITHOUT ROWID""",
        """CREATE TABLE scram_credentials (
            domain TEXT NOT NULL,
            username TEXT NOT NULL,
            hash_name TEXT NOT NULL,
            salt BLOB NOT NULL,
            iterations INTEGER NOT NULL CHECK (iterations >= 4096),
            stored_key BLOB NOT NULL,
            server_key BLOB NOT NULL,
            PRIMARY KEY (domain, username, hash_name),
            FOREIGN KEY (domain, username) REFERENCES accounts (domain, username)
                ON DELETE CASCADE
        ) WITHOUT ROWID""",
    ),
    # 2: rosters with subscription state, offline messages, block lists
    (
        """CREATE TABLE roster_versions (
            domain TEXT NOT NULL,
            username TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (domain, username),
            FOREIGN KEY (domain, username) REFERENCES accounts (domain, username)
                ON DELETE CASCADE
        ) WITHOUT ROWID""",
        """CREATE TABLE roster_items (
            domain TEXT NOT NULL,
            username TEXT NOT NULL,
            jid TEXT NOT NULL,
            name TEXT NOT NULL,
            subscription TEXT NOT NULL
                CHECK (subscription IN ('none', 'to', 'from', 'both')),
            ask INTEGER NOT NULL,
            groups TEXT NOT NULL,
            approved INTEGER NOT NULL,
            request BLOB,
            listed INTEGER NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (domain, username, jid),
            FOREIGN KEY (domain, username) REFERENCES accounts (domain, username)
                ON DELETE CASCADE
        ) WITHOUT ROWID""",
        """CREATE TABLE offline_messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            domain TEXT NOT NULL,
            username TEXT NOT NULL,
            stamp REAL NOT NULL,
            data BLOB NOT NULL,
            FOREIGN KEY (domain, username) REFERENCES accounts (domain, username)
                ON DELETE CASCADE
        )""",
        "CREATE INDEX offline_messages_by_user ON offline_messages (domain, username, id)",
        """CREATE TABLE blocklist (
            domain TEXT NOT NULL,
            username TEXT NOT NULL,
            jid TEXT NOT NULL,
            PRIMARY KEY (domain, username, jid),
            FOREIGN KEY (domain, username) REFERENCES accounts (domain, username)
                ON DELETE CASCADE
        ) WITHOUT ROWID""",
    ),
    # 3: generic per-module stores: key-value, archive (see xmppd.storage.sqlite_stores)
    (
        """CREATE TABLE kv (
            ns TEXT NOT NULL,
            owner TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (ns, owner, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE archive (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ns TEXT NOT NULL,
            owner TEXT NOT NULL,
            id TEXT NOT NULL,
            stamp REAL NOT NULL,
            with_jid TEXT NOT NULL,
            data BLOB NOT NULL
        )""",
        "CREATE UNIQUE INDEX archive_by_id ON archive (ns, owner, id)",
        "CREATE INDEX archive_by_owner ON archive (ns, owner, seq)",
        "CREATE INDEX archive_by_with ON archive (ns, owner, with_jid, seq)",
        "CREATE INDEX archive_by_owner_stamp ON archive (ns, owner, stamp)",
        "CREATE INDEX archive_by_stamp ON archive (ns, stamp)",
        """CREATE TABLE archive_counts (
            ns TEXT NOT NULL,
            owner TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (ns, owner)
        ) WITHOUT ROWID""",
        """CREATE TABLE store_versions (
            ns TEXT NOT NULL PRIMARY KEY,
            version INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
    # 4: rosters, offline messages and block lists become the data of their modules
    (_move_im_data_to_module_stores,),
    # 5: accounts can be disabled (XEP-0133 disable-user): kept, but no login
    ("ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0",),
    # 6: retention walks the owners on archive_by_owner_stamp instead: one index less to
    # write per archived item (~10 % of an append's cost)
    ("DROP INDEX archive_by_stamp",),
    # 7: shared archive appends are staged, a batch a row, and merged in bulk
    # (xmppd.storage.sqlite_staging)
    (
        """CREATE TABLE archive_staged (
            seq INTEGER PRIMARY KEY,
            ns TEXT NOT NULL,
            n INTEGER NOT NULL,
            rows BLOB NOT NULL
        )""",
    ),
)
