"""Generic per-module stores: a key-value store and an ordered archive, per namespace.

A module opens its own stores through the storage (``storage.open_store("muc")``,
``storage.open_store("mam", "archive")``) instead of adding a method group to
:class:`~xmppd.storage.base.Storage`; every backend implements these two small interfaces
once.  A *namespace* names the module's data (``[a-z0-9_.-]+``, at most 64 characters);
the key-value store and the archive of one namespace are separate and may both be used.

Owners
    Every datum belongs to an *owner* string: a bare JID (``"juliet@example.com"``), a
    room or a host (``"room@conference.example.com"``, ``"pubsub.example.com"``), or
    ``""`` for server-wide data.  ``"<owner>/<anything>"`` is a *sub-owner* of ``owner``,
    e.g. one PEP node of a user (``"juliet@example.com/urn:xmpp:avatar:data"``): bare
    JIDs never contain ``/``, so :meth:`Storage.delete_user_data(owner)
    <xmppd.storage.base.Storage.delete_user_data>` (account deletion) removes the owner's
    data and every sub-owner's, in every namespace of both kinds.  ``delete_owner`` on one
    store removes exactly one owner.

Key-value values
    JSON values: ``dict`` (``str`` keys), ``list``, ``str``, ``int``, ``float`` (finite),
    ``bool`` and, inside containers, ``None``.  Tuples, non-string dict keys and other
    types are refused (``TypeError``) rather than silently changed, so what ``get``
    returns equals what was set.  A top-level ``None`` is never stored: ``set(o, k, None)``
    deletes the key, and ``get`` returns the default for a missing key.  Returned values
    are fresh copies.

Archive
    Items are ordered by ``seq``, an integer assigned at append, increasing across the
    whole backend and never reused; an item replaced by id gets a new ``seq`` (it moves to
    the end).  Item ids are unique per (namespace, owner); ``append`` generates one when
    none is given (:func:`new_item_id`: time-ordered, with 48 random bits).

Batched appends
    :meth:`ArchiveStore.start_append` starts an append and returns its future at once (no
    task).  The SQLite backend collects the appends started in one event-loop iteration
    into one job of its writer thread: one transaction, one ``executemany`` for the rows,
    one ``archive_counts`` upsert per owner.  Each append keeps its own future and its own
    outcome (a duplicate id fails that append only; ``limit`` counts the earlier appends
    of the same batch), resolved when the batch commits.
    :meth:`ArchiveStore.start_append_shared` is the cheaper variant for writers that need
    neither: the appends of one iteration share one future, resolved to their failures
    (the ABC's default builds it on ``start_append``).
"""

from __future__ import annotations

import abc
import asyncio
import json
import math
import re
import time
from binascii import b2a_base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from xmppd.randompool import random_u64
from xmppd.storage.base import StorageError

__all__ = [
    "UNCHANGED",
    "AppendFailure",
    "ArchiveItem",
    "ArchiveStore",
    "ItemExists",
    "ItemNotFound",
    "KeyValueStore",
    "StoreKind",
    "check_namespace",
    "check_owner",
    "decode_value",
    "encode_value",
    "migrate_store",
    "new_item_id",
]

StoreKind = Literal["keyvalue", "archive"]
#: Items per page of a whole-namespace ``scan`` by default.
SCAN_PAGE = 1000
STORE_KINDS: tuple[str, ...] = ("keyvalue", "archive")

_NAMESPACE = re.compile(r"[a-z0-9_.-]{1,64}")


class ItemNotFound(StorageError):
    """An archive id given as a paging anchor (``after_id``/``before_id``) does not exist
    (XEP-0313/XEP-0059 answer ``<item-not-found/>``)."""


class ItemExists(StorageError):
    """``append`` with an explicit id that is already stored (and ``replace=False``)."""


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


#: Returned by an :meth:`KeyValueStore.update` function: keep the stored value, write nothing.
UNCHANGED: Any = _Unchanged()


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"bad store namespace {namespace!r} (want [a-z0-9_.-]{{1,64}})")
    return namespace


