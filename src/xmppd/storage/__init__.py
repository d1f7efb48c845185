"""Storage backends behind one interface, chosen by a URL or a config mapping.

    storage = await open_storage("sqlite:///var/lib/xmppd/xmppd.sqlite")
    ...
    await storage.close()

Accepted specs: ``sqlite:///abs/path``, ``sqlite:rel/path``, a plain path (str or
:class:`~pathlib.Path`, meaning SQLite), ``memory:``,
``postgresql://user:password@host:port/database`` (also ``postgres://``; asyncpg is
imported only when one is opened), or a mapping ``{"backend": "sqlite", "path": ...}`` /
``{"backend": "memory"}`` / ``{"backend": "postgresql", "url": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xmppd.storage.base import AccountExists, Storage, StorageError
from xmppd.storage.memory import MemoryStorage
from xmppd.storage.postgresql import SCHEMES as POSTGRESQL_SCHEMES
from xmppd.storage.postgresql import PostgreSQLStorage
from xmppd.storage.sqlite import SQLiteStorage

__all__ = [
    "AccountExists",
    "MemoryStorage",
    "PostgreSQLStorage",
    "SQLiteStorage",
    "Storage",
    "StorageError",
    "open_storage",
    "storage_from_spec",
]

StorageSpec = str | Path | Mapping[str, Any]


def storage_from_spec(spec: StorageSpec) -> Storage:
    """Build (without opening) the backend described by ``spec``."""
    if isinstance(spec, Mapping):
        backend = spec.get("backend", "sqlite")
        if backend == "memory":
            return MemoryStorage()
        if backend == "sqlite":
            if "path" not in spec:
                raise ValueError("sqlite storage needs a 'path'")
            return SQLiteStorage(Path(spec["path"]))
        if backend in POSTGRESQL_SCHEMES:
            if not isinstance(spec.get("url"), str):
                raise ValueError("postgresql storage needs a 'url'")
            return PostgreSQLStorage(spec["url"])
        raise ValueError(f"unknown storage backend {backend!r}")
    if isinstance(spec, Path):
        return SQLiteStorage(spec)
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "memory":
        return MemoryStorage()
    if sep and scheme in POSTGRESQL_SCHEMES:
        return PostgreSQLStorage(spec)
    if sep and scheme == "sqlite":
        # sqlite:///abs -> /abs ; sqlite:rel -> rel (the URL authority must be empty)
        if rest.startswith("//"):
            if not rest.startswith("///"):
                raise ValueError(f"sqlite URL must be sqlite:///path, got {spec!r}")
            rest = "/" + rest[2:].lstrip("/")  # sqlite:////abs too: never a "//abs" path
        if not rest:
            raise ValueError("sqlite URL without a path")
        return SQLiteStorage(Path(rest))
    if sep and len(scheme) > 1 and "/" not in scheme:
        raise ValueError(f"unknown storage scheme {scheme!r}")
    return SQLiteStorage(Path(spec))


async def open_storage(spec: StorageSpec) -> Storage:
    """Build the backend for ``spec`` and open it (creating/migrating the schema)."""
    storage = storage_from_spec(spec)
    await storage.open()
    return storage
