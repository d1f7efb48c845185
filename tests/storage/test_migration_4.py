"""SQLite migration 4: rosters, offline messages and block lists move from their tables
(schema version 3) into the roster, offline and blocking modules' stores.

A database written in the old schema is opened by today's code: the modules' data
accessors, and a running server on the wire, see everything the old tables held.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

from support import ROSTER_NS, RawClient, _creds

from xmppd.modules._rosterdata import RosterItem, RosterStore
from xmppd.modules.blocking import stored_list
from xmppd.storage import SQLiteStorage
from xmppd.storage.sqlite import MIGRATIONS

J, R = "juliet@localhost", "romeo@localhost"
REQUEST = (b"<presence xmlns='jabber:client' from='nurse@localhost' to='juliet@localhost'"
           b" type='subscribe'/>")
#: juliet's roster rows as the old tables hold them, and as the roster module must read them
JULIET = (
    RosterItem("benvolio@localhost", "", "none", ask=True, version=2),
    RosterItem("nurse@localhost", listed=False, request=REQUEST, version=0),  # request only
    RosterItem(R, "Romeo", "both", groups=("Friends", "Montague"), approved=False, version=1),
    RosterItem("tybalt@localhost", listed=False, version=3),  # a removed item (tombstone)
)
OFFLINE = [("juliet", 1000.5, "one"), ("romeo", 1001.0, "r1"), ("juliet", 1002.0, "two"),
           ("juliet", 999.0, "three")]  # arrival order is id order, not stamp order


def legacy_database(path: Path) -> None:
    """A database at schema version 3 with old-table data for juliet and romeo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    for number, migration in enumerate(MIGRATIONS[:3], 1):
        for statement in migration:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (number,))
    for user in ("juliet", "romeo"):
        conn.execute("INSERT INTO accounts VALUES ('localhost', ?, 0)", (user,))
        for c in _creds("secret").values():
            conn.execute(
                "INSERT INTO scram_credentials VALUES ('localhost', ?, ?, ?, ?, ?, ?)",
                (user, c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key),
            )
    conn.execute("INSERT INTO roster_versions VALUES ('localhost', 'juliet', 3)")
    conn.execute("INSERT INTO roster_versions VALUES ('localhost', 'romeo', 1)")
    rows = [("juliet", i) for i in JULIET] + [("romeo", RosterItem(J, "Juliet", "both",
                                                                   version=1))]
    for user, i in rows:
        conn.execute(
            "INSERT INTO roster_items VALUES ('localhost', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user, i.jid, i.name, i.subscription, int(i.ask),
             "[" + ", ".join(f'"{g}"' for g in i.groups) + "]", int(i.approved), i.request,
             int(i.listed), i.version),
        )
    for user, stamp, body in OFFLINE:
        conn.execute(
            "INSERT INTO offline_messages (domain, username, stamp, data) VALUES"
            " ('localhost', ?, ?, ?)",
            (user, stamp, f"<message xmlns='jabber:client' from='{R}/pc' to='{user}@localhost'"
                          f" type='chat'><body>{body}</body></message>".encode()),
        )
    for user, jid in (("juliet", "z@example.org"), ("juliet", "a@example.org"),
                      ("romeo", "tybalt@localhost")):
        conn.execute("INSERT INTO blocklist VALUES ('localhost', ?, ?)", (user, jid))
    conn.commit()
    conn.close()


def test_migration_moves_the_data_into_the_module_stores(tmp_path):
    path = tmp_path / "xmppd.sqlite3"
    legacy_database(path)

    async def main() -> None:
        async with SQLiteStorage(path) as s:
            assert await s.schema_version() == len(MIGRATIONS) >= 4  # and later ones
            tables = await s._call(lambda c: {r[0] for r in c.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}, write=False)
            assert not tables & {"roster_items", "roster_versions", "offline_messages",
                                 "blocklist"}
            rosters = RosterStore(s.open_store("roster"))
            juliet = await rosters.get(J)
            assert juliet.version == 3 and juliet.items == JULIET  # versions preserved
            assert [i.jid for i in juliet.listed()] == ["benvolio@localhost", R]
            assert [(i.jid, i.version) for i in await rosters.changes(J, 1)] == [
                ("benvolio@localhost", 2), ("tybalt@localhost", 3)]
            assert (await rosters.get(R)).items == (RosterItem(J, "Juliet", "both", version=1),)
            # the next change goes on from the old version
            update = await rosters.update(J, "mercutio@localhost",
                                          lambda old: RosterItem("mercutio@localhost"))
            assert update.version == 4 == update.after.version

            offline = s.open_store("offline", "archive")
            bodies = [re.search(rb"<body>(\w+)</body>", m.data).group(1)
                      for m in await offline.query(J)]
            assert bodies == [b"one", b"two", b"three"]  # arrival order preserved
            assert [m.stamp for m in await offline.query(J)] == [1000.5, 1002.0, 999.0]
            assert await offline.count(J) == 3 and await offline.count(R) == 1

            blocking = s.open_store("blocking")
            assert await stored_list(blocking, J) == ["a@example.org", "z@example.org"]
            assert await stored_list(blocking, R) == ["tybalt@localhost"]
            assert await s.integrity_check() == []

            assert await s.delete_account("juliet", "localhost")  # and all of it goes
            assert (await rosters.get(J)).items == () and await offline.count(J) == 0
            assert await stored_list(blocking, J) == []
            assert await offline.count(R) == 1

    asyncio.run(main())


def test_a_server_on_a_migrated_database(make_server, tmp_path):
    """What a client sees after the upgrade: roster (versioned), the pending subscription
    request, the offline messages in order, the block list."""
    data = tmp_path / "data"
    legacy_database(data / "xmppd.sqlite3")
    srv = make_server(users={}, allow_plain=True, data_dir=data)
    juliet = RawClient(srv.port)
    juliet.login("juliet", "secret", resource="balcony")
    juliet.send(f"<iq type='get' id='full'><query xmlns='{ROSTER_NS}' ver=''/></iq>")
    full = juliet.read_until(r"id=.full.[^>]*>.*?</iq>").replace('"', "'")
    assert "ver='3'" in full
    assert re.findall(r"<item [^>]*jid='([^']+)'", full) == ["benvolio@localhost", R]
    assert "<group>Montague</group>" in full and "ask='subscribe'" in full
    juliet.send(f"<iq type='get' id='since1'><query xmlns='{ROSTER_NS}' ver='1'/></iq>")
    pushes = juliet.read_until(r"jid=.tybalt@localhost.[^>]*>").replace('"', "'")
    assert "ver='2'" in pushes and "subscription='remove'" in pushes
    juliet.send("<presence/>")
    text = juliet.read_until(r"<body>three</body>")
    assert "type='subscribe'" in text.replace('"', "'")  # the pending request, redelivered
    assert re.findall(r"<body>(\w+)</body>", text) == ["one", "two", "three"]
    juliet.send("<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
    blocks = juliet.read_until(r"id=.bl.[^>]*>.*?</iq>")
    assert re.findall(r"jid=.([\w.@]+)", blocks) == ["a@example.org", "z@example.org"]
    juliet.close()
