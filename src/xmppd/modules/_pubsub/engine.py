"""Nodes, items, subscriptions and affiliations in a module's own stores.

Layout (``owner`` is the PEP account ``user@domain`` or the service ``pubsub.domain``):

* key-value ``(owner, "node/<name>")``: the node record (:mod:`.node`) without its
  subscriptions;
* key-value ``("<owner>/<name>", subscriber JID)``: one subscription ``{"state", "subid",
  "options"?}``, so that subscribing writes one small key, whatever the node's size (earlier
  versions embedded them in the record as ``subscriptions``: :meth:`Engine._load` moves
  them out the first time it reads such a record);
* archive ``"<owner>/<name>"``: the node's items, ``id`` = item id, ``with_jid`` = the
  publisher, ``data`` = the payload serialized (replace-by-id, then trimmed to max_items);
* key-value ``(subscriber bare JID, "subscriptions")``: ``[[owner, node, jid], ...]``, the
  per-account subscription index (limit, and clean-up when the account is deleted).

Deleting an account removes the ``user@domain`` owner and every ``user@domain/<node>`` one,
so its PEP nodes, items and subscription index go with it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xmppd.randompool import random_bytes
from xmppd.storage.stores import UNCHANGED, ArchiveItem
from xmppd.xml.element import Element
from xmppd.xml.stanza import CLIENT_NS, decode_stanza

from . import PubSubError
from .cache import NodeCache
from .node import check_preconditions, effective_max_items

NODE_KEY = "node/"
SUBS_KEY = "subscriptions"
#: writes started together when many keys change at once (they share commits)
_MOVE_CHUNK = 500
#: distinct node configurations shared between cached records at most
_SHARED_CONFIGS = 256


@dataclass(frozen=True)
class Limits:
    """Per-module limits (module options)."""

    max_items: int = 256  # items kept per node, whatever its max_items says
    max_item_size: int = 65536  # bytes of one item's payload
    max_nodes: int = 100  # nodes per owner (account or, for the service, creator)
    max_subscriptions: int = 500  # subscriptions per account


def encode_payload(payload: Element | None) -> bytes:
    return b"" if payload is None else payload.to_bytes(CLIENT_NS)


def decode_payload(data: bytes) -> Element | None:
    return decode_stanza(data) if data else None


@dataclass
class Item:
    id: str
    publisher: str
    payload: Element | None


def _item(a: ArchiveItem) -> Item:
    return Item(a.id, a.with_jid, decode_payload(a.data))


class Engine:
    """The operations both PEP and the service use; errors are :class:`PubSubError`.

    Node records are served from :attr:`cache` (see :mod:`.cache`): a record returned by
    :meth:`node` is the live one, which callers only read.  Its ``subscriptions`` dict
    changes in place as subscriptions change; other changes replace the record.
    """

    def __init__(self, kv: Any, archive: Any, limits: Limits, *, cache_size: int = 8192) -> None:
        self.kv = kv
        self.archive = archive
        self.limits = limits
        self.cache = NodeCache(self._load, cache_size)
        #: configs of cached records by their JSON: equal ones share one dict (most nodes
        #: have the defaults; records are never changed in place, see :meth:`update`)
        self._configs: dict[str, dict[str, Any]] = {}

    def _share_config(self, record: dict[str, Any]) -> dict[str, Any]:
        config = record["config"]
        text = json.dumps(config, sort_keys=True)
        shared = self._configs.get(text)
        if shared is None:
            if len(self._configs) >= _SHARED_CONFIGS:
                return record
            shared = self._configs[text] = config
        record["config"] = shared
        return record

    # -- nodes ------------------------------------------------------------------------------

    @staticmethod
    def subs_owner(owner: str, node: str) -> str:
        """The key-value owner of a node's subscriptions (a sub-owner of ``owner``)."""
        return f"{owner}/{node}"

    async def _load(self, owner: str, node: str) -> dict[str, Any] | None:
        record = await self.kv.get(owner, NODE_KEY + node)
        if record is None:
            return None
        embedded = record.pop("subscriptions", None)
        if embedded is not None:
            await self._move_subscriptions(owner, node, embedded)
        record["subscriptions"] = await self.kv.items(self.subs_owner(owner, node))
        return self._share_config(record)

    async def _move_subscriptions(self, owner: str, node: str, subs: dict[str, Any]) -> None:
        """Give the subscriptions of a record stored by an older xmppd (embedded in it) keys
        of their own, then drop them from the record: safe to run again if interrupted."""
        target = self.subs_owner(owner, node)
        jids = list(subs)
        for at in range(0, len(jids), _MOVE_CHUNK):  # concurrent writes share commits
            await asyncio.gather(*(self.kv.set(target, jid, subs[jid])
                                   for jid in jids[at:at + _MOVE_CHUNK]))

        def strip(old: Any) -> Any:
            if old is None or "subscriptions" not in old:
                return UNCHANGED
            del old["subscriptions"]
            return old

        await self.kv.update(owner, NODE_KEY + node, strip)

    async def _put(self, owner: str, node: str, record: dict[str, Any]) -> None:
        """Make ``record`` the node's and store it (without its subscriptions)."""
        key = (owner, node)
        self.cache.put(key, self._share_config(record))
        stored = {k: v for k, v in record.items() if k != "subscriptions"}
        await self.cache.write(key, self.kv.set(owner, NODE_KEY + node, stored))

    async def node(self, owner: str, node: str) -> dict[str, Any] | None:
        return await self.cache.get(owner, node)

    async def must_node(self, owner: str, node: str) -> dict[str, Any]:
        record = await self.cache.get(owner, node)
        if record is None:
            raise PubSubError("item-not-found")
        return record

    async def nodes(self, owner: str) -> list[str]:
        return [k[len(NODE_KEY):] for k in await self.kv.keys(owner) if k.startswith(NODE_KEY)]

    async def create(self, owner: str, node: str, config: dict[str, Any], creator: str,
                     *, quota_owner: str | None = None) -> dict[str, Any]:
        if await self.node(owner, node) is not None:
            raise PubSubError("conflict")
        if quota_owner is not None:
            mine = await self.count_created(owner, quota_owner)
            if mine >= self.limits.max_nodes:
                raise PubSubError("policy-violation", "max-nodes-exceeded",
                                  text=f"at most {self.limits.max_nodes} nodes")
        self.check_max_items(config)
        if await self.node(owner, node) is not None:  # created while we counted
            raise PubSubError("conflict")
        record = {"config": config, "affiliations": {creator: "owner"}, "creator": creator}
        key = (owner, node)
        self.cache.put(key, self._share_config({**record, "subscriptions": {}}))

        def put(old: Any) -> Any:
            if old is not None:
                raise PubSubError("conflict")
            return record

        await self.cache.write(key, self.kv.update(owner, NODE_KEY + node, put))
        return await self.must_node(owner, node)

    def forget_owner(self, owner: str) -> None:
        """``owner``'s data is about to be deleted (account deletion): uncache its nodes."""
        self.cache.drop_owner(owner)

    def forget_all(self) -> None:
        """Uncache every node (another process writes them from now on)."""
        self.cache.drop_all()

    async def count_created(self, owner: str, creator: str) -> int:
        records = await self.kv.items(owner)
        return sum(1 for k, r in records.items()
                   if k.startswith(NODE_KEY) and r.get("creator") == creator)

    def check_max_items(self, config: dict[str, Any]) -> None:
        value = config.get("max_items")
        if isinstance(value, int) and value > self.limits.max_items:
            raise PubSubError("not-acceptable", "max-items-exceeded",
                              text=f"at most {self.limits.max_items} items per node")

    async def update(self, owner: str, node: str, fn) -> dict[str, Any]:
        """Change a node record (``fn(record)`` gets a copy without subscriptions, mutates
        and returns it, or returns None for no change); returns the node's record."""
        record = await self.must_node(owner, node)
        draft = copy.deepcopy({k: v for k, v in record.items() if k != "subscriptions"})
        new = fn(draft)
        if new is None:
            return record
        new["subscriptions"] = record["subscriptions"]
        await self._put(owner, node, new)
        return new

    async def configure(self, owner: str, node: str, changes: dict[str, Any]) -> dict[str, Any]:
        self.check_max_items(changes)

        def apply(record: dict[str, Any]) -> dict[str, Any]:
            record["config"].update(changes)
            return record

        record = await self.update(owner, node, apply)
        await self.trim(owner, node, record)
        return record

    async def children(self, owner: str, node: str) -> list[str]:
        """The nodes associated with collection ``node`` (their ``collection`` names it)."""
        records = await self.kv.items(owner)
        return sorted(k[len(NODE_KEY):] for k, r in records.items()
                      if k.startswith(NODE_KEY) and node in r["config"].get("collection", ()))

    async def set_collections(self, owner: str, node: str, add: tuple[str, ...] = (),
                              remove: tuple[str, ...] = ()) -> None:
        """Associate ``node`` with collections ``add``, disassociate it from ``remove``."""
        def change(record: dict[str, Any]) -> dict[str, Any] | None:
            old = list(record["config"].get("collection", []))
            new = [c for c in old if c not in remove] + [c for c in add if c not in old]
            if new == old:
                return None
            record["config"]["collection"] = new
            return record

        await self.update(owner, node, change)

    async def delete(self, owner: str, node: str) -> dict[str, Any]:
        record = await self.must_node(owner, node)
        if record["config"].get("node_type") == "collection":  # its nodes are detached
            for child in await self.children(owner, node):
                try:
                    await self.set_collections(owner, child, remove=(node,))
                except PubSubError:
                    pass
        record = await self.must_node(owner, node)
        key = (owner, node)
        self.cache.put(key, None)  # a tombstone until the store has caught up
        await self.cache.write(key, self.kv.delete(owner, NODE_KEY + node))
        await self.cache.write(key, self.kv.delete_owner(self.subs_owner(owner, node)))
        await self.archive.delete_owner(f"{owner}/{node}")
        jids = list(record["subscriptions"])
        for at in range(0, len(jids), _MOVE_CHUNK):  # concurrent writes share commits
            await asyncio.gather(*(self.unindex(jid, owner, node)
                                   for jid in jids[at:at + _MOVE_CHUNK]))
        return record

    # -- items ------------------------------------------------------------------------------

    async def publish(self, owner: str, node: str, record: dict[str, Any], item_id: str | None,
                      payload: Element | None, publisher: str) -> Item:
        data = encode_payload(payload)
        if len(data) > self.limits.max_item_size:
            raise PubSubError("not-acceptable", "payload-too-big",
                              text=f"items are limited to {self.limits.max_item_size} bytes")
        item_id = item_id or random_bytes(8).hex()
        config = record["config"]
        keep = effective_max_items(config, self.limits.max_items)
        if config.get("persist_items", True) and keep > 0:
            key = f"{owner}/{node}"
            await self.archive.append(key, data, stamp=time.time(), with_jid=publisher,
                                      id=item_id, replace=True)
            if await self.archive.count(key) > keep:
                await self.archive.trim(key, keep)
        return Item(item_id, publisher, payload)

    async def trim(self, owner: str, node: str, record: dict[str, Any]) -> None:
        key = f"{owner}/{node}"
        config = record["config"]
        keep = effective_max_items(config, self.limits.max_items)
        if not config.get("persist_items", True):
            keep = 0
        if await self.archive.count(key) > keep:
            await self.archive.trim(key, keep)

    async def retract(self, owner: str, node: str, ids: list[str]) -> list[str]:
        key = f"{owner}/{node}"
        found = [a.id for a in await self.archive.query(key, ids=ids)]
        if not found:
            raise PubSubError("item-not-found")
        await self.archive.delete(key, found)
        return found

    async def purge(self, owner: str, node: str) -> int:
        return await self.archive.delete_owner(f"{owner}/{node}")

    async def items(self, owner: str, node: str, *, ids: list[str] | None = None,
                    max_items: int | None = None) -> list[Item]:
        """Items newest first (at most ``max_items``), or those with ``ids`` in that order."""
        key = f"{owner}/{node}"
        if ids is not None:
            return [_item(a) for a in await self.archive.query(key, ids=ids, reverse=True)]
        return [_item(a) for a in await self.archive.query(key, limit=max_items, reverse=True)]

    async def page(self, owner: str, node: str, limit: int, after: str | None,
                   before: str | None) -> tuple[list[Item], int]:
        """An RSM page in chronological order (after/before: item ids; ``before`` "" is
        the last page): (items, total count)."""
        key = f"{owner}/{node}"
        total = await self.archive.count(key)
        if before is not None:
            got = await self.archive.query(key, before_id=before or None, limit=limit,
                                           reverse=True)
            got.reverse()
        else:
            got = await self.archive.query(key, after_id=after, limit=limit)
        return [_item(a) for a in got], total

    async def last_item(self, owner: str, node: str) -> Item | None:
        got = await self.items(owner, node, max_items=1)
        return got[0] if got else None

    # -- subscriptions and affiliations ------------------------------------------------------

    async def _drop_sub(self, owner: str, node: str, jid: str) -> bool:
        """Remove ``jid``'s subscription from the node (not from its index)."""
        record = await self.node(owner, node)
        if record is None or record["subscriptions"].pop(jid, None) is None:
            return False
        await self.cache.write((owner, node),
                               self.kv.delete(self.subs_owner(owner, node), jid))
        return True

    async def subscribe(self, owner: str, node: str, jid: str, bare: str, state: str,
                        *, quota: bool = True,
                        options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add (or change) ``jid``'s subscription, keeping its options unless ``options``
        (those that differ from the defaults) replace them; returns the subscription.
        O(1) in the node's subscriptions: one key of its own is written."""
        record = await self.must_node(owner, node)
        if quota and jid not in record["subscriptions"]:
            index = await self.kv.get(bare, SUBS_KEY, [])
            if len(index) >= self.limits.max_subscriptions:
                raise PubSubError("policy-violation", "too-many-subscriptions",
                                  text=f"at most {self.limits.max_subscriptions}")
            record = await self.must_node(owner, node)  # it may have changed meanwhile
        existing = record["subscriptions"].get(jid)
        sub = {"state": state, "subid": (existing or {}).get("subid") or random_bytes(6).hex()}
        kept = (existing or {}).get("options") if options is None else options
        if kept:
            sub["options"] = kept
        record["subscriptions"][jid] = sub
        await self.cache.write((owner, node), self.kv.set(self.subs_owner(owner, node), jid, sub))
        if existing is None:
            await self.index(bare, owner, node, jid)
        return sub

    async def set_options(self, owner: str, node: str, jid: str,
                          options: dict[str, Any]) -> None:
        """Replace the options of ``jid``'s subscription (``not-subscribed`` if none)."""
        record = await self.must_node(owner, node)
        sub = record["subscriptions"].get(jid)
        if sub is None:
            raise PubSubError("unexpected-request", "not-subscribed")
        sub = {k: v for k, v in sub.items() if k != "options"}  # a new dict: readers keep theirs
        if options:
            sub["options"] = options
        record["subscriptions"][jid] = sub
        await self.cache.write((owner, node), self.kv.set(self.subs_owner(owner, node), jid, sub))

    async def unsubscribe(self, owner: str, node: str, jid: str) -> bool:
        await self.must_node(owner, node)
        if not await self._drop_sub(owner, node, jid):
            return False
        await self.unindex(jid, owner, node)
        return True

    async def index(self, bare: str, owner: str, node: str, jid: str) -> None:
        def add(old: Any) -> Any:
            entries = old or []
            entry = [owner, node, jid]
            return UNCHANGED if entry in entries else [*entries, entry]

        await self.kv.update(bare, SUBS_KEY, add)

    async def unindex(self, jid: str, owner: str, node: str) -> None:
        bare = jid.split("/", 1)[0]

        def drop(old: Any) -> Any:
            if not old:
                return UNCHANGED
            rest = [e for e in old if e != [owner, node, jid]]
            return (rest or None) if len(rest) != len(old) else UNCHANGED

        await self.kv.update(bare, SUBS_KEY, drop)

    async def subscriptions_of(self, bare: str, owner: str) -> list[tuple[str, str, dict]]:
        """``bare``'s subscriptions to ``owner``'s nodes, (node, jid, subscription) in node
        order (from its index: O(its subscriptions), whatever the nodes' sizes)."""
        out = []
        for o, node, jid in await self.kv.get(bare, SUBS_KEY, []):
            if o != owner:
                continue
            record = await self.node(owner, node)
            sub = None if record is None else record["subscriptions"].get(jid)
            if sub is not None:
                out.append((node, jid, sub))
        out.sort(key=lambda entry: entry[0])  # stable: a node's JIDs in subscription order
        return out

    async def forget_account(self, bare: str, owned: Callable[[str], bool] | None = None,
                             drop_index: bool = True) -> None:
        """Remove ``bare``'s subscriptions from other owners' nodes (account deletion):
        only from the owners ``owned`` says this engine writes (PEP with several workers:
        each worker does its own, and the last one drops the index)."""
        def drop(record: dict[str, Any]) -> dict[str, Any] | None:
            return record if record["affiliations"].pop(bare, None) is not None else None

        for owner, node, jid in await self.kv.get(bare, SUBS_KEY, []):
            if owned is not None and not owned(owner):
                continue
            await self._drop_sub(owner, node, jid)
            try:
                await self.update(owner, node, drop)
            except PubSubError:
                pass
        if drop_index:
            await self.kv.delete(bare, SUBS_KEY)

    async def set_affiliation(self, owner: str, node: str, bare: str, affiliation: str) -> None:
        def change(record: dict[str, Any]) -> dict[str, Any]:
            if affiliation == "none":
                record["affiliations"].pop(bare, None)
            else:
                record["affiliations"][bare] = affiliation
            return record

        record = await self.update(owner, node, change)
        if affiliation == "outcast":  # an outcast's subscriptions go
            for jid in [j for j in record["subscriptions"] if j.split("/", 1)[0] == bare]:
                if await self._drop_sub(owner, node, jid):
                    await self.unindex(jid, owner, node)


__all__ = ["Engine", "Item", "Limits", "check_preconditions"]
