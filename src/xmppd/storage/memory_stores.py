"""The per-module stores of :class:`~xmppd.storage.memory.MemoryStorage`, over dicts.

Values are kept as their JSON text, like the SQL backends, so that both behave the same
(checked on ``set``, a fresh copy on every read).  An owner's archive is a dict from id to
item: insertion order is ``seq`` order, since a replaced item is re-inserted at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xmppd.storage.base import StorageError
from xmppd.storage.stores import (
    SCAN_PAGE,
    UNCHANGED,
    ArchiveItem,
    ArchiveStore,
    ItemExists,
    ItemNotFound,
    KeyValueStore,
    UpdateFn,
    check_filters,
    check_item_args,
    check_item_id,
    check_key,
    check_owner,
    check_scan_limit,
    check_version,
    decode_value,
    encode_value,
    new_item_id,
)

if TYPE_CHECKING:
    from xmppd.storage.memory import MemoryStorage

__all__ = ["MemoryArchiveStore", "MemoryKeyValueStore", "StoreState"]


class StoreState:
    """Everything the stores of one open :class:`MemoryStorage` hold."""

    def __init__(self) -> None:
        #: namespace -> owner -> key -> JSON text
        self.kv: dict[str, dict[str, dict[str, str]]] = {}
        #: namespace -> owner -> id -> item (in seq order)
        self.archives: dict[str, dict[str, dict[str, ArchiveItem]]] = {}
        self.versions: dict[str, int] = {}
        self.seq = 0


class _MemoryStore:
    namespace: str

    def __init__(self, storage: MemoryStorage, namespace: str) -> None:
        super().__init__(namespace)  # type: ignore[call-arg]
        self._storage = storage

    @property
    def _state(self) -> StoreState:
        self._storage._data  # noqa: B018 - raises StorageError when closed
        return self._storage.state

    async def get_version(self) -> int:
        return self._state.versions.get(self.namespace, 0)

    async def set_version(self, version: int) -> None:
        self._state.versions[self.namespace] = check_version(version)


class MemoryKeyValueStore(_MemoryStore, KeyValueStore):
    def _table(self) -> dict[str, dict[str, str]]:
        return self._state.kv.setdefault(self.namespace, {})

    def _owner(self, owner: str) -> dict[str, str]:
        return self._table().get(check_owner(owner), {})

    def _put(self, owner: str, key: str, text: str | None) -> None:
        table = self._table()
        if text is not None:
            table.setdefault(owner, {})[key] = text
            return
        values = table.get(owner)
        if values is not None:
            values.pop(key, None)
            if not values:
                del table[owner]

    async def get(self, owner: str, key: str, default: Any = None) -> Any:
        text = self._owner(owner).get(check_key(key))
        return default if text is None else decode_value(text)

    async def set(self, owner: str, key: str, value: Any) -> None:
        check_owner(owner)
        check_key(key)
        text = None if value is None else encode_value(value)
        self._put(owner, key, text)

    async def delete(self, owner: str, key: str) -> bool:
        existed = check_key(key) in self._owner(owner)
        self._put(owner, key, None)
        return existed

    async def keys(self, owner: str) -> list[str]:
        return sorted(self._owner(owner))

    async def items(self, owner: str) -> dict[str, Any]:
        values = self._owner(owner)
        return {k: decode_value(values[k]) for k in sorted(values)}

    async def update(self, owner: str, key: str, fn: UpdateFn) -> tuple[Any, Any]:
        old_text = self._owner(owner).get(check_key(key))
        new = fn(decode_value(old_text))
        old = decode_value(old_text)
        if new is UNCHANGED:
            return old, old
        text = None if new is None else encode_value(new)
        self._put(owner, key, text)
        return old, decode_value(text)

    async def owners(self) -> list[str]:
        return sorted(self._table())

    async def delete_owner(self, owner: str) -> int:
        return len(self._table().pop(check_owner(owner), {}))

    async def scan(
        self, after: tuple[str, str] | None = None, limit: int = SCAN_PAGE
    ) -> list[tuple[str, str, Any]]:
        check_scan_limit(limit)
        table = self._table()
        page: list[tuple[str, str, Any]] = []
        for owner in sorted(table):
            if after is not None and owner < after[0]:
                continue
            for key in sorted(table[owner]):
                if after is None or (owner, key) > after:
                    page.append((owner, key, decode_value(table[owner][key])))
                    if len(page) == limit:
                        return page
        return page

    async def size(self) -> tuple[int, int]:
        table = self._table()
        return len(table), sum(len(values) for values in table.values())


class MemoryArchiveStore(_MemoryStore, ArchiveStore):
    def _table(self) -> dict[str, dict[str, ArchiveItem]]:
        return self._state.archives.setdefault(self.namespace, {})

    def _log(self, owner: str) -> dict[str, ArchiveItem]:
        return self._table().get(check_owner(owner), {})

    def _append(
        self,
        owner: str,
        data: bytes,
        *,
        stamp: float,
        with_jid: str = "",
        id: str | None = None,
        limit: int = 0,
        replace: bool = False,
    ) -> ArchiveItem | None:
        state = self._state
        log = self._table().setdefault(owner, {})
        replacing = id is not None and id in log
        if replacing and not replace:
            raise ItemExists(f"{owner!r} already has an item {id!r}")
        if limit and len(log) + (0 if replacing else 1) > limit:
            if not log:
                del self._table()[owner]
            return None
        if id is None:
            id = new_item_id()
            while id in log:  # pragma: no cover - 96 random bits
                id = new_item_id()
        log.pop(id, None)
        state.seq += 1
        item = ArchiveItem(id, state.seq, float(stamp), with_jid, data)
        log[id] = item
        return item

    async def append(
        self,
        owner: str,
        data: bytes,
        *,
        stamp: float,
        with_jid: str = "",
        id: str | None = None,
        limit: int = 0,
        replace: bool = False,
    ) -> ArchiveItem | None:
        data = check_item_args(data, stamp, with_jid, id, limit)
        check_owner(owner)
        return self._append(owner, data, stamp=stamp, with_jid=with_jid, id=id, limit=limit,
                            replace=replace)

    def start_append(
        self,
        owner: str,
        data: bytes,
        *,
        stamp: float,
        with_jid: str = "",
        id: str | None = None,
        limit: int = 0,
        replace: bool = False,
    ) -> asyncio.Future[ArchiveItem | None]:
        data = check_item_args(data, stamp, with_jid, id, limit)
        check_owner(owner)
        future: asyncio.Future[ArchiveItem | None] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._append(owner, data, stamp=stamp, with_jid=with_jid, id=id,
                                           limit=limit, replace=replace))
        except StorageError as exc:  # ItemExists, closed storage
            future.set_exception(exc)
        return future

    async def get(self, owner: str, id: str) -> ArchiveItem | None:
        return self._log(owner).get(check_item_id(id))

    def _select(
        self, owner: str, with_jid: str | None, start: float | None, end: float | None,
        after_id: str | None, before_id: str | None, ids: Sequence[str] | None,
        limit: int | None = None,
    ) -> list[ArchiveItem]:
        wanted = check_filters(with_jid, after_id, before_id, ids, limit)
        log = self._log(owner)
        low = high = None
        if after_id is not None:
            if after_id not in log:
                raise ItemNotFound(f"no item {after_id!r}")
            low = log[after_id].seq
        if before_id is not None:
            if before_id not in log:
                raise ItemNotFound(f"no item {before_id!r}")
            high = log[before_id].seq
        items = log.values() if wanted is None else sorted(
            (log[i] for i in wanted if i in log), key=lambda i: i.seq
        )
        return [
            i for i in items
            if (with_jid is None or i.with_jid == with_jid)
            and (start is None or i.stamp >= start)
            and (end is None or i.stamp <= end)
            and (low is None or i.seq > low)
            and (high is None or i.seq < high)
        ]

    async def query(
        self,
        owner: str,
        *,
        with_jid: str | None = None,
        start: float | None = None,
        end: float | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        ids: Sequence[str] | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[ArchiveItem]:
        found = self._select(owner, with_jid, start, end, after_id, before_id, ids, limit)
        if reverse:
            found.reverse()
        return found if limit is None else found[:limit]

    async def count(
        self,
        owner: str,
        *,
        with_jid: str | None = None,
        start: float | None = None,
        end: float | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> int:
        return len(self._select(owner, with_jid, start, end, after_id, before_id, ids))

    def _remove(self, owner: str, doomed: list[str]) -> int:
        table = self._table()
        log = table.get(owner, {})
        for i in doomed:
            del log[i]
        if owner in table and not log:
            del table[owner]
        return len(doomed)

    async def delete(self, owner: str, ids: Sequence[str]) -> int:
        wanted = check_filters(None, None, None, ids) or []
        log = self._log(owner)
        return self._remove(owner, [i for i in wanted if i in log])

    async def delete_before(self, stamp: float) -> int:
        deleted = 0
        for owner, log in list(self._table().items()):
            deleted += self._remove(owner, [i.id for i in log.values() if i.stamp < stamp])
        return deleted

    async def trim(self, owner: str, keep: int) -> int:
        if not isinstance(keep, int) or keep < 0:
            raise ValueError(f"bad keep {keep!r}")
        log = self._log(owner)
        return self._remove(owner, list(log)[: max(0, len(log) - keep)])

    async def owners(self) -> list[str]:
        return sorted(self._table())

    async def size(self) -> tuple[int, int]:
        table = self._table()
        return len(table), sum(len(log) for log in table.values())

    async def delete_owner(self, owner: str) -> int:
        return len(self._table().pop(check_owner(owner), {}))

    async def scan(
        self, after: tuple[str, int] | None = None, limit: int = SCAN_PAGE
    ) -> list[tuple[str, ArchiveItem]]:
        check_scan_limit(limit)
        table = self._table()
        page: list[tuple[str, ArchiveItem]] = []
        for owner in sorted(table):
            if after is not None and owner < after[0]:
                continue
            for item in table[owner].values():  # in seq order
                if after is None or (owner, item.seq) > after:
                    page.append((owner, item))
                    if len(page) == limit:
                        return page
        return page
