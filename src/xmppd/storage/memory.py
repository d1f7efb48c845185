"""In-memory storage, for tests of higher layers (nothing survives ``close()``)."""

from __future__ import annotations

from collections.abc import Mapping

from xmppd.storage.base import AccountExists, Storage, StorageError, check_credentials
from xmppd.storage.credentials import ScramCredentials
from xmppd.storage.memory_stores import MemoryArchiveStore, MemoryKeyValueStore, StoreState
from xmppd.storage.stores import ArchiveStore, KeyValueStore, check_kind, check_user_owner

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    """The :class:`Storage` interface over dicts."""

    def __init__(self) -> None:
        super().__init__()
        self._accounts: dict[tuple[str, str], dict[str, ScramCredentials]] | None = None
        self.state = StoreState()
        self._disabled: set[tuple[str, str]] = set()

    async def open(self) -> None:
        if self._accounts is None:
            self._accounts = {}

    async def close(self) -> None:
        self._accounts = None
        self.state = StoreState()
        self._disabled = set()

    @property
    def _data(self) -> dict[tuple[str, str], dict[str, ScramCredentials]]:
        if self._accounts is None:
            raise StorageError("storage is not open")
        return self._accounts

    async def schema_version(self) -> int:
        self._data  # noqa: B018 - raises when closed, like the SQL backends
        return self.SCHEMA_VERSION

    async def create_account(
        self, username: str, domain: str, creds: Mapping[str, ScramCredentials]
    ) -> None:
        check_credentials(creds)
        if (username, domain) in self._data:
            raise AccountExists(f"{username}@{domain}")
        self._data[(username, domain)] = dict(creds)

    async def delete_account(self, username: str, domain: str) -> bool:
        existed = self._data.pop((username, domain), None) is not None
        self._disabled.discard((username, domain))
        await self.delete_user_data(f"{username}@{domain}")
        return existed

    # -- per-module stores --------------------------------------------------------------------

    def _new_store(self, namespace: str, kind: str) -> KeyValueStore | ArchiveStore:
        if kind == "archive":
            return MemoryArchiveStore(self, namespace)
        return MemoryKeyValueStore(self, namespace)

    async def delete_user_data(self, owner: str) -> None:
        check_user_owner(owner)
        self._data  # noqa: B018 - raises when closed
        prefix = owner + "/"
        for table in (*self.state.kv.values(), *self.state.archives.values()):
            for o in [o for o in table if o == owner or o.startswith(prefix)]:
                del table[o]

    async def set_credentials(
        self, username: str, domain: str, creds: Mapping[str, ScramCredentials]
    ) -> bool:
        check_credentials(creds)
        if (username, domain) not in self._data:
            return False
        self._data[(username, domain)] = dict(creds)
        return True

    async def get_scram(
        self, username: str, domain: str, hash_name: str
    ) -> ScramCredentials | None:
        return self._data.get((username, domain), {}).get(hash_name)

    async def account_exists(self, username: str, domain: str) -> bool:
        return (username, domain) in self._data

    async def set_disabled(self, username: str, domain: str, disabled: bool) -> bool:
        if (username, domain) not in self._data:
            return False
        if disabled:
            self._disabled.add((username, domain))
        else:
            self._disabled.discard((username, domain))
        return True

    async def account_disabled(self, username: str, domain: str) -> bool:
        return (username, domain) in self._disabled and (username, domain) in self._data

    async def list_accounts(self, domain: str | None = None) -> list[tuple[str, str]]:
        keys = [k for k in self._data if domain is None or k[1] == domain]
        return sorted(keys, key=lambda k: (k[1], k[0]))

    async def namespaces(self, kind: str) -> list[str]:
        self._data  # noqa: B018 - raises when closed
        tables = self.state.archives if check_kind(kind) == "archive" else self.state.kv
        return sorted(ns for ns, table in tables.items() if any(table.values()))

    async def store_versions(self) -> dict[str, int]:
        self._data  # noqa: B018 - raises when closed
        return dict(sorted(self.state.versions.items()))
