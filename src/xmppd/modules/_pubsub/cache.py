"""Decoded node records kept in memory: a bounded LRU, written through by the engine.

Without it every request on a node decoded the node's JSON record (and, before
subscriptions had keys of their own, every subscription with it): subscribing 10 000
entities to one node was O(n²).  The :class:`~.engine.Engine` is the only writer of its
nodes, so the cached record is the truth; the engine changes it on the event loop and
then queues the store write (:meth:`NodeCache.write`), in the same order as the changes.

Invariant: a node with writes still in flight is never read from the store (it could be
read from the last committed state, without them).  So such an entry is never evicted,
a deleted node stays as a tombstone (``None``) until its writes are done, and an entry
whose write failed is dropped (read again from the store) only once none is in flight.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
Key = tuple[str, str]  # (owner, node)
Record = dict[str, Any]

_MISSING: Any = object()


class NodeCache:
    """``(owner, node)`` -> record (with its ``subscriptions``), at most ``size`` of them
    (plus those with writes in flight); ``load`` reads one from the store (None: none)."""

    def __init__(self, load: Callable[[str, str], Awaitable[Record | None]],
                 size: int = 8192) -> None:
        self._load = load
        self.size = size
        self._entries: OrderedDict[Key, Record | None] = OrderedDict()
        self._loading: dict[Key, asyncio.Future[None]] = {}
        self._pending: dict[Key, int] = {}
        self._stale: set[Key] = set()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, owner: str, node: str) -> Record | None:
        """The record; a hit returns without suspending, so a caller that changes it right
        after this returns changes the current record."""
        key = (owner, node)
        while True:
            record = self._entries.get(key, _MISSING)
            if record is not _MISSING:
                self._entries.move_to_end(key)
                return record
            loading = self._loading.get(key)
            if loading is None:
                break
            await asyncio.shield(loading)  # one load per node; then look again
        done = asyncio.get_running_loop().create_future()
        self._loading[key] = done
        try:
            record = await self._load(owner, node)
        finally:
            del self._loading[key]
            done.set_result(None)
        if key in self._entries:  # put there by the engine meanwhile: that one is newer
            return await self.get(owner, node)
        if record is not None:
            self.put(key, record)
        return record

    def put(self, key: Key, record: Record | None) -> None:
        """Make ``record`` the node's (``None``: a tombstone, for a node being deleted: it
        goes once the writes that follow are done); evicts the least recently used entries
        without writes in flight."""
        self._entries[key] = record
        self._entries.move_to_end(key)
        for _ in range(len(self._entries) - self.size):
            oldest = next(iter(self._entries))
            if oldest in self._pending:
                self._entries.move_to_end(oldest)  # the store may lag: keep it
            else:
                del self._entries[oldest]

    def drop_owner(self, owner: str) -> None:
        """Forget ``owner``'s nodes (its data is being deleted under us)."""
        for key in [k for k in self._entries if k[0] == owner]:
            if key in self._pending:
                self._stale.add(key)
            else:
                del self._entries[key]

    def drop_all(self) -> None:
        """Forget every node (as :meth:`drop_owner`, for all owners)."""
        for owner in {key[0] for key in self._entries}:
            self.drop_owner(owner)

    async def write(self, key: Key, write: Awaitable[T]) -> T:
        """Await a store write of the node's (queued by awaiting it at once, so writes reach
        the store in the order the engine changed the records)."""
        self._pending[key] = self._pending.get(key, 0) + 1
        try:
            return await write
        except BaseException:
            self._stale.add(key)  # the store may not hold what the entry says
            raise
        finally:
            left = self._pending[key] - 1
            if left:
                self._pending[key] = left
            else:
                del self._pending[key]
                if key in self._stale or self._entries.get(key, _MISSING) is None:
                    self._stale.discard(key)
                    self._entries.pop(key, None)
