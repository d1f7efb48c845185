"""The enumeration API (``xmppd storage copy`` reads a whole backend through it): the
namespaces of each kind, the store versions, whole-namespace scans in pages; the same
tests against every backend."""

from __future__ import annotations

import pytest
from support import run_storage

from xmppd.storage import Storage

J = "juliet@example.com"
R = "romeo@example.net"


async def scan_all(store, limit: int) -> list:
    """Every row of a store's scan, page by page."""
    rows: list = []
    after = None
    while True:
        page = await store.scan(after, limit)
        assert len(page) <= limit
        rows += page
        if len(page) < limit:
            return rows
        last = page[-1]
        after = (last[0], last[1]) if len(last) == 3 else (last[0], last[1].seq)


def test_namespaces_and_versions(make_storage):
    async def body(s: Storage) -> None:
        assert await s.namespaces("keyvalue") == [] and await s.namespaces("archive") == []
        assert await s.store_versions() == {}
        s.open_store("unused")  # opened, nothing stored: not listed
        await s.open_store("roster").set(J, "roster", {"items": {}})
        await s.open_store("blocking").set(R, "list", [J])
        await s.open_store("mam", "archive").append(J, b"<m/>", stamp=1.0)
        await s.open_store("muc").set_version(2)
        await s.open_store("mam", "archive").set_version(1)
        assert await s.namespaces("keyvalue") == ["blocking", "roster"]
        assert await s.namespaces("archive") == ["mam"]
        assert await s.store_versions() == {"mam": 1, "muc": 2}
        await s.open_store("roster").delete(J, "roster")
        await s.open_store("mam", "archive").delete_owner(J)
        assert await s.namespaces("keyvalue") == ["blocking"]
        assert await s.namespaces("archive") == []
        with pytest.raises(ValueError):
            await s.namespaces("table")

    run_storage(make_storage, body)


def test_keyvalue_scan_in_pages(make_storage):
    async def body(s: Storage) -> None:
        kv = s.open_store("pep")
        assert await kv.scan() == [] and await kv.size() == (0, 0)
        values = {
            ("", "server"): {"motd": "hi"},
            (J, "a"): 1, (J, "b"): [1, 2], (J + "/urn:xmpp:avatar:data", "x"): "é",
            (R, "ü"): {"n": None}, (R, "z"): True, ("zed@example.org", "k"): 2.5,
        }
        for (owner, key), value in values.items():
            await kv.set(owner, key, value)
        await s.open_store("other").set(J, "a", "not this namespace")
        expected = [(o, k, v) for (o, k), v in sorted(values.items())]
        for limit in (1, 2, 3, 1000):
            assert await scan_all(kv, limit) == expected
        assert await kv.scan((J, "b"), 2) == expected[3:5]
        assert await kv.size() == (5, 7)
        with pytest.raises(ValueError):
            await kv.scan(None, 0)

    run_storage(make_storage, body)


def test_archive_scan_in_pages_keeps_each_owners_order(make_storage):
    async def body(s: Storage) -> None:
        arch = s.open_store("mam", "archive")
        assert await arch.scan() == []
        owners = [R, J, "", J + "/node"]
        for i in range(14):  # interleaved owners: each owner's seqs are not contiguous
            await arch.append(owners[i % 4], f"<m n='{i}'/>".encode(), stamp=float(i),
                              with_jid=f"peer{i % 3}@example.com", id=f"id{i:02}")
        await arch.append(R, b"<new/>", stamp=99.0, id="id00", replace=True)  # moves last
        await s.open_store("offline", "archive").append(J, b"<x/>", stamp=0.0)
        expected = [(o, item) for o in sorted(owners) for item in await arch.query(o)]
        assert len(expected) == 14
        for limit in (1, 3, 4, 1000):
            got = await scan_all(arch, limit)
            assert got == expected
        # the position is (owner, seq): the rest of that owner's items, then the next owner's
        first = expected[0][1]
        assert await arch.scan((expected[0][0], first.seq), 2) == expected[1:3]
        ids = [item.id for owner, item in expected if owner == R]
        assert ids[-1] == "id00"
        with pytest.raises(ValueError):
            await arch.scan(None, -1)

    run_storage(make_storage, body)
