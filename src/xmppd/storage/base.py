"""The storage interface: one async class, methods grouped by feature.

Later features (rosters, offline messages, block lists, ...) add a method group here, an
implementation in every backend, and (for SQL backends) a migration appended to the
backend's list; ``SCHEMA_VERSION`` counts those migrations.

Usernames and domains are stored exactly as given: callers pass them normalized
(``xmppd.sasl.normalize_username`` for localparts, lower-case domains).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import TracebackType

from xmppd.sasl import HASHES, ScramCredentials

__all__ = ["AccountExists", "Storage", "StorageError", "check_credentials"]


class StorageError(Exception):
    """A storage backend failed or was used wrongly (e.g. before ``open()``)."""


class AccountExists(StorageError):
    """``create_account`` for a username that is already taken on that domain."""


def check_credentials(creds: Mapping[str, ScramCredentials]) -> None:
    """Refuse credential maps that could not be used for a login."""
    if not creds:
        raise ValueError("an account needs at least one set of SCRAM credentials")
    for name, c in creds.items():
        if name != c.hash_name or name not in HASHES:
            raise ValueError(f"credentials for {name!r} carry hash {c.hash_name!r}")


class Storage(abc.ABC):
    """Persistent server state.  Use as ``async with storage:`` or ``open()``/``close()``.

    Every write has reached stable storage when its coroutine returns.
    """

    #: The schema version this code writes (the number of migrations for SQL backends).
    SCHEMA_VERSION: int = 1

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
        """Delete an account and everything it owns; False if there was none."""

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
