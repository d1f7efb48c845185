"""Copy everything one storage holds into another, empty one (``xmppd storage copy``).

What is copied: every account (username, domain, the SCRAM credentials of every hash, the
disabled flag; never a password: none is stored), then every namespace of each store kind
found in the data (so also those no loaded module opens): key-value rows, and archive
items with their ids, stamps, ``with`` and data in each owner's order (so a client paging
MAM or offline messages by id sees the same archive), and the store versions.  The
account's creation time is not part of the interface: the copy's is the time of the copy.

Memory stays bounded: rows are read in pages of ``batch``
(:meth:`~xmppd.storage.stores.KeyValueStore.scan`,
:meth:`~xmppd.storage.stores.ArchiveStore.scan`), the next page read while the previous one
is written.  Archive pages go through ``start_append``, which both SQL backends write as a
few multi-row statements per page; a later page is started only once the earlier one is
durable, so each owner's items keep their order.

The functions here see two open :class:`~xmppd.storage.base.Storage` objects and nothing
else: opening them, checking that no server uses them, and printing the :class:`Progress`
reports is the command's part (:mod:`xmppd.cli`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xmppd.storage.base import Storage, StorageError
from xmppd.storage.credentials import HASH_NAMES, ScramCredentials
from xmppd.storage.stores import SCAN_PAGE, ArchiveItem

__all__ = ["Census", "CopyError", "Progress", "census", "copy_storage", "differences",
           "target_problem"]


class CopyError(StorageError):
    """The copy could not be completed (the target holds part of it)."""


@dataclass(frozen=True)
class Progress:
    """A report after each page: ``kind`` is ``accounts``, ``keyvalue``, ``archive`` or
    ``versions``; ``total`` what the source held when the copy started."""

    kind: str
    namespace: str
    done: int
    total: int
    finished: bool = False


@dataclass
class Census:
    """What a storage holds, counted: accounts, rows per namespace of each kind, and the
    store versions."""

    accounts: int = 0
    keyvalue: dict[str, int] = field(default_factory=dict)
    archive: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    #: disabled accounts (counted by the copy only: a census does not ask every account)
    disabled: int = 0

    @property
    def items(self) -> int:
        return sum(self.keyvalue.values()) + sum(self.archive.values())


async def census(storage: Storage) -> Census:
    """Count what ``storage`` holds (the kept counts of each archive: no item scan)."""
    found = Census(accounts=len(await storage.list_accounts()),
                   versions=await storage.store_versions())
    for ns in await storage.namespaces("keyvalue"):
        found.keyvalue[ns] = (await storage.open_store(ns, "keyvalue").size())[1]
    for ns in await storage.namespaces("archive"):
        found.archive[ns] = (await storage.open_store(ns, "archive").size())[1]
    return found


def target_problem(held: Census) -> str | None:
    """Why a storage holding ``held`` cannot take a copy (anything but store versions,
    which a server started on a new database sets), else None."""
    parts = []
    if held.accounts:
        parts.append(f"{held.accounts} account(s)")
    parts += [f"{n} {kind} row(s) in {ns!r}" for kind, table in
              (("key-value", held.keyvalue), ("archive", held.archive))
              for ns, n in table.items() if n]
    if not parts:
        return None
    shown = ", ".join(parts[:4]) + (", ..." if len(parts) > 4 else "")
    return f"it is not empty ({shown}): copy only into a new, empty database"


def differences(expected: Census, got: Census, expected_name: str, got_name: str) -> list[str]:
    """One line per count that differs between two censuses (accounts, rows per
    namespace and kind, versions)."""
    lines = []
    if expected.accounts != got.accounts:
        lines.append(f"accounts: {expected.accounts} {expected_name}, {got.accounts} {got_name}")
    for kind, mine, theirs in (("key-value", expected.keyvalue, got.keyvalue),
                               ("archive", expected.archive, got.archive)):
        for ns in sorted(mine.keys() | theirs.keys()):
            a, b = mine.get(ns, 0), theirs.get(ns, 0)
            if a != b:
                lines.append(f"{kind} {ns!r}: {a} {expected_name}, {b} {got_name}")
    for ns in sorted(expected.versions.keys() | got.versions.keys()):
        a, b = expected.versions.get(ns, 0), got.versions.get(ns, 0)
        if a != b:
            lines.append(f"version of {ns!r}: {a} {expected_name}, {b} {got_name}")
    return lines


Report = Callable[[Progress], None]


async def copy_storage(
    source: Storage, target: Storage, *, batch: int = SCAN_PAGE, progress: Report | None = None,
) -> Census:
    """Copy all of ``source`` into ``target`` (both open; see :func:`target_problem`);
    returns what was copied.  Raises :class:`CopyError` naming the first row the target
    refused."""
    report: Report = progress or (lambda p: None)
    plan = await census(source)
    copied = Census()
    copied.accounts, copied.disabled = await _copy_accounts(
        source, target, plan.accounts, batch, report)
    for ns, total in plan.keyvalue.items():
        copied.keyvalue[ns] = await _copy_keyvalue(source, target, ns, total, batch, report)
    for ns, total in plan.archive.items():
        copied.archive[ns] = await _copy_archive(source, target, ns, total, batch, report)
    # The source's versions; a version the target set alone (a server started on it) is
    # reset, so that the module migrates the copied data from where the source was.
    versions = await source.store_versions()
    for ns in (await target.store_versions()).keys() - versions.keys():
        await target.open_store(ns).set_version(0)
    for ns, version in versions.items():
        await target.open_store(ns).set_version(version)
    copied.versions = versions
    report(Progress("versions", "", len(versions), len(versions), True))
    return copied


async def _pages(
    read: Callable[[Any], Awaitable[Sequence[Any]]],
    position: Callable[[Any], Any],
    write: Callable[[Sequence[Any]], Awaitable[None]],
) -> int:
    """Read pages until a short one, writing each while the next is read; returns the
    rows written."""
    done = 0
    page = await read(None)
    while page:
        last = position(page[-1])
        following = asyncio.ensure_future(read(last))
        try:
            await write(page)
        except BaseException:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            raise
        done += len(page)
        page = await following
    return done


async def _settle(what: str, awaitables: Sequence[Awaitable[Any]], rows: Sequence[Any],
                  name: Callable[[Any], str]) -> None:
    """Wait for every write of a page; a failure is the first refused row's CopyError."""
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    for row, outcome in zip(rows, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed = sum(isinstance(o, BaseException) for o in outcomes)
            raise CopyError(f"{what}: the target refused {name(row)}: {outcome}"
                            f" ({failed} row(s) of this page failed)") from None


async def _copy_accounts(
    source: Storage, target: Storage, total: int, batch: int, report: Report,
) -> tuple[int, int]:
    accounts = await source.list_accounts()  # pairs of short strings: kept whole
    done = disabled = 0

    async def read(account: tuple[str, str]) -> tuple[dict[str, ScramCredentials], bool]:
        creds = {}
        for hash_name in HASH_NAMES:
            found = await source.get_scram(*account, hash_name)
            if found is not None:
                creds[hash_name] = found
        return creds, await source.account_disabled(*account)

    async def create(account: tuple[str, str], creds: dict[str, ScramCredentials],
                     off: bool) -> None:
        await target.create_account(*account, creds)
        if off:
            await target.set_disabled(*account, True)

    for at in range(0, len(accounts), batch):
        page = accounts[at:at + batch]
        found = await asyncio.gather(*(read(a) for a in page))
        for (username, domain), (creds, _) in zip(page, found, strict=True):
            if not creds:  # only a damaged source: create_account refuses none
                raise CopyError(f"accounts: {username}@{domain} has no SCRAM credentials"
                                " in the source")
        await _settle("accounts", [create(a, c, off) for a, (c, off) in zip(page, found,
                                                                            strict=True)],
                      page, lambda a: f"{a[0]}@{a[1]}")
        done += len(page)
        disabled += sum(off for _, off in found)
        report(Progress("accounts", "", done, total))
    report(Progress("accounts", "", done, total, True))
    return done, disabled


async def _copy_keyvalue(
    source: Storage, target: Storage, ns: str, total: int, batch: int, report: Report,
) -> int:
    src, dst = source.open_store(ns, "keyvalue"), target.open_store(ns, "keyvalue")
    done = 0

    async def write(page: Sequence[tuple[str, str, Any]]) -> None:
        nonlocal done
        await _settle(f"key-value {ns!r}", [dst.set(o, k, v) for o, k, v in page], page,
                      lambda r: f"key {r[1]!r} of {r[0]!r}")
        done += len(page)
        report(Progress("keyvalue", ns, done, total))

    copied = await _pages(lambda after: src.scan(after, batch), lambda r: (r[0], r[1]), write)
    report(Progress("keyvalue", ns, copied, total, True))
    return copied


async def _copy_archive(
    source: Storage, target: Storage, ns: str, total: int, batch: int, report: Report,
) -> int:
    src, dst = source.open_store(ns, "archive"), target.open_store(ns, "archive")
    done = 0

    async def write(page: Sequence[tuple[str, ArchiveItem]]) -> None:
        nonlocal done
        # Started in one go (one batch of the target's writer), in the page's order.
        futures = [dst.start_append(owner, item.data, stamp=item.stamp,
                                    with_jid=item.with_jid, id=item.id) for owner, item in page]
        await _settle(f"archive {ns!r}", futures, page,
                      lambda r: f"item {r[1].id!r} of {r[0]!r}")
        done += len(page)
        report(Progress("archive", ns, done, total))

    copied = await _pages(lambda after: src.scan(after, batch), lambda r: (r[0], r[1].seq),
                          write)
    report(Progress("archive", ns, copied, total, True))
    return copied
