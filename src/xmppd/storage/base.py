"""The storage interface: one async class; accounts and credentials are its core.

Modules keep their data in per-module stores opened with :meth:`Storage.open_store` (a
key-value store and an ordered archive per namespace, :mod:`xmppd.storage.stores`), which
every backend implements once.  The roster, offline-message and block-list method groups
below predate those stores and are still used by their modules.  SQL backends change their
schema by appending a migration to their list; ``SCHEMA_VERSION`` counts those migrations.

Usernames and domains are stored exactly as given: callers pass them normalized
(``xmppd.c2s.sasl.normalize_username`` for localparts, lower-case domains).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Literal, overload

from xmppd.storage.credentials import HASH_NAMES, ScramCredentials

if TYPE_CHECKING:
    from xmppd.storage.stores import ArchiveStore, KeyValueStore

__all__ = [
    "AccountExists",
    "OfflineMessage",
    "Roster",
    "RosterItem",
    "RosterUpdate",
    "Storage",
    "StorageError",
    "apply_roster_change",
    "check_credentials",
]

SUBSCRIPTIONS = ("none", "to", "from", "both")


class StorageError(Exception):
    """A storage backend failed or was used wrongly (e.g. before ``open()``)."""


class AccountExists(StorageError):
    """``create_account`` for a username that is already taken on that domain."""


def check_credentials(creds: Mapping[str, ScramCredentials]) -> None:
    """Refuse credential maps that could not be used for a login."""
    if not creds:
        raise ValueError("an account needs at least one set of SCRAM credentials")
    for name, c in creds.items():
        if name != c.hash_name or name not in HASH_NAMES:
            raise ValueError(f"credentials for {name!r} carry hash {c.hash_name!r}")


@dataclass(frozen=True)
class RosterItem:
    """One contact of a user: the roster item and the subscription state with it.

    ``listed`` is False for rows that are not in the user's roster: a contact that only has
    a pending inbound subscription request (RFC 6121 §3.1.3: no roster item is created for
    it), or a removed item kept as a tombstone so that versioned roster requests learn of
    the removal.  ``request`` is the pending inbound subscription request (the serialized
    stanza, redelivered at each login until answered); ``approved`` is a pre-approval
    (§3.4).  ``version`` is the roster version of the row's last visible change.
    """

    jid: str
    name: str = ""
    subscription: str = "none"
    ask: bool = False
    groups: tuple[str, ...] = ()
    approved: bool = False
    request: bytes | None = None
    listed: bool = True
    version: int = 0

    @property
    def pending_in(self) -> bool:
        return self.request is not None

    def visible(self) -> tuple:
        """What a client sees of the row; a roster push is due when this changes."""
        if not self.listed:
            return (False,)
        return (True, self.name, self.subscription, self.ask, self.groups, self.approved)

    def replace(self, **changes) -> RosterItem:
        return replace(self, **changes)


@dataclass(frozen=True)
class Roster:
    """All rows of a user's roster (see :attr:`RosterItem.listed`) and its version."""

    version: int
    items: tuple[RosterItem, ...]

    def listed(self) -> list[RosterItem]:
        return [i for i in self.items if i.listed]

    def get(self, jid: str) -> RosterItem | None:
        for item in self.items:
            if item.jid == jid:
                return item
        return None


@dataclass(frozen=True)
class RosterUpdate:
    """The outcome of :meth:`Storage.roster_update`: the row before and after, and the
    roster version after."""

    before: RosterItem | None
    after: RosterItem | None
    version: int

    @property
    def pushed(self) -> bool:
        """The visible state changed: interested resources get a roster push."""
        if self.after is None:
            return False
        old = self.before.visible() if self.before is not None else (False,)
        return old != self.after.visible()


@dataclass(frozen=True)
class OfflineMessage:
    """A stored message: its id (increasing), arrival time (Unix seconds) and XML."""

    id: int
    stamp: float
    data: bytes


RosterChangeFn = Callable[[RosterItem | None], RosterItem | None]


def apply_roster_change(
    before: RosterItem | None, change: RosterChangeFn, version: int
) -> tuple[RosterItem | None, int]:
    """The backend-independent part of ``roster_update``: the new row (None: unchanged)
    and the new roster version."""
    after = change(before)
    if after is None or after == before:
        return None, version
    if after.subscription not in SUBSCRIPTIONS:
        raise ValueError(f"bad subscription {after.subscription!r}")
    old_visible = before.visible() if before is not None else (False,)
    if after.visible() != old_visible:
        version += 1
        return after.replace(version=version), version
    return after.replace(version=before.version if before is not None else 0), version


