"""The roster module's data: roster rows, their versioning, and how they are stored.

A user's roster is one value in the roster module's key-value store (namespace
``roster``, owner = the user's bare JID, key :data:`ROSTER_KEY`)::

    {"version": 4,
     "items": {"romeo@example.net": {"name": "Romeo", "subscription": "both",
                                     "ask": false, "groups": ["Friends"],
                                     "approved": false, "request": null,
                                     "listed": true, "version": 2}, ...}}

``request`` is the pending inbound subscription request as serialized stanza text (or
null).  One key per user makes every change one atomic read-modify-write
(:meth:`KeyValueStore.update <xmppd.storage.stores.KeyValueStore.update>`) and every read
(a login, each presence broadcast) one key lookup.  SQLite migration 4
(:mod:`xmppd.storage.sqlite`) writes this layout from the tables older versions used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from xmppd.storage.stores import UNCHANGED, KeyValueStore

__all__ = [
    "ROSTER_KEY",
    "SUBSCRIPTIONS",
    "Roster",
    "RosterChangeFn",
    "RosterItem",
    "RosterStore",
    "RosterUpdate",
    "apply_roster_change",
]

ROSTER_KEY = "roster"
SUBSCRIPTIONS = ("none", "to", "from", "both")


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
    """All rows of a user's roster (see :attr:`RosterItem.listed`), sorted by JID, and its
    version."""

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
    """The outcome of :meth:`RosterStore.update`: the row before and after, and the roster
    version after."""

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


RosterChangeFn = Callable[[RosterItem | None], RosterItem | None]


def apply_roster_change(
    before: RosterItem | None, change: RosterChangeFn, version: int
) -> tuple[RosterItem | None, int]:
    """The new row (None: unchanged) and the new roster version: the version is bumped
    only when the visible state of the row changed (see :meth:`RosterItem.visible`)."""
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


def item_value(item: RosterItem) -> dict[str, Any]:
    """The stored form of a row (its JID is the key it is stored under)."""
    return {
        "name": item.name, "subscription": item.subscription, "ask": item.ask,
        "groups": list(item.groups), "approved": item.approved,
        "request": None if item.request is None else item.request.decode("utf-8", "replace"),
        "listed": item.listed, "version": item.version,
    }


def item_from_value(jid: str, value: dict[str, Any]) -> RosterItem:
    request = value.get("request")
    return RosterItem(
        jid, value.get("name", ""), value.get("subscription", "none"),
        bool(value.get("ask")), tuple(value.get("groups", ())), bool(value.get("approved")),
        None if request is None else request.encode("utf-8"),
        bool(value.get("listed", True)), value.get("version", 0),
    )


def roster_from_value(value: dict[str, Any] | None) -> Roster:
    if not value:
        return Roster(0, ())
    items = value.get("items", {})
    return Roster(value.get("version", 0),
                  tuple(item_from_value(j, items[j]) for j in sorted(items)))


class RosterStore:
    """Rosters in a key-value store (the layout in the module docstring); owners are bare
    JIDs as strings."""

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store

    async def get(self, owner: str) -> Roster:
        """Every stored row of the user's roster (listed or not) and the roster version."""
        return roster_from_value(await self.store.get(owner, ROSTER_KEY))

    async def changes(self, owner: str, since: int) -> list[RosterItem]:
        """Rows whose visible state changed after version ``since``, oldest change first
        (unlisted rows mean "removed")."""
        changed = [i for i in (await self.get(owner)).items if i.version > since]
        return sorted(changed, key=lambda i: i.version)

    async def update(self, owner: str, jid: str, change: RosterChangeFn) -> RosterUpdate:
        """Atomically read the row for ``jid``, apply ``change`` and store its result.

        ``change`` gets the stored row (or None) and returns the new row, or None for "no
        change".  It runs inside the write transaction (on the backend's thread), so it
        must be a pure function.
        """
        outcome: list[RosterUpdate] = []

        def apply(value: dict[str, Any] | None) -> Any:
            outcome.clear()  # (a backend never calls it twice; but be exact if one did)
            value = value or {"version": 0, "items": {}}
            items = value.setdefault("items", {})
            version = value.get("version", 0)
            stored = items.get(jid)
            before = None if stored is None else item_from_value(jid, stored)
            after, new_version = apply_roster_change(before, change, version)
            if after is None:
                outcome.append(RosterUpdate(before, before, version))
                return UNCHANGED
            items[jid] = item_value(after)
            value["version"] = new_version
            outcome.append(RosterUpdate(before, after, new_version))
            return value

        await self.store.update(owner, ROSTER_KEY, apply)
        return outcome[0]
