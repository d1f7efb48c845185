"""The storage interface: one async class; accounts and credentials are its core.

Everything else lives in per-module stores opened with :meth:`Storage.open_store` (a
key-value store and an ordered archive per namespace, :mod:`xmppd.storage.stores`), which
every backend implements once: rosters, offline messages and block lists are the data of
the ``roster``, ``offline`` and ``blocking`` modules, in their layouts, not methods here.
SQL backends change their schema by appending a migration to their list;
``SCHEMA_VERSION`` counts those migrations.

Usernames and domains are stored exactly as given: callers pass them normalized
(``xmppd.c2s.sasl.normalize_username`` for localparts, lower-case domains).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Literal, overload

from xmppd.metrics.histogram import Histograms
from xmppd.storage.credentials import HASH_NAMES, ScramCredentials

if TYPE_CHECKING:
    from xmppd.storage.stores import ArchiveStore, KeyValueStore

__all__ = [
    "AccountExists",
    "Storage",
    "StorageError",
    "check_credentials",
]


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


class Storage(abc.ABC):
    """Persistent server state.  Use as ``async with storage:`` or ``open()``/``close()``.

    Every write has reached stable storage when its coroutine returns.
    """

    #: The schema version this code writes (the number of migrations for SQL backends).
    SCHEMA_VERSION: int = 1

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str], KeyValueStore | ArchiveStore] = {}
        #: Latencies of the backend's operations by kind (``read``, ``write``,
        #: ``append``...), in seconds, for the metrics; a backend with nothing worth
        #: measuring (memory) leaves it empty.
        self.latency = Histograms()

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
        """Delete an account and everything it owns (its credentials and, with
        :meth:`delete_user_data`, every per-module datum of ``username@domain``: roster,
        offline messages, block list...), atomically where the backend can; False if there
        was no account (its per-module data, if any, is deleted all the same)."""

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
    async def set_disabled(self, username: str, domain: str, disabled: bool) -> bool:
        """Disable (or re-enable) an account: a disabled one keeps its data but cannot log
        in; False if there is no such account."""

    @abc.abstractmethod
    async def account_disabled(self, username: str, domain: str) -> bool:
        """True if the account exists and is disabled."""

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

    # -- enumeration (``xmppd storage copy``) ----------------------------------------------

    @abc.abstractmethod
    async def namespaces(self, kind: str) -> list[str]:
        """The namespaces holding at least one datum of ``kind`` (``"keyvalue"`` or
        ``"archive"``), sorted, whether or not a loaded module opened them."""

    @abc.abstractmethod
    async def store_versions(self) -> dict[str, int]:
        """Every namespace's version set with ``set_version``, by namespace."""