def _check_text(what: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (lone surrogate)") from None
    return value


def check_owner(owner: str) -> str:
    return _check_text("owner", owner)


def check_key(key: str) -> str:
    return _check_text("key", key)


def check_item_id(id: str) -> str:
    return _check_text("id", id)


def check_user_owner(owner: str) -> str:
    """An owner whose data *and sub-owners'* may be deleted: a non-empty owner without '/'."""
    check_owner(owner)
    if not owner or "/" in owner:
        raise ValueError(f"delete_user_data needs a bare owner (no '/'), got {owner!r}")
    return owner


def subowner_range(owner: str) -> tuple[str, str]:
    """``[low, high)``: the strings that start with ``owner + "/"`` ('0' follows '/')."""
    return owner + "/", owner + "0"


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > 100:
        raise ValueError("value nested too deeply")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a JSON number")
        return
    if isinstance(value, list):
        for v in value:
            _check_json(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"dict keys must be str, got {k!r}")
            _check_json(v, depth + 1)
        return
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def encode_value(value: Any) -> str:
    """The stored JSON text of a key-value value (checked: see the module docstring)."""
    _check_json(value)
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("value holds a string that is not valid Unicode") from None
    return text


def decode_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


#: Standard base64 to the URL-safe alphabet in ASCII order: ids compare as their bytes do.
_SORTED_B64 = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz",
)
_last_id_us = 0


def new_item_id() -> str:
    """A server-generated archive id: 16 URL-safe characters, increasing in the order they
    are made (48 bits of microseconds since the epoch, strictly increasing within the
    process) followed by 48 random bits (from the pooled ``os.urandom`` of
    :mod:`xmppd.randompool`: every archived message needs one on the event-loop thread).

    Why time-ordered: an index on ``(owner, id)`` then grows at the end of each owner's
    range, like the one on ``(owner, seq)``, instead of touching a random page of a large
    index per item (the SQLite archive's largest write cost with random ids).  The time is
    no secret: ids are shown to the archive's owner (and a room's occupants), who see each
    item's time anyway; the random half keeps ids made after a clock step back unique.
    """
    global _last_id_us
    us = time.time_ns() // 1000
    if us <= _last_id_us:
        us = _last_id_us + 1
    _last_id_us = us
    raw = ((us & 0xFFFF_FFFF_FFFF) << 48 | random_u64() >> 16).to_bytes(12, "big")
    return b2a_base64(raw, newline=False).translate(_SORTED_B64).decode()


@dataclass(frozen=True)
class ArchiveItem:
    """One archived item: its id, its position (``seq``), time, peer and payload."""

    id: str
    seq: int
    stamp: float
    with_jid: str
    data: bytes


UpdateFn = Callable[[Any], Any]
#: An append that failed in a shared batch: ``(owner, id, error)``.
AppendFailure = tuple[str, str, BaseException]

#: The columns SQL backends read an archive row with, in :func:`archive_item`'s order.
ITEM_COLUMNS = "id, seq, stamp, with_jid, data"


def archive_item(row: Sequence[Any]) -> ArchiveItem:
    """An :class:`ArchiveItem` from a row of :data:`ITEM_COLUMNS`."""
    return ArchiveItem(row[0], row[1], row[2], row[3], bytes(row[4]))


class Append(NamedTuple):
    """One append waiting for its batch (the SQL backends' ``start_append``)."""

    ns: str
    owner: str
    id: str  # generated by the caller when ``generated``
    stamp: float
    with_jid: str
    data: bytes
    limit: int
    replace: bool
    generated: bool
    future: asyncio.Future[ArchiveItem | None]