class Storage(abc.ABC):
    """Persistent server state.  Use as ``async with storage:`` or ``open()``/``close()``.

    Every write has reached stable storage when its coroutine returns.
    """

    #: The schema version this code writes (the number of migrations for SQL backends).
    SCHEMA_VERSION: int = 1

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str], KeyValueStore | ArchiveStore] = {}

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and release resources; idempotent."""

    async def __aenter__(self) -> Storage:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The schema version of the open store."""

    # -- accounts ---------------------------------------------------------------------

    @abc.abstractmethod
    async def create_account(
        self, username: str, domain: str, creds: Mapping[str, ScramCredentials]
    ) -> None:
        """Create an account with its SCRAM credentials; raises :class:`AccountExists`."""

    @abc.abstractmethod
    async def delete_account(self, username: str, domain: str) -> bool:
        """Delete an account and everything it owns (its rosters, offline messages and
        block list, and, with :meth:`delete_user_data`, every per-module datum of
        ``username@domain``), atomically where the backend can; False if there was no
        account (its per-module data, if any, is deleted all the same)."""

    @abc.abstractmethod
    async def set_credentials(
        self, username: str, domain: str, creds: Mapping[str, ScramCredentials]
    ) -> bool:
        """Replace all credentials (password change); False if there is no such account."""

    @abc.abstractmethod
    async def get_scram(
        self, username: str, domain: str, hash_name: str
    ) -> ScramCredentials | None:
        """The credentials for one hash, or None (no account, or no such hash stored)."""

    @abc.abstractmethod
    async def account_exists(self, username: str, domain: str) -> bool: ...

    @abc.abstractmethod
    async def list_accounts(self, domain: str | None = None) -> list[tuple[str, str]]:
        """``(username, domain)`` pairs, sorted by domain then username."""

    # -- per-module stores -------------------------------------------------------------

    @overload
    def open_store(
        self, namespace: str, kind: Literal["keyvalue"] = "keyvalue"
    ) -> KeyValueStore: ...

    @overload
    def open_store(self, namespace: str, kind: Literal["archive"]) -> ArchiveStore: ...

    def open_store(self, namespace: str, kind: str = "keyvalue") -> KeyValueStore | ArchiveStore:
        """The ``kind`` (``"keyvalue"`` or ``"archive"``) store of ``namespace``.

        One object per (namespace, kind), valid across ``close()``/``open()``; its methods
        raise :class:`StorageError` while the storage is closed.  ``namespace`` is
        ``[a-z0-9_.-]{1,64}``, by convention the module's name.
        """
        from xmppd.storage.stores import STORE_KINDS, check_namespace

        check_namespace(namespace)
        if kind not in STORE_KINDS:
            raise ValueError(f"unknown store kind {kind!r}")
        stores = self.__dict__.setdefault("_stores", {})  # also if a subclass skipped __init__
        store = stores.get((namespace, kind))
        if store is None:
            store = stores[(namespace, kind)] = self._new_store(namespace, kind)
        return store

    @abc.abstractmethod
    def _new_store(self, namespace: str, kind: str) -> KeyValueStore | ArchiveStore:
        """Build the backend's store object (``open_store`` checks and caches)."""

    @abc.abstractmethod
    async def delete_user_data(self, owner: str) -> None:
        """Delete the data of ``owner`` and of its sub-owners (``owner + "/..."``) in every
        namespace of every store kind, including namespaces no loaded module opened.

        ``owner`` is a bare JID (or a room/host), non-empty and without ``/``.
        :meth:`delete_account` does this for the account's bare JID.
        """

    # -- rosters (RFC 6121 §2, §3) ------------------------------------------------------

    @abc.abstractmethod
    async def roster(self, username: str, domain: str) -> Roster:
        """Every stored row of the user's roster (listed or not) and the roster version."""

    @abc.abstractmethod
    async def roster_changes(self, username: str, domain: str, since: int) -> list[RosterItem]:
        """Rows whose visible state changed after version ``since``, oldest change first
        (unlisted rows mean "removed")."""

    @abc.abstractmethod
    async def roster_update(
        self, username: str, domain: str, jid: str, change: RosterChangeFn
    ) -> RosterUpdate:
        """Atomically read the row for ``jid``, apply ``change`` and store its result.

        ``change`` gets the stored row (or None) and returns the new row, or None for "no
        change".  It runs inside the write transaction (on the backend's thread), so it must
        be a pure function.  The roster version is bumped only when the visible state of the
        row changed (see :meth:`RosterItem.visible`).  Raises :class:`StorageError` when
        the account does not exist.
        """

    # -- offline messages (XEP-0160) ----------------------------------------------------------

    @abc.abstractmethod
    async def offline_store(
        self, username: str, domain: str, data: bytes, stamp: float, limit: int
    ) -> bool:
        """Append a message (serialized stanza) unless ``limit`` are stored already; True when
        it is committed."""

    @abc.abstractmethod
    async def offline_messages(self, username: str, domain: str) -> list[OfflineMessage]:
        """The stored messages, in arrival order."""

    @abc.abstractmethod
    async def offline_delete(self, username: str, domain: str, ids: list[int]) -> int:
        """Delete the given messages; returns how many were deleted."""

    @abc.abstractmethod
    async def offline_count(self, username: str, domain: str) -> int: ...

    # -- block lists (XEP-0191) ----------------------------------------------------------------

    @abc.abstractmethod
    async def blocklist(self, username: str, domain: str) -> list[str]:
        """The blocked JIDs, sorted."""

    @abc.abstractmethod
    async def block(self, username: str, domain: str, jids: list[str]) -> list[str]:
        """Add JIDs to the block list; returns those that were not blocked yet."""

    @abc.abstractmethod
    async def unblock(self, username: str, domain: str, jids: list[str] | None) -> list[str]:
        """Remove JIDs (all of them for None); returns those that were removed, sorted."""
