"""In-memory storage, for tests of higher layers (nothing survives ``close()``)."""

from __future__ import annotations

from collections.abc import Mapping

from xmppd.storage.base import (
    AccountExists,
    OfflineMessage,
    Roster,
    RosterChangeFn,
    RosterItem,
    RosterUpdate,
    Storage,
    StorageError,
    apply_roster_change,
    check_credentials,
)
from xmppd.storage.credentials import ScramCredentials
from xmppd.storage.memory_stores import MemoryArchiveStore, MemoryKeyValueStore, StoreState
from xmppd.storage.stores import ArchiveStore, KeyValueStore, check_user_owner


class _UserData:
    """Everything an account owns besides its credentials."""

    def __init__(self) -> None:
        self.roster: dict[str, RosterItem] = {}
        self.roster_version = 0
        self.offline: list[OfflineMessage] = []
        self.blocked: set[str] = set()

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    """The :class:`Storage` interface over dicts."""

    def __init__(self) -> None:
        super().__init__()
        self._accounts: dict[tuple[str, str], dict[str, ScramCredentials]] | None = None
        self._users: dict[tuple[str, str], _UserData] = {}
        self._next_offline_id = 1
        self.state = StoreState()

    async def open(self) -> None:
        if self._accounts is None:
            self._accounts = {}

    async def close(self) -> None:
        self._accounts = None
        self._users = {}
        self.state = StoreState()

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
        self._users[(username, domain)] = _UserData()

    async def delete_account(self, username: str, domain: str) -> bool:
        existed = self._data.pop((username, domain), None) is not None
        self._users.pop((username, domain), None)
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

    async def list_accounts(self, domain: str | None = None) -> list[tuple[str, str]]:
        keys = [k for k in self._data if domain is None or k[1] == domain]
        return sorted(keys, key=lambda k: (k[1], k[0]))

    # -- per-user data ------------------------------------------------------------------------

    def _user(self, username: str, domain: str) -> _UserData:
        if (username, domain) not in self._data:
            raise StorageError(f"no account {username}@{domain}")
        return self._users.setdefault((username, domain), _UserData())

    def _user_or_empty(self, username: str, domain: str) -> _UserData:
        self._data  # noqa: B018 - raises when closed
        return self._users.get((username, domain)) or _UserData()

    # -- rosters ------------------------------------------------------------------------------

    async def roster(self, username: str, domain: str) -> Roster:
        user = self._user_or_empty(username, domain)
        return Roster(user.roster_version, tuple(user.roster[j] for j in sorted(user.roster)))

    async def roster_changes(self, username: str, domain: str, since: int) -> list[RosterItem]:
        user = self._user_or_empty(username, domain)
        changed = [i for i in user.roster.values() if i.version > since]
        return sorted(changed, key=lambda i: i.version)

    async def roster_update(
        self, username: str, domain: str, jid: str, change: RosterChangeFn
    ) -> RosterUpdate:
        user = self._user(username, domain)
        before = user.roster.get(jid)
        after, version = apply_roster_change(before, change, user.roster_version)
        if after is None:
            return RosterUpdate(before, before, version)
        user.roster[jid] = after
        user.roster_version = version
        return RosterUpdate(before, after, version)

    # -- offline messages ---------------------------------------------------------------------

    async def offline_store(
        self, username: str, domain: str, data: bytes, stamp: float, limit: int
    ) -> bool:
        user = self._user(username, domain)
        if len(user.offline) >= limit:
            return False
        user.offline.append(OfflineMessage(self._next_offline_id, stamp, bytes(data)))
        self._next_offline_id += 1
        return True

    async def offline_messages(self, username: str, domain: str) -> list[OfflineMessage]:
        return list(self._user_or_empty(username, domain).offline)

    async def offline_delete(self, username: str, domain: str, ids: list[int]) -> int:
        user = self._user_or_empty(username, domain)
        wanted = set(ids)
        kept = [m for m in user.offline if m.id not in wanted]
        deleted = len(user.offline) - len(kept)
        user.offline = kept
        return deleted

    async def offline_count(self, username: str, domain: str) -> int:
        return len(self._user_or_empty(username, domain).offline)

    # -- block lists ----------------------------------------------------------------------------

    async def blocklist(self, username: str, domain: str) -> list[str]:
        return sorted(self._user_or_empty(username, domain).blocked)

    async def block(self, username: str, domain: str, jids: list[str]) -> list[str]:
        user = self._user(username, domain)
        added = [j for j in dict.fromkeys(jids) if j not in user.blocked]
        user.blocked.update(added)
        return added

    async def unblock(self, username: str, domain: str, jids: list[str] | None) -> list[str]:
        user = self._user_or_empty(username, domain)
        removed = sorted(user.blocked if jids is None else user.blocked & set(jids))
        user.blocked.difference_update(removed)
        return removed