def settle_appends(batch: Sequence[Append], outcomes: Sequence[Any]) -> None:
    """Give each append of a batch its outcome: a seq (the item is the append's
    arguments), an item, None (over its limit) or an exception.  Runs on the loop thread."""
    for a, outcome in zip(batch, outcomes, strict=True):
        future = a.future
        if future.done():  # cancelled by its waiter meanwhile
            continue
        if type(outcome) is int:
            future.set_result(ArchiveItem(a.id, outcome, a.stamp, a.with_jid, a.data))
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class KeyValueStore(abc.ABC):
    """JSON values keyed by ``(owner, key)`` within one namespace (see the module doc)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = check_namespace(namespace)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.namespace!r}>"

    @abc.abstractmethod
    async def get(self, owner: str, key: str, default: Any = None) -> Any:
        """The value, or ``default`` when the key is not set."""

    @abc.abstractmethod
    async def set(self, owner: str, key: str, value: Any) -> None:
        """Store ``value`` (``None``: delete the key)."""

    @abc.abstractmethod
    async def delete(self, owner: str, key: str) -> bool:
        """Delete the key; False if it was not set."""

    @abc.abstractmethod
    async def keys(self, owner: str) -> list[str]:
        """The owner's keys, sorted (by code point)."""

    @abc.abstractmethod
    async def items(self, owner: str) -> dict[str, Any]:
        """All of the owner's keys and values, in key order."""

    @abc.abstractmethod
    async def update(self, owner: str, key: str, fn: UpdateFn) -> tuple[Any, Any]:
        """Atomically read the value, apply ``fn`` and store its result: ``(old, new)``.

        ``fn`` gets the stored value (a fresh copy it may mutate and return) or ``None``
        when the key is not set, and returns the new value, ``None`` to delete the key, or
        :data:`UNCHANGED` to write nothing.  It runs inside the write transaction (on the
        backend's thread for SQL backends), so it must be a quick pure function; if it
        raises, nothing is written and the exception propagates.  ``new`` is the value
        stored afterwards (``None``: not set).
        """

    @abc.abstractmethod
    async def owners(self) -> list[str]:
        """Every owner with at least one key, sorted."""

    @abc.abstractmethod
    async def delete_owner(self, owner: str) -> int:
        """Delete every key of exactly this owner; returns how many were deleted."""

    @abc.abstractmethod
    async def get_version(self) -> int:
        """The namespace's schema version (0 if never set); shared with its archive."""

    @abc.abstractmethod
    async def set_version(self, version: int) -> None: ...

    @abc.abstractmethod
    async def scan(
        self, after: tuple[str, str] | None = None, limit: int = SCAN_PAGE
    ) -> list[tuple[str, str, Any]]:
        """The namespace's ``(owner, key, value)``s in ``(owner, key)`` order: at most
        ``limit`` of them, after the position ``after`` (the last ``(owner, key)`` read,
        excluded).  A whole-namespace read in bounded pages, one statement each."""

    @abc.abstractmethod
    async def size(self) -> tuple[int, int]:
        """(owners with at least one key, keys) of the whole namespace."""


class ArchiveStore(abc.ABC):
    """An ordered log of :class:`ArchiveItem` per owner within one namespace.

    Filters of :meth:`query` and :meth:`count` combine (AND):

    * ``with_jid``: items appended with exactly this ``with_jid``;
    * ``start`` / ``end``: ``start <= stamp <= end`` (either bound inclusive, may be None);
    * ``after_id`` / ``before_id``: items after / before that item in ``seq`` order (the
      anchor itself excluded); an anchor that does not exist raises :class:`ItemNotFound`;
    * ``ids``: only those items (unknown ids are skipped: compare the result's ids).
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = check_namespace(namespace)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.namespace!r}>"

    @abc.abstractmethod
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
        """Append an item and return it (durable when this returns).

        ``id``: the item's id; None generates one (:func:`new_item_id`).  An id already
        stored raises :class:`ItemExists`, unless ``replace``: then the old item is deleted
        and the new one (new ``seq``) appended, in one transaction.  ``limit`` (0: none):
        return None, storing nothing, when the owner would hold more than ``limit`` items.
        """

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
        """Start :meth:`append` now and return its future (resolved once durable), without
        the cost of a task: for writers that do not wait, such as the archive of every
        routed message.  Arguments are checked at once (``TypeError``/``ValueError``)."""
        return asyncio.ensure_future(self.append(
            owner, data, stamp=stamp, with_jid=with_jid, id=id, limit=limit, replace=replace))

    def start_append_shared(
        self, owner: str, data: bytes, *, stamp: float, with_jid: str = "", id: str,
    ) -> asyncio.Future[list[AppendFailure]]:
        """Start appending an item whose id the caller made (:func:`new_item_id`), for a
        writer that needs neither the item nor a future of its own (the archive of every
        routed message): the returned future may be shared by every such append started in
        the same event-loop iteration.  It resolves once they are all durable or failed, to
        the failures (``(owner, id, error)``, usually none); it raises only when the
        storage could not run them.  Arguments are checked at once.

        This default gives each append a future of its own (built on :meth:`start_append`);
        the SQLite backend shares one per batch (no future, callbacks or item per message).
        """
        if id is None:
            raise TypeError("start_append_shared needs the item's id")
        loop = asyncio.get_running_loop()
        write = self.start_append(owner, data, stamp=stamp, with_jid=with_jid, id=id)
        shared: asyncio.Future[list[AppendFailure]] = loop.create_future()

        def done(write: asyncio.Future[ArchiveItem | None]) -> None:
            if shared.cancelled():
                return
            if write.cancelled():
                shared.cancel()
            elif (error := write.exception()) is not None:
                shared.set_result([(owner, id, error)])
            else:
                shared.set_result([])

        write.add_done_callback(done)
        return shared

    @abc.abstractmethod
    async def get(self, owner: str, id: str) -> ArchiveItem | None: ...

    @abc.abstractmethod
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
        """Matching items in ``seq`` order, or newest first when ``reverse``; at most
        ``limit`` of them (the first ones in that order).

        RSM paging: the first page is ``query(o, limit=n)``, the next
        ``query(o, after_id=last.id, limit=n)``; the last page is
        ``query(o, limit=n, reverse=True)`` and the page before an item
        ``query(o, before_id=first.id, limit=n, reverse=True)`` (reverse those lists for
        chronological order).
        """

    @abc.abstractmethod
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
        """How many items :meth:`query` would match without a limit (O(1) unfiltered)."""

    @abc.abstractmethod
    async def delete(self, owner: str, ids: Sequence[str]) -> int:
        """Delete the given items (unknown ids are ignored); returns how many."""

    @abc.abstractmethod
    async def delete_before(self, stamp: float) -> int:
        """Retention: delete every item of every owner with ``stamp < stamp``.

        SQL backends delete in bounded chunks, each its own transaction, so other writes
        are not held up behind a large purge; returns the total deleted.
        """

    @abc.abstractmethod
    async def trim(self, owner: str, keep: int) -> int:
        """Keep only the newest ``keep`` items of the owner; returns how many were deleted."""

    @abc.abstractmethod
    async def owners(self) -> list[str]:
        """Every owner with at least one item, sorted."""

    @abc.abstractmethod
    async def size(self) -> tuple[int, int]:
        """(owners with at least one item, items) of the whole namespace, from the kept
        counts (no scan of the items): for the metrics."""

    @abc.abstractmethod
    async def delete_owner(self, owner: str) -> int:
        """Delete every item of exactly this owner; returns how many were deleted."""

    @abc.abstractmethod
    async def get_version(self) -> int:
        """The namespace's schema version (0 if never set); shared with its key-value store."""

    @abc.abstractmethod
    async def set_version(self, version: int) -> None: ...

    @abc.abstractmethod
    async def scan(
        self, after: tuple[str, int] | None = None, limit: int = SCAN_PAGE
    ) -> list[tuple[str, ArchiveItem]]:
        """Every owner's items as ``(owner, item)``, in ``(owner, seq)`` order: at most
        ``limit`` of them, after the position ``after`` (the ``(owner, seq)`` of the last
        item read, excluded).  A whole-namespace read in bounded pages, each an index
        range (never a scan of the items before the position)."""


def check_version(version: int) -> int:
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"bad store version {version!r}")
    return version


def check_kind(kind: str) -> str:
    if kind not in STORE_KINDS:
        raise ValueError(f"unknown store kind {kind!r}")
    return kind


def check_scan_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"bad scan limit {limit!r}")
    return limit


def check_item_args(data: bytes, stamp: float, with_jid: str, id: str | None, limit: int) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("archive data must be bytes")
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or math.isnan(stamp):
        raise TypeError(f"bad stamp {stamp!r}")
    _check_text("with_jid", with_jid)
    if id is not None and (_check_text("id", id) == ""):
        raise ValueError("an archive id cannot be empty")
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"bad limit {limit!r}")
    return bytes(data)


def check_filters(
    with_jid: str | None, after_id: str | None, before_id: str | None,
    ids: Sequence[str] | None, limit: int | None = None,
) -> list[str] | None:
    """Type-check query/count filters; returns ``ids`` de-duplicated (order kept)."""
    for what, value in (("with_jid", with_jid), ("after_id", after_id), ("before_id", before_id)):
        if value is not None:
            _check_text(what, value)
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"bad limit {limit!r}")
    if ids is None:
        return None
    if isinstance(ids, str):
        raise TypeError("ids must be a sequence of str, not a str")
    return list(dict.fromkeys(_check_text("id", i) for i in ids))


async def migrate_store(
    store: KeyValueStore | ArchiveStore,
    migrations: Sequence[Callable[[], Awaitable[None]]],
) -> int:
    """Run a module's data migrations for the store's namespace; returns the new version.

    ``migrations[n - 1]`` brings the namespace from version ``n - 1`` to ``n``; the ones
    not applied yet run in order, the version being recorded after each.  A migration is
    not one transaction with its version bump, so write it to be safe to run again.
    """
    current = await store.get_version()
    if current > len(migrations):
        raise StorageError(
            f"store {store.namespace!r} has version {current}; this code knows {len(migrations)}"
        )
    for number in range(current + 1, len(migrations) + 1):
        await migrations[number - 1]()
        await store.set_version(number)
    return len(migrations)
